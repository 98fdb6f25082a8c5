#!/usr/bin/env bash
# The effect of each technique of the winners' playbook on the evaluation pool, side by side in
# one run (issue 19): the tiny model of experiments/pool.toml at seeds 0, 1, 2 (the spread over
# seeds), then at seed 0 — the same split, the same held-out calls, the same mixed test
# soundscapes — a noisy-student round on the pool's unlabelled soundscapes and a distillation run,
# both taught by the seed-0 baseline; each compared with the seed-0 baseline by
# `silencio eval compare` (paired cluster bootstrap, minimum detectable effect, verdict).
#
#   bash datasets/pool/measure.sh [OUT]      (default OUT: datasets/pool/build/measure)
#
# Builds the pool first when it is missing. Writes OUT/<technique>-<set>.json (compare's output)
# and prints one verdict line per comparison. Nothing is scored on windows a model trained on:
# the test sets are the validation split's windows and soundscapes mixed from its held-out calls;
# the pseudo-labelled windows come from the unlabelled soundscapes, which no test set uses.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-datasets/pool/build/measure}"
[ -f datasets/pool/build/birdclef/train.csv ] || bash datasets/pool/make_pool.sh
mkdir -p "$out"
trainer=(cargo run -q -p trainer --)
silencio=(cargo run -q -p silencio --bin silencio --)
common=(--tracking-uri "$out/mlruns" --registry "$out/registry")

# experiments/pool.toml with another seed, run directory and extra sections.
variant() { # name seed extra-toml
  # The ETL's split follows the seed: shards per seed.
  sed -e "s/^name = \"pool\"/name = \"$1\"/" -e "s/^seed = 0/seed = $2/" \
    -e "s|^shards = .*|shards = \"$out/shards-s$2\"|" experiments/pool.toml > "$out/$1.toml"
  printf '\n[output]\nruns = "%s"\n%b' "$out/runs" "$3" >> "$out/$1.toml"
}
run() { # name: skipped when finished; an interrupted or failed run continues
  local dir="$out/runs/$1/$1" resume=()
  [ -f "$dir/outcome.json" ] && return 0
  [ -d "$dir" ] && resume=(--resume)
  "${trainer[@]}" --experiment "$out/$1.toml" --run-name "$1" "${resume[@]}" "${common[@]}" \
    > "$out/$1.log"
}
techniques=(pseudo distill)

for s in 0 1 2; do variant "base-s$s" "$s" ""; run "base-s$s"; done
# The seed-0 baseline scores the unlabelled soundscapes and the labelled clips.
"${trainer[@]}" teach --teacher "$out/runs/base-s0/base-s0/bundle" --experiment "$out/base-s0.toml" \
  --name base-s0 --train-audio --registry "$out/registry" > "$out/teach.log"
variant pseudo-s0 0 '[pseudo]\nteacher = "base-s0"\nlabels = "soft"\nratio = 1.0\n'
run pseudo-s0
variant distill-s0 0 '[distill]\nteacher = "base-s0"\nweight = 1.0\ntemperature = 2.0\n'
run distill-s0

# With BirdNET converted (SILENCIO_BIRDNET_DIR), the 2026 teacher too: distillation of its
# probabilities and 1024-d embeddings (a BirdNET build of the trainer; CC BY-NC-SA outputs).
if [ -n "${SILENCIO_BIRDNET_DIR:-}" ]; then
  trainer=(cargo run -q -p trainer --features birdnet --)
  "${trainer[@]}" teach --teacher birdnet --experiment "$out/base-s0.toml" --name birdnet \
    --train-audio --registry "$out/registry" > "$out/teach-birdnet.log"
  variant birdnet-s0 0 '[distill]\nteacher = "birdnet"\nweight = 1.0\ntemperature = 2.0\nembedding_weight = 1.0\n'
  run birdnet-s0
  techniques+=(birdnet)
fi

seeds=$(printf '%s,' "$out"/runs/base-s{0,1,2}/base-s*/report.json | sed 's/,$//')
for t in "${techniques[@]}"; do
  for set in valid mixed; do
    "${silencio[@]}" eval compare \
      --a "$out/runs/base-s0/base-s0/eval-$set/window_scores.json" \
      --b "$out/runs/$t-s0/$t-s0/eval-$set/window_scores.json" \
      --seeds-a "$seeds" --set "$set" --n-seeds 1 --bootstrap 1000 \
      --out "$out/$t-$set.json" | tail -n 3 | sed "s/^/$t $set: /"
  done
done
