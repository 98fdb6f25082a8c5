#!/usr/bin/env python3
"""Builds the evaluation pool (BirdCLEF 2025 layout) from source files already extracted and
checked by make_pool.sh. Standard library only; audio work is done by ffmpeg through
datasets/demo/build_demo.py, whose functions this script imports (same resampler, encoder,
bit-exact flags and level measures as the demo).

    python3 build_pool.py SRC_DIR OUT_DIR

Writes OUT_DIR/birdclef/ (train.csv, taxonomy.csv, train_audio/, train_soundscapes/,
groups.csv) and OUT_DIR/backgrounds/ (backgrounds.csv), then checks formats, levels and the
CSVs and prints the pool's size. See datasets/pool/README.md for every source and cut.
"""

import ast
import csv
import pathlib
import shutil
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "demo"))
import build_demo as bd  # noqa: E402  (reads sys.argv[1:3] at import; rebound below)

SRC = pathlib.Path(sys.argv[1])
POOL = pathlib.Path(sys.argv[2])
OUT = POOL / "birdclef"
BG = POOL / "backgrounds"
# build_demo's functions read these module globals.
bd.SRC, bd.DEMO, bd.OUT, bd.BG = SRC, POOL, OUT, BG

SR = bd.SR
PKG = dict(bd.PKG)
PKG["yaaat"] = "pypi:yaaat==0.2.1"
PKG["acoupi-birdnet"] = "pypi:acoupi-birdnet==0.1.1"  # sdist: paths start with acoupi_birdnet-0.1.1/

# Longest piece of a long recording: each piece is its own train.csv row (one more call for the
# mixer). All pieces of a recording share its `url` (the trainer's split keeps rows with one url
# on one side); the cut of each piece is in groups.csv.
PIECE_S = 5.0

# The demo's taxonomy plus two species from yaaat. Made-up codes as in the demo (README).
TAXONOMY = sorted(
    bd.TAXONOMY
    + [
        ("javasparrow", "", "Lonchura oryzivora", "Java Sparrow", "Aves"),
        ("kiwi", "", "Apteryx sp.", "Kiwi (species not stated)", "Aves"),
    ],
    key=lambda t: (bd.CLASS_ORDER.index(t[4]), t[0]),
)
TAX = {t[0]: t for t in TAXONOMY}
bd.TAXONOMY, bd.TAX = TAXONOMY, TAX

YAAAT = "yaaat/test_files/test_audio/"
YAAAT_AUTHOR = "yaaat test audio (c) 2025-2026 Ashlae Blum'e; recordist not stated"


def pieces(start, end, piece=PIECE_S):
    """[start, end) cut into consecutive pieces of at most `piece` seconds; a tail under 1.5 s
    joins the previous piece (so no piece is a sliver)."""
    cuts, s = [], start
    while end - s > 1e-9:
        e = min(s + piece, end)
        if end - e < 1.5:
            e = end
        cuts.append((round(s, 3), round(e, 3)))
        s = e
    return cuts


def forest_pieces():
    """The crowsetta forest clip in two 5 s pieces, each labelled from the Raven boxes that
    overlap it: primary = most box seconds in the piece, secondary = the others."""
    table = SRC / "crowsetta-5.1.2/doc/scripts/annot/Recording_1_Segment_07.Table.1.selections.txt"
    with open(table, newline="") as f:
        # The table runs past the 10 s snippet (other species there): keep the boxes inside it.
        boxes = [(float(r["Begin Time (s)"]), float(r["End Time (s)"]),
                  bd.RAVEN_TO_EBIRD[r["Species"]]) for r in csv.DictReader(f, delimiter="\t")
                 if float(r["Begin Time (s)"]) < 10.0]
    out = []
    for s, e in pieces(0.0, 10.0):
        total = {}
        for b0, b1, code in boxes:
            overlap = min(b1, e) - max(b0, s)
            if overlap > 0:
                total[code] = total.get(code, 0.0) + overlap
        ranked = sorted(total, key=lambda c: (-total[c], c))
        print(f"crowsetta forest {s:g}-{e:g} s, box seconds:",
              ", ".join(f"{c} {total[c]:.2f}" for c in ranked))
        out.append(bd.clip(ranked[0], "crowsetta",
                           "crowsetta-5.1.2/doc/scripts/audio/Recording_1_Segment_07-snippet.wav",
                           cut=(s, e), author="Chronister et al. (2021), doi:10.1002/ecy.3329",
                           license="CC0-1.0", secondary=ranked[1:]))
    return out


