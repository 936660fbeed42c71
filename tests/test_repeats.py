"""Repeated structures in a screen's top rows (mofbalora.repeats): a redetermination (the same
crystal, a slightly different cell) and an identical copy are named after the better-ranked row;
other structures, including one of the same formula with a different structure, are not."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from mofbalora.data.structures import read_structure
from mofbalora.repeats import mark_repeats


def _table(rows):
    return pd.DataFrame(rows, columns=["rank", "structure_id", "formula", "path"])


def test_a_redetermination_and_a_copy_are_marked_and_a_polymorph_is_not(sample_cifs, tmp_path):
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter

    base = read_structure(sample_cifs[0])
    strained = base.copy()
    strained.apply_strain(0.015)  # a redetermination at another temperature: 1.5 % larger cell
    # same composition and cell, atoms elsewhere: another structure
    scrambled = Structure(
        base.lattice, base.species, np.random.default_rng(0).random((len(base), 3))
    )
    paths = {}
    for name, s in (("strained", strained), ("scrambled", scrambled)):
        paths[name] = tmp_path / f"{name}.cif"
        CifWriter(s).write_file(paths[name])
    paths["copy"] = tmp_path / "copy.cif"
    shutil.copy(sample_cifs[0], paths["copy"])
    formula = base.composition.formula.replace(" ", "")
    other = read_structure(sample_cifs[1])
    table = _table(
        [
            (2, "original", formula, str(sample_cifs[0])),
            (1, "other", other.composition.formula.replace(" ", ""), str(sample_cifs[1])),
            (3, "strained", formula, str(paths["strained"])),
            (4, "scrambled", formula, str(paths["scrambled"])),
            (5, "copy", formula, str(paths["copy"])),
            (None, "broken", formula, str(tmp_path / "missing.cif")),
        ]
    )
    marks = dict(zip(table["structure_id"], mark_repeats(table), strict=True))
    assert marks == {
        "original": "",
        "other": "",
        "strained": "original",
        "scrambled": "",
        "copy": "original",
        "broken": "",
    }
    # pymatgen's process-wide cache of reduced structures is left empty: its hits compare
    # structures site by site, and a long-lived process would keep every structure it matched
    from pymatgen.analysis.structure_matcher import StructureMatcher

    assert StructureMatcher._get_reduced_istructure.cache_info().currsize == 0
    # only the top rows are looked at
    assert dict(zip(table["structure_id"], mark_repeats(table, top=3), strict=True))["copy"] == ""
    with pytest.raises(ValueError, match="top must be >= 0"):
        mark_repeats(table, top=-1)


def test_screen_names_the_repeat_and_the_summary_counts_distinct_structures(
    tiny_model, sample_cifs, tmp_path
):
    from mofbalora.screen import screen
    from mofbalora.screen_report import screen_summary

    cands = tmp_path / "c"
    cands.mkdir()
    # CSD-style names, as in CoRE MOF: ABCDEF01 and ABCDEF02 are one compound given twice
    for name, p in (
        ("ABCDEF01", sample_cifs[0]),
        ("ABCDEF02", sample_cifs[0]),
        ("GHIJKL", sample_cifs[1]),
        ("MNOPQR", sample_cifs[2]),
    ):
        shutil.copy(p, cands / f"{name}.cif")
    table = screen(
        [str(cands)],
        model=tiny_model,
        n_samples=4,
        out=tmp_path / "r.csv",
        progress=False,
        checks="off",
        domain="ignore",
    )
    rows = table.set_index("structure_id")
    pair = rows.loc[["ABCDEF01", "ABCDEF02"]].sort_values("rank")
    assert pair["repeat_of"].tolist() == ["", pair.index[0]]
    assert (rows.drop(index=pair.index)["repeat_of"] == "").all()
    summary = screen_summary(table)
    assert (
        "1 rows repeat a better-ranked structure" in summary and "3 distinct structures" in summary
    )
    assert f"repeat_of:{pair.index[0]}" in summary
    # with the repeat moved to rank 2, a 3-row list without it ends at rank 4
    moved = table.copy()
    second, rep = moved.index[moved["rank"] == 2][0], moved.index[moved["repeat_of"] != ""][0]
    moved.loc[[second, rep], "rank"] = moved.loc[[rep, second], "rank"].to_numpy()
    assert "the best 3 rows not flagged as repeats end at rank 4." in screen_summary(moved, top=3)
    assert "Skipping them" not in screen_summary(moved, top=4)  # only 3 distinct rows in all
    off = screen(
        [str(cands)],
        model=tiny_model,
        n_samples=4,
        out=tmp_path / "o.csv",
        progress=False,
        checks="off",
        domain="ignore",
        repeats_top=0,
    )
    assert (off["repeat_of"] == "").all()
    with pytest.raises(ValueError, match="repeats_top must be an integer >= 0.*-1"):
        screen(
            [str(cands)], model=tiny_model, out=tmp_path / "n.csv", progress=False, repeats_top=-1
        )
    assert not (tmp_path / "n.csv").exists()
