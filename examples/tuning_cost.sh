#!/usr/bin/env bash
# The tuning-cost measurement of docs/TUNING.md for one cell, resumable (rerun it after a stop):
# coordinate descent in the study's order until it stops, its winner at 3 seeds; then TPE and GP at
# search seeds 0..SEEDS-1, each with a budget of C/3 trials (whole sampler rounds of 4); then the
# curves. With FROM (a smaller ratio), FROM is tuned first by coordinate descent and `transfer`
# (Phase II from FROM's best) runs at search seeds 0..SEEDS-1 too, both with 5 finalists (the best
# mean of 5 configs at 3 seeds wins: docs/TUNING.md, "Winners on seed means").
# Usage: examples/tuning_cost.sh OPTIMIZER [SCALE] [RATIO] [SEEDS] [FROM]
set -euo pipefail
opt=${1:?usage: examples/tuning_cost.sh OPTIMIZER [SCALE] [RATIO] [SEEDS] [FROM]}
scale=${2:-cpu-xs}; ratio=${3:-1}; seeds=${4:-3}; from=${5:-}
optbench=${OPTBENCH:-.venv/bin/optbench}
sweep() { "$optbench" sweep --optimizers "$opt" --scale "$scale" --ratios "$ratio" --seeds 3 --yes "$@"; }

if [ -n "$from" ]; then
  "$optbench" sweep --optimizers "$opt" --scale "$scale" --ratios "$from" --seeds 3 --finalists 5 --yes --max-trials 1000
  for seed in $(seq 0 $((seeds - 1))); do
    sweep --protocol transfer --search-seed "$seed" --max-trials 1000 --finalists 5
  done
fi
sweep --protocol coordinate --max-trials 1000
c=$("$optbench" tuning-cost --optimizer "$opt" --scale "$scale" --ratio "$ratio" | sed -n 's/.*took C = \([0-9]*\) trials.*/\1/p')
budget=$(( ((c + 2) / 3 + 3) / 4 * 4 ))
echo "coordinate descent took $c trials: TPE and GP get $budget each"
for seed in $(seq 0 $((seeds - 1))); do
  for protocol in tpe gp; do
    sweep --protocol "$protocol" --search-seed "$seed" --max-trials "$budget"
  done
done
"$optbench" tuning-cost --optimizer "$opt" --scale "$scale" --ratio "$ratio"