def durations():
    """Source durations in seconds (ffprobe), for cutting long recordings."""
    import json
    import subprocess

    def dur(path):
        r = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                            "json", str(SRC / path)], check=True, capture_output=True, text=True)
        return float(json.loads(r.stdout)["format"]["duration"])
    return dur


def series():
    """Every species' recordings in a meaningful order (README): the demo's sources, long ones
    cut into pieces, plus yaaat's Java sparrow sequences and kiwi syllables."""
    dur = durations()
    bf = "pykanto/data/raw/BENGALESE_FINCH/bird_3/"
    v = "vocalpy/examples/"
    demo = {s[0]["label"]: s for s in bd.series()}
    # Bengalese finch: the pykanto recordings from where the song starts (README of the demo),
    # in 5 s pieces; then crowsetta and vocalpy as in the demo.
    bengalese = []
    for name, start in (("348.wav", 5.0), ("363.wav", 5.5)):
        for cut in pieces(start, dur(bf + name)):
            bengalese.append(bd.clip("bengalesefinch", "pykanto", bf + name, cut=cut,
                                     types=["song"], author=bd.BF_PYKANTO, license="CC-BY-4.0"))
    bengalese += [c for c in demo["bengalesefinch"] if c["pkg"] != "pykanto"]
    java = []
    for wav in sorted((SRC / YAAAT / "sequences/jelatik").glob("*.wav")):
        path = f"{YAAAT}sequences/jelatik/{wav.name}"
        d = dur(path)
        for cut in (pieces(0.0, d) if d > PIECE_S + 1.5 else [None]):
            java.append(bd.clip("javasparrow", "yaaat", path, cut=cut, types=["song"],
                                author=YAAAT_AUTHOR, license="MIT"))
    kiwi = []
    for i in range(1, 11):
        path = f"{YAAAT}syllables/kiwi/slice_{i}.wav"
        # These slices ship at -48 to -15 dBFS peak, several too quiet for the level check:
        # each is peak-normalised to -6 dBFS (a fixed gain per file; `pan` is the first filter).
        a = bd.samples_s16(SRC / path)
        gain = -6.0 - bd.db(max(abs(min(a)), abs(max(a))) / 32768)
        kiwi.append(bd.clip("kiwi", "yaaat", path, pan=f"volume={gain:.2f}dB", types=["call"],
                            author=YAAAT_AUTHOR, license="MIT"))
    return [
        forest_pieces(),
        demo["comyel"],
        bd.great_tits(),
        bengalese,
        demo["zebrafinch"],
        demo["fruitfly"],
        java,
        kiwi,
    ]


def url(c):
    # The source recording only: the split groups rows by url, so pieces never straddle it.
    return f"{PKG[c['pkg']]}/{c['path']}"


def cut(c):
    return f"{c['cut'][0]:g},{c['cut'][1]:g}" if c["cut"] else ""


# Unlabelled soundscapes: real recordings that are in no train.csv row and no background. The
# recorder names and times are made up (README): they only give the site/hour priors something
# consistent to read.
UNLABELLED = [
    ("acoupi-birdnet", "acoupi_birdnet-0.1.1/tests/data/soundscape.wav", 0, "POOLA_20240512_051000"),
    ("acoupi-birdnet", "acoupi_birdnet-0.1.1/tests/data/soundscape.wav", 60, "POOLA_20240512_051100"),
]


