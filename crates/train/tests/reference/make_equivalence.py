#!/usr/bin/env python3
"""PyTorch side of the step-for-step training equivalence test (crates/train/tests/equivalence.rs).

For full-size torchvision EfficientNet-B0 and ResNet-50 (1 input channel, 206 classes), both
started from the seeded weights of `trainer::equivalence` (the same rule, bit for bit), this
script trains N steps on real log-mel windows of the committed demo set and records, per step,
the learning rate, the loss, the global gradient norm and a sample of parameters. It does so
twice: in float32 (the reference) and in float64 (how far float32 rounding alone moves the
trajectory: the Rust test derives its tolerances from that gap).

The recipe is the trainer's: mean BCE on logits with label smoothing y(1-e)+e/2, secondary labels
at `secondary_weight`, AdamW (beta 0.9/0.999, eps 1e-5 as Burn's AdamWConfig, decoupled weight
decay on every parameter), linear warm-up from lr/100 then cosine to min_lr (Burn's
LinearLrScheduler/CosineAnnealingLrScheduler semantics: warm-up step k takes
lr/100 + k(lr - lr/100)/w, cosine step j takes min_lr + (lr - min_lr)(1 + cos(pi j / c))/2).
Dropout and stochastic depth are 0 in both frameworks (their randomness cannot be shared).

Variants per architecture:
  plain        one device, batch 4;
  augment      SpecAugment masks and mixup, drawn here and written into the fixture: the Rust test
               applies the same draws with the trainer's own `apply_spec_masks`/`apply_mixup`;
  two_devices  Burn's data-parallel step (one batch of 2 per device, gradients summed on the main
               device, one optimiser step): here two forward/backward passes, gradients summed.

The windows come from the project's own ETL of `datasets/demo/birdclef` (the f16 shards the
trainer reads); `--shards` names an existing run, else the script runs `silencio etl` (the
binary of `cargo test --no-run` or `cargo build --release`) into a temporary folder.

Run from the repository root (about 10 minutes on 2 cores):

    .venv-bench/bin/pip install -r crates/train/tests/reference/requirements.txt
    .venv-bench/bin/python crates/train/tests/reference/make_equivalence.py [--shards DIR]
        [--out crates/train/tests/fixtures/equivalence] [--only efficientnet_b0:plain,...]
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

REPO = Path(__file__).resolve().parents[4]
OUT = REPO / "crates/train/tests/fixtures/equivalence"

SEED = 14
STEPS = 20
CLASSES = 206
RECIPE = dict(seed=SEED, batch_size=4, steps=STEPS, classes=CLASSES, epochs=2, steps_per_epoch=10,
              warmup_epochs=0.5, lr=1e-3, min_lr=1e-5, weight_decay=1e-2, label_smoothing=0.1,
              secondary_weight=0.5, devices=1)
ADAM_EPS = 1e-5
PARAM_STEPS = [0, 1, 2, 5, 10, 15, 20]
SAMPLES_PER_KEY = 16

SAMPLE_KEYS = {
    "efficientnet_b0": ["features.0.0.weight", "features.0.1.weight", "features.0.1.bias",
                        "features.0.1.running_mean", "features.0.1.running_var",
                        "features.4.0.block.1.0.weight", "features.4.0.block.2.fc1.weight",
                        "features.4.0.block.2.fc1.bias", "features.8.0.weight", "classifier.1.weight",
                        "classifier.1.bias"],
    "resnet50": ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                 "layer2.0.conv2.weight", "layer3.1.bn2.weight", "layer4.0.downsample.1.bias",
                 "layer4.2.conv3.weight", "fc.weight", "fc.bias"],
}

MASK64 = (1 << 64) - 1


# ------------------------------------------------------------------- seeded weights

def fnv1a64(s: str) -> int:
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def seeded_uniform(seed: int, name: str, n: int, bound: float) -> np.ndarray:
    """SplitMix64 seeded with seed ^ fnv1a64(name); value k = (2u - 1) * bound in f64 -> f32."""
    s = np.uint64((seed ^ fnv1a64(name)) & MASK64)
    k = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = s + k * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return ((2.0 * u - 1.0) * bound).astype(np.float32)


def seeded_state(keys: list[tuple[str, list[int]]], seed: int) -> dict[str, np.ndarray]:
    shapes = dict(keys)
    out = {}
    for name, shape in keys:
        n = int(np.prod(shape)) if shape else 1
        prefix, _, leaf = name.rpartition(".")
        is_norm = f"{prefix}.running_mean" in shapes

        def fan_in(sh):
            return float(max(int(np.prod(sh[1:])) if len(sh) > 1 else 1, 1))

        if leaf == "running_mean":
            v = np.zeros(n, np.float32)
        elif leaf == "running_var":
            v = np.ones(n, np.float32)
        elif leaf == "weight" and is_norm:
            v = np.ones(n, np.float32)
        elif leaf == "bias" and is_norm:
            v = np.zeros(n, np.float32)
        elif leaf == "weight" and len(shape) == 4:
            v = seeded_uniform(seed, name, n, math.sqrt(6.0 / fan_in(shape)))
        elif leaf == "weight":
            v = seeded_uniform(seed, name, n, 1.0 / math.sqrt(fan_in(shape)))
        else:
            w = shapes.get(f"{prefix}.weight")
            fan = fan_in(w) if w is not None else 1.0
            v = seeded_uniform(seed, name, n, 1.0 / math.sqrt(fan))
        out[name] = v.reshape(shape)
    return out


# ------------------------------------------------------------------------- models

def build(arch: str) -> nn.Module:
    if arch == "resnet50":
        m = torchvision.models.resnet50(num_classes=CLASSES)
        m.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    elif arch == "efficientnet_b0":
        m = torchvision.models.efficientnet_b0(num_classes=CLASSES, dropout=0.0,
                                               stochastic_depth_prob=0.0)
        m.features[0][0] = nn.Conv2d(1, 32, 3, stride=2, padding=1, bias=False)
    else:
        raise ValueError(arch)
    return m


def state_keys(model: nn.Module) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")]


# --------------------------------------------------------------------------- data

def etl_shards(tmp: Path, silencio: Path | None) -> Path:
    """The project's ETL: a built `silencio` binary (the test build's, else the release one)."""
    out = tmp / "shards"
    if silencio is None:
        built = [REPO / "target/debug/silencio", REPO / "target/release/silencio"]
        silencio = next((p for p in built if p.is_file()), None)
    cmd = [str(silencio)] if silencio else ["cargo", "run", "-q", "-p", "silencio", "--"]
    subprocess.run(cmd + ["etl", "--data", str(REPO / "datasets/demo/birdclef"), "--out", str(out),
                          "--progress", "none"], cwd=REPO, check=True)
    return out


class Windows:
    """The ETL's f16 windows and dense targets, read as `trainer::dataset::WindowStore` does."""

    def __init__(self, shards: Path):
        self.dir = shards
        self.manifest = json.loads((shards / "manifest.json").read_text())
        self.shape = self.manifest["feature_shape"]
        assert self.manifest["options"]["dtype"] in ("f16", "F16"), self.manifest["options"]["dtype"]

    def train_indices(self) -> list[int]:
        """Manifest indices of the training split's windows, in manifest order."""
        return [i for i, w in enumerate(self.manifest["windows"]) if w["split"] in ("train", "Train")]

    def features(self, i: int) -> np.ndarray:
        w = self.manifest["windows"][i]
        m, t = self.shape
        path = self.dir / self.manifest["shards"][w["shard"]]["file"]
        with open(path, "rb") as f:
            f.seek(w["offset"])
            raw = f.read(m * t * 2)
        return np.frombuffer(raw, dtype="<f2").astype(np.float32).reshape(m, t)

    def targets(self, i: int, secondary_weight: float) -> np.ndarray:
        y = np.zeros(CLASSES, np.float32)
        for c, w in self.manifest["windows"][i]["labels"]:
            y[c] = 1.0 if w >= 1.0 else secondary_weight
        return y


