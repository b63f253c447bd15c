#!/usr/bin/env bash
# Issue 9's experiment again, with the paper's budget and a learned embedder (docs/experiment.md):
#   1. offline embedder: SemDeDup eps 0.05 first, then keep 30% of what remains; DBP / random / SSP /
#      DBP quotas with random members, equal compute and equal epochs, against the full pool;
#   2. learned embedder: the demo embedded by the checkpoint of the full-pool run (seed 0), re-clustered,
#      the same subsets drawn from it and trained from scratch (full-pool reference shared with 1).
# Seeds interleave (offline s0, learned s0, offline s1, ...), so a partial run stays balanced.
# Resumable: finished runs are skipped. Takes about 1.5-2 hours on 2 CPU cores.
#   bash benchmarks/experiment_paper_budget.sh [EPS_OFFLINE] [EPS_LEARNED]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
EPS_OFF=${1:-0.05}
EPS_LEARNED=${2:-0.05}
OFF=workspaces/experiment
LEARNED=workspaces/experiment-learned
CKPT=$OFF/runs/full-eqcompute-s0/checkpoints/epoch_4.pt
export DENSPRUNE_BENCH_COMMAND="bash benchmarks/experiment_paper_budget.sh $EPS_OFF $EPS_LEARNED"
for s in 0 1 2; do
  $PY benchmarks/run_experiment.py --workspace $OFF --seeds $s --dedup-eps "$EPS_OFF" --dbp-rand \
      --out benchmarks/results/experiment_dedup.json
  $PY benchmarks/run_experiment.py --workspace $LEARNED --seeds $s --dedup-eps "$EPS_LEARNED" --dbp-rand \
      --embedder openclip --model densprune-tiny --weights $CKPT --full-from $OFF \
      --out benchmarks/results/experiment_learned.json
done
# the tables over all seeds
$PY benchmarks/run_experiment.py --workspace $OFF --seeds 0 1 2 --dedup-eps "$EPS_OFF" --dbp-rand \
    --out benchmarks/results/experiment_dedup.json --report-only
$PY benchmarks/run_experiment.py --workspace $LEARNED --seeds 0 1 2 --dedup-eps "$EPS_LEARNED" --dbp-rand \
    --embedder openclip --model densprune-tiny --weights $CKPT --full-from $OFF \
    --out benchmarks/results/experiment_learned.json --report-only
