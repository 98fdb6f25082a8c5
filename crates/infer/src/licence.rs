//! Licences that travel with models: every bundle records the licences of its weights and of
//! everything they were derived from (training data, a pretrained backbone, a teacher), and a
//! deployment says whether it may use non-commercial ones.
//!
//! Identifiers are SPDX (`CC-BY-NC-SA-4.0`, `Apache-2.0`, `MIT`, …; `LicenseRef-…` for a
//! user's own terms). What counts as non-commercial is decided from the identifier, so a new
//! licence needs no code: any Creative Commons `NC` variant is non-commercial.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// BirdNET V2.4's weights and anything derived from them (its probes, students it taught).
pub const BIRDNET_V24: &str = "CC-BY-NC-SA-4.0";

/// The licence of weights a user trained from scratch on their own data.
pub const OWN: &str = "LicenseRef-own";

/// One licence and what it covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Licence {
    /// SPDX identifier, e.g. `CC-BY-NC-SA-4.0`.
    pub id: String,
    /// What it applies to, e.g. `training data: BirdCLEF 2025 train_audio` or
    /// `pretrained backbone: Lite0 ImageNet`.
    pub covers: String,
}

impl Licence {
    /// A licence `id` covering `covers`.
    pub fn new(id: impl Into<String>, covers: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            covers: covers.into(),
        }
    }

    /// BirdNET V2.4's licence for `what` (the model itself, a probe on its embeddings, …).
    pub fn birdnet(what: impl Into<String>) -> Self {
        Self::new(BIRDNET_V24, what)
    }

    /// Whether it forbids commercial use (Creative Commons' `NC` variants).
    pub fn non_commercial(&self) -> bool {
        self.id
            .to_ascii_uppercase()
            .split(['-', ' '])
            .any(|part| part == "NC")
    }
}

/// What a set of licences allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenceStatus {
    /// Every recorded licence allows commercial use.
    Commercial,
    /// At least one forbids it.
    NonCommercial,
    /// Nothing is recorded (a bundle from before licences were kept, or a hand-made one): it
    /// may be derived from non-commercial weights or data.
    Unknown,
}

impl LicenceStatus {
    /// The status of a model whose parts carry `licences`.
    pub fn of(licences: &[Licence]) -> Self {
        if licences.is_empty() {
            Self::Unknown
        } else if licences.iter().any(Licence::non_commercial) {
            Self::NonCommercial
        } else {
            Self::Commercial
        }
    }

    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Commercial => "commercial",
            Self::NonCommercial => "non_commercial",
            Self::Unknown => "unknown",
        }
    }
}

/// What the operator says the deployment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Deployment {
    /// The default: only models whose every licence allows commercial use.
    #[default]
    Commercial,
    /// Research, teaching, a non-profit reserve's own use: any licence.
    NonCommercial,
}

/// Refuses `model` (with `licences`, deduplicated over its members) in a commercial deployment
/// when one is non-commercial or nothing is recorded; names the offending licences.
pub fn check(deployment: Deployment, model: &str, licences: &[Licence]) -> Result<()> {
    if deployment == Deployment::NonCommercial {
        return Ok(());
    }
    match LicenceStatus::of(licences) {
        LicenceStatus::Commercial => Ok(()),
        LicenceStatus::NonCommercial => {
            let nc: Vec<String> = licences
                .iter()
                .filter(|l| l.non_commercial())
                .map(|l| format!("{} ({})", l.id, l.covers))
                .collect();
            Err(Error::Licence(format!(
                "{model} is licensed for non-commercial use only: {}; start the server with \
                 --non-commercial if this deployment is non-commercial",
                nc.join(", ")
            )))
        }
        LicenceStatus::Unknown => Err(Error::Licence(format!(
            "{model} records no licences, so it may derive from non-commercial weights or data; \
             re-package it with its licences, or start the server with --non-commercial if this \
             deployment is non-commercial"
        ))),
    }
}

/// The union of several members' licences, sorted, without repeats.
pub fn union<'a>(sets: impl IntoIterator<Item = &'a [Licence]>) -> Vec<Licence> {
    let mut all: Vec<Licence> = sets.into_iter().flatten().cloned().collect();
    all.sort();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creative_commons_nc_variants_are_non_commercial() {
        for id in [
            "CC-BY-NC-SA-4.0",
            "CC-BY-NC-4.0",
            "cc-by-nc-nd-3.0",
            "CC BY-NC-SA 4.0",
        ] {
            assert!(Licence::new(id, "x").non_commercial(), "{id}");
        }
        for id in [
            "CC-BY-4.0",
            "CC0-1.0",
            "Apache-2.0",
            "MIT",
            "BSD-3-Clause",
            OWN,
        ] {
            assert!(!Licence::new(id, "x").non_commercial(), "{id}");
        }
    }

    #[test]
    fn the_gate_refuses_nc_and_unknown_only_in_commercial_deployments() {
        let apache = Licence::new("Apache-2.0", "pretrained backbone");
        let birdnet = Licence::birdnet("BirdNET V2.4 weights");
        let ok = [apache.clone()];
        let nc = [apache, birdnet];
        assert!(check(Deployment::Commercial, "m", &ok).is_ok());
        let e = check(Deployment::Commercial, "m", &nc).unwrap_err();
        assert_eq!(e.kind(), "licence");
        assert!(e.to_string().contains("CC-BY-NC-SA-4.0"), "{e}");
        assert!(check(Deployment::Commercial, "m", &[]).is_err());
        assert!(check(Deployment::NonCommercial, "m", &nc).is_ok());
        assert!(check(Deployment::NonCommercial, "m", &[]).is_ok());
        assert_eq!(LicenceStatus::of(&nc), LicenceStatus::NonCommercial);
        assert_eq!(LicenceStatus::of(&ok), LicenceStatus::Commercial);
        assert_eq!(LicenceStatus::of(&[]), LicenceStatus::Unknown);
    }

    #[test]
    fn union_deduplicates() {
        let a = Licence::new("MIT", "data");
        let b = Licence::new("CC-BY-4.0", "data");
        let u = union([[a.clone(), b.clone()].as_slice(), [a.clone()].as_slice()]);
        assert_eq!(u, vec![b, a]);
    }
}
