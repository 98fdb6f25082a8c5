//! `birdnet-probe` experiments: a linear head (logistic regression, trained with Burn's AdamW)
//! on frozen BirdNET V2.4 embeddings of the same windows the spectrogram models train on.
//! Recipe: Ghani et al., "Global birdsong embeddings enable superior transfer learning for
//! bioacoustic classification" (Scientific Reports 2023); the embedding and the bundle format
//! are in `silencio_onnx::probe`.
//!
//! The shards hold log-mel features only, so each clip is decoded again from `train_audio` at
//! 48 kHz. Embeddings are cached beside the shards (`birdnet-embeddings.safetensors`, keyed by
//! window index and rewritten atomically), so repeated runs and `--resume` skip BirdNET.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use silencio_audio::DecodeOptions;
use silencio_common::SplitMix64;
use silencio_data::splits::Split;
use silencio_infer::{Provenance, Species};
use silencio_onnx::BirdNetProbe;
use silencio_onnx::probe::{EMBEDDING_DIM, ProbeBundle, ProbeHead, ProbeSpec};

use crate::dataset::WindowStore;
use crate::experiment::Experiment;
use crate::model::{LossSpec, multilabel_loss};
use crate::pipeline::{Candidate, RunOptions, RunOutcome, finish};
use crate::track::Tracker;
use crate::{Error, Result, predict};
use silencio_data::PeriodFilter;

/// Name of the embedding cache inside the shard directory.
pub const CACHE_FILE: &str = "birdnet-embeddings.safetensors";

fn onnx(e: silencio_onnx::Error) -> Error {
    Error::Training {
        message: format!("birdnet: {e}"),
    }
}

/// Runs a probe experiment after the shards are ready.
pub(crate) fn run(
    opts: &RunOptions,
    exp: &Experiment,
    dir: &Path,
    tracker: &mut Tracker,
    store: &Arc<WindowStore>,
    species: &[Species],
    log: &mut dyn FnMut(&str),
) -> Result<RunOutcome> {
    let device = silencio_infer::parse_device(&exp.train.devices[0])?;
    let birdnet = silencio_onnx::BirdNet::load(&device).map_err(onnx)?;
    let train_idx = store.select(Split::Train, exp.data.period);
    let valid_idx = store.select(Split::Valid, PeriodFilter::All);
    let t_emb = Instant::now();
    let emb = embeddings(store, &exp.data.root, &birdnet, &exp.data.shards, log)?;
    log(&format!(
        "BirdNET embeddings of {} windows ready in {:.1} s",
        emb.len(),
        t_emb.elapsed().as_secs_f64()
    ));
    let rows = |idx: &[usize]| -> Result<Vec<f32>> {
        let mut x = Vec::with_capacity(idx.len() * EMBEDDING_DIM);
        for i in idx {
            x.extend(emb.get(i).ok_or_else(|| Error::Data {
                message: format!("no embedding for window {i}"),
            })?);
        }
        Ok(x)
    };
    let (xt, xv) = (rows(&train_idx)?, rows(&valid_idx)?);
    let targets = |idx: &[usize], w: f32| -> Vec<f32> {
        idx.iter().flat_map(|&i| store.targets(i, w)).collect()
    };
    let yt = targets(&train_idx, exp.train.secondary_weight);
    let yv = targets(&valid_idx, 1.0);

    let t_train = Instant::now();
    let (head, epochs) = fit_head(exp, &device, (&xt, &yt), (&xv, &yv), tracker, log)?;
    let train_s = t_train.elapsed().as_secs_f64();
    log(&format!(
        "trained the probe head for {epochs} epochs in {train_s:.1} s"
    ));

    // Validation scores through the head exactly as the bundle scores them.
    let probs: Vec<Vec<f32>> = xv.chunks(EMBEDDING_DIM).map(|e| head.scores(e)).collect();
    let facts = predict::clip_facts(&exp.data.root)?;
    let valid = predict::windows(store, &valid_idx, probs, &facts);

    let bundle_dir = dir.join("bundle");
    if bundle_dir.exists() {
        std::fs::remove_dir_all(&bundle_dir).map_err(|e| Error::io(&bundle_dir, e))?;
    }
    let version = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string();
    let bundle = ProbeBundle::write(
        &bundle_dir,
        ProbeSpec {
            name: exp.model_name(),
            version,
            species: species.to_vec(),
            provenance: Provenance {
                trained: true,
                run_id: Some(tracker.run_id().to_string()),
                source: format!(
                    "trainer experiment {}: linear probe on BirdNET V2.4 embeddings \
                     (CC BY-NC-SA 4.0)",
                    exp.name
                ),
                metrics: Default::default(),
                created_unix_s: 0,
                licences: silencio_infer::licence::union([
                    [silencio_infer::Licence::birdnet(
                        "BirdNET V2.4 embeddings the head reads",
                    )]
                    .as_slice(),
                    crate::prepare::training_data_licences(&exp.data.root)?.as_slice(),
                ]),
            },
        },
        &head,
    )
    .map_err(onnx)?;
    // The mixed sets run through the bundle as `silencio identify --model <probe>` does.
    let ensemble = BirdNetProbe::from_parts(birdnet, bundle)
        .into_ensemble(DecodeOptions::default().max_duration_s)
        .map_err(onnx)?;
    let score = |p: &Path| {
        let bytes = std::fs::read(p).map_err(|e| silencio_infer::Error::Io {
            path: p.display().to_string(),
            source: e,
        })?;
        ensemble.identify(bytes)
    };
    let classes: Vec<String> = species.iter().map(|s| s.code.clone()).collect();
    finish(
        opts,
        exp,
        dir,
        tracker,
        Candidate {
            species,
            classes: &classes,
            valid,
            bundle_dir,
            epochs,
            train_s,
            score: &score,
        },
        log,
    )
}

