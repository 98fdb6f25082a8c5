//! The per-channel kernels against scalar `f64` references (depthwise convolution over every
//! padding and stride the models use, odd sizes, planes narrower than the kernel) and the
//! tensor entry points against Burn's own modules on flex.
#![allow(clippy::unwrap_used)]

use burn::module::Param;
use burn::nn::conv::Conv2dConfig;
use burn::nn::{BatchNormConfig, PaddingConfig2d};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use silencio_kernels::plane::{DwScratch, depthwise_plane, dot, sum};
use silencio_kernels::{
    DwGeometry, SeWeights, batch_norm_act, depthwise_conv2d, host_values, squeeze_excitation,
};

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// The definition, in `f64`, one output at a time.
fn depthwise_reference(input: &[f32], weights: &[f32], g: &DwGeometry) -> Vec<f64> {
    let ([h, w], [ho, wo], k, s) = (g.input, g.output, g.kernel, g.stride);
    let mut out = vec![0.0; ho * wo];
    for oy in 0..ho {
        for ox in 0..wo {
            let mut acc = 0.0f64;
            for ky in 0..k {
                for kx in 0..k {
                    let iy = (oy * s + ky) as isize - g.pad[0] as isize;
                    let ix = (ox * s + kx) as isize - g.pad[1] as isize;
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                        acc += f64::from(weights[ky * k + kx])
                            * f64::from(input[iy as usize * w + ix as usize]);
                    }
                }
            }
            out[oy * wo + ox] = acc;
        }
    }
    out
}

#[test]
fn depthwise_plane_matches_the_definition() {
    let mut cases = 0;
    // One scratch across every geometry: what it caches must follow the geometry.
    let mut scratch = DwScratch::default();
    for k in [1usize, 3, 5] {
        for stride in [1, 2] {
            for (h, w) in [(1, 1), (2, 3), (7, 9), (16, 40), (5, 33)] {
                for pad in [
                    [[0, 0], [0, 0]],
                    [[(k - 1) / 2, (k - 1) / 2], [(k - 1) / 2, (k - 1) / 2]],
                    [[0, k - 1], [1, k.saturating_sub(2)]], // asymmetric, TF "SAME"-like
                ] {
                    if h + pad[0][0] + pad[0][1] < k || w + pad[1][0] + pad[1][1] < k {
                        continue;
                    }
                    let g = DwGeometry::new([h, w], k, stride, pad);
                    let input = values(h * w, (h * 31 + w) as u64);
                    let weights = values(k * k, k as u64 + 7);
                    let mut out = vec![f32::NAN; g.output[0] * g.output[1]];
                    depthwise_plane(&input, &weights, &g, &mut out, &mut scratch);
                    let r = depthwise_reference(&input, &weights, &g);
                    for (i, (a, b)) in out.iter().zip(&r).enumerate() {
                        assert!(
                            (f64::from(*a) - b).abs() <= 1e-6 * (k * k) as f64,
                            "k {k} s {stride} {h}x{w} pad {pad:?} at {i}: {a} vs {b}"
                        );
                    }
                    cases += 1;
                }
            }
        }
    }
    assert!(cases > 60, "{cases}");
}

#[test]
fn sums_and_dots_match_f64_for_every_length() {
    for n in 0..=70 {
        let a = values(n, 3);
        let b = values(n, 4);
        let s: f64 = a.iter().map(|&x| f64::from(x)).sum();
        let d: f64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum();
        assert!((f64::from(sum(&a)) - s).abs() <= 1e-5, "sum n {n}");
        assert!((f64::from(dot(&a, &b)) - d).abs() <= 1e-5, "dot n {n}");
    }
}

