#!/usr/bin/env bash
# Issue 9's experiment again, with the paper's budget and a learned embedder:
#   learned: the demo embedded by the checkpoint of the full-pool cpu-tiny run (seed 0), clustered,
#            SemDeDup at EPS_LEARNED first, then keep 30% of what remains; DBP / random / SSP / DBP
#            quotas with random members, each at equal compute and equal epochs, 3 seeds, from scratch;
#   offline: the same on the offline-embedder demo workspace (SemDeDup at EPS_OFFLINE).
# Both compare against the same full-pool runs (the full pool is the same images whatever the
# embedder). Order: full s0, learned s0, full s1, learned s1, ..., then the offline grid, so that
# a partial run is balanced in seeds for the learned embedder first. Resumable: finished runs are
# skipped. About 3 hours on 2 shared CPU cores.
#   bash benchmarks/experiment_paper_budget.sh [EPS_OFFLINE] [EPS_LEARNED]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
EPS_OFF=${1:-0.05}
EPS_LEARNED=${2:-0.05}
OFF=workspaces/experiment
LEARNED=workspaces/experiment-learned
RUN0=$OFF/runs/full-eqcompute-s0
export DENSPRUNE_BENCH_COMMAND="bash benchmarks/experiment_paper_budget.sh $EPS_OFF $EPS_LEARNED"
off() { $PY benchmarks/run_experiment.py --workspace $OFF --dedup-eps "$EPS_OFF" --dbp-rand \
          --out benchmarks/results/experiment_dedup.json "$@"; }
learned() { $PY benchmarks/run_experiment.py --workspace $LEARNED --dedup-eps "$EPS_LEARNED" --dbp-rand \
              --embedder openclip --model "local-dir:$RUN0/model" --weights "$RUN0/checkpoints/epoch_4.pt" \
              --full-from $OFF --out benchmarks/results/experiment_learned.json "$@"; }
for s in 0 1 2; do
  off --seeds $s --full-only
  learned --seeds $s
done
for s in 0 1 2; do
  off --seeds $s
done
off --seeds 0 1 2 --report-only   # the tables over all seeds
learned --seeds 0 1 2 --report-only
