//! The activation kernels against `f64` references: a dense sweep of the whole input range,
//! special values (NaN, ±∞, ±100, subnormals, ±0) and lengths that are not a multiple of any
//! SIMD width; the tensor entry points against Burn's ops on flex and under autodiff.
#![allow(clippy::unwrap_used)]

use burn::tensor::{Device, Tensor, TensorData};
use silencio_kernels::act::{
    EXP_MAX_REL_ERR, SIGMOID_MAX_REL_ERR, exp_in_place, sigmoid_in_place, silu_in_place,
};

fn exp64(x: f32) -> f64 {
    f64::from(x).exp()
}
fn sigmoid64(x: f32) -> f64 {
    1.0 / (1.0 + (-f64::from(x)).exp())
}
fn silu64(x: f32) -> f64 {
    f64::from(x) * sigmoid64(x)
}

/// 2²⁰ evenly spaced points of [lo, hi] plus their neighbours one ulp away.
fn sweep(lo: f32, hi: f32) -> Vec<f32> {
    let n = 1 << 20;
    (0..n)
        .flat_map(|i| {
            let x = lo + (hi - lo) * (i as f32 / (n - 1) as f32);
            [x, f32::from_bits(x.to_bits() + 1)]
        })
        .collect()
}

/// Largest relative error of `kernel` against `reference` over `xs`, where the reference is a
/// normal `f32` (subnormal results are checked in absolute terms by the caller).
fn max_rel_err(xs: &[f32], kernel: fn(&mut [f32]), reference: fn(f32) -> f64) -> (f64, f32) {
    let mut ys = xs.to_vec();
    kernel(&mut ys);
    let mut worst = (0.0, 0.0);
    for (&x, &y) in xs.iter().zip(&ys) {
        let r = reference(x);
        if r.abs() < f64::from(f32::MIN_POSITIVE) || r.abs() > f64::from(f32::MAX) {
            continue;
        }
        let e = ((f64::from(y) - r) / r).abs();
        if e > worst.0 || e.is_nan() {
            worst = (e, x);
        }
    }
    worst
}

#[test]
fn exp_is_within_its_stated_error_over_the_whole_range() {
    let xs = sweep(-104.0, 89.0);
    let (e, at) = max_rel_err(&xs, exp_in_place, exp64);
    println!("exp: max relative error {e:.3e} at {at}");
    assert!(e <= EXP_MAX_REL_ERR, "exp: {e:.3e} at {at}");
    // Subnormal results: absolute error within one subnormal step (2⁻¹⁴⁹) plus rounding.
    let sub = sweep(-103.9, -87.4);
    let mut ys = sub.clone();
    exp_in_place(&mut ys);
    for (&x, &y) in sub.iter().zip(&ys) {
        let err = (f64::from(y) - exp64(x)).abs();
        assert!(err <= 2f64.powi(-148), "exp({x}) = {y:e}, error {err:e}");
    }
}

#[test]
fn sigmoid_and_silu_are_within_their_stated_error() {
    // Below −87.3, sigmoid(x) is subnormal and SiLU = x · sigmoid(x) inherits its few bits:
    // relative error over [−87.3, 104], absolute error (|x| subnormal steps) below.
    for (name, kernel, reference) in [
        (
            "sigmoid",
            sigmoid_in_place as fn(&mut [f32]),
            sigmoid64 as fn(f32) -> f64,
        ),
        ("silu", silu_in_place, silu64),
    ] {
        let (e, at) = max_rel_err(&sweep(-87.3, 104.0), kernel, reference);
        println!("{name}: max relative error {e:.3e} at {at}");
        assert!(e <= SIGMOID_MAX_REL_ERR, "{name}: {e:.3e} at {at}");
        let low = sweep(-104.0, -87.3);
        let mut ys = low.clone();
        kernel(&mut ys);
        for (&x, &y) in low.iter().zip(&ys) {
            let err = (f64::from(y) - reference(x)).abs();
            assert!(
                err <= 105.0 * 2f64.powi(-149),
                "{name}({x}) = {y:e}, error {err:e}"
            );
        }
    }
}

