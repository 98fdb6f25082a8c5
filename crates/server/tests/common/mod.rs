//! Shared by the server's tests (crates/server/tests) and the end-to-end serve tests
//! (tests/e2e/serve.rs): a small random-weight bundle over the demo taxonomy, server configs,
//! and real audio from datasets/.
#![allow(clippy::unwrap_used, dead_code)]

#[path = "../../../audio/tests/common/flac.rs"]
pub mod flac;

use std::path::{Path, PathBuf};
use std::time::Duration;

use silencio_audio::{DecodeOptions, FeatureConfig};
use silencio_infer::{BundleSpec, ModelBundle, Provenance, Species};
use silencio_models::ModelConfig;
use silencio_models::efficientnet::{EfficientNetConfig, EfficientNetVariant};
use silencio_server::{EngineConfig, ServerConfig};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn demo() -> PathBuf {
    root().join("datasets/demo/birdclef")
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("datasets/fixtures/audio").join(name)
}

/// The demo taxonomy (9 real species) in file order.
pub fn taxonomy() -> Vec<Species> {
    let t = silencio_data::Taxonomy::from_csv(&demo().join("taxonomy.csv")).unwrap();
    t.species()
        .iter()
        .map(|s| Species {
            code: s.primary_label.clone(),
            scientific_name: s.scientific_name.clone(),
            common_name: s.common_name.clone(),
            class_name: s.class_name.clone(),
        })
        .collect()
}

/// EfficientNet-Lite0 at width and depth 0.25: random weights, a forward in milliseconds.
fn tiny(classes: usize) -> ModelConfig {
    let mut cfg = ModelConfig::efficientnet_lite0(classes);
    cfg.backbone = silencio_models::BackboneConfig::Efficientnet(
        EfficientNetConfig::new(EfficientNetVariant::Lite0)
            .with_width_mult(0.25)
            .with_depth_mult(0.25),
    );
    cfg.with_input_norm(-40.0, 20.0)
}

/// Writes a random-weight bundle `name@version` over the demo taxonomy at `dir`.
pub fn write_bundle(dir: &Path, name: &str, version: &str) -> PathBuf {
    write_bundle_with(
        dir,
        name,
        version,
        FeatureConfig::recipe("birdclef").unwrap(),
        vec![silencio_infer::Licence::new(
            silencio_infer::licence::OWN,
            "weights: random initialisation (server tests)",
        )],
    )
}

/// [`write_bundle`] with a location filter: species ranges learnt from `points`
/// (`(code, latitude, longitude)` recordings).
pub fn write_bundle_located(dir: &Path, name: &str, points: &[(&str, f64, f64)]) -> PathBuf {
    let codes: Vec<String> = taxonomy().into_iter().map(|s| s.code).collect();
    let model =
        silencio_infer::OccurrenceModel::learn(points.iter().copied(), &codes, Default::default())
            .unwrap();
    write_bundle_full(
        dir,
        name,
        "1",
        FeatureConfig::recipe("birdclef").unwrap(),
        vec![silencio_infer::Licence::new(
            silencio_infer::licence::OWN,
            "weights: random initialisation (server tests)",
        )],
        Some(model),
        None,
    )
}

/// Priors learnt from 240 teacher windows over the taxonomy: 120 at `loud`, where the first
/// species scores 0.9 and every other 0.1, and 120 at `quiet`, where every species scores
/// `quiet_level`. So `loud` raises the first species' score and `quiet` lowers it.
pub fn first_species_priors(
    loud: silencio_infer::RecordingContext,
    quiet: silencio_infer::RecordingContext,
    quiet_level: f32,
) -> silencio_infer::SitePriors {
    let codes: Vec<String> = taxonomy().into_iter().map(|s| s.code).collect();
    let n = codes.len();
    let mut rows = Vec::new();
    for _ in 0..120 {
        let mut first = vec![0.1f32; n];
        first[0] = 0.9;
        rows.push((loud.clone(), first));
        rows.push((quiet.clone(), vec![quiet_level; n]));
    }
    silencio_infer::SitePriors::learn(codes, rows).unwrap()
}

/// [`write_bundle`] with site/hour priors and smoothing (`priors.json`).
pub fn write_bundle_post(dir: &Path, name: &str, post: silencio_infer::PostProcess) -> PathBuf {
    write_bundle_full(
        dir,
        name,
        "1",
        FeatureConfig::recipe("birdclef").unwrap(),
        vec![silencio_infer::Licence::new(
            silencio_infer::licence::OWN,
            "weights: random initialisation (server tests)",
        )],
        None,
        Some(post),
    )
}

