//! One model's forward pass in a loop, for `perf record` (criterion's harness gets in a
//! profiler's way): `cargo run --release -p silencio-benches --example profile_forward --
//! efficientnet_b0 12 20 [on|off] [prepared|raw]` — architecture, batch size, timed passes, the
//! project's CPU kernels on (default) or off, the model prepared for inference
//! (`Model::for_inference`, default) or as loaded. Prints the mean wall time per pass; random
//! weights, flex.

use burn::tensor::{Distribution, Tensor};
use silencio_models::ModelConfig;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let name = arg(1, "efficientnet_b0");
    let bs: usize = arg(2, "12").parse().expect("batch size");
    let passes: usize = arg(3, "10").parse().expect("passes");
    let kernels = arg(4, "on") != "off";
    let prepared = arg(5, "prepared") != "raw";
    silencio_kernels::set_enabled(kernels);
    let device = burn::tensor::Device::flex();
    let model = ModelConfig::named(&name, 206, 128)
        .expect("architecture")
        .init(&device)
        .expect("model");
    let model = if prepared {
        model.for_inference()
    } else {
        model
    };
    let x: Tensor<4> = Tensor::random(
        [bs, 1, 128, 313],
        Distribution::Normal(-40.0, 20.0),
        &device,
    );
    let _ = model.forward(x.clone()).logits.into_data(); // warm-up
    let t = std::time::Instant::now();
    for _ in 0..passes {
        let _ = model.forward(x.clone()).logits.into_data();
    }
    let ms = t.elapsed().as_secs_f64() * 1e3 / passes.max(1) as f64;
    println!(
        "{name} bs {bs}, kernels {}, {}: {ms:.2} ms per forward",
        if kernels { "on" } else { "off" },
        if prepared { "prepared" } else { "raw" }
    );
}
