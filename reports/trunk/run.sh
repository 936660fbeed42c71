#!/usr/bin/env bash
# Regenerates reports/trunk/results/ (issue 26, part 1: the cut-cached last block on a CPU; README.md quotes
# them). About 25 min on 2 cores. Needs the trunk cache of the first test-split structures, cut included:
#   mofbalora data trunk-cache --split qmof_v1 --order test --limit 64 --workers 2
# Timings are only comparable inside one run: each table measures its baseline (reference path, floor,
# CHGNet floor) in the same process, interleaved, best of a few rounds.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
OUT=reports/trunk/results
mkdir -p $OUT
for threads in 2 1; do
  for scope in structure row; do
    $PY reports/trunk/profile_last_block.py 24 --epochs 3 --scope $scope --threads $threads \
        | grep -v initialized > $OUT/profile_${scope}_t$threads.md
  done
  $PY benchmarks/bench_placements.py 48 --threads $threads | grep -v initialized > $OUT/placements_t$threads.md
  $PY benchmarks/bench_trunk_draws.py 16 --threads $threads | grep -v initialized > $OUT/draws_t$threads.md
done
$PY reports/trunk/further_blocks.py 16 --rounds 3 | grep -v initialized > $OUT/further_blocks_t2.md
