#!/usr/bin/env bash
# The effect of each technique of the winners' playbook on the evaluation pool, side by side in
# one run (issue 19), cross-validated so that every recording that can be held out is scored:
#   - the pool's recordings are stratified into FOLDS folds (split seed 0, `data.folds`); for
#     each fold f the tiny model of experiments/pool.toml is trained without fold f's recordings
#     (base-f<f>), scores the unlabelled soundscapes and the labelled clips (trainer teach), and
#     teaches a noisy-student round (pseudo-f<f>) and a distillation run (distill-f<f>) on the
#     same split, tested on the same windows: fold f's held-out clips and soundscapes mixed
#     from its held-out calls;
#   - the training noise is measured at one split: fold 0's baseline again with training seeds
#     1 and 2 (`data.split_seed` 0 keeps the held-out recordings);
#   - `silencio eval compare` pairs the folds (Δ = mean of the folds' Δ, a bootstrap within
#     each fold, the seed term divided by the folds) and gives the verdict.
#
#   bash datasets/pool/measure.sh [OUT]      (default OUT: datasets/pool/build/measure)
#   FOLDS=5 (default) · SILENCIO_BIRDNET_DIR=… adds distillation from BirdNET (a BirdNET build)
#
# Builds the pool first when it is missing. Writes OUT/<technique>-<set>.json (compare's output)
# and prints one verdict line per comparison. Finished runs are skipped, so a killed measure
# continues where it stopped. Nothing is scored on windows a model trained on: the test sets
# are each fold's held-out clips and soundscapes mixed from its held-out calls; pseudo-labels
# come from the unlabelled soundscapes, which no test set uses.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-datasets/pool/build/measure}"
folds="${FOLDS:-5}"
[ -f datasets/pool/build/birdclef/train.csv ] || bash datasets/pool/make_pool.sh
mkdir -p "$out"
trainer=(cargo run -q -p trainer --)
silencio=(cargo run -q -p silencio --bin silencio --)
common=(--tracking-uri "$out/mlruns" --registry "$out/registry")

# experiments/pool.toml holding out fold $2, trained with seed $3, plus extra sections. The
# failure suites are left out: they are not compared here.
variant() { # name fold seed extra-toml
  sed -e "s/^name = \"pool\"/name = \"$1\"/" -e "s/^seed = 0/seed = $3/" \
    -e "s|^shards = .*|shards = \"$out/shards-f$2\"\nfolds = $folds\nfold = $2\nsplit_seed = 0|" \
    -e "s|^\[eval\]|[eval]\nsuites = []|" experiments/pool.toml > "$out/$1.toml"
  printf '\n[output]\nruns = "%s"\n%b' "$out/runs" "$4" >> "$out/$1.toml"
}
run() { # name: skipped when finished; an interrupted or failed run continues
  local dir="$out/runs/$1/$1" resume=()
  [ -f "$dir/outcome.json" ] && return 0
  [ -d "$dir" ] && resume=(--resume)
  "${trainer[@]}" --experiment "$out/$1.toml" --run-name "$1" "${resume[@]}" "${common[@]}" \
    > "$out/$1.log"
}
teach() { # teacher-spec experiment name
  [ -f "$out/teach-$3.done" ] && return 0
  "${trainer[@]}" teach --teacher "$1" --experiment "$2" --name "$3" --train-audio \
    --registry "$out/registry" > "$out/teach-$3.log"
  touch "$out/teach-$3.done"
}
techniques=(pseudo distill)
[ -n "${SILENCIO_BIRDNET_DIR:-}" ] && techniques+=(birdnet)

for ((f = 0; f < folds; f++)); do
  variant "base-f$f" "$f" 0 ""
  run "base-f$f"
  # The fold's baseline scores the unlabelled soundscapes and the labelled clips.
  teach "$out/runs/base-f$f/base-f$f/bundle" "$out/base-f$f.toml" "base-f$f"
  variant "pseudo-f$f" "$f" 0 "[pseudo]\nteacher = \"base-f$f\"\nlabels = \"soft\"\nratio = 1.0\n"
  run "pseudo-f$f"
  variant "distill-f$f" "$f" 0 "[distill]\nteacher = \"base-f$f\"\nweight = 1.0\ntemperature = 2.0\n"
  run "distill-f$f"
done
# Training noise at one split: fold 0's baseline with two more training seeds.
for s in 1 2; do variant "base-f0-s$s" 0 "$s" ""; run "base-f0-s$s"; done
# The 2026 teacher: distillation of BirdNET's probabilities and 1024-d embeddings (a BirdNET
# build of the trainer, last so that the build switches features once; its outputs are
# CC BY-NC-SA).
if [ -n "${SILENCIO_BIRDNET_DIR:-}" ]; then
  trainer=(cargo run -q -p trainer --features birdnet --)
  for ((f = 0; f < folds; f++)); do
    teach birdnet "$out/base-f$f.toml" "birdnet-f$f"
    variant "birdnet-f$f" "$f" 0 "[distill]\nteacher = \"birdnet-f$f\"\nweight = 1.0\ntemperature = 2.0\nembedding_weight = 1.0\n"
    run "birdnet-f$f"
  done
fi

list() { # technique set: its window scores over the folds, comma-separated
  for ((f = 0; f < folds; f++)); do printf '%s,' "$out/runs/$1-f$f/$1-f$f/eval-$2/window_scores.json"; done |
    sed 's/,$//'
}
seeds=$(printf '%s,' "$out"/runs/base-f0/base-f0/report.json "$out"/runs/base-f0-s{1,2}/base-f0-s*/report.json |
  sed 's/,$//')
for t in "${techniques[@]}"; do
  for set in valid mixed; do
    "${silencio[@]}" eval compare --a "$(list base "$set")" --b "$(list "$t" "$set")" \
      --seeds-a "$seeds" --set "$set" --n-seeds 1 --bootstrap 1000 \
      --out "$out/$t-$set.json" | tail -n 4 | sed "s/^/$t $set: /"
  done
done
