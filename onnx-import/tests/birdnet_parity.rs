//! BirdNET through Burn against the original TFLite model on real clips.
//!
//! Reference data: `$SILENCIO_BIRDNET_DIR/reference/` written by
//! `onnx-import/scripts/convert_birdnet.py` (TensorFlow's TFLite interpreter on 3 s / 48 kHz
//! chunks of the demo dataset's real recordings; outside git, CC BY-NC-SA 4.0). Only built with
//! the `birdnet` feature:
//! `SILENCIO_BIRDNET_DIR=OUT cargo test --release -p silencio-onnx --features birdnet`.
#![cfg(feature = "birdnet")]
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use silencio_onnx::BirdNet;

fn npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    let dir =
        PathBuf::from(std::env::var_os("SILENCIO_BIRDNET_DIR").expect("SILENCIO_BIRDNET_DIR"))
            .join("reference");
    let bytes = std::fs::read(dir.join(name)).unwrap();
    let f = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = f.shape().iter().map(|&d| d as usize).collect();
    (shape, f.into_vec().unwrap())
}

#[test]
fn birdnet_in_burn_matches_tflite_on_real_clips() {
    let dev = silencio_infer::default_device().unwrap();
    let model = BirdNet::load(&dev).unwrap();
    let (xs, x) = npy("inputs.npy");
    // TFLite's own FFT is ~0.1 logit off exact on chunks holding exact zeros (zero padding,
    // silence), so TFLite is the reference on clean chunks and the float64 front end (the same
    // network after an exact spectrogram) on every chunk; see convert_birdnet.py.
    let (_, logits) = npy("logits.npy");
    let (_, emb) = npy("embedding.npy");
    let (_, exact) = npy("logits_exact_frontend.npy");
    let dir = PathBuf::from(std::env::var_os("SILENCIO_BIRDNET_DIR").unwrap()).join("reference");
    let csv = std::fs::read_to_string(dir.join("chunks.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "clean").unwrap();
    let clean: Vec<bool> = lines
        .map(|l| l.split(',').nth(col).unwrap() == "1")
        .collect();
    let n = xs[0];
    assert!(n >= 10, "reference holds {n} chunks");
    let chunks: Vec<&[f32]> = x.chunks(xs[1]).collect();
    let out = model.forward_chunks(&chunks).unwrap();
    assert_eq!(clean.len(), n);
    let mut worst_l = 0f32;
    let mut worst_e = 0f32;
    let mut worst_exact = 0f32;
    for i in 0..n {
        for (a, b) in out.logits[i].iter().zip(&exact[i * 6522..(i + 1) * 6522]) {
            worst_exact = worst_exact.max((a - b).abs());
        }
        if !clean[i] {
            continue;
        }
        for (a, b) in out.logits[i].iter().zip(&logits[i * 6522..(i + 1) * 6522]) {
            worst_l = worst_l.max((a - b).abs());
        }
        for (a, b) in out.embeddings[i].iter().zip(&emb[i * 1024..(i + 1) * 1024]) {
            worst_e = worst_e.max((a - b).abs());
        }
    }
    let n_clean = clean.iter().filter(|c| **c).count();
    eprintln!(
        "BirdNET Burn vs TFLite on {n_clean} clean chunks: max |Δ logit| {worst_l:.3e}, \
         max |Δ embedding| {worst_e:.3e}; vs exact front end on all {n}: {worst_exact:.3e}"
    );
    assert!(n_clean >= 10);
    assert!(worst_l <= 1e-3, "max |Δ logit| {worst_l}");
    assert!(
        worst_exact <= 1e-3,
        "max |Δ logit| vs exact front end {worst_exact}"
    );
    assert!(worst_e <= 1e-3, "max |Δ embedding| {worst_e}");
}
