"""``mofbalora data info``: what a dataset holds and which of its structures fail, by reason."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np


def dataset_info(path: str | Path | None = None, *, labels_csv=None, id_column: str = "id",
                 target_column: str = "bandgap", limit: int | None = None, progress: bool = True) -> dict:
    """Counts and statistics; structures are parsed (all, or the first ``limit``) to count atoms and failures."""
    from tqdm.auto import tqdm

    from mofbalora.data.qmof import load_dataset
    from mofbalora.data.structures import StructureError, read_structure

    ds = load_dataset(path, labels_csv=labels_csv, id_column=id_column, target_column=target_column)
    gaps = ds.bandgaps_ev
    n_parse = len(ds) if limit is None else min(limit, len(ds))
    atoms, failures = [], Counter()
    for p in tqdm(ds.cif_paths[:n_parse], desc="parse", unit="cif", disable=not progress, leave=False):
        try:
            atoms.append(len(read_structure(p)))
        except StructureError as exc:
            failures[exc.reason] += 1
    atoms_arr = np.array(atoms) if atoms else np.array([np.nan])
    return {
        "source": ds.source, "n_structures": len(ds), "n_parsed": n_parse,
        "bandgap_ev": {"min": float(gaps.min()), "max": float(gaps.max()), "mean": float(gaps.mean()),
                       "median": float(np.median(gaps)), "fraction_below_1ev": float((gaps < 1.0).mean())},
        "n_atoms": {"min": float(np.nanmin(atoms_arr)), "median": float(np.nanmedian(atoms_arr)),
                    "max": float(np.nanmax(atoms_arr))},
        "failures": dict(failures),
    }


def format_info(info: dict) -> str:
    g, a = info["bandgap_ev"], info["n_atoms"]
    lines = [f"dataset: {info['source']}",
             f"structures with labels: {info['n_structures']:,} (parsed {info['n_parsed']:,})",
             f"PBE band gap (eV): min {g['min']:.4f}  median {g['median']:.2f}  mean {g['mean']:.2f}  "
             f"max {g['max']:.2f}  below 1 eV: {g['fraction_below_1ev']:.1%}",
             f"atoms per structure: min {a['min']:.0f}  median {a['median']:.0f}  max {a['max']:.0f}"]
    if info["failures"]:
        lines.append("failures by reason:")
        lines += [f"  {reason:<20} {n}" for reason, n in sorted(info["failures"].items(), key=lambda kv: -kv[1])]
    else:
        lines.append("failures: none")
    return "\n".join(lines)
