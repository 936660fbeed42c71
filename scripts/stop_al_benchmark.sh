#!/usr/bin/env bash
# Stop the full-scale active-learning benchmark started by scripts/run_al_benchmark.sh without losing a
# round, then bring its committed snapshots and report up to date.
#
#   bash scripts/stop_al_benchmark.sh [MAX_WAIT_S] [MOFBALORA]   # default: wait at most 900 s a process
#   bash scripts/stop_al_benchmark.sh 0                            # stop at once (the rounds in flight are lost)
#
# Each seed's process is stopped as soon as one of its campaigns finishes a round (the finished round is
# already on disk; the next campaign has only just begun), or after MAX_WAIT_S. A kill at any point is safe:
# every step of a campaign is written atomically and `run_al_benchmark.sh` resumes it, but the round in
# flight is computed again. Then every campaign is copied into reports/active_learning/campaigns, the report
# is rewritten, and `git add reports/active_learning` commits the run so far.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_WAIT="${1:-900}"
CLI="${2:-.venv/bin/mofbalora}"
PY="$(dirname "$CLI")/python"
RUNS=runs/al_qmof
SNAPSHOT=reports/active_learning/campaigns
PATTERN="al run --config workflows/al_qmof.yaml --seed"

rounds_done() {  # rows of history over every campaign of seed $1
    "$PY" - "$RUNS" "$1" <<'EOF'
import json, sys
from pathlib import Path
print(sum(len(json.loads(p.read_text())["history"])
          for p in Path(sys.argv[1]).glob(f"*/seed_{sys.argv[2]}/campaign.json")))
EOF
}

stop_seed() {  # seed: wait for its next finished round (at most MAX_WAIT s), then stop its process
    local seed=$1 pid start waited=0
    pid=$(pgrep -o -f "$PATTERN $seed " || true)
    [ -n "$pid" ] || return 0
    start=$(rounds_done "$seed")
    while [ "$waited" -lt "$MAX_WAIT" ] && kill -0 "$pid" 2>/dev/null; do
        [ "$(rounds_done "$seed")" -gt "$start" ] && break
        sleep 5
        waited=$((waited + 5))
    done
    kill "$pid" 2>/dev/null || true
    echo "seed $seed: stopped after ${waited} s ($(rounds_done "$seed") rounds trained over its campaigns)"
}

for seed in 0 1 2; do stop_seed "$seed" & done
wait
while pgrep -f "$PATTERN" >/dev/null; do sleep 1; done
"$CLI" al snapshot --runs "$RUNS" --out "$SNAPSHOT"
"$CLI" al report --runs "$SNAPSHOT" --out reports/active_learning
rm -f "$SNAPSHOT/.report.lock"
if [ -n "$(find "$SNAPSHOT" -name gbm.skops)" ]; then
    echo "error: gradient-boosting models in $SNAPSHOT (they are refitted, never committed):" >&2
    find "$SNAPSHOT" -name gbm.skops >&2
    exit 1
fi
"$CLI" al status --runs "$SNAPSHOT" | tail -1
