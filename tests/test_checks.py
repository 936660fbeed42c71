"""MOF chemistry checks (mofchecker-next + pymatgen's CIF check): each column on structures with and
without the problem, per-structure crash handling, and the screen's exclude policy."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mofbalora.checks import check_policy, run_checks
from mofbalora.data.structures import read_structure


def _by_name(sample_cifs, name):
    return next(p for p in sample_cifs if p.stem == name)


def _strip_aromatic_h(structure):
    """Remove one H bonded to a three-coordinated (sp2) C: that C is left with two neighbours
    (missing H)."""
    s = structure.copy()
    for i, site in enumerate(s):
        if site.specie.symbol != "H":
            continue
        (c,) = [n for n in s.get_neighbors(site, 1.2)] or [None]
        if c is not None and c.specie.symbol == "C" and len(s.get_neighbors(s[c.index], 1.7)) == 3:
            s.remove_sites([i])
            return s
    raise AssertionError("no aromatic C-H in this structure")


def _add_water_in_largest_void(structure):
    s = structure.copy()
    grid = np.stack(
        np.meshgrid(*[np.linspace(0, 1, 12, endpoint=False)] * 3, indexing="ij"), -1
    ).reshape(-1, 3)
    centre = grid[np.argmax(s.lattice.get_all_distances(grid, s.frac_coords).min(1))]
    o = s.lattice.get_cartesian_coords(centre)
    for species, offset in (("O", [0, 0, 0]), ("H", [0.96, 0, 0]), ("H", [-0.24, 0.93, 0])):
        s.append(species, o + np.array(offset), coords_are_cartesian=True)
    return s


def test_clean_structure_passes_and_missing_hydrogen_is_flagged(sample_cifs):
    path = _by_name(sample_cifs, "qmof-00019ff")
    clean = read_structure(path)
    assert run_checks(clean, path) == {"checks": "ok", "failed_checks": "", "checks_detail": ""}
    stripped = run_checks(_strip_aromatic_h(clean))
    assert stripped["checks"] == "failed"
    assert "undercoordinated_c" in stripped["failed_checks"].split(";")


def test_lone_water_molecule_is_flagged(sample_cifs):
    path = _by_name(sample_cifs, "qmof-000dce3")  # a MOF with an 8 Å void
    clean = read_structure(path)
    assert "lone_molecule" not in run_checks(clean, path)["failed_checks"]
    wet = run_checks(_add_water_in_largest_void(clean))
    assert wet["checks"] == "failed" and "lone_molecule" in wet["failed_checks"].split(";")


def test_cif_consistency_report_flags_a_formula_that_does_not_match(sample_cifs, tmp_path):
    path = _by_name(sample_cifs, "qmof-00019ff")
    text = path.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("_chemical_formula_sum"))
    bad = tmp_path / "bad_formula.cif"
    bad.write_text(text.replace(line, "_chemical_formula_sum   'Co1 C2'"))
    out = run_checks(read_structure(path), bad)
    assert out["checks"] == "failed" and out["failed_checks"] == "cif_composition"
    assert "cif_composition" in out["checks_detail"]


def test_a_checker_crash_is_recorded_for_that_structure_only(sample_cifs, monkeypatch):
    import mofchecker_next.batch as batch

    def boom(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(batch, "check_structure", boom)
    out = run_checks(read_structure(sample_cifs[0]))
    assert out["checks"] == "error" and "kernel exploded" in out["checks_detail"]


def test_unknown_policy_names_the_choices():
    with pytest.raises(ValueError, match=r"'strict'.*off.*flag.*exclude"):
        check_policy("strict")


def test_screen_exclude_gives_error_rows_and_the_rest_still_rank(tiny_model, sample_cifs, tmp_path):
    from pymatgen.io.cif import CifWriter

    from mofbalora.screen import screen

    cands = tmp_path / "c"
    cands.mkdir()
    for p in sample_cifs[:3]:
        shutil.copy(p, cands / p.name)
    CifWriter(_strip_aromatic_h(read_structure(_by_name(sample_cifs, "qmof-00019ff")))).write_file(
        cands / "missing_h.cif"
    )
    flagged = screen(
        [str(cands)],
        model=tiny_model,
        n_samples=4,
        out=tmp_path / "f.csv",
        progress=False,
        checks="flag",
        domain="ignore",
    )
    excluded = screen(
        [str(cands)],
        model=tiny_model,
        n_samples=4,
        out=tmp_path / "e.csv",
        progress=False,
        checks="exclude",
        domain="ignore",
    )
    row = {
        t: tab.set_index("structure_id").loc["missing_h"]
        for t, tab in (("f", flagged), ("e", excluded))
    }
    assert (
        row["f"]["status"] == "ok" and row["f"]["checks"] == "failed" and pd.notna(row["f"]["rank"])
    )
    assert "undercoordinated_c" in row["f"]["failed_checks"]
    assert row["e"]["status"] == "error" and row["e"]["error"] == "failed_checks"
    assert "undercoordinated_c" in row["e"]["detail"] and pd.isna(row["e"]["rank"])
    rest = excluded[excluded["structure_id"] != "missing_h"]
    assert (rest["status"] == "ok").all() and (rest["checks"] == "ok").all()
    assert sorted(rest["rank"].astype(int)) == [1, 2, 3]
    off = screen(
        [str(cands)],
        model=tiny_model,
        n_samples=4,
        out=tmp_path / "o.csv",
        progress=False,
        checks="off",
    )
    assert (off["checks"] == "not_run").all()


def test_check_verdicts_are_cached_by_content_and_kept_when_a_screen_starts_over(
    tiny_model, sample_cifs, tmp_path, monkeypatch
):
    import json

    import mofbalora.checks as checks_module
    from mofbalora.checks import CHECK_COLUMNS, check_cache
    from mofbalora.data.cache import file_digest
    from mofbalora.screen import screen

    monkeypatch.setenv("MOFBALORA_CACHE", str(tmp_path / "cache"))
    cands = tmp_path / "c"
    cands.mkdir()
    for p in sample_cifs[:2]:
        shutil.copy(p, cands / p.name)
    first = screen(
        [str(cands)],
        model=tiny_model,
        n_samples=4,
        out=tmp_path / "a.csv",
        progress=False,
        checks="flag",
        domain="ignore",
    )
    digests = {Path(p).stem: file_digest(p) for p in cands.iterdir()}
    for sid, digest in digests.items():  # the screen stored every verdict under the file's digest
        row = first.set_index("structure_id").loc[sid]
        assert check_cache().get(digest) == {
            c: ("" if pd.isna(row[c]) else row[c]) for c in CHECK_COLUMNS
        }

    # a partial screen under another model, whose rows say the first file failed a check: starting
    # over (resume=False) discards the rows but keeps their verdicts, and no check runs again
    sid, digest = next(iter(digests.items()))
    out = tmp_path / "b.csv"
    out.with_name("b.csv.partial.signature.json").write_text(
        json.dumps({"model": "another", "checks": True})
    )
    out.with_name("b.csv.partial.jsonl").write_text(
        json.dumps(
            {
                "key": digest,
                "status": "ok",
                "checks": "failed",
                "failed_checks": "lone_molecule",
                "checks_detail": "from the earlier screen",
            }
        )
        + "\n"
    )
    with pytest.raises(ValueError, match="checks already run are kept"):
        screen(
            [str(cands)],
            model=tiny_model,
            n_samples=4,
            out=out,
            progress=False,
            checks="flag",
            domain="ignore",
        )
    calls = []
    monkeypatch.setattr(checks_module, "run_checks", lambda *a, **k: calls.append(a) or {})
    again = screen(
        [str(cands)],
        model=tiny_model,
        n_samples=4,
        out=out,
        progress=False,
        checks="flag",
        domain="ignore",
        resume=False,
    ).set_index("structure_id")
    assert calls == []
    assert (
        again.loc[sid, "failed_checks"] == "lone_molecule" and again.loc[sid, "checks"] == "failed"
    )
    assert not out.with_name("b.csv.partial.jsonl").exists()
