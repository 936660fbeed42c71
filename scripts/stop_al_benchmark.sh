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

# each seed's process stops once its campaigns' trained rounds (`al status`'s count) grow, or after MAX_WAIT s
# the pattern goes in the environment, not argv, so that the waits below never find this poller itself
STOP_PATTERN="$PATTERN" "$PY" - "$RUNS" "$MAX_WAIT" 0 1 2 <<'EOF'
import os, signal, subprocess, sys, time
from mofbalora.al.report import progress

runs, max_wait, seeds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
pattern = os.environ["STOP_PATTERN"]


def trained() -> dict:
    return progress(runs).groupby("seed")["rounds_trained"].sum().to_dict()


pids = {}
for seed in map(int, seeds):
    found = subprocess.run(["pgrep", "-o", "-f", f"{pattern} {seed} "], capture_output=True, text=True)
    if found.stdout.split():
        pids[seed] = int(found.stdout.split()[0])
start, t0 = trained(), time.monotonic()
while pids:
    now, waited = trained(), time.monotonic() - t0
    for seed, pid in list(pids.items()):
        alive = os.path.exists(f"/proc/{pid}")
        if alive and now.get(seed, 0) <= start.get(seed, 0) and waited < max_wait:
            continue
        if alive:
            os.kill(pid, signal.SIGTERM)
        print(f"seed {seed}: stopped after {waited:.0f} s ({now.get(seed, 0)} rounds trained)")
        del pids[seed]
    if pids:
        time.sleep(10)
# leave at once: a library thread kept this poller alive after its loop (2026-12-07)
sys.stdout.flush()
os._exit(0)
EOF
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
