#!/usr/bin/env python3
"""Model forward passes side by side: Burn (flex backend) vs PyTorch CPU vs ONNX Runtime CPU.

Same architectures, same input shapes, random weights, same machine, same run:

* efficientnet_b0    torchvision ``efficientnet_b0(num_classes=206)``, stem conv 1 -> 32 channels.
* efficientnet_lite0 ``efficientnet_lite_pytorch`` ``EfficientNet.from_name('efficientnet-lite0',
                     in_channels=1, num_classes=206, image_size=(128, 313))``: TF "SAME" padding,
                     computed for the 128 x 313 input (Burn computes it per input size too).
* resnet50           torchvision ``resnet50(num_classes=206)``, conv1 = Conv2d(1, 64, 7, 2, 3).
* cnn14              ``panns_inference.models.Cnn14`` (32 kHz, 1024/320, 128 mels, 50-14000 Hz,
                     206 classes) without its STFT/log-mel front end (both extractors are
                     ``nn.Identity``) and with ``bn0`` widened to 128 mel bins (the reference
                     hard-codes 64). Input in PANNs' layout [B, 1, 313, 128] (time, mel).

The input is one ``birdclef`` log-mel window per item, [B, 1, 128, 313]; batch 12 is one
1-minute soundscape. Every framework runs on ``--threads`` threads (default 2).

The Burn side is the criterion bench ``cargo bench -p silencio-benches --bench models``, whose
benchmarks are named ``flex/{model}/bs{n}`` (as users run them: the project's CPU kernels on)
and ``flex-burn-ops/{model}/bs{n}`` (Burn's own ops: before the kernels); its results are read from
``$CARGO_TARGET_DIR/criterion/**/new/{benchmark,estimates}.json``.

Run from the repository root:

    .venv-bench/bin/python benches/compare/models_side_by_side.py [--models ...] [--batches 1,12,32]
        [--repeat 5] [--no-burn-run | --skip-burn] [--skip-torch] [--skip-ort]
"""
from __future__ import annotations

import argparse
import glob
import importlib
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import (cargo_target_dir, target_label, cpu_snapshot, machine_facts, other_cores,  # noqa: E402
                     write_json)

os.environ.setdefault("MPLBACKEND", "Agg")  # panns_inference.models imports matplotlib.pyplot

REPO = Path(__file__).resolve().parents[2]
DEFAULT_JSON = Path(__file__).resolve().parent / "models_last_run.json"

MODELS = ("efficientnet_b0", "efficientnet_lite0", "resnet50", "cnn14")
HEAVY = ("resnet50", "cnn14")
BATCHES = (1, 12, 32)
N_MELS, N_FRAMES, N_CLASSES = 128, 313, 206
SEED = 20_240_601

# The issue's goal: Burn flex <= 1.0x ONNX Runtime for EfficientNet-B0 at batch 12 on 2 cores.
# Issue 15's goal: EfficientNet-B0 within 3x ONNX Runtime at batch 1 and at batch 12, 2 cores.
GOAL_MODEL, GOAL_BATCHES, GOAL_RATIO, GOAL_THREADS = "efficientnet_b0", (1, 12), 3.0, 2
GEMM_N = 1024  # the GEMM micro-benchmark: one GEMM_N^3 float32 product


# ------------------------------------------------------------------------- models

def import_panns_models():
    """Import panns_inference.models WITHOUT running panns_inference/__init__.py, whose
    config module downloads the AudioSet label CSV with wget at import (as make_parity.py)."""
    if "panns_inference.models" in sys.modules:
        return sys.modules["panns_inference.models"]
    spec = importlib.util.find_spec("panns_inference")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("panns-inference is not installed (pip install --no-deps panns-inference==0.1.1)")
    pkg = types.ModuleType("panns_inference")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["panns_inference"] = pkg
    return importlib.import_module("panns_inference.models")


