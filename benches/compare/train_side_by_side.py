#!/usr/bin/env python3
"""Training throughput side by side: Burn (flex backend) vs PyTorch CPU.

Same architectures, same batch, same input shape, same loss and optimizer, same machine, same run:
full train steps (forward, multi-label BCE-with-logits over 206 classes, backward, AdamW update)
on one fixed random batch of ``birdclef`` log-mel windows, [B, 1, 128, 313] (128 mels x 313
frames), random weights, train mode.

* resnet50         torchvision ``resnet50(num_classes=206)``, conv1 = Conv2d(1, 64, 7, 2, 3).
* efficientnet_b0  torchvision ``efficientnet_b0(num_classes=206)`` (classifier: dropout 0.2 +
                   Linear(1280, 206)), ``features[0][0]`` = Conv2d(1, 32, 3, 2, 1).

PyTorch: ``nn.BCEWithLogitsLoss()``, ``torch.optim.AdamW(lr=1e-3, weight_decay=1e-2, eps=1e-5)`` (eps as Burn's,
betas 0.9/0.999), ``torch.set_num_threads(--threads)``; a step is ``zero_grad(set_to_none=True)``,
forward, loss, ``backward()``, ``step()``, ``loss.item()`` (the read-back stops the clock).

Burn: the bench binary ``cargo bench -p silencio-benches --bench train_throughput`` (the
trainer's ``Trainee`` + ``multilabel_loss`` with ``LossKind::Bce``, ``AdamWConfig`` weight decay
1e-2, epsilon 1e-5, lr 1e-3, on ``Device::flex().autodiff()``; the trainer's fused AdamW), ``RAYON_NUM_THREADS=--threads``.
Its rows are named ``flex/train_{model}/bs{n}`` and read from the JSON it writes.

Order, so that neither compile nor drift go unnoticed: (1) ``cargo bench --no-run`` (the build,
untimed; it names the bench executable), (2) PyTorch, (3) Burn: that executable, run directly
with ``--bench`` as cargo bench runs it (so that another cargo holding the target dir's lock, or
rebuilding, cannot stall or disturb the timings), (4) PyTorch again. The table gives both
PyTorch passes and the ratios against the median of all PyTorch timed steps (both passes
pooled). Each timing records how many cores other processes kept busy (from /proc/stat), and
each phase the load average and ``uptime``; ``--wait-idle S`` waits up to S seconds before each
phase for the machine to go idle.

Run from the repository root:

    .venv-bench/bin/python benches/compare/train_side_by_side.py [--models resnet50,efficientnet_b0]
        [--batches 8] [--warmup 2] [--steps 5] [--threads 2] [--wait-idle 0] [--no-torch-after]
        [--no-burn-run | --skip-burn] [--skip-torch] [--target-dir DIR] [--json PATH]
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import (cargo_target_dir, cpu_snapshot, machine_facts, other_cores,  # noqa: E402
                     target_label, write_json)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_JSON = Path(__file__).resolve().parent / "train_last_run.json"

MODELS = ("resnet50", "efficientnet_b0")
N_MELS, N_FRAMES, N_CLASSES = 128, 313, 206
LR, WEIGHT_DECAY = 1e-3, 1e-2
SEED = 20_240_601


# ------------------------------------------------------------------------- machine

def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def uptime() -> str | None:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip() or None
    except OSError:
        return None


def wait_idle(max_wait_s: float, threshold: float, label: str) -> dict:
    """Wait (at most `max_wait_s`) until other processes keep fewer than `threshold` cores busy
    over a 5 s sample; returns what was seen. `max_wait_s` 0: one sample, no waiting."""
    t0 = time.perf_counter()
    while True:
        a = cpu_snapshot()
        time.sleep(5.0)
        busy = other_cores(a, cpu_snapshot())
        waited = time.perf_counter() - t0
        if busy is None or busy < threshold or waited >= max_wait_s:
            break
        print(f"[{label}] waiting for an idle machine: other processes keep {busy:.2f} cores busy "
              f"({waited:.0f} s of at most {max_wait_s:.0f} s)", flush=True)
    return {"other_procs_cores": None if busy is None else round(busy, 2), "waited_s": round(waited, 1),
            "idle": busy is not None and busy < threshold, "loadavg": loadavg(), "uptime": uptime()}


def versions() -> dict:
    out = {}
    for mod in ("torch", "torchvision", "numpy"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:  # noqa: BLE001 (absent or broken: just not recorded)
            pass
    rustc = shutil.which("rustc")
    if rustc:
        try:
            out["rustc"] = subprocess.run([rustc, "--version"], capture_output=True, text=True,
                                          cwd=REPO).stdout.strip()
        except OSError:
            pass
    return out


# ------------------------------------------------------------------------- PyTorch

def build_model(name: str):
    import torch
    import torchvision
    from torch import nn

    torch.manual_seed(SEED)
    if name == "resnet50":
        m = torchvision.models.resnet50(num_classes=N_CLASSES)
        m.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    elif name == "efficientnet_b0":
        m = torchvision.models.efficientnet_b0(num_classes=N_CLASSES)
        m.features[0][0] = nn.Conv2d(1, 32, 3, stride=2, padding=1, bias=False)
    else:
        raise ValueError(name)
    return m.train()


def torch_cell(name: str, bs: int, warmup: int, steps: int) -> dict:
    import torch
    from torch import nn

    model = build_model(name)
    n_params = sum(p.numel() for p in model.parameters())
    optim = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, eps=1e-5)
    crit = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(SEED + bs)
    x = torch.randn(bs, 1, N_MELS, N_FRAMES, generator=gen)
    y = (torch.rand(bs, N_CLASSES, generator=gen) < 0.02).float()

    def step() -> tuple[float, float]:
        t0 = time.perf_counter()
        optim.zero_grad(set_to_none=True)
        loss = crit(model(x), y)
        loss.backward()
        optim.step()
        v = loss.item()  # host read-back
        return time.perf_counter() - t0, v

    warm, times, losses = [], [], []
    for _ in range(warmup):
        dt, v = step()
        warm.append(dt)
        losses.append(v)
    snap = cpu_snapshot()
    for _ in range(steps):
        dt, v = step()
        times.append(dt)
        losses.append(v)
    oc = other_cores(snap, cpu_snapshot())

    # One more step (not in the median), split into its phases, as the Burn bench does.
    t0 = time.perf_counter()
    optim.zero_grad(set_to_none=True)
    loss = crit(model(x), y)
    loss.item()
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    optim.step()
    t3 = time.perf_counter()
    breakdown = {"forward_loss": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2}

    med = statistics.median(times)
    return {"median_s": med, "windows_per_s": bs / med, "n": len(times), "times_s": times,
            "warmup_s": warm, "losses": losses, "params": n_params, "breakdown_s": breakdown,
            "other_procs_cores": None if oc is None else round(oc, 2), "loadavg": loadavg()}


def run_torch(args, label: str) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    out = {}
    for name in args.models:
        for bs in args.batches:
            c = torch_cell(name, bs, args.warmup, args.steps)
            out[(name, bs)] = c
            print(f"  torch[{label}] train_{name}/bs{bs}: median {c['median_s']:.3f} s/step, "
                  f"{c['windows_per_s']:.2f} windows/s (n={c['n']}, warm-up "
                  f"{[round(t, 3) for t in c['warmup_s']]} s, other processes "
                  f"{c['other_procs_cores']} cores, loss {c['losses'][0]:.4f} -> {c['losses'][-1]:.4f}; "
                  f"one more step: forward+loss {c['breakdown_s']['forward_loss']:.3f} s, backward "
                  f"{c['breakdown_s']['backward']:.3f} s, AdamW {c['breakdown_s']['optimizer']:.3f} s)",
                  flush=True)
    return out


# --------------------------------------------------------------------------- Burn

def burn_env(args, target: Path) -> dict:
    env = dict(os.environ)
    env["CARGO_TARGET_DIR"] = str(target)
    env["RAYON_NUM_THREADS"] = str(args.threads)
    env["SILENCIO_DEVICE"] = "flex"  # the bench names its rows {backend}/train_...
    return env


BENCH_CMD = ["cargo", "bench", "-p", "silencio-benches", "--bench", "train_throughput"]


def build_burn(args, target: Path, meta: dict) -> Path | None:
    """`cargo bench --no-run`: the build, untimed; returns the bench executable."""
    cmd = BENCH_CMD + ["--no-run", "--message-format=json-render-diagnostics"]
    print("[burn] build: " + " ".join(cmd) + f"   (CARGO_TARGET_DIR={target})", flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=burn_env(args, target), stdout=subprocess.PIPE,
                          text=True)
    meta["burn_build_s"] = round(time.time() - t0, 1)
    exe = None
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if (msg.get("reason") == "compiler-artifact" and msg.get("executable")
                and msg.get("target", {}).get("name") == "train_throughput"):
            exe = Path(msg["executable"])
    if proc.returncode != 0 or exe is None:
        print(f"[burn] build failed ({proc.returncode}): no Burn column")
        meta["burn_build_rc"] = proc.returncode
        return None
    meta["burn_executable"] = str(exe)
    print(f"[burn] built {exe} ({meta['burn_build_s']} s)", flush=True)
    return exe


def run_burn(args, exe: Path, target: Path, json_path: Path, meta: dict) -> dict:
    """Run the executable `cargo bench` built, as cargo bench would (`--bench`, cwd = the
    package), but without cargo: another cargo in the same target dir would hold its lock (or
    rebuild) in the middle of the timings."""
    cmd = [str(exe), "--bench", "--models", ",".join(args.models),
           "--batches", ",".join(map(str, args.batches)),
           "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--threads", str(args.threads), "--json", str(json_path)]
    meta["burn_cmd"] = cmd
    meta["burn_env"] = {k: burn_env(args, target)[k]
                        for k in ("CARGO_TARGET_DIR", "RAYON_NUM_THREADS", "SILENCIO_DEVICE")}
    print("[burn] " + " ".join(cmd), flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO / "benches", env=burn_env(args, target))
    meta["burn_run_s"] = round(time.time() - t0, 1)
    if proc.returncode != 0:
        print(f"[burn] bench exited with {proc.returncode}")
        meta["burn_rc"] = proc.returncode
    return read_burn(json_path, meta)


def read_burn(json_path: Path, meta: dict) -> dict:
    try:
        doc = json.loads(json_path.read_text())
    except (OSError, ValueError) as e:
        print(f"[burn] cannot read {json_path}: {e!r}")
        return {}
    meta["burn_bench"] = {k: v for k, v in doc.items() if k != "rows"}
    meta["burn_bench"]["json"] = str(json_path)
    meta["burn_bench"]["measured_at"] = datetime.fromtimestamp(
        json_path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
    return {(r["model"], int(r["batch"])): r for r in doc.get("rows", [])}


# --------------------------------------------------------------------------- report

def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def phases(cell) -> str:
    p = cell.get("breakdown_s") if cell else None
    if not p:
        return "—"
    return " / ".join(f"{p[k]:.3f}" for k in ("forward_loss", "backward", "optimizer"))


def ratio(a, b):
    return None if a is None or b is None or b <= 0 else a / b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated subset of {','.join(MODELS)} (default: both)")
    ap.add_argument("--batches", default="8", help="comma-separated batch sizes (default 8)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (default 2)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps, median (default 5)")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch.set_num_threads and RAYON_NUM_THREADS for Burn (default 2)")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                    help="before each timed phase, wait up to S seconds until other processes keep "
                         "fewer than --idle-cores cores busy (default 0: only record the load)")
    ap.add_argument("--idle-cores", type=float, default=0.25,
                    help="the threshold of --wait-idle (default 0.25)")
    ap.add_argument("--no-torch-after", action="store_true",
                    help="skip the second PyTorch pass after Burn (the drift check)")
    burn = ap.add_mutually_exclusive_group()
    burn.add_argument("--no-burn-run", action="store_true",
                      help="do not run cargo; read the bench's JSON already on disk "
                           "($CARGO_TARGET_DIR/train_throughput.json)")
    burn.add_argument("--skip-burn", action="store_true", help="no Burn column at all")
    ap.add_argument("--skip-torch", action="store_true", help="no PyTorch timing")
    ap.add_argument("--target-dir", type=Path, default=None,
                    help="cargo target dir (default: $CARGO_TARGET_DIR, else ~/.cache/silencio-target)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON,
                    help=f"where to write the results (default {DEFAULT_JSON.relative_to(REPO)})")
    args = ap.parse_args()

    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        ap.error(f"unknown model(s) {bad}; choose from {MODELS}")
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if args.steps < 1:
        ap.error("--steps must be >= 1")

    target = (args.target_dir or cargo_target_dir(REPO)).expanduser()
    meta = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "threads": args.threads, "warmup": args.warmup, "steps": args.steps,
            "input": f"[B, 1, {N_MELS}, {N_FRAMES}]", "classes": N_CLASSES,
            "loss": "BCE with logits (mean)",
            "optimizer": {"name": "AdamW", "lr": LR, "weight_decay": WEIGHT_DECAY, "eps": 1e-5,
                          "betas": [0.9, 0.999]},
            "machine": machine_facts(REPO), "cargo_target_dir": target_label(target, REPO),
            "load": {"start": {"loadavg": loadavg(), "uptime": uptime()}},
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                   "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")}}
    print(f"machine: {meta['machine']['cpu']}, {meta['machine']['nproc']} CPUs; "
          f"{meta['load']['start']['uptime']}; {args.threads} threads per framework")

    exe = None
    if not args.skip_burn and not args.no_burn_run:
        exe = build_burn(args, target, meta)

    def phase(name: str) -> None:
        meta["load"][name] = wait_idle(args.wait_idle, args.idle_cores, name)

    torch_before, torch_after, burn = {}, {}, {}
    if not args.skip_torch:
        phase("before_torch")
        print("[torch] pass 1 (before Burn)", flush=True)
        torch_before = run_torch(args, "before")

    if not args.skip_burn:
        if args.no_burn_run:
            burn = read_burn(target / "train_throughput.json", meta)
        elif exe is not None:
            phase("before_burn")
            with tempfile.TemporaryDirectory(prefix="silencio-train-bench-") as tmp:
                burn = run_burn(args, exe, target, Path(tmp) / "train_throughput.json", meta)

    if not args.skip_torch and not args.no_torch_after:
        phase("before_torch_after")
        print("[torch] pass 2 (after Burn, drift check)", flush=True)
        torch_after = run_torch(args, "after")
    meta["load"]["end"] = {"loadavg": loadavg(), "uptime": uptime()}
    meta["versions"] = versions()

    rows = []
    lines = ["| model | bs | Burn flex s/step | Burn windows/s | PyTorch s/step (before / after) "
             "| PyTorch windows/s | time Burn/PyTorch | throughput Burn/PyTorch |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    details = ["| model | bs | n Burn | n PyTorch | PyTorch drift (after/before) "
               "| other procs' cores (PyTorch before / Burn / PyTorch after) "
               "| one step: forward+loss / backward / AdamW s, Burn | same, PyTorch (after) |",
               "|---|---:|---:|---:|---:|---:|---|---|"]
    for name in args.models:
        for bs in args.batches:
            b = burn.get((name, bs))
            t1, t2 = torch_before.get((name, bs)), torch_after.get((name, bs))
            pooled = (t1["times_s"] if t1 else []) + (t2["times_s"] if t2 else [])
            t = statistics.median(pooled) if pooled else None
            bs_s = b["median_s"] if b else None
            r_time = ratio(bs_s, t)
            row = {"model": name, "bs": bs, "burn_s_per_step": bs_s,
                   "burn_windows_per_s": None if bs_s is None else bs / bs_s,
                   "torch_s_per_step": t, "torch_windows_per_s": None if t is None else bs / t,
                   "torch_before_s_per_step": t1["median_s"] if t1 else None,
                   "torch_after_s_per_step": t2["median_s"] if t2 else None,
                   "torch_drift": ratio(t2["median_s"] if t2 else None, t1["median_s"] if t1 else None),
                   "burn_over_torch_time": r_time,
                   "burn_over_torch_throughput": None if r_time is None else 1.0 / r_time,
                   "burn": b, "torch_before": t1, "torch_after": t2}
            rows.append(row)
            tt = f"{fmt(t, '.3f')} ({fmt(row['torch_before_s_per_step'], '.3f')} / " \
                 f"{fmt(row['torch_after_s_per_step'], '.3f')})"
            lines.append(f"| {name} | {bs} | {fmt(bs_s, '.3f')} | {fmt(row['burn_windows_per_s'], '.2f')} | "
                         f"{tt} | {fmt(row['torch_windows_per_s'], '.2f')} | "
                         f"{fmt(r_time, '.2f')}{'' if r_time is None else '×'} | "
                         f"{fmt(row['burn_over_torch_throughput'], '.2f')}"
                         f"{'' if r_time is None else '×'} |")
            busy = " / ".join(fmt(c.get("other_procs_cores") if c else None, ".2f") for c in (t1, b, t2))
            details.append(f"| {name} | {bs} | {b['n'] if b else '—'} | "
                           f"{' + '.join(str(c['n']) for c in (t1, t2) if c) or '—'} | "
                           f"{fmt(row['torch_drift'], '.2f')} | {busy} | {phases(b)} | "
                           f"{phases(t2 or t1)} |")
    print()
    print(f"Train step (forward + BCE-with-logits + backward + AdamW), random weights, {args.threads} "
          f"threads, input [B, 1, {N_MELS}, {N_FRAMES}], {N_CLASSES} classes; median of {args.steps} "
          f"steps after {args.warmup} warm-up; PyTorch = median of both passes' steps")
    print("\n".join(lines))
    print()
    print("\n".join(details))
    print(f"\nload: start {meta['load']['start']['loadavg']}, end {meta['load']['end']['loadavg']}")
    busy = [c["other_procs_cores"] for r in rows for c in (r["burn"], r["torch_before"], r["torch_after"])
            if c and c.get("other_procs_cores") is not None]
    if busy and max(busy) > 0.25:
        print(f"note: other processes kept up to {max(busy):.2f} cores busy during the timings "
              f"(mean {statistics.mean(busy):.2f}); with {meta['machine']['nproc']} CPUs the numbers "
              f"are noisy: rerun on an idle machine")

    write_json(args.json, {"meta": meta, "rows": rows, "table_md": "\n".join(lines),
                           "details_md": "\n".join(details)}, REPO)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