#[test]
fn special_values() {
    let sub = f32::from_bits(1); // smallest subnormal
    let xs = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        100.0,
        -100.0,
        0.0,
        -0.0,
        sub,
        -sub,
        f32::MIN_POSITIVE,
        88.8,
        -104.0,
    ];
    let run = |k: fn(&mut [f32])| {
        let mut v = xs.to_vec();
        k(&mut v);
        v
    };
    let e = run(exp_in_place);
    assert!(e[0].is_nan());
    assert_eq!(e[1], f32::INFINITY);
    assert_eq!(e[2], 0.0);
    assert_eq!(e[3], f32::INFINITY); // e¹⁰⁰ > f32::MAX
    assert!((f64::from(e[4]) - exp64(-100.0)).abs() <= 2f64.powi(-148)); // subnormal 3.7e-44
    assert_eq!([e[5], e[6], e[7], e[8], e[9]], [1.0; 5]);
    assert_eq!(e[10], f32::INFINITY);
    assert_eq!(e[11], 0.0);

    let s = run(sigmoid_in_place);
    assert!(s[0].is_nan());
    assert_eq!([s[1], s[2], s[3]], [1.0, 0.0, 1.0]);
    assert!((f64::from(s[4]) - sigmoid64(-100.0)).abs() <= 2f64.powi(-148)); // subnormal
    assert_eq!([s[5], s[6], s[7], s[8]], [0.5; 4]);

    let w = run(silu_in_place);
    assert!(w[0].is_nan());
    assert_eq!(w[1], f32::INFINITY);
    assert!(
        w[2].is_nan(),
        "−∞ · sigmoid(−∞) = −∞ · 0, as in Burn and PyTorch"
    );
    assert_eq!(w[3], 100.0);
    // −100 · e⁻¹⁰⁰ / (1 + e⁻¹⁰⁰) ≈ −3.7e-42, subnormal: within 100 subnormal steps.
    assert!((f64::from(w[4]) - silu64(-100.0)).abs() <= 100.0 * 2f64.powi(-149));
    assert_eq!(w[5].to_bits(), 0.0f32.to_bits());
    assert_eq!(w[6].to_bits(), (-0.0f32).to_bits());
    // Subnormal inputs: x / 2, exactly.
    assert_eq!(w[7], sub / 2.0);
    assert_eq!(w[8], -sub / 2.0);
}

#[test]
fn every_length_and_alignment_matches_the_lane_function() {
    // Lengths 0..=70 at offsets 0..=3: the vector body, its remainder loop and unaligned
    // starts all give what one element at a time gives.
    let base: Vec<f32> = (0..80).map(|i| (i as f32 - 40.0) * 0.37).collect();
    for offset in 0..4 {
        for len in 0..=70 {
            let src = &base[offset..offset + len];
            let mut v = src.to_vec();
            silu_in_place(&mut v);
            for (&x, &y) in src.iter().zip(&v) {
                let mut one = [x];
                silu_in_place(&mut one);
                assert_eq!(
                    y.to_bits(),
                    one[0].to_bits(),
                    "len {len} offset {offset} x {x}"
                );
                assert_eq!(y.to_bits(), silencio_kernels::act::silu(x).to_bits());
            }
        }
    }
}

fn tensor(values: &[f32], device: &Device) -> Tensor<2> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), [values.len() / 50, 50]),
        device,
    )
}

#[test]
fn tensor_entry_points_match_burn_on_flex_and_under_autodiff() {
    let xs: Vec<f32> = (0..50_000)
        .map(|i| ((i * 7919) % 20_001) as f32 * 0.002 - 20.0)
        .collect();
    for device in [Device::flex(), Device::flex().autodiff()] {
        let x = tensor(&xs, &device);
        for (name, ours, burns) in [
            (
                "silu",
                silencio_kernels::silu(x.clone()),
                burn::tensor::activation::silu(x.clone()),
            ),
            (
                "sigmoid",
                silencio_kernels::sigmoid(x.clone()),
                burn::tensor::activation::sigmoid(x.clone()),
            ),
        ] {
            let a = ours.into_data().try_to_vec::<f32>().unwrap();
            let b = burns.into_data().try_to_vec::<f32>().unwrap();
            let worst = a
                .iter()
                .zip(&b)
                .map(|(p, q)| f64::from((p - q).abs()) / f64::from(q.abs()).max(1e-30))
                .fold(0.0, f64::max);
            assert!(
                worst <= 2.0 * SIGMOID_MAX_REL_ERR,
                "{name} on {device:?}: {worst:e}"
            );
        }
    }
    // The input survives when its buffer is shared: the kernel copies instead of writing in.
    let x = tensor(&xs, &Device::flex());
    let keep = x.clone();
    let _ = silencio_kernels::silu(x);
    assert_eq!(keep.into_data().try_to_vec::<f32>().unwrap(), xs);
}

#[test]
fn gradients_flow_through_the_entry_points() {
    // Under autodiff the entry point is Burn's op, so training sees the same graph.
    let device = Device::flex().autodiff();
    let x = Tensor::<1>::from_data(TensorData::new(vec![-2.0f32, 0.0, 3.0], [3]), &device)
        .require_grad();
    let g = silencio_kernels::silu(x.clone()).sum().backward();
    let dx = x.grad(&g).unwrap().into_data().try_to_vec::<f32>().unwrap();
    // d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x)))
    for (x, d) in [-2.0f64, 0.0, 3.0].iter().zip(dx) {
        let s = 1.0 / (1.0 + (-x).exp());
        assert!((f64::from(d) - s * (1.0 + x * (1.0 - s))).abs() < 1e-6);
    }
}
