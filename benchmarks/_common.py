"""Shared helpers for the benchmarks: best-of-N wall time, and the QMOF paths to time on."""

from __future__ import annotations

import time
from collections.abc import Callable


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
