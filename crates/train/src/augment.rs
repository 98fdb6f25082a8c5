//! Augmentations on log-mel windows (dB, `10·log10(power)` as the audio crate computes them).
//!
//! - random 5 s crops across two neighbouring windows of a clip (frame-exact: a log-mel frame
//!   depends only on its own STFT frame);
//! - background noise added in the power domain at a random SNR;
//! - SpecAugment time and frequency masks (Park et al. 2019), filled with the window's mean;
//! - mixup (Zhang et al. 2018) with a Beta(α, α) weight; targets take the element-wise max, as
//!   the BirdCLEF winners do, since both calls are audible in the mix.

use silencio_common::SplitMix64;

/// The augmentation part of the training recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentConfig {
    /// Random crops across neighbouring windows.
    pub random_crop: bool,
    /// Probability of background noise.
    pub noise_prob: f64,
    /// SNR range, dB.
    pub noise_snr_db: [f32; 2],
    /// Time masks per window and their widest width (frames).
    pub time_masks: usize,
    /// Widest time mask.
    pub time_mask_frames: usize,
    /// Frequency masks per window.
    pub freq_masks: usize,
    /// Widest frequency mask (mel bins).
    pub freq_mask_bins: usize,
    /// Probability of mixup per item.
    pub mixup_prob: f64,
    /// Beta(α, α).
    pub mixup_alpha: f64,
}

