#!/usr/bin/env python3
"""Python/librosa baseline of `silencio etl`: a BirdCLEF tree -> per-clip log-mel arrays.

    .venv-bench/bin/python benches/compare/etl_reference.py --data <dir> --out <dir>
        [--workers 2] [--summary-json summary.json]

For each row of <data>/train.csv: librosa.load(<data>/train_audio/<filename>, sr=32000,
mono=True) (default soxr_hq resampling), 5 s windows with a 5 s hop (a last partial window is
zero-padded and kept only if it holds >= 1 s; a clip shorter than 5 s gives exactly one padded
window), the `birdclef` log-mel of every window (librosa.feature.melspectrogram + power_to_db,
float32), then
    <out>/<label>/<id>.mel.npy      float32 [windows, 128, 313]
    <out>/<label>/<id>.labels.npy   float32 [classes], taxonomy order: primary 1.0, secondary 0.5
Rows whose audio cannot be read, or whose primary label is not in taxonomy.csv, are reported
on stderr and skipped. Secondary labels not in the taxonomy are dropped.
"""
import os

# The parallelism is the Pool's: BLAS threads inside each worker would oversubscribe the cores
# (2 workers x N BLAS threads). Must be set before numpy is imported; the caller can override.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import ast  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

SR = 32000
WIN = 5 * SR           # window length and hop, samples
MIN_TAIL = 1 * SR      # a short last window needs this much real audio
N_FFT, HOP, N_MELS, FMIN, FMAX = 2048, 512, 128, 20.0, 16000.0

# librosa falls back to (deprecated) audioread when soundfile cannot read a file and warns
# twice; the failure itself is reported per clip below, so the warnings are only noise.
warnings.filterwarnings("ignore", message="PySoundFile failed")
warnings.filterwarnings("ignore", category=FutureWarning, module="librosa")


def windows(y):
    """[windows, WIN] float32, the rule of crates/audio/src/window.rs (hop == length)."""
    starts = [s for s in range(0, max(len(y), 1), WIN)
              if s == 0 or len(y) - s >= min(WIN, MIN_TAIL)]
    out = np.zeros((len(starts), WIN), dtype=np.float32)
    for i, s in enumerate(starts):
        seg = y[s:s + WIN]
        out[i, :len(seg)] = seg
    return out


def log_mel(w):
    S = librosa.feature.melspectrogram(
        y=w, sr=SR, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, window="hann",
        center=True, pad_mode="constant", power=2.0, n_mels=N_MELS, fmin=FMIN, fmax=FMAX,
        htk=False, norm="slaney")
    return librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=None).astype(np.float32, copy=False)


def warm_up():
    """librosa imports its audio stack (scipy, numba, soxr) lazily and compiles some of it on
    first use: seconds of start-up. Done once here, before the fork, both workers inherit it
    instead of each paying it. The time still counts in the total (reported as startup_s)."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros(4410, dtype=np.float32), 44100, format="WAV")
    buf.seek(0)
    y, _ = librosa.load(buf, sr=SR, mono=True)  # exercises decode + soxr_hq resampling
    log_mel(windows(y)[0])


def parse_list(s):
    """train.csv stores secondary labels as a Python list literal, e.g. "['grekis']"."""
    s = (s or "").strip()
    if not s:
        return []
    try:
        v = ast.literal_eval(s)
    except (ValueError, SyntaxError):
        return []
    return [str(x) for x in v] if isinstance(v, (list, tuple)) else []


def process(job):
    """One clip. Returns (filename, audio_seconds, windows, error); never raises, so one bad
    file cannot take down the pool."""
    filename, src, dst, labels = job
    try:
        y, _ = librosa.load(src, sr=SR, mono=True)
        w = windows(y)
        mel = np.stack([log_mel(x) for x in w])
        dst.parent.mkdir(parents=True, exist_ok=True)
        np.save(dst.with_name(dst.name + ".mel.npy"), mel)
        np.save(dst.with_name(dst.name + ".labels.npy"), labels)
        return filename, len(y) / SR, len(w), None
    except Exception as e:  # unreadable / corrupt audio: report and skip
        return filename, 0.0, 0, f"{type(e).__name__}: {e}".rstrip(": ")


def read_jobs(data, out):
    with open(data / "taxonomy.csv", newline="", encoding="utf-8-sig") as f:
        classes = [r["primary_label"].strip() for r in csv.DictReader(f)]
    index = {c: i for i, c in enumerate(classes)}
    jobs, skipped = [], []
    with open(data / "train.csv", newline="", encoding="utf-8-sig") as f:
        for r in csv.DictReader(f):
            filename, primary = r["filename"].strip(), r["primary_label"].strip()
            if primary not in index:
                skipped.append((filename, f"primary label {primary!r} not in taxonomy"))
                continue
            y = np.zeros(len(classes), dtype=np.float32)
            for s in parse_list(r.get("secondary_labels")):
                if s in index:
                    y[index[s]] = 0.5
            y[index[primary]] = 1.0
            stem = pathlib.PurePosixPath(filename)
            jobs.append((filename, str(data / "train_audio" / filename),
                         out / stem.parent / stem.stem, y))
    return classes, jobs, skipped


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=pathlib.Path,
                    help="BirdCLEF-layout dir (train.csv, taxonomy.csv, train_audio/)")
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--summary-json", type=pathlib.Path,
                    help="also write the totals here (read by etl_side_by_side.py)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    classes, jobs, skipped = read_jobs(args.data, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    warm_up()
    startup = time.perf_counter() - t0
    clips, seconds, n_windows = 0, 0.0, 0
    # fork: the workers inherit the imported librosa instead of importing it again each.
    with mp.get_context("fork").Pool(args.workers) as pool:
        for filename, secs, n, err in pool.imap_unordered(process, jobs, chunksize=1):
            if err:
                skipped.append((filename, err))
                continue
            clips, seconds, n_windows = clips + 1, seconds + secs, n_windows + n
    elapsed = time.perf_counter() - t0

    for filename, why in skipped:
        print(f"skip {filename}: {why}", file=sys.stderr)
    print(f"{clips} clips, {seconds:.1f} s audio, {n_windows} windows written, "
          f"{len(skipped)} skipped, {len(classes)} classes, {elapsed:.2f} s "
          f"(of which start-up {startup:.2f} s)")
    if args.summary_json:
        args.summary_json.write_text(json.dumps({
            "clips": clips, "audio_seconds": seconds, "windows": n_windows,
            "skipped": len(skipped), "classes": len(classes), "elapsed_s": elapsed,
            "startup_s": startup, "workers": args.workers,
        }) + "\n")


if __name__ == "__main__":
    main()