# ------------------------------------------------------------------ augmentation

def draw_masks(rng: np.random.Generator, mels: int, frames: int) -> dict:
    """Two time stripes (<= 30 frames) and two mel stripes (<= 12 bins): the trainer's defaults."""
    def stripes(n, widest, size):
        out = []
        for _ in range(n):
            w = int(rng.integers(0, widest + 1))
            out.append([int(rng.integers(0, size - w + 1)), w])
        return out
    return {"time": stripes(2, 30, frames), "freq": stripes(2, 12, mels)}


def draw_mix(rng: np.random.Generator, b: int) -> list[dict]:
    pairs = []
    for i in range(b):
        if rng.random() < 0.5 or (i == b - 1 and not pairs):
            j = (i + 1 + int(rng.integers(0, b - 1))) % b
            lam = float(np.float32(rng.beta(0.4, 0.4)))
            pairs.append({"item": i, "partner": j, "lambda": lam})
    return pairs


def apply_masks(x: torch.Tensor, masks: dict) -> torch.Tensor:
    """x [mels, frames]; stripes set to the window's mean before masking."""
    x = x.clone()
    mean = x.mean()
    for t0, w in masks["time"]:
        x[:, t0:t0 + w] = mean
    for m0, w in masks["freq"]:
        x[m0:m0 + w, :] = mean
    return x


