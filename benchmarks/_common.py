"""Shared helpers for the benchmarks: best-of-N wall time, the QMOF paths to time on, and copies of
a finished campaign rewound to one of its rounds."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path


def best_time(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Best wall time (s) of ``repeat`` calls after ``warmup`` calls: robust to a busy machine."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def qmof_test_paths(n: int):
    from mofbalora.data.qmof import load_dataset
    from mofbalora.data.splits import load_split

    ds = load_dataset()
    ids = load_split("qmof_v1")["test"][:n]
    return [ds.cif_paths[ds.index_of(i)] for i in ids]


def campaign_at_round(src: Path, k: int, work: Path) -> dict:
    """Start a copy of campaign ``src`` in ``work`` that holds round k's model (its best
    checkpoint) and configuration; return ``src``'s state for the caller to rewind and write to
    ``work / "campaign.json"``. ``src`` is only read."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "rounds").mkdir(parents=True)
    shutil.copy(src / "config.yaml", work / "config.yaml")
    best = Path("rounds") / f"round_{k:03d}" / "checkpoints" / "best"
    shutil.copytree(src / best, work / best)
    return json.loads((src / "campaign.json").read_text())