/// Embedding of every window of the store, from the cache where present.
fn embeddings(
    store: &WindowStore,
    root: &Path,
    birdnet: &silencio_onnx::BirdNet,
    shards: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<BTreeMap<usize, Vec<f32>>> {
    let cache = shards.join(CACHE_FILE);
    let mut have = read_cache(&cache).unwrap_or_default();
    let n = store.manifest().windows.len();
    let mut by_clip: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in (0..n).filter(|i| !have.contains_key(i)) {
        by_clip.entry(store.window(i).clip).or_default().push(i);
    }
    if by_clip.is_empty() {
        return Ok(have);
    }
    log(&format!(
        "computing BirdNET embeddings of {} windows in {} clips",
        by_clip.values().map(Vec::len).sum::<usize>(),
        by_clip.len()
    ));
    let opts = DecodeOptions {
        target_rate: Some(silencio_onnx::labels::SAMPLE_RATE),
        ..Default::default()
    };
    for (done, (clip, windows)) in by_clip.iter().enumerate() {
        let file = &store.manifest().clips[*clip].filename;
        let audio = silencio_audio::decode_path(root.join("train_audio").join(file), &opts)?;
        let starts: Vec<f64> = windows.iter().map(|&i| store.window(i).start_s).collect();
        let e = birdnet
            .window_embeddings(&audio.samples, &starts)
            .map_err(onnx)?;
        have.extend(windows.iter().copied().zip(e));
        if (done + 1) % 25 == 0 {
            log(&format!("  {} / {} clips", done + 1, by_clip.len()));
        }
    }
    write_cache(&cache, &have)?;
    Ok(have)
}

fn read_cache(path: &Path) -> Option<BTreeMap<usize, Vec<f32>>> {
    let bytes = std::fs::read(path).ok()?;
    let st = safetensors::SafeTensors::deserialize(&bytes).ok()?;
    let idx = st.tensor("windows").ok()?;
    let emb = st.tensor("embeddings").ok()?;
    let ids: Vec<usize> = idx
        .data()
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as usize)
        .collect();
    let vals: Vec<f32> = emb
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (vals.len() == ids.len() * EMBEDDING_DIM).then(|| {
        ids.into_iter()
            .zip(vals.chunks(EMBEDDING_DIM).map(<[f32]>::to_vec))
            .collect()
    })
}

fn write_cache(path: &Path, emb: &BTreeMap<usize, Vec<f32>>) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let ids: Vec<u8> = emb.keys().flat_map(|&i| (i as u64).to_le_bytes()).collect();
    let vals: Vec<u8> = emb
        .values()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let bad = |e: safetensors::SafeTensorError| Error::Data {
        message: format!("embedding cache: {e}"),
    };
    let views = [
        (
            "windows",
            TensorView::new(Dtype::U64, vec![emb.len()], &ids).map_err(bad)?,
        ),
        (
            "embeddings",
            TensorView::new(Dtype::F32, vec![emb.len(), EMBEDDING_DIM], &vals).map_err(bad)?,
        ),
    ];
    let bytes = safetensors::serialize(views, None).map_err(bad)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Learning rate at `step` of `total`: linear warm-up, then cosine decay to `min_lr`.
fn lr_at(exp: &Experiment, step: usize, steps_per_epoch: usize, total: usize) -> f64 {
    let t = &exp.train;
    let warm = (t.warmup_epochs * steps_per_epoch as f64).round() as usize;
    if step < warm {
        return t.lr * (step + 1) as f64 / warm as f64;
    }
    let p = (step - warm) as f64 / (total - warm).max(1) as f64;
    t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + (std::f64::consts::PI * p).cos())
}

