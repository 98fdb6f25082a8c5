#!/usr/bin/env python3
"""librosa reference log-mel arrays for the Rust feature extractor.

    .venv/bin/python crates/audio/tests/reference/make_reference.py          # (re)write arrays
    .venv/bin/python crates/audio/tests/reference/make_reference.py --check  # recompute + compare

For each real 32 kHz clip and each recipe, the mono audio is decoded the way
`librosa.load(path, sr=None, mono=True)` decodes it (see "Decoding" below), held
as float64, and cut into consecutive 5 s windows of
160000 samples (hop 160000). A last partial window is zero-padded to 160000
samples if it holds at least 1 s (32000 samples), dropped otherwise. Per window:

    S = librosa.feature.melspectrogram(y=win, sr=32000, n_fft=N, hop_length=H,
            win_length=N, window='hann', center=True, pad_mode='constant',
            power=2.0, n_mels=M, fmin=FMIN, fmax=FMAX, htk=False, norm='slaney')
    librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=None)

saved as float32 `{clip_stem}.{recipe}.npy`, shape [windows, mels, frames].
Each recipe's filterbank, librosa.filters.mel(..., htk=False, norm='slaney'),
is saved once as float64 `melbank.{recipe}.npy`, shape [mels, 1 + N/2].
manifest.json lists every array with its shape, its decoder, the number of
samples that decoder produced, and the library/ffmpeg versions.

Decoding (librosa.load tries soundfile first and falls back to audioread):
  * "soundfile" -- WAV, FLAC, Ogg and MP3: soundfile.read(dtype='float64').
    int16 PCM / 32768 for WAV/FLAC. libsndfile 1.2.2 decodes MP3 with mpg123,
    gapless: it drops the LAME-tag encoder delay and padding, exactly as ffmpeg
    does. libsndfile's MP3 and Vorbis decoders produce float32, so the float64
    read equals librosa.load's float32 output widened (checked).
  * "ffmpeg" -- M4A/AAC, which libsndfile cannot open, so librosa.load falls back
    to audioread, whose FFmpegAudioFile backend pipes `ffmpeg -i file -f s16le -`.
    That path is reproduced deterministically, without audioread's backend
    choice and threads, by running exactly
        ffmpeg -v error -i file -f f32le -ac 1 -
    in a subprocess and reading the little-endian float32 samples. Unlike
    audioread it asks for f32le, not s16le, so the samples are the AAC decoder's
    float output without audioread's int16 quantisation (librosa.load would
    return these values rounded to multiples of 1/32768). ffmpeg 5.1 applies
    the MP4 edit list's start (skips the 1024 AAC priming samples) but not its
    end, so the tail padding of the last AAC frame is kept: 320512 samples for
    the 320001-sample source.

--check recomputes everything into a temporary directory and compares with the
committed files (log-mel: np.allclose atol 1e-3 dB; filterbank: rtol 1e-9),
exiting non-zero on any mismatch or missing/extra array.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import librosa
import numpy as np
import scipy
import soundfile as sf

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[3]
AUDIO = REPO / "datasets" / "fixtures" / "audio"

SR = 32000
WIN = 160000        # 5 s
HOP = 160000
MIN_TAIL = 32000    # a partial last window is kept (zero-padded) only if >= 1 s

RECIPES = {
    "birdclef": dict(n_fft=2048, hop_length=512, n_mels=128, fmin=20.0, fmax=16000.0),
    "panns": dict(n_fft=1024, hop_length=320, n_mels=64, fmin=50.0, fmax=14000.0),
    "wide": dict(n_fft=4096, hop_length=1252, n_mels=224, fmin=0.0, fmax=16000.0),
}

# (stem, file, seconds to keep or None for all, recipes, decoder)
CLIPS = [
    ("crowsetta_forest", "crowsetta_forest.wav", None, ["birdclef", "panns", "wide"], "soundfile"),
    ("opensoundscape_birds_10s", "opensoundscape_birds_10s.wav", None, ["birdclef", "panns", "wide"],
     "soundfile"),
    ("soundscape_1min_first10s", "soundscape_1min.ogg", 10.0, ["birdclef", "panns", "wide"], "soundfile"),
    # 7 s: one full window + a 2 s tail that is zero-padded to 5 s (exercises the tail rule).
    ("crowsetta_forest_first7s", "crowsetta_forest.wav", 7.0, ["birdclef"], "soundfile"),
    # The crowsetta clip through lossy codecs at 32 kHz (no resampling): MP3 via
    # libsndfile/mpg123, AAC-LC/MP4 via ffmpeg (librosa's audioread fallback).
    ("crowsetta_forest_32k_mp3", "crowsetta_forest_32k.mp3", None, ["birdclef"], "soundfile"),
    ("crowsetta_forest_32k_m4a", "crowsetta_forest_32k.m4a", None, ["birdclef"], "ffmpeg"),
    # FLAC through libsndfile, so every container has its own reference.
    ("crowsetta_forest_flac", "crowsetta_forest.flac", None, ["birdclef"], "soundfile"),
]

# The exact command of the "ffmpeg" decoder (the input path goes after -i).
FFMPEG_DECODE = ["ffmpeg", "-v", "error", "-i", None, "-f", "f32le", "-ac", "1", "-"]

DB_ATOL = 1e-3
MELBANK_RTOL = 1e-9


def ffprobe_rate_channels(path):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
         "stream=sample_rate,channels", "-of", "json", str(path)],
        check=True, capture_output=True, stdin=subprocess.DEVNULL,
    ).stdout
    st = json.loads(out)["streams"][0]
    return int(st["sample_rate"]), int(st["channels"])


def ffmpeg_version():
    try:
        out = subprocess.run(["ffmpeg", "-version"], check=True, capture_output=True,
                             stdin=subprocess.DEVNULL, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    first = out.splitlines()[0].split()
    return first[2] if len(first) > 2 else None


def decode(path, decoder):
    """Mono float64 samples of the whole file, as librosa.load(sr=None) would decode them."""
    if decoder == "soundfile":
        y, sr = sf.read(str(path), dtype="float64", always_2d=True)
        ch = y.shape[1]
    elif decoder == "ffmpeg":
        sr, ch = ffprobe_rate_channels(path)
        cmd = [str(path) if a is None else a for a in FFMPEG_DECODE]
        raw = subprocess.run(cmd, check=True, capture_output=True, stdin=subprocess.DEVNULL).stdout
        if len(raw) % 4:
            raise SystemExit(f"{path}: ffmpeg wrote {len(raw)} bytes, not a whole number of f32 samples")
        y = np.frombuffer(raw, dtype="<f4").astype(np.float64)[:, None]
    else:
        raise ValueError(decoder)
    if sr != SR:
        raise SystemExit(f"{path}: sample rate {sr}, expected {SR}")
    if ch != 1:
        raise SystemExit(f"{path}: {ch} channels, expected mono")
    return y[:, 0]


def load_mono(path, seconds, decoder):
    """(samples cut to `seconds`, number of samples the decoder produced)"""
    y = decode(path, decoder)
    decoded = len(y)
    if seconds is not None:
        y = y[: int(round(seconds * SR))]
    return y, decoded


def windows(y):
    out = []
    start = 0
    while start < len(y):
        w = y[start:start + WIN]
        if len(w) < WIN:
            if len(w) < MIN_TAIL:
                break
            w = np.concatenate([w, np.zeros(WIN - len(w))])
        out.append(w)
        start += HOP
    return out


def logmel(win, r):
    S = librosa.feature.melspectrogram(
        y=win, sr=SR, n_fft=r["n_fft"], hop_length=r["hop_length"], win_length=r["n_fft"],
        window="hann", center=True, pad_mode="constant", power=2.0, n_mels=r["n_mels"],
        fmin=r["fmin"], fmax=r["fmax"], htk=False, norm="slaney",
    )
    return librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=None)


def melbank(r):
    return librosa.filters.mel(
        sr=SR, n_fft=r["n_fft"], n_mels=r["n_mels"], fmin=r["fmin"], fmax=r["fmax"],
        htk=False, norm="slaney", dtype=np.float64,
    )


def generate(out_dir):
    out_dir = pathlib.Path(out_dir)
    arrays = []
    # The wide filterbank (224 x 2049 float64, 3.7 MB) is left out to keep the repo small;
    # the wide recipe is still checked end to end through the log-mel arrays.
    for name, r in RECIPES.items():
        if name == "wide":
            continue
        fb = melbank(r)
        fname = f"melbank.{name}.npy"
        np.save(out_dir / fname, fb)
        arrays.append({"file": fname, "kind": "melbank", "recipe": name,
                       "shape": list(fb.shape), "dtype": "float64"})
    for stem, src, seconds, recipes, decoder in CLIPS:
        y, decoded = load_mono(AUDIO / src, seconds, decoder)
        wins = windows(y)
        for name in recipes:
            r = RECIPES[name]
            a = np.stack([logmel(w, r) for w in wins]).astype(np.float32)
            fname = f"{stem}.{name}.npy"
            np.save(out_dir / fname, a)
            arrays.append({
                "file": fname, "kind": "logmel", "recipe": name,
                "source": f"datasets/fixtures/audio/{src}",
                "source_seconds": seconds, "source_samples": int(len(y)),
                "decoder": decoder, "decoded_samples": int(decoded),
                "shape": list(a.shape), "dtype": "float32",
            })
    manifest = {
        "generator": "crates/audio/tests/reference/make_reference.py",
        "versions": {
            "librosa": librosa.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "soundfile": sf.__version__,
            "libsndfile": sf.__libsndfile_version__,
            "ffmpeg": ffmpeg_version(),
            "python": ".".join(map(str, sys.version_info[:3])),
        },
        "sample_rate": SR,
        "window_samples": WIN,
        "hop_samples": HOP,
        "min_tail_samples": MIN_TAIL,
        "decode": {
            "soundfile": "soundfile.read(dtype='float64'); int16 PCM / 32768 for WAV/FLAC; "
                         "libsndfile's float32 Vorbis/MP3 (mpg123, gapless) output widened",
            "ffmpeg": " ".join("FILE" if a is None else a for a in FFMPEG_DECODE)
                      + " (librosa.load's audioread fallback, as f32le instead of audioread's s16le)",
        },
        "melspectrogram": {"window": "hann", "center": True, "pad_mode": "constant",
                           "power": 2.0, "htk": False, "norm": "slaney",
                           "win_length": "n_fft"},
        "power_to_db": {"ref": 1.0, "amin": 1e-10, "top_db": None},
        "recipes": RECIPES,
        "check_tolerance": {"logmel_atol_db": DB_ATOL, "melbank_rtol": MELBANK_RTOL},
        "arrays": arrays,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def check():
    committed = json.loads((HERE / "manifest.json").read_text())
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(tmp)
        if committed["versions"] != fresh["versions"]:
            print(f"note: versions differ: committed {committed['versions']} now {fresh['versions']}")
        want = {a["file"]: a for a in fresh["arrays"]}
        have = {a["file"]: a for a in committed["arrays"]}
        for f in sorted(set(want) ^ set(have)):
            print(f"MISMATCH {f}: listed in only one of committed/recomputed manifest")
            ok = False
        for f in sorted(set(want) & set(have)):
            path = HERE / f
            if not path.exists():
                print(f"MISSING  {f}")
                ok = False
                continue
            if have[f].get("decoded_samples") != want[f].get("decoded_samples"):
                print(f"MISMATCH {f}: decoded samples {have[f].get('decoded_samples')} committed, "
                      f"{want[f].get('decoded_samples')} now")
                ok = False
                continue
            a, b = np.load(path), np.load(pathlib.Path(tmp) / f)
            if a.shape != b.shape or a.dtype != b.dtype:
                print(f"MISMATCH {f}: shape/dtype {a.shape} {a.dtype} vs {b.shape} {b.dtype}")
                ok = False
                continue
            if want[f]["kind"] == "melbank":
                good = np.allclose(a, b, rtol=MELBANK_RTOL, atol=1e-15)
                err = float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))
                what = f"max rel err {err:.3g}"
            else:
                good = np.allclose(a, b, rtol=0.0, atol=DB_ATOL)
                err = float(np.max(np.abs(a.astype(np.float64) - b)))
                what = f"max abs err {err:.3g} dB"
            print(f"{'ok      ' if good else 'MISMATCH'} {f} {list(a.shape)} {what}")
            ok &= bool(good)
    print("reference check:", "passed" if ok else "FAILED")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="recompute into a temp dir and compare with the committed arrays")
    args = ap.parse_args()
    if args.check:
        sys.exit(check())
    for old in HERE.glob("*.npy"):
        old.unlink()
    m = generate(HERE)
    total = sum((HERE / a["file"]).stat().st_size for a in m["arrays"])
    for a in m["arrays"]:
        print(f"{a['file']:48s} {a['shape']}")
    print(f"wrote {len(m['arrays'])} arrays, {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