def main():
    for d in (OUT, BG):
        if d.exists():
            shutil.rmtree(d)
    (OUT / "train_audio").mkdir(parents=True)
    (OUT / "train_soundscapes").mkdir(parents=True)
    BG.mkdir(parents=True)

    clips = bd.assign_ids(series(), TAXONOMY, "POOL")
    for c in clips:
        c["filename"] = f"{c['label']}/{c['id']}.ogg"
        dest = OUT / "train_audio" / c["filename"]
        dest.parent.mkdir(exist_ok=True)
        bd.encode_clip(c, dest)

    header = ["primary_label", "secondary_labels", "type", "filename", "collection", "rating",
              "url", "latitude", "longitude", "scientific_name", "common_name", "author",
              "license"]
    rows = sorted(clips, key=lambda c: c["filename"])
    with open(OUT / "train.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for c in rows:
            t = TAX[c["label"]]
            w.writerow([c["label"], repr(c["secondary"]), repr(c["types"]), c["filename"], "POOL",
                        "0.0", url(c), "", "", t[2], t[3], c["author"], c["license"]])
    with open(OUT / "taxonomy.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["primary_label", "inat_taxon_id", "scientific_name", "common_name",
                    "class_name"])
        w.writerows(TAXONOMY)
    # Which rows are pieces of one source recording, and where each piece was cut (seconds):
    # for an audit; the split itself groups by url.
    with open(OUT / "groups.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["filename", "group", "cut_s"])
        for c in rows:
            w.writerow([c["filename"], url(c), cut(c)])

    # Backgrounds: the demo's two 10 s pieces (never used as unlabelled soundscapes here, so no
    # test window holds audio a model pseudo-labelled).
    chorus = bd.exact_10s(bd.decode_f32(SRC / "opensoundscape/sample_data/birds_10s.wav"))
    urban = bd.exact_10s(bd.decode_f32(
        SRC / "dcase_util-0.2.20/dcase_util/utils/example_data/acoustic_scene.wav",
        bd.STEREO_MEAN))
    bd.encode_raw(chorus, BG / "bird_chorus_opensoundscape_10s.ogg")
    bd.encode_raw(urban, BG / "urban_scene_dcase_10s.ogg")
    shutil.copyfile(HERE.parent / "demo/backgrounds/backgrounds.csv", BG / "backgrounds.csv")

    minute = 60 * SR * 4
    for pkg, path, start, stem in UNLABELLED:
        raw = bd.decode_f32(SRC / path)
        piece = raw[start * SR * 4:start * SR * 4 + minute]
        piece += b"\0" * (minute - len(piece))
        bd.encode_raw(piece, OUT / "train_soundscapes" / f"{stem}.ogg")

    check(rows)


def check(rows):
    total = 0
    seconds = {}
    audio = sorted((OUT / "train_audio").rglob("*.ogg"))
    for p in audio + sorted((OUT / "train_soundscapes").glob("*.ogg")) + sorted(BG.glob("*.ogg")):
        total += p.stat().st_size
        assert bd.probe(p) == ("vorbis", SR, 1), (p, bd.probe(p))
        a = bd.samples_s16(p)
        q = bd.rms_windows(a, SR // 4)
        rel = p.relative_to(POOL)
        assert max(q) > -50.0, f"{rel}: loudest 0.25 s window below -50 dBFS"
        if "train_audio" in rel.parts:
            assert len(a) <= (PIECE_S + 1.6) * SR, (rel, len(a))
            seconds[rel.parts[-2]] = seconds.get(rel.parts[-2], 0.0) + len(a) / SR
        if "train_soundscapes" in rel.parts:
            assert len(a) == 60 * SR, (rel, len(a))
    with open(OUT / "train.csv", newline="") as f:
        got = list(csv.reader(f))
    codes = [t[0] for t in TAXONOMY]
    used, counts = set(), {}
    for r in got[1:]:
        assert len(r) == 13, r
        prim, sec = r[0], ast.literal_eval(r[1])
        assert prim in codes and all(s in codes for s in sec) and prim not in sec, r
        assert (OUT / "train_audio" / r[3]).is_file(), r[3]
        used |= {prim, *sec}
        counts[prim] = counts.get(prim, 0) + 1
    assert used == set(codes), set(codes) - used
    on_disk = {str(p.relative_to(OUT / "train_audio")) for p in audio}
    assert on_disk == {r[3] for r in got[1:]}
    groups = {url(c).split("#")[0] for c in rows}
    print("species, clips (primary), seconds:")
    for code in codes:
        print(f"  {code:<16} {counts.get(code, 0):3d} {seconds.get(code, 0.0):7.1f}")
    n_soundscapes = len(list((OUT / "train_soundscapes").glob("*.ogg")))
    print(f"build_pool.py: {len(got) - 1} train clips from {len(groups)} source recordings, "
          f"{len(codes)} species, {sum(seconds.values()):.1f} s of calls; "
          f"{n_soundscapes} unlabelled minute(s); {total} bytes of audio; checks passed")


if __name__ == "__main__":
    main()