def apply_mix(xs: torch.Tensor, ys: torch.Tensor, pairs: list[dict]):
    """Power-domain mixup of the unmixed originals; targets take the element-wise max."""
    x0, y0 = xs.clone(), ys.clone()
    xs, ys = xs.clone(), ys.clone()
    for p in pairs:
        i, j = p["item"], p["partner"]
        lam = torch.tensor(p["lambda"], dtype=torch.float32).to(xs.dtype)
        pw = lam * torch.pow(10.0, x0[i] / 10.0) + (1.0 - lam) * torch.pow(10.0, x0[j] / 10.0)
        xs[i] = 10.0 * torch.log10(pw.clamp_min(1e-10))
        ys[i] = torch.maximum(y0[i], y0[j])
    return xs, ys


# ------------------------------------------------------------------------ training

def schedule(r: dict) -> list[float]:
    total = max(r["epochs"] * r["steps_per_epoch"], 2)
    warm = min(max(round(r["warmup_epochs"] * r["steps_per_epoch"]), 1), total - 1)
    lr, lo = r["lr"], r["min_lr"]
    out = []
    for k in range(r["steps"]):
        if k < warm:
            out.append(lr / 100.0 + k * ((lr - lr / 100.0) / warm))
        else:
            j = k - warm
            out.append(lo + 0.5 * (lr - lo) * (1.0 + math.cos(j / (total - warm) * math.pi)))
    return out


def make_batches(variant: str, data: Windows, recipe: dict):
    """Window indices, augmentation draws and the (augmented, unnormalised) inputs of each step."""
    rng = np.random.default_rng(1000 + ["plain", "augment", "two_devices"].index(variant))
    train = data.train_indices()
    per_step = recipe["batch_size"] * recipe["devices"]
    order = list(rng.permutation(len(train)))
    m, t = data.shape
    steps = []
    for k in range(recipe["steps"]):
        idx = [train[order[(k * per_step + i) % len(train)]] for i in range(per_step)]
        x = torch.from_numpy(np.stack([data.features(i) for i in idx]))
        y = torch.from_numpy(np.stack([data.targets(i, recipe["secondary_weight"]) for i in idx]))
        masks, mix = [], []
        if variant == "augment":
            masks = [draw_masks(rng, m, t) for _ in idx]
            mix = [draw_mix(rng, len(idx))]
        steps.append({"windows": [int(i) for i in idx], "masks": masks, "mix": mix, "x": x, "y": y})
    return steps


def augmented(step: dict, dtype, recipe: dict):
    x = step["x"].to(dtype)
    y = step["y"].to(dtype)
    if step["masks"]:
        x = torch.stack([apply_masks(x[i], mk) for i, mk in enumerate(step["masks"])])
    b = recipe["batch_size"]
    xs, ys = [], []
    for d in range(recipe["devices"]):
        xd, yd = x[d * b:(d + 1) * b], y[d * b:(d + 1) * b]
        if step["mix"]:
            xd, yd = apply_mix(xd, yd, step["mix"][d])
        xs.append(xd)
        ys.append(yd)
    return xs, ys


