#!/usr/bin/env bash
# The prepared GPU run, for an offline machine with an NVIDIA GPU that cannot build Burn.
#
#   scripts/gpu-check.sh build [DIR]   On a machine that builds (here): the `gpu-check` binary
#       with the wgpu backend (Vulkan; NVIDIA's driver runs it), stripped and xz-compressed, with a
#       copy of this script, into DIR (default target/gpu-check). Copy DIR to the GPU machine:
#       everything the run needs is in it (models are built from their configs, real audio is
#       embedded), and it must stay under 64 MiB (checked).
#   ./gpu-check.sh run [ARGS...]       On the GPU machine, from DIR: unpacks the binary, prints the
#       device, checks forward parity with flex on real audio, times EfficientNet-B0 and
#       ResNet-50 inference (batch 1 / 16 / 64) and training steps, runs the scaling table over
#       the GPUs present, and writes gpu-check.json after every phase (a time-out still leaves the
#       figures so far). ARGS go to the binary (`--size tiny` for a software adapter such as
#       Mesa's lavapipe; `--device cuda` in a CUDA build; `--help`).
#
# Environment: GPU_CHECK_PROFILE (cargo profile of `build`, default release), GPU_CHECK_FEATURES
# (default wgpu; a user with network access may build `cuda`), GPU_CHECK_BIN (package this
# binary instead of building one: CI passes the one its wgpu tests built, since a plain
# `cargo build` resolves other dependency features and would compile everything again),
# GPU_CHECK_TIMEOUT (seconds of `run`, default 540).
set -euo pipefail

cmd="${1:-}"
shift || true
here="$(cd "$(dirname "$0")" && pwd)"
limit_bytes=$((64 * 1024 * 1024))

case "$cmd" in
build)
  repo="$(cd "$here/.." && pwd)"
  out="${1:-$repo/target/gpu-check}"
  profile="${GPU_CHECK_PROFILE:-release}"
  features="${GPU_CHECK_FEATURES:-wgpu},gpu-check"
  bin="${GPU_CHECK_BIN:-}"
  if [ -z "$bin" ]; then
    (cd "$repo" && cargo build -p silencio --profile "$profile" --features "$features" --bin gpu-check)
    target="${CARGO_TARGET_DIR:-$repo/target}"
    dir="$profile"; [ "$profile" = dev ] && dir=debug
    bin="$target/$dir/gpu-check"
  fi
  mkdir -p "$out"
  strip -o "$out/gpu-check" "$bin"
  xz -T2 -6 -f "$out/gpu-check"
  cp "$repo/scripts/gpu-check.sh" "$out/gpu-check.sh"
  size=$(du -cb "$out/gpu-check.xz" "$out/gpu-check.sh" | tail -1 | cut -f1)
  echo "gpu-check: $out ($size bytes; limit $limit_bytes)"
  [ "$size" -le "$limit_bytes" ] || { echo "gpu-check: over 64 MiB" >&2; exit 1; }
  ;;
run)
  bin="$here/gpu-check"
  if [ ! -x "$bin" ]; then
    [ -f "$here/gpu-check.xz" ] || { echo "gpu-check: no gpu-check(.xz) beside this script" >&2; exit 1; }
    bin="$(mktemp -d)/gpu-check"
    xz -dc "$here/gpu-check.xz" > "$bin"
    chmod +x "$bin"
  fi
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  timeout --signal=TERM --kill-after=10 "${GPU_CHECK_TIMEOUT:-540}" "$bin" "$@"
  ;;
*)
  echo "usage: $0 build [DIR] | run [ARGS...]" >&2
  exit 2
  ;;
esac
