"""Screening throughput (files/s, T = 32, 2 threads) before and after batching, against the floor.

The floor is what any screen of these files must do: parse each CIF, build its CHGNet graph and run one
frozen CHGNet forward, file by file (as CHGNet's own predict_structure would); "floor, batched trunk"
runs the forwards in batches of 8, as featurization does. Each screen starts from an empty cache,
so it pays for the same work plus validation, T = 32 stochastic passes, calibration and the table.
"one at a time" is the earlier path (one predict call per structure); "batched" predicts a chunk of 16
structures together (BaLoRA's keyed draws make the rows identical); both with the chemistry checks off,
as before they existed. "batched + checks" adds the default MOF chemistry checks (mofchecker-next).
"2 trunk workers" is `--workers 2`: the frozen trunk over the files first in two one-thread processes
(process start and model load included), then the same screen from the cache. "Dask local:2" runs the same screen on two single-threaded local worker processes (`--dask local:2`),
the one-machine form of the scale-out path; its time includes starting the cluster and loading the model
in each worker. All in one run, same files.

    python benchmarks/bench_screen.py [N]          (default 120 CoRE MOF 2019-ASR files)
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

import torch


def _floor(paths, batch: int = 1) -> float:
    from mofbalora.backbones.chgnet import CHGNetBackbone
    from mofbalora.data.structures import StructureError, read_structure

    bb = CHGNetBackbone()
    t0 = time.perf_counter()
    graphs = []
    for p in paths:
        try:
            graphs.append(bb._graph(read_structure(p)))
        except (StructureError, ValueError):
            continue
        if len(graphs) == batch:
            bb._run_trunk(graphs)
            graphs = []
    if graphs:
        bb._run_trunk(graphs)
    return time.perf_counter() - t0


def _screen(paths, batched: bool, out: Path, checks: str = "off", dask: str | None = None, workers: int = 1) -> float:
    import mofbalora.screen as screen_mod
    from mofbalora.model import load_model

    model = "default" if dask else load_model("default")
    original = screen_mod.predict_files

    def predict(*a, **k):
        return original(*a, **k, batched=batched)

    screen_mod.predict_files = predict
    try:
        t0 = time.perf_counter()
        table = screen_mod.screen([str(p) for p in paths], model=model, n_samples=32, out=out, progress=False,
                                  checks=checks, dask=dask, workers=workers)
        seconds = time.perf_counter() - t0
    finally:
        screen_mod.predict_files = original
    assert len(table) == len(paths)
    return seconds


def main(n: int = 120) -> None:
    from mofbalora.data.candidates import export_coremof

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="bench-screen-"))
    paths = export_coremof("2019-ASR", work / "cifs", limit=n, seed=0)
    results = {}
    with torch.no_grad():
        for name in ("floor", "floor, batched trunk", "one at a time", "batched", "batched, 2 trunk workers",
                     "batched, Dask local:2", "batched + checks", "batched + checks, Dask local:2"):
            slug = re.sub(r"[^A-Za-z0-9]+", "_", name)
            os.environ["MOFBALORA_CACHE"] = str(work / f"cache-{slug}")  # cold cache each
            if name.startswith("floor"):
                results[name] = _floor(paths, 8 if "batched" in name else 1)
            else:
                results[name] = _screen(paths, name != "one at a time", work / f"{slug}.csv",
                                        checks="flag" if "checks" in name else "off",
                                        dask="local:2" if "Dask" in name else None,
                                        workers=2 if "trunk workers" in name else 1)
    print(f"{len(paths)} CoRE MOF 2019-ASR files, T = 32, {torch.get_num_threads()} threads, cold cache")
    print("| path | seconds | files/s | × floor throughput |")
    print("|---|---|---|---|")
    for name, sec in results.items():
        print(f"| {name} | {sec:.1f} | {len(paths) / sec:.2f} | {results['floor'] / sec:.2f} |")
    print(f"batched / one at a time throughput: {results['one at a time'] / results['batched']:.2f}×")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 120)
