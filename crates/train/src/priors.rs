//! Site and hour priors from a teacher's scores on the unlabelled soundscapes (see
//! [`silencio_infer::priors`] for what they are and how the facade applies them).

use std::path::Path;

use burn::tensor::Device;
use silencio_infer::licence;
use silencio_infer::{BundleSpec, ModelBundle, PostProcess, RecordingContext, SitePriors};

use crate::teacher::{RecordingSet, TeacherStore};
use crate::{Error, Result};

/// Learns [`SitePriors`] over `classes` (the bundle's codes, in order) from every soundscape in
/// `store`, each window in the context its file name gives (`H02_20230420_074000.ogg`:
/// recorder H02, 07 h; other names still count towards the global means). Classes the teacher
/// does not cover are stored as 0 and so get no shift. Refuses a store over other classes or
/// without a single soundscape window.
pub fn learn_from_teacher(store: &TeacherStore, classes: &[String]) -> Result<SitePriors> {
    let info = store.info();
    if info.classes != classes {
        return Err(Error::Data {
            message: format!(
                "teacher {} ({}) scores {} classes that are not the model's {} in order",
                info.model,
                store.dir().display(),
                info.classes.len(),
                classes.len()
            ),
        });
    }
    let mut rows = Vec::new();
    for name in store.list(RecordingSet::Soundscapes)? {
        let rec = store.read(RecordingSet::Soundscapes, &name)?;
        let file = if rec.file.is_empty() {
            &name
        } else {
            &rec.file
        };
        let ctx = RecordingContext::from_file_name(file);
        rows.extend(rec.probs.into_iter().map(|p| (ctx.clone(), p)));
    }
    SitePriors::learn(classes.to_vec(), rows).map_err(|e| Error::Data {
        message: format!("priors from teacher {}: {e}", store.dir().display()),
    })
}

