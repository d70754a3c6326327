#!/usr/bin/env bash
# The CPU ladder against the study (docs/LADDER.md), resumable (rerun it after a stop): the study's
# eleven optimizers tuned alike at cpu-xs (coordinate descent, MAX_TRIALS configs per cell at each
# of RATIOS, default 0.5, 1 and 2, each cell's winner at 3 seeds), then `optbench agreement` against
# the study's 0.1B speedups, our side read at READ_RATIOS (default 1,2: the reading that agreed
# best in docs/LADDER.md; 0.5x is there for AdamW's law, which needs three ratios; "all" reads
# every one). The 2026-12-04 results: RATIOS=0.25,0.5,1 READ_RATIOS=all.
# BATCH other than 32 (the ladder's default) runs the same ladder at that batch size, so more
# steps on the same tokens, in a store of its own. BATCH must be on the grid's train_batch_size
# values (16, 32, 64): coordinate descent starts from the defaults snapped onto the grid, so a
# batch of 8 would run at 16. SEQ_LEN (default 128, the scale's) sets the sequence length, and
# with it each step's tokens (SEQ_LEN=64 at BATCH 32 keeps batch 16's tokens and steps).
# FINALISTS (default 3, the ladder's protocol since docs/LADDER.md measured it) re-runs each
# cell's FINALISTS best configs at every seed and picks the winner on their means (`sweep
# --finalists`); 1 picks on the tuning seed alone, as the study did. Each setting has a store of
# its own, results/ladder-b<BATCH>[-s<SEQ_LEN>][-t<MAX_TRIALS>][-f<FINALISTS>]; ratios are cells
# within it.
# Usage: [OPTIMIZERS=a,b,...] [RATIOS=r,..] [READ_RATIOS=r,..|all] [SEQ_LEN=n] examples/ladder.sh
#        [BATCH] [MAX_TRIALS] [FINALISTS]
set -euo pipefail
batch=${1:-32}; trials=${2:-8}; finalists=${3:-3}
case $batch in 16|32|64) ;; *) echo "examples/ladder.sh: BATCH must be 16, 32 or 64 (got $batch)" >&2; exit 2;; esac
seq_len=${SEQ_LEN:-128}
[[ $seq_len =~ ^[1-9][0-9]*$ ]] ||
  { echo "examples/ladder.sh: SEQ_LEN must be a positive integer (got $seq_len)" >&2; exit 2; }
optbench=${OPTBENCH:-.venv/bin/optbench}
optimizers=${OPTIMIZERS:-adamw,lion,sophia,cautious,mars,nadamw,muon,soap,adam_mini,kron,scion}
ratios=${RATIOS:-0.5,1,2}
read_ratios=${READ_RATIOS:-1,2}
results=${OPTBENCH_RESULTS:-results}/ladder-b$batch
[ "$seq_len" = 128 ] || results=$results-s$seq_len
[ "$trials" = 8 ] || results=$results-t$trials
[ "$finalists" = 1 ] || results=$results-f$finalists
mkdir -p "$results"
store=sqlite:///$results/optbench.db
model=()
if [ "$batch" != 32 ] || [ "$seq_len" != 128 ]; then
  name=cpu-xs-b$batch; [ "$seq_len" = 128 ] || name=$name-s$seq_len
  printf 'name = "%s"\nbatch = %s\n' "$name" "$batch" > "$results/model.toml"
  [ "$seq_len" = 128 ] || printf 'seq_len = %s\n' "$seq_len" >> "$results/model.toml"
  model=(--model "$results/model.toml")
fi
"$optbench" sweep --scale cpu-xs "${model[@]}" --ratios "$ratios" --optimizers "$optimizers" \
  --max-trials "$trials" --seeds 3 --finalists "$finalists" --workers 2 --threads 1 --store "$store" \
  --optuna-storage "$results/optuna.journal" --yes
"$optbench" agreement --store "$store" --ratios "$read_ratios" --out "$results/agreement"
