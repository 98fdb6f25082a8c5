//! Every architecture builds and runs forward on the CPU backend (flex); configuration
//! round-trips; the 3→1 input-channel adaptation is exact.
#![allow(clippy::unwrap_used)]

use burn::tensor::{Device, Distribution, Tensor};
use silencio_models::{
    ARCHITECTURES, HeadConfig, ModelConfig, adapt_input_channels, replace_classifier,
};

fn device() -> Device {
    silencio_infer::default_device().unwrap()
}

fn input(b: usize, c: usize, mel: usize, frames: usize, dev: &Device) -> Tensor<4> {
    Tensor::random([b, c, mel, frames], Distribution::Normal(0.0, 1.0), dev)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

#[test]
fn every_architecture_runs_forward_with_both_heads() {
    let dev = device();
    // The birdclef recipe's window: 128 mels x 313 frames.
    for name in ARCHITECTURES {
        for sed in [false, true] {
            let mut cfg = ModelConfig::named(name, 7, 128).unwrap();
            if sed {
                cfg = cfg.with_sed_head(0.25);
            }
            let model = cfg.init(&dev).unwrap();
            let x = input(2, 1, 128, 313, &dev);
            let out = model.forward(x.clone());
            assert_eq!(out.logits.dims(), [2, 7], "{}", cfg.name());
            let logits = values(out.logits);
            assert!(logits.iter().all(|v| v.is_finite()), "{}", cfg.name());
            // Two different inputs give different embeddings (the graph is wired through;
            // logits of an untrained deep net can round to the bias alone).
            let e = values(model.embed(x));
            let n = e.len() / 2;
            assert!(e[..n] != e[n..], "{}", cfg.name());
            match out.frame_logits {
                Some(f) => {
                    assert!(sed);
                    let [b, t, k] = f.dims();
                    // 313 frames / 32 (CNN14: 313 / 32 by four 2x pools and a stride-free
                    // stem: 313 -> 156 -> 78 -> 39 -> 19 -> 9).
                    assert_eq!((b, k), (2, 7));
                    assert!((9..=10).contains(&t), "{} frames {t}", cfg.name());
                }
                None => assert!(!sed),
            }
        }
    }
}

#[test]
fn sed_clip_logits_are_attention_weighted_frame_logits() {
    let dev = device();
    let cfg = ModelConfig::efficientnet_b0(5).with_sed_head(0.0);
    let model = cfg.init(&dev).unwrap();
    let f = model.features(input(1, 1, 128, 313, &dev));
    let silencio_models::Head::Sed(head) = &model.head else {
        panic!("not a SED head")
    };
    let o = head.forward(f);
    let att = values(o.attention.clone());
    let frames = values(o.frames.clone()); // [1, T, K]
    let clip = values(o.clip);
    let [_, k, t] = o.attention.dims();
    for c in 0..k {
        let w: f32 = (0..t).map(|i| att[c * t + i]).sum();
        assert!((w - 1.0).abs() < 1e-5, "attention over frames sums to {w}");
        let want: f32 = (0..t).map(|i| att[c * t + i] * frames[i * k + c]).sum();
        assert!((clip[c] - want).abs() < 1e-4 * (1.0 + want.abs()));
    }
}

#[test]
fn config_round_trips_through_json() {
    for name in ARCHITECTURES {
        let cfg = ModelConfig::named(name, 206, 128)
            .unwrap()
            .with_input_norm(-40.0, 20.0);
        let json = serde_json::to_string(&cfg).unwrap();
        let back: ModelConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        let sed = cfg.with_sed_head(0.1);
        let back: ModelConfig =
            serde_json::from_str(&serde_json::to_string(&sed).unwrap()).unwrap();
        assert!(matches!(back.head, HeadConfig::Sed(_)));
    }
}

#[test]
fn invalid_configs_are_refused_with_a_reason() {
    let dev = device();
    assert!(ModelConfig::named("vgg16", 3, 128).is_err());
    let e = ModelConfig::efficientnet_b0(0).init(&dev).unwrap_err();
    assert_eq!(e.kind(), "invalid_config");
    let e = ModelConfig::resnet50(3)
        .with_input_norm(0.0, 0.0)
        .init(&dev)
        .unwrap_err();
    assert!(e.to_string().contains("std"), "{e}");
}

#[test]
fn input_channel_adaptation_equals_the_three_channel_model_on_repeated_input() {
    let dev = device();
    for name in ["efficientnet_b0", "resnet50"] {
        let mut cfg = ModelConfig::named(name, 4, 64).unwrap();
        match &mut cfg.backbone {
            silencio_models::BackboneConfig::Efficientnet(c) => c.in_channels = 3,
            silencio_models::BackboneConfig::Resnet(c) => c.in_channels = 3,
            _ => unreachable!(),
        }
        let three = cfg.init(&dev).unwrap();
        let x = input(1, 1, 64, 96, &dev);
        let want = values(three.forward(Tensor::cat(vec![x.clone(); 3], 1)).logits);
        let mut cfg1 = cfg.clone();
        let one = adapt_input_channels(three, &mut cfg1).unwrap();
        assert_eq!(cfg1.in_channels(), 1);
        let got = values(one.forward(x).logits);
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{name}: {a} vs {b}"
            );
        }
        // A fresh classifier for a new class list keeps the backbone.
        let one = replace_classifier(one, &mut cfg1, 9, &dev).unwrap();
        assert_eq!(cfg1.num_classes, 9);
        let y = one.forward(input(1, 1, 64, 96, &dev)).logits;
        assert_eq!(y.dims(), [1, 9]);
    }
}

#[test]
fn input_norm_is_applied_inside_the_model() {
    let dev = device();
    let cfg = ModelConfig::efficientnet_lite0(3);
    let plain = cfg.init(&dev).unwrap();
    let mut normed = plain.clone();
    normed.input_norm = Some([-40.0, 20.0]);
    let x = input(1, 1, 64, 64, &dev);
    let a = values(normed.forward(x.clone() * 20.0 - 40.0).logits);
    let b = values(plain.forward(x).logits);
    for (a, b) in a.iter().zip(&b) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()));
    }
}