/// [`write_bundle`] on another feature recipe, recording `licences`.
pub fn write_bundle_with(
    dir: &Path,
    name: &str,
    version: &str,
    features: FeatureConfig,
    licences: Vec<silencio_infer::Licence>,
) -> PathBuf {
    write_bundle_full(dir, name, version, features, licences, None, None)
}

fn write_bundle_full(
    dir: &Path,
    name: &str,
    version: &str,
    features: FeatureConfig,
    licences: Vec<silencio_infer::Licence>,
    location: Option<silencio_infer::OccurrenceModel>,
    post_process: Option<silencio_infer::PostProcess>,
) -> PathBuf {
    let species = taxonomy();
    let cfg = tiny(species.len());
    let device = silencio_infer::parse_device("flex").unwrap();
    let model = cfg.init(&device).unwrap();
    let spec = BundleSpec {
        name: name.into(),
        version: version.into(),
        model: cfg,
        features,
        species,
        provenance: Provenance {
            trained: false,
            source: "random weights (server tests)".into(),
            licences,
            ..Provenance::default()
        },
        location,
        post_process,
    };
    ModelBundle::write(dir, spec, &model).unwrap();
    dir.to_path_buf()
}

/// A test server config: random port, data under `data`, one replica, small batches.
pub fn config(data: &Path, model: Option<PathBuf>) -> ServerConfig {
    ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        model: model.map(|p| p.display().to_string()),
        registry: data.join("no-registry"),
        data_dir: data.to_path_buf(),
        api_key: "test-key".into(),
        engine: EngineConfig {
            replicas: 1,
            max_batch: 8,
            max_wait: Duration::from_millis(5),
            ..EngineConfig::default()
        },
        queue: 64,
        max_body_bytes: 4 << 20,
        max_duration_s: 120.0,
        sample_share: 0.0,
        ..ServerConfig::default()
    }
}

/// Mono samples of a real recording at `rate`.
pub fn decode(path: &Path, rate: u32) -> Vec<f32> {
    let opts = DecodeOptions {
        target_rate: Some(rate),
        max_duration_s: 3600.0,
        max_input_samples: None,
    };
    silencio_audio::decode_path(path, &opts).unwrap().samples
}

/// The first demo soundscape (1 minute, OGG).
pub fn soundscape_path() -> PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(demo().join("train_soundscapes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files[0].clone()
}

/// 16-bit PCM mono WAV bytes.
pub fn wav_s16(samples: &[f32], rate: u32) -> Vec<u8> {
    let data: Vec<u8> = samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes())
        .collect();
    let mut w = Vec::with_capacity(44 + data.len());
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(data.len() as u32).to_le_bytes());
    w.extend_from_slice(&data);
    w
}

/// 32-bit float mono WAV bytes (format tag 3).
pub fn wav_f32(samples: &[f32], rate: u32) -> Vec<u8> {
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut w = Vec::with_capacity(44 + data.len());
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&3u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 4).to_le_bytes());
    w.extend_from_slice(&4u16.to_le_bytes());
    w.extend_from_slice(&32u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(data.len() as u32).to_le_bytes());
    w.extend_from_slice(&data);
    w
}

/// A real 5 s clip (the soundscape's seconds 10..15) as a 32 kHz WAV: one window.
pub fn clip_5s_wav() -> Vec<u8> {
    let s = decode(&soundscape_path(), 32_000);
    wav_s16(&s[320_000..480_000], 32_000)
}

/// Starts a prepared `silencio serve … --addr 127.0.0.1:0` (the end-to-end tests' binary) with
/// stderr piped and waits for its `listening on http://ADDR` line. Stderr is drained on a
/// thread for the whole run, so the pipe never fills and blocks the server. Returns the child,
/// `ADDR`, the stderr lines before that one, and a receiver of the later lines.
pub fn start_serve(
    cmd: &mut std::process::Command,
) -> (
    std::process::Child,
    String,
    Vec<String>,
    std::sync::mpsc::Receiver<String>,
) {
    use std::io::BufRead;
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(120)) {
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or("").to_string();
            return (child, addr, seen, rx);
        }
        seen.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("silencio serve printed no address; stderr: {seen:?}");
}
