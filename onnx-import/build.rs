//! With the `birdnet` feature: generate the Burn model from `$SILENCIO_BIRDNET_DIR/birdnet.onnx`
//! (made by `scripts/convert-birdnet.sh`). Without it: nothing.

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
    let onnx = std::path::Path::new(&dir).join("birdnet.onnx");
    assert!(
        onnx.is_file(),
        "{} not found: run onnx-import/scripts/convert-birdnet.sh {}",
        onnx.display(),
        std::path::Path::new(&dir).display()
    );
    println!("cargo:rerun-if-changed={}", onnx.display());
    let labels = std::path::Path::new(&dir).join("labels.txt");
    println!("cargo:rerun-if-changed={}", labels.display());
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::copy(&labels, out.join("birdnet_labels.txt"))
        .unwrap_or_else(|e| panic!("{}: {e}", labels.display()));
    burn_onnx::ModelGen::new()
        .input(&onnx.to_string_lossy())
        .out_dir("model/")
        .run_from_script();
}
