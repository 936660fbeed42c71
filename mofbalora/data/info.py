"""``mofbalora data info``: what a dataset holds and which of its structures fail, by reason."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

#: structures ``data info`` parses by default: a seeded random sample (parsing all of QMOF takes
#: minutes)
DEFAULT_SAMPLE = 500


def dataset_info(
    path: str | Path | None = None,
    *,
    labels_csv=None,
    id_column: str = "id",
    target_column: str = "bandgap",
    limit: int | None = None,
    sample: int | None = DEFAULT_SAMPLE,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Counts and statistics. Every label is read; structures are parsed to count atoms and
    failures: the first ``limit`` if given, else a random ``sample`` of them (seeded by ``seed``;
    default :data:`DEFAULT_SAMPLE`), or all of them with ``limit=None, sample=None``. ``n_parsed``
    and ``parsed`` (first | sample | all) say which."""
    from tqdm.auto import tqdm

    from mofbalora.data.qmof import load_dataset
    from mofbalora.data.structures import StructureError, read_structure

    for name, value in (("limit", limit), ("sample", sample)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{name} must be an integer >= 1 or None, got {value!r}")
    ds = load_dataset(path, labels_csv=labels_csv, id_column=id_column, target_column=target_column)
    gaps = ds.bandgaps_ev
    if limit is not None:
        chosen, how = list(ds.cif_paths[: min(limit, len(ds))]), "first"
    elif sample is not None and sample < len(ds):
        rng = np.random.default_rng(seed)
        chosen = [ds.cif_paths[i] for i in sorted(rng.choice(len(ds), size=sample, replace=False))]
        how = "sample"
    else:
        chosen, how = list(ds.cif_paths), "all"
    n_parse = len(chosen)
    atoms, failures = [], Counter()
    for p in tqdm(chosen, desc="parse", unit="cif", disable=not progress, leave=False):
        try:
            atoms.append(len(read_structure(p)))
        except StructureError as exc:
            failures[exc.reason] += 1
    atoms_arr = np.array(atoms) if atoms else np.array([np.nan])
    return {
        "source": ds.source,
        "n_structures": len(ds),
        "n_parsed": n_parse,
        "parsed": how,
        "seed": seed,
        "bandgap_ev": {
            "min": float(gaps.min()),
            "max": float(gaps.max()),
            "mean": float(gaps.mean()),
            "median": float(np.median(gaps)),
            "fraction_below_1ev": float((gaps < 1.0).mean()),
        },
        "n_atoms": {
            "min": float(np.nanmin(atoms_arr)),
            "median": float(np.nanmedian(atoms_arr)),
            "max": float(np.nanmax(atoms_arr)),
        },
        "failures": dict(failures),
    }


def format_info(info: dict) -> str:
    g, a = info["bandgap_ev"], info["n_atoms"]
    lines = [
        f"dataset: {info['source']}",
        f"structures with labels: {info['n_structures']:,} ({_parsed_note(info)})",
        f"PBE band gap (eV): min {g['min']:.4f}  median {g['median']:.2f}  mean {g['mean']:.2f}  "
        f"max {g['max']:.2f}  below 1 eV: {g['fraction_below_1ev']:.1%}",
        f"atoms per structure: min {a['min']:.0f}  median {a['median']:.0f}  max {a['max']:.0f}",
    ]
    if info["failures"]:
        lines.append("failures by reason:")
        lines += [
            f"  {reason:<20} {n}"
            for reason, n in sorted(info["failures"].items(), key=lambda kv: -kv[1])
        ]
    else:
        lines.append("failures: none")
    return "\n".join(lines)


def _parsed_note(info: dict) -> str:
    n, how = info["n_parsed"], info.get("parsed", "all")
    if how == "sample":
        return (
            "atom counts and failures from a random sample of "
            f"{n:,} parsed structures, seed {info.get('seed', 0)}; "
            "--all parses every structure"
        )
    if how == "first":
        return f"atom counts and failures from the first {n:,} structures (--limit)"
    return f"parsed all {n:,}"