fn normal(rng: &mut SplitMix64) -> f64 {
    // Box–Muller; 1 - u keeps the log argument in (0, 1].
    let u1 = 1.0 - rng.uniform();
    let u2 = rng.uniform();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn gamma(shape: f64, rng: &mut SplitMix64) -> f64 {
    // Marsaglia & Tsang (2000); shape < 1 through the boost Γ(a) = Γ(a+1)·U^(1/a).
    if shape < 1.0 {
        let u = rng.uniform().max(f64::MIN_POSITIVE);
        return gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = rng.uniform().max(f64::MIN_POSITIVE);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// A Beta(α, α) draw.
pub fn beta(alpha: f64, rng: &mut SplitMix64) -> f64 {
    let a = gamma(alpha, rng);
    let b = gamma(alpha, rng);
    if a + b == 0.0 { 0.5 } else { a / (a + b) }
}

/// A random 5 s crop of `cur` followed by `next` (both `mels × frames`); `cur` unchanged when
/// there is no successor or crops are off.
pub fn crop(
    cur: &[f32],
    next: Option<&[f32]>,
    mels: usize,
    frames: usize,
    cfg: &AugmentConfig,
    rng: &mut SplitMix64,
) -> Vec<f32> {
    let Some(next) = next.filter(|_| cfg.random_crop) else {
        return cur.to_vec();
    };
    let shift = rng.below(frames + 1);
    let mut out = Vec::with_capacity(mels * frames);
    for m in 0..mels {
        let row = m * frames;
        out.extend_from_slice(&cur[row + shift..row + frames]);
        out.extend_from_slice(&next[row..row + shift]);
    }
    out
}

/// Adds a random background window at an SNR drawn from the range, in the power domain.
pub fn add_noise(x: &mut [f32], noise: &[Vec<f32>], cfg: &AugmentConfig, rng: &mut SplitMix64) {
    if noise.is_empty() || rng.uniform() >= cfg.noise_prob {
        return;
    }
    let n = &noise[rng.below(noise.len())];
    if n.len() != x.len() {
        return;
    }
    let to_power = |db: f32| 10f32.powf(db / 10.0);
    let p_sig: f64 = x.iter().map(|&v| to_power(v) as f64).sum();
    let p_noise: f64 = n.iter().map(|&v| to_power(v) as f64).sum();
    if p_noise <= 0.0 {
        return;
    }
    let [lo, hi] = cfg.noise_snr_db;
    let snr = lo as f64 + (hi - lo) as f64 * rng.uniform();
    let gain = p_sig / p_noise / 10f64.powf(snr / 10.0);
    for (v, &nv) in x.iter_mut().zip(n) {
        let p = to_power(*v) as f64 + gain * to_power(nv) as f64;
        *v = (10.0 * p.max(1e-10).log10()) as f32;
    }
}

/// Where SpecAugment masks one window: `(first, width)` of each time stripe (frames) and each
/// frequency stripe (mel bins). Drawing and applying are apart so that the randomness can be
/// fixed from outside (the PyTorch equivalence test feeds both frameworks the same masks).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpecMasks {
    /// Time stripes.
    pub time: Vec<(usize, usize)>,
    /// Frequency stripes.
    pub freq: Vec<(usize, usize)>,
}

/// Draws `time_masks` time stripes and `freq_masks` mel stripes (Park et al. 2019).
pub fn draw_spec_masks(
    mels: usize,
    frames: usize,
    cfg: &AugmentConfig,
    rng: &mut SplitMix64,
) -> SpecMasks {
    let time = (0..cfg.time_masks)
        .map(|_| {
            let w = rng.below(cfg.time_mask_frames.min(frames) + 1);
            (rng.below(frames - w + 1), w)
        })
        .collect();
    let freq = (0..cfg.freq_masks)
        .map(|_| {
            let w = rng.below(cfg.freq_mask_bins.min(mels) + 1);
            (rng.below(mels - w + 1), w)
        })
        .collect();
    SpecMasks { time, freq }
}

/// Sets the stripes of `masks` to the mean of the window before masking. Stripes reaching past
/// the window are clipped to it.
pub fn apply_spec_masks(x: &mut [f32], mels: usize, frames: usize, masks: &SpecMasks) {
    if x.is_empty() || x.len() != mels * frames {
        return;
    }
    // Summed in f64: a float32 running sum over a 40 k-value window drifts by ~1e-4.
    let mean = (x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64) as f32;
    for &(t0, w) in &masks.time {
        let (t0, t1) = (t0.min(frames), (t0 + w).min(frames));
        for m in 0..mels {
            x[m * frames + t0..m * frames + t1].fill(mean);
        }
    }
    for &(m0, w) in &masks.freq {
        let (m0, m1) = (m0.min(mels), (m0 + w).min(mels));
        x[m0 * frames..m1 * frames].fill(mean);
    }
}

/// SpecAugment: `time_masks` time stripes and `freq_masks` mel stripes set to the window mean.
pub fn spec_augment(
    x: &mut [f32],
    mels: usize,
    frames: usize,
    cfg: &AugmentConfig,
    rng: &mut SplitMix64,
) {
    if x.is_empty() {
        return;
    }
    let masks = draw_spec_masks(mels, frames, cfg, rng);
    apply_spec_masks(x, mels, frames, &masks);
}

/// One mixup of a batch: item `item` becomes `lambda`·itself + (1 − `lambda`)·item `partner`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MixPair {
    /// The item that is mixed.
    pub item: usize,
    /// The item mixed into it (another one).
    pub partner: usize,
    /// Weight of the item itself.
    pub lambda: f32,
}

/// Draws the mixups of a batch of `b`: each item with probability `mixup_prob`, a random other
/// partner, λ ~ Beta(α, α).
pub fn draw_mixup(b: usize, cfg: &AugmentConfig, rng: &mut SplitMix64) -> Vec<MixPair> {
    if b < 2 || cfg.mixup_prob <= 0.0 {
        return Vec::new();
    }
    let mut pairs = Vec::new();
    for item in 0..b {
        if rng.uniform() >= cfg.mixup_prob {
            continue;
        }
        let partner = (item + 1 + rng.below(b - 1)) % b;
        let lambda = beta(cfg.mixup_alpha, rng) as f32;
        pairs.push(MixPair {
            item,
            partner,
            lambda,
        });
    }
    pairs
}

/// Applies `pairs` (power domain; targets take the element-wise max). Partners are always the
/// unmixed originals. Pairs naming items outside the batch are skipped.
pub fn apply_mixup(xs: &mut [Vec<f32>], ys: &mut [Vec<f32>], pairs: &[MixPair]) {
    if pairs.is_empty() {
        return;
    }
    let originals_x = xs.to_vec();
    let originals_y = ys.to_vec();
    for p in pairs {
        let (Some(x), Some(u), Some(y), Some(v)) = (
            xs.get_mut(p.item),
            originals_x.get(p.partner),
            ys.get_mut(p.item),
            originals_y.get(p.partner),
        ) else {
            continue;
        };
        let lam = p.lambda;
        for (a, &b) in x.iter_mut().zip(u) {
            let pw = lam * 10f32.powf(*a / 10.0) + (1.0 - lam) * 10f32.powf(b / 10.0);
            *a = 10.0 * pw.max(1e-10).log10();
        }
        for (t, &w) in y.iter_mut().zip(v) {
            *t = t.max(w);
        }
    }
}

/// Applies `pairs` to other per-item rows with `op(item's value, partner's value)`, partners
/// being the unmixed originals: the teacher fields of a mixed item follow its targets.
fn mix_rows(rows: &mut [Vec<f32>], pairs: &[MixPair], op: impl Fn(f32, f32) -> f32) {
    if pairs.is_empty() {
        return;
    }
    let originals = rows.to_vec();
    for p in pairs {
        let (Some(r), Some(o)) = (rows.get_mut(p.item), originals.get(p.partner)) else {
            continue;
        };
        for (a, &b) in r.iter_mut().zip(o) {
            *a = op(*a, b);
        }
    }
}

/// Mixes teacher probabilities like targets: the element-wise max of both items'.
pub fn mix_rows_max(rows: &mut [Vec<f32>], pairs: &[MixPair]) {
    mix_rows(rows, pairs, f32::max);
}

/// Mixes 0/1 masks: an entry of a mixed item counts only when both items had it (a teacher
/// output, a label), so no loss term rests on half of a mix.
pub fn mix_rows_product(rows: &mut [Vec<f32>], pairs: &[MixPair]) {
    mix_rows(rows, pairs, |a, b| a * b);
}

/// Mixup within the batch: item i takes λ·x_i + (1−λ)·x_j of a random partner j (power
/// domain) and the element-wise max of both targets.
pub fn mixup(xs: &mut [Vec<f32>], ys: &mut [Vec<f32>], cfg: &AugmentConfig, rng: &mut SplitMix64) {
    let pairs = draw_mixup(xs.len(), cfg, rng);
    apply_mixup(xs, ys, &pairs);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AugmentConfig {
        AugmentConfig {
            random_crop: true,
            noise_prob: 1.0,
            noise_snr_db: [10.0, 10.0],
            time_masks: 1,
            time_mask_frames: 3,
            freq_masks: 1,
            freq_mask_bins: 2,
            mixup_prob: 1.0,
            mixup_alpha: 0.4,
        }
    }

    #[test]
    fn crop_takes_a_contiguous_span_of_both_windows() {
        // 2 mels × 4 frames; values encode (window, mel, frame).
        let cur: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let next: Vec<f32> = (0..8).map(|v| 100.0 + v as f32).collect();
        let mut rng = SplitMix64::new(3);
        for _ in 0..20 {
            let c = crop(&cur, Some(&next), 2, 4, &cfg(), &mut rng);
            // Each mel row is a run of 4 consecutive frames of the concatenated rows.
            for m in 0..2 {
                let joined: Vec<f32> = cur[m * 4..m * 4 + 4]
                    .iter()
                    .chain(&next[m * 4..m * 4 + 4])
                    .copied()
                    .collect();
                let row = &c[m * 4..m * 4 + 4];
                assert!(joined.windows(4).any(|w| w == row), "{row:?}");
            }
        }
    }

    #[test]
    fn noise_at_the_asked_snr() {
        let x = vec![0.0f32; 16]; // power 1 per bin
        let noise = vec![vec![-20.0f32; 16]]; // power 0.01 per bin
        let mut y = x.clone();
        add_noise(&mut y, &noise, &cfg(), &mut SplitMix64::new(1));
        // 10 dB SNR: the noise adds 0.1 per bin.
        for v in y {
            assert!((v - 10.0 * 1.1f32.log10()).abs() < 1e-4, "{v}");
        }
    }

    #[test]
    fn beta_mean_and_masks() {
        let mut rng = SplitMix64::new(7);
        let n = 20_000;
        let mean: f64 = (0..n).map(|_| beta(0.4, &mut rng)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        let mut x: Vec<f32> = (0..40).map(|v| v as f32).collect();
        spec_augment(&mut x, 4, 10, &cfg(), &mut rng);
        let changed = x
            .iter()
            .enumerate()
            .filter(|(i, v)| **v != *i as f32)
            .count();
        assert!(changed <= 4 * 3 + 2 * 10, "{changed}");
    }

    #[test]
    fn teacher_rows_mix_by_max_and_masks_by_product() {
        // Item 0 takes item 1 (originals: item 1 is mixed with the unmixed item 0).
        let pairs = [
            MixPair {
                item: 0,
                partner: 1,
                lambda: 0.3,
            },
            MixPair {
                item: 1,
                partner: 0,
                lambda: 0.6,
            },
        ];
        let mut probs = vec![vec![0.2, 0.9], vec![0.5, 0.1], vec![0.7, 0.7]];
        mix_rows_max(&mut probs, &pairs);
        assert_eq!(probs, vec![vec![0.5, 0.9], vec![0.5, 0.9], vec![0.7, 0.7]]);
        let mut masks = vec![vec![1.0, 0.0], vec![1.0, 1.0], vec![0.0, 1.0]];
        mix_rows_product(&mut masks, &pairs);
        assert_eq!(masks, vec![vec![1.0, 0.0], vec![1.0, 0.0], vec![0.0, 1.0]]);
    }

    #[test]
    fn mixup_keeps_both_labels() {
        let mut xs = vec![vec![0.0f32; 4], vec![-10.0f32; 4]];
        let mut ys = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        mixup(&mut xs, &mut ys, &cfg(), &mut SplitMix64::new(5));
        assert_eq!(ys, vec![vec![1.0, 1.0], vec![1.0, 1.0]]);
        assert!(xs[0].iter().all(|v| *v <= 0.0 && *v >= -10.0));
    }
}