def build_model(name: str):
    """(module, input layout) with random weights, in eval mode. Layout 'mel_time' is
    [B, 1, 128, 313]; 'time_mel' is PANNs' [B, 1, 313, 128]."""
    import torch
    from torch import nn

    class _Cnn14Outputs(nn.Module):
        """The unmodified Cnn14.forward; its dict returned as a tuple (ONNX-friendly).
        clipwise_output is post-sigmoid, so embedding (fc1 + ReLU) is compared too."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            out = self.net(x)
            return out["clipwise_output"], out["embedding"]

    torch.manual_seed(SEED)
    if name == "efficientnet_b0":
        import torchvision
        m = torchvision.models.efficientnet_b0(num_classes=N_CLASSES)
        m.features[0][0] = nn.Conv2d(1, 32, 3, stride=2, padding=1, bias=False)
        layout = "mel_time"
    elif name == "efficientnet_lite0":
        from efficientnet_lite_pytorch import EfficientNet
        # from_name(in_channels=1) rebuilds _conv_stem as the same Conv2dStaticSamePadding class;
        # image_size makes every static TF-SAME pad match the 128 x 313 input.
        m = EfficientNet.from_name("efficientnet-lite0", in_channels=1, num_classes=N_CLASSES,
                                   image_size=(N_MELS, N_FRAMES))
        layout = "mel_time"
    elif name == "resnet50":
        import torchvision
        m = torchvision.models.resnet50(num_classes=N_CLASSES)
        m.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
        layout = "mel_time"
    elif name == "cnn14":
        pm = import_panns_models()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa filter-bank warnings of the unused front end
            net = pm.Cnn14(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=N_MELS,
                           fmin=50, fmax=14000, classes_num=N_CLASSES)
        net.spectrogram_extractor = nn.Identity()
        net.logmel_extractor = nn.Identity()
        net.bn0 = nn.BatchNorm2d(N_MELS)  # reference: BatchNorm2d(64), i.e. 64 mel bins only
        pm.init_bn(net.bn0)
        m = _Cnn14Outputs(net)
        layout = "time_mel"
    else:
        raise ValueError(name)
    return m.eval(), layout


def output_names(model_name: str) -> list[str]:
    return ["clipwise_output", "embedding"] if model_name == "cnn14" else ["logits"]


def make_input(layout: str, bs: int):
    import torch
    gen = torch.Generator().manual_seed(SEED + bs)
    x = torch.randn(bs, 1, N_MELS, N_FRAMES, generator=gen)
    if layout == "time_mel":
        x = x.transpose(2, 3)
    return x.contiguous()


# ------------------------------------------------------------------------- timing

def time_runs(fn, warmup: int, repeat: int, budget_s: float, min_repeat: int) -> dict:
    """Warm-up runs, then the median of up to `repeat` timed runs. If the last warm-up says
    `repeat` runs would exceed `budget_s`, take fewer (never fewer than `min_repeat`)."""
    warm = []
    for _ in range(max(warmup, 0)):
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
    n = repeat
    if budget_s > 0 and warm and warm[-1] * repeat > budget_s:
        n = max(min(min_repeat, repeat), min(repeat, int(budget_s // warm[-1])))
    times = []
    snap0 = cpu_snapshot()
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    oc = other_cores(snap0, cpu_snapshot())
    return {"median_s": statistics.median(times), "n": n, "times_s": times, "warmup_s": warm,
            "other_procs_cores": None if oc is None else round(oc, 2)}


def max_diffs(ref: list, got: list, names: list[str]) -> dict:
    import numpy as np
    out = {}
    for name, r, g in zip(names, ref, got):
        r = np.asarray(r, dtype=np.float64)
        g = np.asarray(g, dtype=np.float64)
        scale = float(np.abs(r).max())
        d = float(np.abs(r - g).max())
        out[name] = {"max_abs": d, "ref_max_abs": scale, "rel": d / scale if scale > 0 else float("nan")}
    return out


def fmt_diffs(d: dict | None) -> str:
    if not d:
        return "—"
    return "; ".join(f"{k} {v['max_abs']:.2e} (rel {v['rel']:.1e})" for k, v in d.items())


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ------------------------------------------------------------------- torch + ORT

def run_python_side(args, results: dict, meta: dict) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    meta["torch_threads"] = torch.get_num_threads()
    meta["torch_interop_threads"] = torch.get_num_interop_threads()

    ort = None
    if not args.skip_ort:
        try:
            import onnxruntime as ort  # noqa: F811
        except ImportError as e:
            print(f"[ort] skipped: {e} (pip install -r benches/compare/requirements.txt)")
            args.skip_ort = True

    meta["torch_gemm"] = torch_gemm_gflops(args)
    print(f"[gemm] PyTorch {GEMM_N}^3: {meta['torch_gemm']['gflops']:.1f} GFLOP/s")
    tmp = tempfile.TemporaryDirectory(prefix="silencio-onnx-")
    try:
        for name in args.models:
            try:
                model, layout = build_model(name)
            except Exception as e:  # a missing optional package skips one model, not the run
                print(f"[{name}] skipped: cannot build the PyTorch model: {e!r}")
                for bs in args.batches:
                    results.setdefault((name, bs), {})["error"] = f"build: {e!r}"
                continue
            names = output_names(name)
            n_params = sum(p.numel() for p in model.parameters())
            print(f"[{name}] {n_params / 1e6:.2f} M parameters, input layout {layout}")
            gflop = gflop_per_window(model, layout)
            meta.setdefault("gflop_per_window", {})[name] = gflop
            print(f"[{name}] {gflop:.3f} GFLOP per window (torch FlopCounterMode: 2 per multiply-add)")

            sess = None
            if not args.skip_ort:
                sess = export_and_load(ort, model, name, layout, names, Path(tmp.name), args, meta)

            for i, bs in enumerate(args.batches):
                cell = results.setdefault((name, bs), {})
                x = make_input(layout, bs)
                heavy = name in HEAVY and bs >= 32
                budget = args.budget_s if heavy or args.budget_all else 0.0
                need_ref = sess is not None and (not args.skip_torch or i == 0)
                ref = None

                with torch.inference_mode():
                    def fwd():
                        return model(x)
                    if need_ref:
                        out = fwd()
                        out = out if isinstance(out, tuple) else (out,)
                        ref = [o.numpy().copy() for o in out]
                    if not args.skip_torch:
                        r = time_runs(fwd, args.warmup, args.repeat, budget, args.min_repeat)
                        cell["torch"] = r
                        print(f"  torch bs{bs:>2}: {r['median_s']:.4f} s (n={r['n']}, "
                              f"{1e3 * r['median_s'] / bs:.1f} ms/window)")

                if sess is not None:
                    feed = {"x": x.numpy()}
                    got = sess.run(names, feed)
                    if ref is not None:
                        cell["ort_vs_torch"] = max_diffs(ref, got, names)
                        print(f"  ort   bs{bs:>2}: max |ORT - PyTorch| = {fmt_diffs(cell['ort_vs_torch'])}")
                    r = time_runs(lambda: sess.run(names, feed), args.warmup, args.repeat, budget,
                                  args.min_repeat)
                    cell["ort"] = r
                    print(f"  ort   bs{bs:>2}: {r['median_s']:.4f} s (n={r['n']}, "
                          f"{1e3 * r['median_s'] / bs:.1f} ms/window)")
            del model, sess
    finally:
        tmp.cleanup()


def gflop_per_window(model, layout: str) -> float:
    """FLOPs of one window's forward (convolutions and matrix products, 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(make_input(layout, 1))
    return counter.get_total_flops() / 1e9


