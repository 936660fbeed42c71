"""Screening throughput (files/s, T = 32) against the floor, every path in one run on the same
files.

The floor is what a CHGNet user's screen of these files must do: read each CIF with pymatgen
(``Structure.from_file``), build its CHGNet graph with CHGNet's own converter and run one frozen
CHGNet forward, file by file in one process with 2 torch threads, as CHGNet's predict_structure
would. It reads only the files mofbalora accepts (found before the clock starts), so it never pays
for a file the screens reject. "floor, batched trunk" runs the forwards in batches of 8; "floor,
mofbalora reader and graphs" reads with mofbalora.data.structures.read_structure (its P1 fast
reader, mofbalora.data.p1_cif, included) and builds the same graphs with the backbone's converter
(mofbalora.backbones.chgnet_graph), as every screen path does: the floor with this project's own
parts. Each screen starts from an empty cache, so it pays for the same work plus validation, T = 32
stochastic passes, calibration, the domain and the table, with worker start included (the model is
loaded before the clock starts, as the floor's CHGNet is, except on Dask, whose workers load it
themselves):

* "one process": the whole screen in this process (2 torch threads);
* "--workers 2": two spawned one-thread worker processes (mofbalora.scoring.LocalExecutor), each
  parsing, featurizing, predicting and checking its chunks;
* "Dask local:2": the same on a two-process local Dask cluster (cluster start included);
* "+ checks": the default MOF chemistry checks (mofchecker-next, cached by content: each run a cold
  cache).

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


def _floor(paths, batch: int = 1, reader: str = "pymatgen") -> float:
    from chgnet.graph import CrystalGraphConverter
    from pymatgen.core import Structure

    from mofbalora.backbones.chgnet import CHGNetBackbone
    from mofbalora.data.structures import read_structure

    bb = CHGNetBackbone()
    own = bb.trunk.graph_converter
    if reader == "pymatgen":  # as a CHGNet user reads and converts: pymatgen, CHGNet's converter
        read = Structure.from_file
        convert = CrystalGraphConverter(
            atom_graph_cutoff=own.atom_graph_cutoff,
            bond_graph_cutoff=own.bond_graph_cutoff,
            algorithm="fast",
        )
    else:  # this project's reader and the backbone's converter (the same graphs from arrays)
        read, convert = read_structure, own
    t0 = time.perf_counter()
    batch_graphs = []
    for p in paths:
        try:
            batch_graphs.append(convert(read(p)))
        except (ValueError, RuntimeError):  # pymatgen may refuse what mofbalora reads: skipped
            continue
        if len(batch_graphs) == batch:
            bb._run_trunk(batch_graphs)
            batch_graphs = []
    if batch_graphs:
        bb._run_trunk(batch_graphs)
    return time.perf_counter() - t0


def _accepted(paths) -> list[Path]:
    """The files mofbalora reads (the floor is timed on these only)."""
    from mofbalora.data.structures import StructureError, read_structure

    good = []
    for p in paths:
        try:
            read_structure(p)
        except StructureError:
            continue
        good.append(p)
    return good


def _screen(
    paths, out: Path, checks: str = "off", dask: str | None = None, workers: int = 1
) -> float:
    from mofbalora.model import load_model
    from mofbalora.screen import screen

    # the model is loaded before the clock starts, as the floor's CHGNet is; local workers are
    # forked with it. Dask workers load it themselves (by name), so the Dask rows include that load.
    model = "default" if dask else load_model("default")
    t0 = time.perf_counter()
    table = screen(
        [str(p) for p in paths],
        model=model,
        n_samples=32,
        out=out,
        progress=False,
        checks=checks,
        dask=dask,
        workers=workers,
    )
    seconds = time.perf_counter() - t0
    assert len(table) == len(paths)
    return seconds


NAMES = (
    "floor",
    "floor, batched trunk",
    "floor, mofbalora reader and graphs",
    "screen, one process",
    "screen, --workers 2",
    "screen, Dask local:2",
    "screen + checks, one process",
    "screen + checks, --workers 2",
    "screen + checks, Dask local:2",
)


def main(n: int = 120) -> None:
    from mofbalora.data.candidates import export_coremof

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="bench-screen-"))
    paths = export_coremof("2019-ASR", work / "cifs", limit=n, seed=0)
    results = {}
    os.environ["MOFBALORA_CACHE"] = str(work / "cache-warmup")
    with torch.no_grad():
        # imports, CHGNet's first load and first forward: paid once, before any timing
        accepted = _accepted(paths)
        _floor(accepted[:2])
        for name in NAMES:
            slug = re.sub(r"[^A-Za-z0-9]+", "_", name)
            os.environ["MOFBALORA_CACHE"] = str(work / f"cache-{slug}")  # cold cache each
            if name.startswith("floor"):
                results[name] = _floor(
                    accepted,
                    8 if "batched" in name else 1,
                    reader="mofbalora" if "mofbalora" in name else "pymatgen",
                )
            else:
                results[name] = _screen(
                    paths,
                    work / f"{slug}.csv",
                    checks="flag" if "checks" in name else "off",
                    dask="local:2" if "Dask" in name else None,
                    workers=2 if "--workers 2" in name else 1,
                )
    print(
        f"{len(paths)} CoRE MOF 2019-ASR files ({len(accepted)} accepted: the floor reads those), "
        f"T = 32, {torch.get_num_threads()} threads, cold cache"
    )
    print("| path | seconds | files/s | × floor throughput |")
    print("|---|---|---|---|")
    for name, sec in results.items():
        print(f"| {name} | {sec:.1f} | {len(paths) / sec:.2f} | {results['floor'] / sec:.2f} |")
    for workers in ("one process", "--workers 2", "Dask local:2"):
        checked, unchecked = results[f"screen + checks, {workers}"], results[f"screen, {workers}"]
        print(f"checked / unchecked throughput, {workers}: {unchecked / checked:.2f}×")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 120)
