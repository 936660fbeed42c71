"""Screening throughput on a Dask LocalCluster: 1 and 2 worker processes against the one-process
screen.

Each configuration screens the same N QMOF test-split CIFs with the shipped model (T = 32) from a
cold feature cache (the CHGNet trunk runs for every file, as for new candidates). Reports files/s,
the ratio 2 workers / 1 worker, and the per-worker overhead: cluster start, model load on each
worker, bytes sent back per file.

    python benchmarks/bench_scaleout.py [N]        (default 48)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import qmof_test_paths  # noqa: E402


def _screen(paths, dask, out_dir: Path) -> dict:
    import distributed

    from mofbalora.parallel.dask_screen import local_cluster
    from mofbalora.screen import screen

    # cold, inherited by workers
    os.environ["MOFBALORA_CACHE"] = tempfile.mkdtemp(prefix="bench-cache-")
    cluster = client = None
    t0 = time.perf_counter()
    if dask is not None:
        cluster = local_cluster(dask)
        client = distributed.Client(cluster)
    start_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    table = screen(
        [str(p) for p in paths],
        model="default",
        n_samples=32,
        out=out_dir / f"ranked_{dask}.csv",
        progress=False,
        chunk_size=4,
        dask=client,
    )
    wall = time.perf_counter() - t1
    if client is not None:
        client.close()
        cluster.close()
    stats = table.attrs.get("dask", {})
    return {
        "wall": wall,
        "start": start_s,
        "stats": stats,
        "ok": int((table["status"] == "ok").sum()),
        "table": table,
    }


def main(n: int = 48) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)  # the one-process baseline on one core, as one worker
    paths = qmof_test_paths(n)
    out = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    runs = {
        "in-process (1 core)": _screen(paths, None, out),
        "local:1": _screen(paths, 1, out),
        "local:2": _screen(paths, 2, out),
    }
    base = runs["in-process (1 core)"]["table"]
    for name, r in runs.items():
        same = np.allclose(
            r["table"]["bandgap_mean_ev"].astype(float),
            base["bandgap_mean_ev"].astype(float),
            atol=1e-5,
        )
        s = r["stats"]
        extra = ""
        if s:
            extra = (
                f"; cluster start {r['start']:.1f} s, model load per worker "
                f"{', '.join(f'{x:.1f}' for x in s['model_loads'])} s, "
                f"{s['result_bytes'] / max(1, len(paths)):.0f} B back per file, "
                f"worker compute {s['compute_seconds']:.1f} s"
            )
        print(
            f"{name:<22} {len(paths) / r['wall']:6.2f} files/s (wall {r['wall']:.1f} s, {r['ok']} "
            f"ok, equal to one process: {same}){extra}"
        )
    one, two = runs["local:1"]["wall"], runs["local:2"]["wall"]
    print(
        f"throughput ratio local:2 / local:1 = {one / two:.2f}x; local:1 / in-process = "
        f"{runs['in-process (1 core)']['wall'] / one:.2f}x (cpu count {os.cpu_count()})"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 48)
