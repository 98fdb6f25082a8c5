//! Shared helpers of the audio crate's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A committed real fixture.
pub fn fixture(name: &str) -> PathBuf {
    root().join("datasets/fixtures/audio").join(name)
}

/// Reads a `.npy` (f32 or f64) as f64 with its shape.
pub fn read_npy(path: &std::path::Path) -> (Vec<usize>, Vec<f64>) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(std::io::BufReader::new(f)).expect("npy header");
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let descr = npy.dtype().descr();
    let data = if descr.contains("f8") {
        npy.into_vec::<f64>().expect("f64 data")
    } else {
        npy.into_vec::<f32>()
            .expect("f32 data")
            .into_iter()
            .map(f64::from)
            .collect()
    };
    (shape, data)
}

/// Parses a JSON file.
pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    let s = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&s).expect("json")
}
