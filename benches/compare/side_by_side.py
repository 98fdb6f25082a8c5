#!/usr/bin/env python3
"""Side-by-side timing: decode + log-mel (birdclef recipe) of a 1-minute soundscape.

    .venv-bench/bin/python benches/compare/side_by_side.py [--repeat 5] [--json out.json]
        [--audio datasets/fixtures/audio/soundscape_1min.ogg] [--silencio target/release/silencio]

Three implementations, same machine, same input, each timed end to end (decode
from the file + every 5 s window's log-mel), median of --repeat runs after one
warm-up run:
  (a) librosa:    librosa.load(path, sr=None) + per-window melspectrogram + power_to_db
  (b) torchaudio: soundfile.read to decode (torchaudio >= 2.9 has no I/O of its own),
                  torchaudio.transforms.MelSpectrogram on a [windows, 160000] batch,
                  then 10*log10(clamp(x, 1e-10)); torch.set_num_threads(2)
  (c) silencio:   `silencio features <ogg> --recipe birdclef --out <tmp>.npy` as a
                  subprocess (so its time includes process start-up)
Windows: 160000 samples (5 s at 32 kHz), hop 160000; a last partial window is
zero-padded if it holds >= 1 s, dropped otherwise (same rule as the reference arrays).
An implementation that is not available (no torch, no binary) is skipped with a message.
"""
import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from machine import portable_paths  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
SR = 32000
WIN = 160000
MIN_TAIL = 32000
N_FFT, HOP, N_MELS, FMIN, FMAX = 2048, 512, 128, 20.0, 16000.0


def windows(y):
    out, start = [], 0
    while start < len(y):
        w = y[start:start + WIN]
        if len(w) < WIN:
            if len(w) < MIN_TAIL:
                break
            w = np.concatenate([w, np.zeros(WIN - len(w), dtype=y.dtype)])
        out.append(w)
        start += WIN
    return out


# --------------------------------------------------------------------------- (a)
def make_librosa():
    try:
        import librosa
    except ImportError as e:
        return None, f"librosa not importable ({e})"

    def run(path, _out):
        y, sr = librosa.load(str(path), sr=None)
        assert sr == SR, sr
        mels = []
        for w in windows(y):
            S = librosa.feature.melspectrogram(
                y=w, sr=sr, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, window="hann",
                center=True, pad_mode="constant", power=2.0, n_mels=N_MELS, fmin=FMIN,
                fmax=FMAX, htk=False, norm="slaney")
            mels.append(librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=None))
        return np.stack(mels)

    return run, f"librosa {librosa.__version__}"


# --------------------------------------------------------------------------- (b)
def make_torchaudio():
    try:
        import soundfile as sf
        import torch
        import torchaudio
    except Exception as e:  # ImportError, or RuntimeError on a torch/torchaudio mismatch
        return None, f"torch/torchaudio/soundfile not importable ({type(e).__name__}: {e})"
    torch.set_num_threads(2)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=SR, n_fft=N_FFT, hop_length=HOP, f_min=FMIN, f_max=FMAX, n_mels=N_MELS,
        power=2.0, norm="slaney", mel_scale="slaney", center=True, pad_mode="constant")

    def run(path, _out):
        y, sr = sf.read(str(path), dtype="float32", always_2d=True)
        assert sr == SR, sr
        y = y.mean(axis=1) if y.shape[1] > 1 else y[:, 0]
        batch = torch.from_numpy(np.stack(windows(y)))
        with torch.inference_mode():
            x = mel(batch)
            x = 10.0 * torch.log10(torch.clamp(x, min=1e-10))
        return x.numpy()

    return run, f"torch {torch.__version__}, torchaudio {torchaudio.__version__}"