def run(arch: str, variant: str, recipe: dict, dtype, batches, sample) -> dict:
    torch.manual_seed(0)
    model = build(arch)
    keys = state_keys(model)
    init = seeded_state(keys, recipe["seed"])
    sd = model.state_dict()
    for k, v in init.items():
        sd[k] = torch.from_numpy(v)
    model.load_state_dict(sd)
    model = model.to(dtype).train()
    optim = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], betas=(0.9, 0.999), eps=ADAM_EPS,
                              weight_decay=recipe["weight_decay"])
    mean, std = recipe["input_norm"]
    eps = recipe["label_smoothing"]
    lrs = schedule(recipe)
    rec = {"loss": [], "grad_norm": [], "params": []}
    specs = []

    def take_sample():
        st = model.state_dict()
        rec["params"].append([[float(v) for v in st[k].reshape(-1)[idx].tolist()]
                              for k, idx in zip(sample["keys"], sample["indices"])])

    take_sample()
    for k, step in enumerate(batches):
        optim.zero_grad(set_to_none=True)
        xs, ys = augmented(step, dtype, recipe)
        loss_sum, s1, s2, ts = 0.0, 0.0, 0.0, 0.0
        for xd, yd in zip(xs, ys):
            inp = ((xd - mean) / std).unsqueeze(1)  # [b, 1, mels, frames]
            s1 += float(inp.double().sum())
            s2 += float((inp.double() ** 2).sum())
            ts += float(yd.double().sum())
            target = yd * (1.0 - eps) + eps / 2.0
            loss = F.binary_cross_entropy_with_logits(model(inp), target)
            loss.backward()  # gradients of the devices' batches add up, as Burn sums them
            loss_sum += float(loss.detach())
        gn = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in model.parameters()
                           if p.grad is not None))
        for g in optim.param_groups:
            g["lr"] = lrs[k]
        optim.step()
        rec["loss"].append(loss_sum / len(xs))
        rec["grad_norm"].append(gn)
        specs.append({"windows": step["windows"], "masks": step["masks"], "mix": step["mix"],
                      "input_sums": [s1, s2], "target_sum": ts})
        if k + 1 in PARAM_STEPS:
            take_sample()
        print(f"  {arch}/{variant} {str(dtype).removeprefix('torch.')} step {k + 1:2d}: lr {lrs[k]:.6g} "
              f"loss {rec['loss'][-1]:.6f} |g| {gn:.6f}", flush=True)
    return {"rec": rec, "specs": specs, "keys": keys, "lr": lrs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=Path, help="ETL output of datasets/demo/birdclef (f16)")
    ap.add_argument("--silencio", type=Path, help="silencio binary for the ETL (default: target/debug, "
                    "target/release, else cargo run)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--only", default="", help="comma-separated arch:variant")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or etl_shards(Path(tmp), args.silencio)
        data = Windows(shards)
        args.out.mkdir(parents=True, exist_ok=True)
        # The model's input normalisation: mean and std of the training windows.
        allx = np.stack([data.features(i) for i in data.train_indices()]).astype(np.float64)
        input_norm = [round(float(allx.mean()), 3), round(float(allx.std()), 3)]
        todo = [(a, v) for a in ("efficientnet_b0", "resnet50")
                for v in ("plain", "augment", "two_devices")]
        if args.only:
            want = set(args.only.split(","))
            todo = [(a, v) for a, v in todo if f"{a}:{v}" in want]
        for arch, variant in todo:
            recipe = dict(RECIPE)
            if variant == "two_devices":
                recipe.update(batch_size=2, devices=2)
            recipe["input_norm"] = input_norm
            batches = make_batches(variant, data, recipe)
            model = build(arch)
            shapes = dict(state_keys(model))
            rng = np.random.default_rng(7)
            sample = {"keys": SAMPLE_KEYS[arch],
                      "indices": [sorted(int(i) for i in rng.choice(int(np.prod(shapes[k])),
                                                                   size=min(SAMPLES_PER_KEY, int(np.prod(shapes[k]))),
                                                                   replace=False))
                                  for k in SAMPLE_KEYS[arch]]}
            r32 = run(arch, variant, recipe, torch.float32, batches, sample)
            r64 = run(arch, variant, recipe, torch.float64, batches, sample)
            fixture = {
                "arch": arch,
                "variant": variant,
                "reference": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                              "numpy": np.__version__, "python": sys.version.split()[0],
                              "threads": str(args.threads),
                              "script": "crates/train/tests/reference/make_equivalence.py"},
                "recipe": recipe,
                "keys": [{"name": k, "shape": s} for k, s in r32["keys"]],
                "batches": r32["specs"],
                "lr": r32["lr"],
                "param_steps": PARAM_STEPS,
                "sample": sample,
                "f32": r32["rec"],
                "f64": r64["rec"],
            }
            path = args.out / f"{arch}_{variant}.json"
            path.write_text(json.dumps(fixture, indent=1) + "\n")
            print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}", flush=True)


if __name__ == "__main__":
    main()