def torch_gemm_gflops(args) -> dict:
    """PyTorch's (MKL/oneDNN) float32 GEMM rate on GEMM_N^3, the same product as Burn's bench."""
    import torch
    a, b = torch.randn(GEMM_N, GEMM_N), torch.randn(GEMM_N, GEMM_N)
    r = time_runs(lambda: torch.mm(a, b), args.warmup, max(args.repeat, 10), 0.0, args.min_repeat)
    r["gflops"] = 2 * GEMM_N ** 3 / r["median_s"] / 1e9
    return r


def export_and_load(ort, model, name, layout, names, tmpdir: Path, args, meta):
    import torch
    path = tmpdir / f"{name}.onnx"
    x = make_input(layout, 1)
    dyn = {"x": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's DeprecationWarning, tracer warnings
            if args.dynamo_export:
                torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=args.opset,
                                  input_names=["x"], output_names=names,
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
            else:
                torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=args.opset,
                                  input_names=["x"], output_names=names, dynamic_axes=dyn,
                                  do_constant_folding=True)
    except Exception as e:
        print(f"[{name}] ONNX export failed, ORT column skipped: {e!r}")
        return None
    export_s = time.perf_counter() - t0
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    t0 = time.perf_counter()
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - t0
    meta["onnx"][name] = {"export_s": round(export_s, 2), "session_s": round(load_s, 2),
                          "bytes": path.stat().st_size,
                          "exporter": "dynamo" if args.dynamo_export else "torchscript (legacy)"}
    print(f"[{name}] ONNX export {export_s:.1f} s, {path.stat().st_size / 1e6:.1f} MB; "
          f"ORT session {load_s:.1f} s")
    return sess