# --------------------------------------------------------------------------- (c)
def make_silencio(binary):
    binary = pathlib.Path(binary)
    if not binary.is_absolute():
        binary = REPO / binary
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return None, f"binary {binary} not found (cargo build --release first)"

    def run(path, out):
        subprocess.run([str(binary), "features", str(path), "--recipe", "birdclef",
                        "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
        try:
            return np.load(out)
        except Exception:
            return None

    return run, str(binary.relative_to(REPO) if binary.is_relative_to(REPO) else binary)


def time_it(fn, path, out, repeat):
    result = fn(path, out)  # warm-up (also the output used for the agreement check)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(path, out)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, result


def max_diff(a, b):
    if a is None or b is None:
        return None
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return f"shape {list(a.shape)} vs {list(b.shape)}"
    return float(np.max(np.abs(a - b)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--audio", default=str(REPO / "datasets/fixtures/audio/soundscape_1min.ogg"))
    ap.add_argument("--silencio", default="target/release/silencio",
                    help="path of the silencio binary (relative to the repo root or absolute)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", help="also write the results here as JSON")
    args = ap.parse_args()
    path = pathlib.Path(args.audio)

    impls = [("librosa", *make_librosa()), ("torchaudio", *make_torchaudio()),
             ("silencio", *make_silencio(args.silencio))]
    results = {}
    outputs = {}
    # silencio writes its .npy atomically with an fsync; on a RAM disk that costs nothing, so
    # the timing compares decode + features (librosa and torchaudio write no file at all).
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        for name, fn, desc in impls:
            if fn is None:
                print(f"skip {name}: {desc}", file=sys.stderr)
                results[name] = {"skipped": desc}
                continue
            print(f"timing {name} ({desc}) ...", file=sys.stderr)
            med, times, out = time_it(fn, path, pathlib.Path(tmp) / f"{name}.npy", args.repeat)
            outputs[name] = out
            results[name] = {"version": desc, "median_s": med, "runs_s": times,
                             "shape": list(np.shape(out)) if out is not None else None}

    ref = outputs.get("librosa")
    for name in ("torchaudio", "silencio"):
        if name in outputs:
            results[name]["max_abs_diff_db_vs_librosa"] = max_diff(outputs[name], ref)

    def med(n):
        return results.get(n, {}).get("median_s")

    ratios = {}
    if med("silencio"):
        for n in ("librosa", "torchaudio"):
            if med(n):
                ratios[f"{n}/silencio"] = med(n) / med("silencio")

    seconds_audio = None
    try:
        import soundfile as sf
        seconds_audio = sf.info(str(path)).duration
    except Exception:
        pass

    lines = [f"Decode + birdclef log-mel of `{path.name}`"
             + (f" ({seconds_audio:.1f} s audio)" if seconds_audio else "")
             + f", median of {args.repeat} runs after 1 warm-up, "
             + f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
             "",
             "| implementation | version | s / run | × real time | max abs diff vs librosa (dB) |",
             "|---|---|---|---|---|"]
    for name, _fn, desc in impls:
        r = results[name]
        if "skipped" in r:
            lines.append(f"| {name} | – | skipped: {r['skipped']} | – | – |")
            continue
        xrt = f"{seconds_audio / r['median_s']:.0f}×" if seconds_audio else "–"
        d = r.get("max_abs_diff_db_vs_librosa", "(reference)" if name == "librosa" else None)
        d = f"{d:.4f}" if isinstance(d, float) else (d or "–")
        lines.append(f"| {name} | {r['version']} | {r['median_s']:.4f} | {xrt} | {d} |")
    lines.append("")
    if ratios:
        lines.append("| ratio | value |")
        lines.append("|---|---|")
        for k, v in ratios.items():
            lines.append(f"| {k} | {v:.2f} |")
    else:
        lines.append("(no ratios: silencio was not timed)")
    table = "\n".join(lines)
    print(table)

    if args.json:
        doc = {
            "audio": str(path), "audio_seconds": seconds_audio, "repeat": args.repeat,
            "recipe": {"n_fft": N_FFT, "hop_length": HOP, "n_mels": N_MELS, "fmin": FMIN,
                       "fmax": FMAX, "window_samples": WIN},
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "cpus": os.cpu_count(), "python": platform.python_version(),
                        "numpy": np.__version__,
                        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")},
            "results": results, "ratios": ratios, "markdown": table,
        }
        pathlib.Path(args.json).write_text(json.dumps(portable_paths(doc, REPO), indent=2) + "\n")


if __name__ == "__main__":
    main()