fn to_vec(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn depthwise_conv2d_matches_burns_grouped_convolution() {
    let d = Device::flex();
    d.seed(1);
    for (k, stride, hw) in [(3, 1, [16, 40]), (5, 2, [17, 39]), (3, 2, [4, 10])] {
        let p = (k - 1) / 2;
        let conv = Conv2dConfig::new([24, 24], [k, k])
            .with_stride([stride, stride])
            .with_groups(24)
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_bias(false)
            .init(&d);
        let x = Tensor::<4>::random([2, 24, hw[0], hw[1]], Distribution::Normal(0.0, 1.0), &d);
        let burn = to_vec(conv.forward(x.clone()));
        let w = host_values(conv.weight.val());
        let ours = depthwise_conv2d(x, &w, k, stride, [[p, p], [p, p]]).unwrap();
        assert_eq!(ours.dims()[0..2], [2, 24]);
        let e = max_rel(&to_vec(ours), &burn);
        assert!(e <= 1e-5, "k {k} stride {stride}: {e:e}");
    }
    // Not depthwise for this input (channel mismatch), or under autodiff: the caller's path.
    let pad = [[1, 1], [1, 1]];
    let w = vec![1.0; 8 * 9];
    assert!(depthwise_conv2d(Tensor::zeros([1, 4, 8, 8], &d), &w, 3, 1, pad).is_err());
    let ad = Device::flex().autodiff();
    let w = vec![1.0; 4 * 9];
    assert!(depthwise_conv2d(Tensor::zeros([1, 4, 8, 8], &ad), &w, 3, 1, pad).is_err());
}

#[test]
fn batch_norm_act_matches_burns_batch_norm_then_silu() {
    let d = Device::flex();
    d.seed(2);
    let mut bn = BatchNormConfig::new(16).with_epsilon(1e-3).init(&d);
    let rand = |n| Tensor::<1>::random([n], Distribution::Uniform(0.5, 2.0), &d);
    bn.gamma = Param::from_tensor(rand(16));
    bn.beta = Param::from_tensor(rand(16).sub_scalar(1.0));
    bn.running_mean = burn::module::RunningState::new(rand(16).sub_scalar(1.2));
    bn.running_var = burn::module::RunningState::new(rand(16));
    let x = Tensor::<4>::random([3, 16, 5, 7], Distribution::Normal(0.0, 2.0), &d);
    let burn = to_vec(burn::tensor::activation::silu(bn.forward(x.clone())));
    let v = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
    let (g, b, m, var) = (
        v(bn.gamma.val()),
        v(bn.beta.val()),
        v(bn.running_mean.value()),
        v(bn.running_var.value()),
    );
    let scale: Vec<f32> = g
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + 1e-3).sqrt())
        .collect();
    let shift: Vec<f32> = b
        .iter()
        .zip(&m)
        .zip(&scale)
        .map(|((b, m), a)| b - m * a)
        .collect();
    let ours = batch_norm_act(x, &scale, &shift, silencio_kernels::act::silu).unwrap();
    let e = max_rel(&to_vec(ours), &burn);
    assert!(e <= 1e-6, "{e:e}");
}

#[test]
fn squeeze_excitation_matches_burns_layers() {
    let d = Device::flex();
    d.seed(3);
    let (c, sq) = (40, 10);
    let fc1 = Conv2dConfig::new([c, sq], [1, 1]).init(&d);
    let fc2 = Conv2dConfig::new([sq, c], [1, 1]).init(&d);
    let x = Tensor::<4>::random([2, c, 6, 11], Distribution::Normal(0.5, 1.0), &d);
    let s = x.clone().mean_dims(&[2, 3]);
    let s = burn::tensor::activation::sigmoid(
        fc2.forward(burn::tensor::activation::silu(fc1.forward(s))),
    );
    let burn = to_vec(x.clone() * s);
    let bias = |c: &burn::nn::conv::Conv2d| host_values(c.bias.as_ref().unwrap().val());
    let (w1, w2) = (host_values(fc1.weight.val()), host_values(fc2.weight.val()));
    let (b1, b2) = (bias(&fc1), bias(&fc2));
    let se = SeWeights {
        w1: &w1,
        b1: &b1,
        w2: &w2,
        b2: &b2,
    };
    assert_eq!(se.dims(), Some((c, sq)));
    // Weights of another width: the caller's path.
    let narrow = SeWeights { b2: &b2[1..], ..se };
    assert!(squeeze_excitation(x.clone(), narrow).is_err());
    let ours = squeeze_excitation(x, se).unwrap();
    let e = max_rel(&to_vec(ours), &burn);
    assert!(e <= 1e-6, "{e:e}");
}

#[test]
fn in_place_kernels_leave_a_shared_input_alone() {
    let d = Device::flex();
    let data = TensorData::new(values(2 * 3 * 4 * 5, 9), [2, 3, 4, 5]);
    let x = Tensor::<4>::from_data(data.clone(), &d);
    let keep = x.clone();
    let _ = batch_norm_act(x, &[2.0; 3], &[1.0; 3], |v| v).unwrap();
    assert_eq!(keep.into_data(), data);
}