# --------------------------------------------------------------------------- Burn

# The bench's groups: `flex` runs the models as users do (the project's CPU kernels on),
# `flex-burn-ops` the same models on Burn's own ops (kernels off): Burn before and after.
BURN_GROUPS = {"flex": "burn", "flex-burn-ops": "burn_ops"}


def burn_filter(models, batches) -> str:
    return ("^flex(-burn-ops)?/(" + "|".join(models) + ")/bs("
            + "|".join(str(b) for b in batches) + f")$|^flex/gemm_{GEMM_N}/bs1$")


def run_burn(args, target: Path, meta: dict) -> float:
    """Run the criterion bench; returns the wall-clock start (for staleness checks)."""
    env = dict(os.environ)
    env["CARGO_TARGET_DIR"] = str(target)
    env.setdefault("RAYON_NUM_THREADS", str(args.threads))
    env["SILENCIO_DEVICE"] = "flex"  # the bench's backend; it names the results {backend}/...
    cmd = ["cargo", "bench", "-p", "silencio-benches", "--bench", "models", "--", "--noplot",
           burn_filter(args.models, args.batches)]
    meta["burn_cmd"] = cmd
    meta["burn_env"] = {"CARGO_TARGET_DIR": env["CARGO_TARGET_DIR"],
                        "RAYON_NUM_THREADS": env.get("RAYON_NUM_THREADS"),
                        "SILENCIO_DEVICE": env["SILENCIO_DEVICE"]}
    print("[burn] " + " ".join(cmd) + f"   (CARGO_TARGET_DIR={target}, "
          f"RAYON_NUM_THREADS={env['RAYON_NUM_THREADS']})", flush=True)
    start = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env)
    meta["burn_run_s"] = round(time.time() - start, 1)
    if proc.returncode != 0:
        print(f"[burn] cargo bench exited with {proc.returncode}; reading whatever results exist")
        meta["burn_rc"] = proc.returncode
    return start


def read_burn(target: Path, models, batches) -> dict:
    """{(group, model, bs): {...}} from criterion's new/benchmark.json + new/estimates.json."""
    found = {}
    pattern = str(target / "criterion" / "**" / "new" / "benchmark.json")
    for bj in glob.glob(pattern, recursive=True):
        try:
            bench = json.loads(Path(bj).read_text())
            full_id = bench.get("full_id", "")
            parts = full_id.split("/")
            if len(parts) != 3 or parts[0] not in BURN_GROUPS or not parts[2].startswith("bs"):
                continue
            model, bs = parts[1], int(parts[2][2:])
            if model != f"gemm_{GEMM_N}" and (model not in models or bs not in batches):
                continue
            est_path = Path(bj).with_name("estimates.json")
            est = json.loads(est_path.read_text())
            cell = {
                "full_id": full_id,
                "median_s": est["median"]["point_estimate"] * 1e-9,
                "median_ci_s": [est["median"]["confidence_interval"]["lower_bound"] * 1e-9,
                                est["median"]["confidence_interval"]["upper_bound"] * 1e-9],
                "mean_s": est["mean"]["point_estimate"] * 1e-9,
                "mtime": est_path.stat().st_mtime,
                # Relative to the cargo target directory (`cargo_target_dir`).
                "path": str(est_path.parent.relative_to(target)),
            }
            sample = Path(bj).with_name("sample.json")
            if sample.exists():
                s = json.loads(sample.read_text())
                cell["samples"] = len(s.get("iters", []))
                cell["iterations"] = int(sum(s.get("iters", [])))
            found[(parts[0], model, bs)] = cell
        except (OSError, ValueError, KeyError) as e:
            print(f"[burn] cannot read {bj}: {e!r}")
    return found


