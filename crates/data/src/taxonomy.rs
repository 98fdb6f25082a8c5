//! `taxonomy.csv`: the species and their order. Row order is the class order everywhere
//! (model outputs, submission columns).

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One species (a row of `taxonomy.csv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Species {
    /// eBird-style code, e.g. `grekis`; also the submission column name.
    pub primary_label: String,
    /// iNaturalist taxon id, where given.
    pub inat_taxon_id: Option<u64>,
    /// Latin binomial.
    pub scientific_name: String,
    /// English name.
    pub common_name: String,
    /// Aves, Amphibia, Insecta or Mammalia.
    pub class_name: String,
}

/// The species list in class order, with a code → index map.
#[derive(Debug, Clone, PartialEq)]
pub struct Taxonomy {
    species: Vec<Species>,
    index: HashMap<String, usize>,
}

impl Taxonomy {
    /// Builds from species in class order; a code may appear once.
    pub fn new(species: Vec<Species>) -> Result<Self> {
        if species.is_empty() {
            return Err(Error::Taxonomy("no species".into()));
        }
        let mut index = HashMap::with_capacity(species.len());
        for (i, s) in species.iter().enumerate() {
            if index.insert(s.primary_label.clone(), i).is_some() {
                return Err(Error::Taxonomy(format!(
                    "code {:?} listed twice",
                    s.primary_label
                )));
            }
        }
        Ok(Self { species, index })
    }

    /// Reads `taxonomy.csv` (columns primary_label, inat_taxon_id, scientific_name,
    /// common_name, class_name; others ignored).
    pub fn from_csv(path: &Path) -> Result<Self> {
        Self::from_reader(crate::train_csv::open_file(path)?, path)
    }

    /// [`Taxonomy::from_csv`] from any reader; `path` names the source in errors.
    pub fn from_reader<R: std::io::Read>(reader: R, path: &Path) -> Result<Self> {
        let mut rdr = crate::train_csv::csv_reader(reader);
        let cols = crate::train_csv::Columns::new(
            path,
            rdr.headers()
                .map_err(|e| crate::train_csv::csv_err(path, e))?,
            &[
                "primary_label",
                "scientific_name",
                "common_name",
                "class_name",
            ],
        )?;
        let mut species = Vec::new();
        for (i, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(|e| crate::train_csv::csv_err(path, e))?;
            let get = |c: &str| cols.get(&rec, c).to_string();
            let label = get("primary_label");
            if label.is_empty() {
                return Err(Error::Taxonomy(format!(
                    "row {} has no primary_label",
                    i + 2
                )));
            }
            species.push(Species {
                primary_label: label,
                inat_taxon_id: get("inat_taxon_id").parse().ok(),
                scientific_name: get("scientific_name"),
                common_name: get("common_name"),
                class_name: get("class_name"),
            });
        }
        Self::new(species)
    }

    /// Species in class order.
    pub fn species(&self) -> &[Species] {
        &self.species
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.species.len()
    }

    /// Never true for a built taxonomy; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.species.is_empty()
    }

    /// Class index of a code.
    pub fn index_of(&self, code: &str) -> Option<usize> {
        self.index.get(code).copied()
    }
}
