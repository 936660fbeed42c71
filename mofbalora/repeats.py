"""Repeated structures among a screen's best-ranked rows: one compound given more than once.

Real databases hold the same crystal several times: CoRE MOF 2019 has redeterminations of one
compound at other temperatures or by other groups (``DUNXUH01`` … ``DUNXUH21``), and its ASR and FSR
sets overlap. A model gives such copies nearly the same prediction, so they sit together at the top
of a ranking and a DFT list built from it spends several calculations on one compound.
:func:`mark_repeats` names, for each of the best-ranked rows, the better-ranked row it repeats: the
same reduced formula and the same structure by pymatgen's ``StructureMatcher`` (its default
tolerances: lattice 0.2, sites 0.3, angles 5°, which cover thermal expansion between
redeterminations). Only rows of equal reduced formula are compared, and each row only against the
distinct structures above it, so the cost is a few comparisons per repeat.

The screen fills the ``repeat_of`` column for its ``repeats_top`` best-ranked rows when it
completes; it flags and does not re-rank (which copy to compute is the chemist's call: the first is
the best-scored).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import pandas as pd

log = logging.getLogger(__name__)

#: how many of the best-ranked rows a completed screen checks for repeats (0: none)
DEFAULT_REPEATS_TOP = 200


def reduced_formula(formula: str) -> str | None:
    """pymatgen's reduced formula of a composition string (None if it does not parse)."""
    from pymatgen.core import Composition

    try:
        return Composition(str(formula)).reduced_formula
    except Exception:  # a formula pymatgen cannot read is compared with nothing
        return None


def mark_repeats(
    table: pd.DataFrame,
    *,
    top: int = DEFAULT_REPEATS_TOP,
    read: Callable | None = None,
    matcher=None,
) -> pd.Series:
    """For the ``top`` best-ranked rows of a ranked screen ``table``: the ``structure_id`` of the
    best-ranked row above it that is the same structure, else ``""``; other rows get ``""`` too.
    ``read(path)`` parses a file (default :func:`mofbalora.data.structures.read_structure`); a file
    that no longer reads is compared with nothing. ``matcher``: a pymatgen ``StructureMatcher``
    (default tolerances)."""

    if top < 0:
        raise ValueError(f"top must be >= 0 (rows checked for repeats), got {top}")
    out = pd.Series("", index=table.index, dtype=object)
    ranked = table[table["rank"].notna()].sort_values("rank").head(top)
    if len(ranked) < 2:
        return out
    if read is None:
        from mofbalora.data.structures import read_structure as read
    if matcher is None:
        from pymatgen.analysis.structure_matcher import StructureMatcher

        matcher = StructureMatcher()
    formulas = {i: reduced_formula(f) for i, f in ranked["formula"].items()}
    counts = pd.Series(list(formulas.values())).value_counts()
    # reduced formula -> (structure_id, structure) above
    distinct: dict[str, list[tuple[str, object]]] = {}
    for i, row in ranked.iterrows():
        formula = formulas[i]
        if formula is None or counts.get(formula, 0) < 2:
            continue
        try:
            structure = read(row["path"])
        except Exception as exc:  # e.g. a file moved since the screen: not compared
            log.warning("repeats: could not read %s (%s); not compared", row["path"], exc)
            continue
        for sid, other in distinct.get(formula, []):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                same = matcher.fit(other, structure)
            _forget_reduced_structures(matcher)
            if same:
                out[i] = sid
                break
        else:
            distinct.setdefault(formula, []).append((row["structure_id"], structure))
    return out


def _forget_reduced_structures(matcher) -> None:
    """Empty pymatgen's process-wide cache of reduced structures (``StructureMatcher``'s
    ``lru_cache``). A hit there is not cheap: the cached structure is compared site by site with
    the new one, O(N^2) in the sites: in benchmarks/bench_screen.py's third screen of the same 120
    CoRE MOF files, two matches cost 14.2 s through cache hits against 0.6 s reduced afresh. And the
    cache keeps every structure a long-lived process (a notebook, an active-learning campaign, a
    benchmark of several screens) ever compared."""
    reduce = getattr(type(matcher), "_get_reduced_istructure", None)
    clear = getattr(reduce, "cache_clear", None)
    if clear is not None:
        clear()