# --------------------------------------------------------------------------- report

def fmt_s(v):
    return "—" if v is None else f"{v:.4f}"


def fmt_ratio(a, b):
    return "—" if a is None or b is None or b <= 0 else f"{a / b:.2f}×"


def med(cell: dict, key: str):
    v = cell.get(key)
    return v["median_s"] if isinstance(v, dict) and "median_s" in v else None


def busy_of(row: dict, key: str) -> str:
    v = row.get(key, {}).get("other_procs_cores") if isinstance(row.get(key), dict) else None
    return "—" if v is None else f"{v:.2f}"


def versions() -> dict:
    out = {}
    for mod in ("torch", "torchvision", "onnxruntime", "onnx", "numpy", "timm"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:  # noqa: BLE001 (absent or broken: just not recorded)
            pass
    try:
        from importlib.metadata import version
        for dist in ("efficientnet-lite-pytorch", "panns-inference"):
            try:
                out[dist] = version(dist)
            except Exception:  # noqa: BLE001
                pass
    except ImportError:
        pass
    rustc = shutil.which("rustc")
    if rustc:
        try:
            out["rustc"] = subprocess.run([rustc, "--version"], capture_output=True, text=True,
                                          cwd=REPO).stdout.strip()
        except OSError:
            pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated subset of {','.join(MODELS)} (default: all)")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)),
                    help="comma-separated batch sizes (default: 1,12,32)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per cell (median; default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs per cell (default 1)")
    ap.add_argument("--budget-s", type=float, default=60.0,
                    help="for batch >= 32 of resnet50/cnn14: take fewer than --repeat runs when the "
                         "warm-up says they would take longer than this (default 60; 0: never)")
    ap.add_argument("--budget-all", action="store_true", help="apply --budget-s to every cell")
    ap.add_argument("--min-repeat", type=int, default=3,
                    help="never fewer timed runs than this under --budget-s (default 3)")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch.set_num_threads / ORT intra_op_num_threads / RAYON_NUM_THREADS for "
                         "cargo bench if unset (default 2)")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--dynamo-export", action="store_true",
                    help="torch.onnx.export(dynamo=True) instead of the legacy TorchScript exporter")
    burn = ap.add_mutually_exclusive_group()
    burn.add_argument("--no-burn-run", "--burn-only-read", dest="no_burn_run", action="store_true",
                      help="do not run cargo bench; read the criterion results already on disk")
    burn.add_argument("--skip-burn", action="store_true", help="no Burn column at all")
    ap.add_argument("--skip-torch", action="store_true", help="no PyTorch timing")
    ap.add_argument("--skip-ort", action="store_true", help="no ONNX export / ONNX Runtime timing")
    ap.add_argument("--target-dir", type=Path, default=None,
                    help="cargo target dir (default: $CARGO_TARGET_DIR, else ~/.cache/silencio-target "
                         "if it exists, else target)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON,
                    help=f"where to write the results (default {DEFAULT_JSON.relative_to(REPO)})")
    args = ap.parse_args()

    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        ap.error(f"unknown model(s) {bad}; choose from {MODELS}")
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")

    started = datetime.now(timezone.utc)
    meta = {"started": started.isoformat(timespec="seconds"), "threads": args.threads,
            "repeat": args.repeat, "warmup": args.warmup, "budget_s": args.budget_s,
            "machine": machine_facts(REPO), "loadavg_start": loadavg(), "onnx": {},
            "input": f"[B, 1, {N_MELS}, {N_FRAMES}] (cnn14: [B, 1, "
            f"{N_FRAMES}, {N_MELS}])", "classes": N_CLASSES,
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                   "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS",
                                                   "OPENBLAS_CORETYPE")}}
    print(f"machine: {meta['machine']['cpu']}, {meta['machine']['nproc']} CPUs, "
          f"load average {meta['loadavg_start']}; {args.threads} threads per framework")

    results: dict = {}

    # Burn first, so that cargo's compile is over before the Python timings start.
    burn_start = None
    target = (args.target_dir or cargo_target_dir(REPO)).expanduser()
    if not args.skip_burn:
        meta["cargo_target_dir"] = target_label(target, REPO)
        if not args.no_burn_run:
            burn_start = run_burn(args, target, meta)
        burn = read_burn(target, args.models, args.batches)
        if not burn:
            print(f"[burn] no flex[-burn-ops]/{{model}}/bs{{n}} results under {target}/criterion")
        for (group, model, bs), cell in burn.items():
            cell["stale"] = burn_start is not None and cell["mtime"] < burn_start
            if model == f"gemm_{GEMM_N}":
                cell["gflops"] = 2 * GEMM_N ** 3 / cell["median_s"] / 1e9
                cell.pop("mtime")
                meta["burn_gemm"] = cell
                print(f"[gemm] Burn flex {GEMM_N}^3: {cell['gflops']:.1f} GFLOP/s")
                continue
            if cell["stale"]:
                print(f"[burn] {cell['full_id']}: result predates this run (not re-measured)")
            cell["measured_at"] = datetime.fromtimestamp(cell.pop("mtime"), timezone.utc).isoformat(
                timespec="seconds")
            results.setdefault((model, bs), {})[BURN_GROUPS[group]] = cell

    if not (args.skip_torch and args.skip_ort):
        meta["loadavg_before_python"] = loadavg()
        run_python_side(args, results, meta)
    meta["loadavg_end"] = loadavg()
    meta["versions"] = versions()

    # ---- table
    rows = []
    lines = ["| model | bs | Burn flex (s) | Burn ms/window | Burn's ops only (s) | before/after "
             "| PyTorch (s) | ORT (s) | Burn/PyTorch | Burn/ORT | Burn's ops/ORT |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in args.models:
        for bs in args.batches:
            cell = results.get((name, bs), {})
            b, t, o = med(cell, "burn"), med(cell, "torch"), med(cell, "ort")
            bo = med(cell, "burn_ops")
            lines.append(f"| {name} | {bs} | {fmt_s(b)} | {'—' if b is None else f'{1e3 * b / bs:.1f}'} | "
                         f"{fmt_s(bo)} | {fmt_ratio(bo, b)} | "
                         f"{fmt_s(t)} | {fmt_s(o)} | {fmt_ratio(b, t)} | {fmt_ratio(b, o)} | "
                         f"{fmt_ratio(bo, o)} |")
            rows.append({
                "model": name, "bs": bs, "burn_s": b, "torch_s": t, "ort_s": o,
                "burn_ops_s": bo, "speedup_over_burn_ops": None if b is None or not bo else bo / b,
                "burn_ms_per_window": None if b is None else 1e3 * b / bs,
                "torch_ms_per_window": None if t is None else 1e3 * t / bs,
                "ort_ms_per_window": None if o is None else 1e3 * o / bs,
                "burn_over_torch": None if b is None or not t else b / t,
                "burn_over_ort": None if b is None or not o else b / o,
                **{k: v for k, v in cell.items()
                   if k in ("burn", "burn_ops", "torch", "ort", "ort_vs_torch", "error")},
            })
    print()
    print(f"Forward pass, random weights, {args.threads} threads, input [B, 1, {N_MELS}, {N_FRAMES}], "
          f"{N_CLASSES} classes; median wall-clock seconds per batch")
    print("\n".join(lines))

    details = ["| model | bs | n Burn (criterion samples) | n PyTorch | n ORT | other procs' cores (PyTorch / ORT) "
               "| max abs ORT − PyTorch (rel. to max abs output) |",
               "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        nb = r.get("burn", {}).get("samples", "—") if r.get("burn") else "—"
        if r.get("burn", {}).get("stale"):
            nb = f"{nb} (stale)"
        details.append(f"| {r['model']} | {r['bs']} | {nb} | {r.get('torch', {}).get('n', '—')} | "
                       f"{r.get('ort', {}).get('n', '—')} | {busy_of(r, 'torch')} / {busy_of(r, 'ort')} | "
                       f"{fmt_diffs(r.get('ort_vs_torch'))} |")
    print()
    print("\n".join(details))

    # ---- GFLOP/s against the machine's GEMM peak (the faster of Burn's and PyTorch's GEMM)
    peaks = [g["gflops"] for g in (meta.get("burn_gemm"), meta.get("torch_gemm")) if g]
    peak = max(peaks) if peaks else None
    meta["gemm_peak_gflops"] = peak
    flops = meta.get("gflop_per_window", {})
    tput = ["| model | bs | GFLOP/window | Burn GFLOP/s | PyTorch GFLOP/s | ORT GFLOP/s | Burn % of peak "
            "| ORT % of peak |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        g = flops.get(r["model"])
        rate = {k: None if g is None or r[f"{k}_s"] is None else g * r["bs"] / r[f"{k}_s"]
                for k in ("burn", "torch", "ort")}
        r["gflop_per_window"] = g
        r.update({f"{k}_gflops": v for k, v in rate.items()})
        pct = {k: None if v is None or not peak else 100 * v / peak for k, v in rate.items()}
        r["burn_pct_of_peak"], r["ort_pct_of_peak"] = pct["burn"], pct["ort"]
        f = lambda v, fmt: "—" if v is None else format(v, fmt)  # noqa: E731
        tput.append(f"| {r['model']} | {r['bs']} | {f(g, '.3f')} | {f(rate['burn'], '.1f')} | "
                    f"{f(rate['torch'], '.1f')} | {f(rate['ort'], '.1f')} | {f(pct['burn'], '.0f')} % | "
                    f"{f(pct['ort'], '.0f')} % |")
    print()
    print(f"GEMM peak ({GEMM_N}^3 float32, {args.threads} threads): "
          + ", ".join(f"{k} {meta[k]['gflops']:.1f} GFLOP/s" for k in ("burn_gemm", "torch_gemm")
                      if meta.get(k)))
    print("\n".join(tput))

    # ---- goal
    goal_res = {"model": GOAL_MODEL, "batches": list(GOAL_BATCHES),
                "target_burn_over_ort": GOAL_RATIO, "threads": args.threads, "per_batch": {}}
    print()
    for gbs in GOAL_BATCHES:
        goal = next((r for r in rows if r["model"] == GOAL_MODEL and r["bs"] == gbs), None)
        if goal is None or goal["burn_over_ort"] is None:
            goal_res["per_batch"][str(gbs)] = {"met": None}
            print(f"Goal (Burn flex ≤ {GOAL_RATIO:.1f}× ONNX Runtime, {GOAL_MODEL}, batch {gbs}, "
                  f"{GOAL_THREADS} cores): not evaluated (needs both the Burn and the ORT number)")
            continue
        ratio = goal["burn_over_ort"]
        met = ratio <= GOAL_RATIO
        goal_res["per_batch"][str(gbs)] = {"met": met, "burn_over_ort": ratio}
        note = "" if args.threads == GOAL_THREADS else f" (but this run used {args.threads} threads)"
        print(f"Goal (Burn flex ≤ {GOAL_RATIO:.1f}× ONNX Runtime, {GOAL_MODEL}, batch {gbs}, "
              f"{GOAL_THREADS} cores): {'MET' if met else 'NOT MET'} — Burn/ORT = {ratio:.2f}×{note}")
    verdicts = [v["met"] for v in goal_res["per_batch"].values()]
    goal_res["met"] = None if None in verdicts else all(verdicts)

    busy = [r[k]["other_procs_cores"] for r in rows for k in ("torch", "ort")
            if isinstance(r.get(k), dict) and r[k].get("other_procs_cores") is not None]
    if busy and max(busy) > 0.25:
        print(f"note: other processes kept up to {max(busy):.2f} cores busy during the PyTorch/ORT "
              f"timings (mean {statistics.mean(busy):.2f}); with {meta['machine']['nproc']} CPUs the "
              f"numbers are noisy: rerun on an idle machine")

    write_json(args.json, {"meta": meta, "goal": goal_res, "rows": rows,
                           "table_md": "\n".join(lines), "details_md": "\n".join(details),
                           "throughput_md": "\n".join(tput)}, REPO)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
