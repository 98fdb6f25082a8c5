//! The project's CPU kernels (`silencio-kernels`) against the Burn ops they replace, on flex,
//! at shapes of a full-size EfficientNet-B0 forward over one 1-minute soundscape (batch 12,
//! `[12, C, H, W]` after the stem and in a late stage). Named `kernels/{kernel}/{ours|burn}/{shape}`.

use std::hint::black_box;
use std::time::Duration;

use burn::nn::conv::Conv2dConfig;
use burn::nn::{BatchNormConfig, PaddingConfig2d};
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use silencio_kernels::{SeWeights, act, host_values};

/// `[batch, channels, height, width]` of B0's stage-2 expansion and of a stage-6 block.
const SHAPES: [[usize; 4]; 5] = [
    [12, 96, 64, 157],
    [12, 144, 32, 79],
    [12, 240, 16, 40],
    [12, 672, 8, 20],
    [12, 1152, 4, 10],
];

fn name(s: [usize; 4]) -> String {
    format!("{}x{}x{}x{}", s[0], s[1], s[2], s[3])
}

fn kernels(c: &mut Criterion) {
    let device = Device::flex();
    let mut g = c.benchmark_group("kernels");
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for shape in SHAPES {
        let [_, ch, ..] = shape;
        let x: Tensor<4> = Tensor::random(shape, Distribution::Normal(0.0, 2.0), &device);
        let n = name(shape);

        // SiLU: each call takes its own copy (the kernel works in place).
        g.bench_function(format!("silu/ours/{n}"), |b| {
            b.iter(|| black_box(silencio_kernels::silu(x.clone().add_scalar(0.0))))
        });
        g.bench_function(format!("silu/burn/{n}"), |b| {
            b.iter(|| black_box(burn::tensor::activation::silu(x.clone().add_scalar(0.0))))
        });

        // Inference batch norm + SiLU.
        let bn = BatchNormConfig::new(ch).init(&device);
        let (scale, shift) = silencio_models::layers::batch_norm_affine(&bn);
        g.bench_function(format!("batch_norm_silu/ours/{n}"), |b| {
            b.iter(|| {
                let y = x.clone().add_scalar(0.0);
                black_box(silencio_kernels::batch_norm_act(y, &scale, &shift, act::silu).ok())
            })
        });
        g.bench_function(format!("batch_norm_silu/burn/{n}"), |b| {
            b.iter(|| {
                let y = bn.forward(x.clone().add_scalar(0.0));
                black_box(burn::tensor::activation::silu(y))
            })
        });

        // Depthwise 3×3, stride 1, padding 1.
        let dw = Conv2dConfig::new([ch, ch], [3, 3])
            .with_groups(ch)
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .init(&device);
        let w = host_values(dw.weight.val());
        g.bench_function(format!("depthwise3x3/ours/{n}"), |b| {
            b.iter(|| {
                black_box(
                    silencio_kernels::depthwise_conv2d(x.clone(), &w, 3, 1, [[1, 1], [1, 1]]).ok(),
                )
            })
        });
        g.bench_function(format!("depthwise3x3/burn/{n}"), |b| {
            b.iter(|| black_box(dw.forward(x.clone())))
        });

        // Squeeze-excitation at B0's ratio (C → C/24 → C).
        let sq = (ch / 24).max(1);
        let fc1 = Conv2dConfig::new([ch, sq], [1, 1]).init(&device);
        let fc2 = Conv2dConfig::new([sq, ch], [1, 1]).init(&device);
        let bias = |t: &Option<burn::module::Param<Tensor<1>>>| {
            host_values(t.as_ref().expect("bias").val())
        };
        let (w1, b1, w2, b2) = (
            host_values(fc1.weight.val()),
            bias(&fc1.bias),
            host_values(fc2.weight.val()),
            bias(&fc2.bias),
        );
        let se = SeWeights {
            w1: &w1,
            b1: &b1,
            w2: &w2,
            b2: &b2,
        };
        g.bench_function(format!("squeeze_excitation/ours/{n}"), |b| {
            b.iter(|| {
                // A shared input: the kernel makes its one copy, as Burn's `x * s` allocates.
                black_box(silencio_kernels::squeeze_excitation(x.clone(), se).ok())
            })
        });
        g.bench_function(format!("squeeze_excitation/burn/{n}"), |b| {
            b.iter(|| {
                let s = x.clone().mean_dims(&[2, 3]);
                let s = burn::tensor::activation::sigmoid(
                    fc2.forward(burn::tensor::activation::silu(fc1.forward(s))),
                );
                black_box(x.clone() * s)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
