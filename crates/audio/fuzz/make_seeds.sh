#!/usr/bin/env bash
# Seed corpus for the decode_bytes fuzz target: the first 12 KiB of each real fixture (every
# container and WAV layout), so libFuzzer starts from valid headers. Re-run after fixtures change.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src="$here/../../../datasets/fixtures/audio"
out="$here/seeds/decode_bytes"
mkdir -p "$out"
rm -f "$out"/*
for f in "$src"/*.wav "$src"/*.ogg "$src"/*.flac "$src"/*.mp3 "$src"/*.m4a; do
  head -c 12288 "$f" > "$out/$(basename "$f")"
done
ls "$out" | wc -l
