#!/usr/bin/env bash
# Start (or resume) the full-scale active-learning benchmark of workflows/al_qmof.yaml on this machine, in the
# background, on two cores; safe to run again at any time.
#
#   1. the frozen CHGNet trunk pass over the structures the campaigns read (resumable; ~35 min on 2 cores the
#      first time on a machine, seconds after);
#   2. every campaign restored from its committed snapshot (reports/active_learning/campaigns) where this
#      machine's runs folder is behind it (a new machine has none);
#   3. one process of one thread a seed (never two writers of one campaign; three on two cores): each seed
#      holds every strategy, so the three advance at the same pace and end together, with no idle core at
#      the end (a split by strategy leaves one process an hour a round behind the other). Each refreshes the
#      report and its campaigns' snapshots after every round; `git add reports/active_learning` then
#      commits the run so far.
#
#   MOFBALORA_QMOF=... bash scripts/run_al_benchmark.sh [MOFBALORA]     # MOFBALORA: the CLI (default .venv's)
#   mofbalora al status --runs runs/al_qmof                              # progress and time left
#   bash scripts/stop_al_benchmark.sh                                    # stop between rounds, snapshot, report
#
# Logs: runs/al_qmof/trunk_cache.log and runs/al_qmof/run_s{0,1,2}.log.
set -euo pipefail
cd "$(dirname "$0")/.."
CLI="${1:-.venv/bin/mofbalora}"
RUNS=runs/al_qmof
SNAPSHOT=reports/active_learning/campaigns
mkdir -p "$RUNS"
if pgrep -f "al run --config workflows/al_qmof.yaml" >/dev/null; then
    echo "the benchmark already runs here: $(pgrep -fa 'al run --config workflows/al_qmof.yaml' | wc -l) process(es)"
    exit 0
fi
(
    set -e
    # the split's val part is read only up to al_qmof.yaml's val_size (600)
    "$CLI" data trunk-cache --order val --limit 600 --no-cut --workers 2 --quiet
    "$CLI" data trunk-cache --order test,train --no-cut --workers 2 --quiet
    if [ -d "$SNAPSHOT" ]; then "$CLI" al snapshot --runs "$SNAPSHOT" --out "$RUNS"; fi
    for seed in 0 1 2; do
        OMP_NUM_THREADS=1 nice -n 10 "$CLI" al run --config workflows/al_qmof.yaml --seed "$seed" \
            --set run.threads=1 --quiet >> "$RUNS/run_s$seed.log" 2>&1 &
    done
    wait
) >> "$RUNS/trunk_cache.log" 2>&1 &
echo "started in the background (pid $!); logs in $RUNS/"
