//! With the `birdnet` feature: generate the Burn models from `$SILENCIO_BIRDNET_DIR`'s
//! `birdnet.onnx` (the classifier) and `birdnet_range.onnx` (the range model), both made by
//! `scripts/convert-birdnet.sh`. Without it: nothing.

fn main() {
    println!("cargo:rerun-if-env-changed=SILENCIO_BIRDNET_DIR");
    #[cfg(feature = "birdnet")]
    birdnet();
}

#[cfg(feature = "birdnet")]
fn birdnet() {
    let Some(dir) = std::env::var_os("SILENCIO_BIRDNET_DIR") else {
        panic!(
            "the birdnet feature needs SILENCIO_BIRDNET_DIR=<dir made by onnx-import/scripts/convert-birdnet.sh>"
        );
    };
    let dir = std::path::Path::new(&dir);
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let labels = dir.join("labels.txt");
    println!("cargo:rerun-if-changed={}", labels.display());
    std::fs::copy(&labels, out.join("birdnet_labels.txt"))
        .unwrap_or_else(|e| panic!("{}: {e}", labels.display()));
    for file in ["birdnet.onnx", "birdnet_range.onnx"] {
        let onnx = dir.join(file);
        assert!(
            onnx.is_file(),
            "{} not found: run onnx-import/scripts/convert-birdnet.sh {} (a directory made \
             before the range model was added needs a re-run)",
            onnx.display(),
            dir.display()
        );
        println!("cargo:rerun-if-changed={}", onnx.display());
        burn_onnx::ModelGen::new()
            .input(&onnx.to_string_lossy())
            .out_dir("model/")
            .run_from_script();
    }
}
