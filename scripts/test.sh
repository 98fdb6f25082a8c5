#!/usr/bin/env bash
# The README's test command. Installs the test-only tools that tests start themselves on
# loopback (moto_server: a real S3-compatible server for the ETL's s3:// test) into .venv-test,
# then runs every Rust test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-test/bin/python ] || python3 -m venv .venv-test
.venv-test/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
export SILENCIO_MOTO_SERVER="$PWD/.venv-test/bin/moto_server"
exec cargo test --workspace "$@"