/// Writes a new bundle at `out`, version `version`: the bundle at `src` (same weights, recipe,
/// species, ranges) with priors learnt from `store`'s soundscapes
/// ([`learn_from_teacher`]) at the default strength and smoothing ([`PostProcess::new`]).
/// The teacher's licences join the bundle's: the priors derive from its scores.
pub fn bundle_with_priors(
    src: &Path,
    store: &TeacherStore,
    out: &Path,
    version: &str,
    device: &Device,
) -> Result<ModelBundle> {
    let bundle = ModelBundle::open(src)?;
    let meta = bundle.meta();
    let classes: Vec<String> = meta.species.iter().map(|s| s.code.clone()).collect();
    let priors = learn_from_teacher(store, &classes)?;
    let info = store.info();
    let teacher = info.derived_licences("its scores gave the site/hour priors");
    let mut provenance = meta.provenance.clone();
    provenance.created_unix_s = 0;
    provenance.licences = licence::union([provenance.licences.as_slice(), teacher.as_slice()]);
    provenance.source = format!(
        "{}; site/hour priors from teacher {} ({} soundscape windows)",
        provenance.source,
        info.model,
        priors.global().windows
    );
    let spec = BundleSpec {
        name: meta.name.clone(),
        version: version.to_string(),
        model: meta.model.clone(),
        features: meta.features.clone(),
        species: meta.species.clone(),
        provenance,
        location: bundle.location()?,
        post_process: Some(PostProcess::new(Some(priors))),
    };
    let model = bundle.load_model(device)?;
    Ok(ModelBundle::write(out, spec, &model)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::teacher::{TEACHER_FORMAT, TeacherInfo, TeacherRecording};

    fn info(classes: &[&str]) -> TeacherInfo {
        TeacherInfo {
            format: TEACHER_FORMAT,
            spec: "registry:production".into(),
            model: "demo@1".into(),
            classes: classes.iter().map(|c| c.to_string()).collect(),
            covered: vec![true; classes.len()],
            embedding_dim: None,
            feature_shape: [1, 1],
            feature_dtype: silencio_data::Dtype::F32,
            shards_fingerprint: "f".into(),
            licences: Vec::new(),
        }
    }

    fn soundscape(file: &str, probs: Vec<Vec<f32>>) -> TeacherRecording {
        TeacherRecording {
            set: RecordingSet::Soundscapes,
            file: file.into(),
            start_s: (0..probs.len()).map(|i| 5.0 * i as f32).collect(),
            features: vec![vec![0.0]; probs.len()],
            probs,
            embedding: Vec::new(),
        }
    }

    #[test]
    fn priors_come_from_the_soundscapes_by_recorder_and_hour() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TeacherStore::create(tmp.path(), info(&["a", "b"])).unwrap();
        store
            .write(&soundscape(
                "H02_20230420_074000.ogg",
                vec![vec![0.5, 0.0], vec![0.25, 0.0]],
            ))
            .unwrap();
        store
            .write(&soundscape("S01_20230421_131500.ogg", vec![vec![0.0, 1.0]]))
            .unwrap();
        // A name without a context still counts towards the global means.
        store
            .write(&soundscape("odd.ogg", vec![vec![0.75, 0.5]]))
            .unwrap();
        // A labelled clip is not a soundscape: not read.
        let mut clip = soundscape("grekis/XC1.ogg", vec![vec![1.0, 1.0]]);
        clip.set = RecordingSet::TrainAudio;
        clip.features = Vec::new();
        store.write(&clip).unwrap();

        let classes = vec!["a".to_string(), "b".to_string()];
        let p = learn_from_teacher(&store, &classes).unwrap();
        // Four soundscape windows: a = (0.5 + 0.25 + 0 + 0.75)/4 = 0.375, b = 1.5/4 = 0.375.
        assert_eq!(p.global().windows, 4);
        assert_eq!(p.global().mean, vec![0.375, 0.375]);
        // H02 (07 h): a = 0.75/2 = 0.375, b = 0; S01 (13 h): a = 0, b = 1.
        assert_eq!(p.recorders()["H02"].mean, vec![0.375, 0.0]);
        assert_eq!(p.hours()[&13].mean, vec![0.0, 1.0]);
        assert_eq!(p.recorders().keys().collect::<Vec<_>>(), vec!["H02", "S01"]);
        assert_eq!(p.hours().keys().copied().collect::<Vec<_>>(), vec![7, 13]);

        // Another class order is refused.
        let swapped = vec!["b".to_string(), "a".to_string()];
        let e = learn_from_teacher(&store, &swapped).unwrap_err();
        assert_eq!(e.kind(), "data");
    }

    #[test]
    fn a_bundle_gains_priors_and_the_teachers_licences() {
        use silencio_infer::{Provenance, Species};
        use silencio_models::ModelConfig;
        use silencio_models::efficientnet::{EfficientNetConfig, EfficientNetVariant};

        let tmp = tempfile::tempdir().unwrap();
        let mut teacher = info(&["a", "b"]);
        teacher.licences = vec!["CC-BY-4.0".into()];
        let store = TeacherStore::create(&tmp.path().join("teacher"), teacher).unwrap();
        store
            .write(&soundscape(
                "H02_20230420_074000.ogg",
                vec![vec![0.5, 0.25]],
            ))
            .unwrap();
        let mut cfg = ModelConfig::efficientnet_b0(2);
        cfg.backbone = silencio_models::BackboneConfig::Efficientnet(
            EfficientNetConfig::new(EfficientNetVariant::B0).with_width_mult(0.25),
        );
        let device = silencio_infer::parse_device("flex").unwrap();
        let model = cfg.init(&device).unwrap();
        let species = ["a", "b"]
            .map(|code| Species {
                code: code.into(),
                scientific_name: String::new(),
                common_name: String::new(),
                class_name: "Aves".into(),
            })
            .to_vec();
        let src = tmp.path().join("m1");
        let spec = BundleSpec {
            name: "m".into(),
            version: "1".into(),
            model: cfg,
            features: silencio_audio::FeatureConfig::recipe("birdclef").unwrap(),
            species,
            provenance: Provenance {
                source: "test".into(),
                ..Provenance::default()
            },
            location: None,
            post_process: None,
        };
        ModelBundle::write(&src, spec, &model).unwrap();
        let out = tmp.path().join("m2");
        let b = bundle_with_priors(&src, &store, &out, "2", &device).unwrap();
        assert_eq!(b.meta().model_version(), "m@2");
        // Same tensors, byte for byte (the files' own bytes differ: burn-store writes its
        // safetensors metadata from a HashMap, in no fixed order).
        let tensors = |dir: &Path| {
            let bytes = std::fs::read(dir.join(&b.meta().weights.file)).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let mut v: Vec<(String, Vec<usize>, Vec<u8>)> = st
                .tensors()
                .into_iter()
                .map(|(n, t)| (n, t.shape().to_vec(), t.data().to_vec()))
                .collect();
            v.sort();
            v
        };
        let (a, c) = (tensors(&src), tensors(&out));
        assert!(!a.is_empty());
        assert_eq!(a, c);
        let post = ModelBundle::open(&out)
            .unwrap()
            .post_process()
            .unwrap()
            .unwrap();
        let priors = post.priors.unwrap();
        assert_eq!(priors.recorders()["H02"].mean, vec![0.5, 0.25]);
        assert_eq!(b.meta().provenance.licences[0].id, "CC-BY-4.0");
    }

    #[test]
    fn a_store_without_soundscapes_teaches_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TeacherStore::create(tmp.path(), info(&["a"])).unwrap();
        assert!(learn_from_teacher(&store, &["a".to_string()]).is_err());
    }
}