fn head_of(linear: &Linear) -> Result<ProbeHead> {
    let read = |t: Tensor<2>| -> Result<Vec<f32>> {
        t.into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Training {
                message: format!("reading the head: {e:?}"),
            })
    };
    // Burn stores the weight as [input, output]; the bundle holds [classes][dim].
    let weight = read(linear.weight.val().transpose())?;
    let bias = match &linear.bias {
        Some(b) => read(b.val().unsqueeze::<2>())?,
        None => vec![0.0; weight.len() / EMBEDDING_DIM],
    };
    Ok(ProbeHead { weight, bias })
}

/// Trains the head: AdamW on mini-batches, warm-up + cosine, early stopping on the validation
/// loss (the best epoch's head is kept). Returns the head and the epochs run.
fn fit_head(
    exp: &Experiment,
    device: &Device,
    (xt, yt): (&[f32], &[f32]),
    (xv, yv): (&[f32], &[f32]),
    tracker: &Tracker,
    log: &mut dyn FnMut(&str),
) -> Result<(ProbeHead, usize)> {
    let t = &exp.train;
    let n = xt.len() / EMBEDDING_DIM;
    let c = yt.len() / n.max(1);
    let nv = xv.len() / EMBEDDING_DIM;
    let loss_spec = LossSpec {
        kind: t.loss,
        smoothing: t.label_smoothing,
    };
    device.seed(t.seed);
    let ad = device.clone().autodiff();
    let mut head: Linear = LinearConfig::new(EMBEDDING_DIM, c).init(&ad);
    let mut optim = AdamWConfig::new().with_weight_decay(t.weight_decay).init();
    let bs = t.batch_size.max(1);
    let steps_per_epoch = n.div_ceil(bs);
    let total = steps_per_epoch * t.epochs;
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::new(t.seed);
    let mut best: Option<(f64, ProbeHead)> = None;
    let mut since_best = 0;
    let mut epochs = 0;
    let mut step = 0;
    let batch = |idx: &[usize], x: &[f32], y: &[f32], dev: &Device| {
        let mut bx = Vec::with_capacity(idx.len() * EMBEDDING_DIM);
        let mut by = Vec::with_capacity(idx.len() * c);
        for &i in idx {
            bx.extend_from_slice(&x[i * EMBEDDING_DIM..(i + 1) * EMBEDDING_DIM]);
            by.extend_from_slice(&y[i * c..(i + 1) * c]);
        }
        (
            Tensor::<2>::from_data(TensorData::new(bx, [idx.len(), EMBEDDING_DIM]), dev),
            Tensor::<2>::from_data(TensorData::new(by, [idx.len(), c]), dev),
        )
    };
    let scalar = |t: Tensor<1>| -> f64 {
        t.into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .ok()
            .and_then(|v| v.first().copied())
            .unwrap_or(f64::NAN)
    };
    for epoch in 1..=t.epochs {
        // Fisher–Yates with the run's seed.
        for i in (1..n).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let mut train_loss = 0.0;
        for idx in order.chunks(bs) {
            let (x, y) = batch(idx, xt, yt, &ad);
            let loss = multilabel_loss(head.forward(x), y, loss_spec);
            train_loss += scalar(loss.clone().detach()) * idx.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            head = optim.step(lr_at(exp, step, steps_per_epoch, total), head, grads);
            step += 1;
        }
        train_loss /= n.max(1) as f64;
        let valid_head = head.valid();
        let all: Vec<usize> = (0..nv).collect();
        let (x, y) = batch(&all, xv, yv, device);
        let valid_loss = scalar(multilabel_loss(valid_head.forward(x), y, loss_spec));
        tracker.log_metric("train_loss", train_loss, epoch)?;
        tracker.log_metric("valid_loss", valid_loss, epoch)?;
        log(&format!(
            "epoch {epoch}/{}: train loss {train_loss:.4}, valid loss {valid_loss:.4}",
            t.epochs
        ));
        epochs = epoch;
        if best.as_ref().is_none_or(|(b, _)| valid_loss < *b) {
            best = Some((valid_loss, head_of(&valid_head)?));
            since_best = 0;
        } else {
            since_best += 1;
            if t.early_stopping > 0 && since_best >= t.early_stopping {
                log(&format!(
                    "early stop: no lower validation loss for {since_best} epochs"
                ));
                break;
            }
        }
    }
    let head = match best {
        Some((_, h)) => h,
        None => head_of(&head.valid())?,
    };
    Ok((head, epochs))
}
