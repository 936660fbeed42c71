"""Golden outputs of the three end-to-end paths (screen, evaluate, one campaign round) on tiny
inputs.

They were recorded before the issue-18 refactor (layering, one prediction layer, typed
configuration) and must not change with it: numbers are compared to float tolerance, ids, ranks and
statuses exactly. ``MOFBALORA_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py`` rewrites them
(only for an intended change of behaviour, said so in the commit message).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("MOFBALORA_UPDATE_GOLDEN") == "1"
#: float32 forwards differ between CPUs (kernels, summation order) by ~1e-5 relative: 2e-5 eV seen
#: on a 1.42 eV gap between two machines, 1.6e-5 eV on an absolute error of 0.14 eV. 1e-4 relative /
#: 1e-4 eV (0.1 meV) is still far below any change of behaviour.
RTOL, ATOL = 1e-4, 1e-4
#: statistics of how stds rank errors (Spearman, Pearson, rejection-curve areas) over the golden
#: runs' handful of structures turn on std differences of ~1e-5 eV, which differ between CPUs (seen
#: here: a 6-structure Spearman of -0.786 against -0.761 from the same code on two machines);
#: compared to this absolute tolerance
RANKING_STAT_ATOL = 0.05
RANKING_STATS = ("spearman", "pearson", "kendall", "auc_rejection")


def _check_table(got: pd.DataFrame, name: str, *, key: str | None = None) -> None:
    """``got`` against the golden CSV ``name``: every cell that reads as a number on both sides is
    compared to float tolerance whatever its column's dtype (a column that mixes numbers with empty
    cells reads as text), every other cell exactly. ``key``: a column identifying rows, compared in
    its order (row order is not part of the golden output)."""
    path = GOLDEN / name
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        got.to_csv(path, index=False)
    want = pd.read_csv(path, keep_default_na=False, dtype=str)
    got = pd.read_csv(_roundtrip(got), keep_default_na=False, dtype=str)
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    if key is not None:
        want = want.sort_values(key, kind="stable").reset_index(drop=True)
        got = got.sort_values(key, kind="stable").reset_index(drop=True)
    for col in want.columns:
        for row, (g, w) in enumerate(zip(got[col], want[col], strict=True)):
            gf, wf = _as_number(g), _as_number(w)
            where = f"{name}: column {col}, row {row}"
            if gf is not None and wf is not None:
                assert (math.isnan(gf) and math.isnan(wf)) or math.isclose(
                    gf, wf, rel_tol=RTOL, abs_tol=ATOL
                ), f"{where}: {g} != {w}"
            else:
                assert g == w, f"{where}: {g!r} != {w!r}"


def _as_number(cell: str) -> float | None:
    """The cell as a float if it reads as one (``228`` and ``228.0`` alike), else None (text,
    empty cells)."""
    try:
        return float(cell)
    except ValueError:
        return None


def test_check_table_compares_numbers_in_mixed_columns(tmp_path, monkeypatch):
    """A column of numbers and empty cells (error rows) is compared to tolerance, not as strings."""
    monkeypatch.setattr(f"{__name__}.GOLDEN", tmp_path)
    monkeypatch.setattr(f"{__name__}.UPDATE", False)  # also when the goldens are being re-recorded
    pd.DataFrame({"d": [13.833023290466922, None], "s": ["a", ""]}).to_csv(
        tmp_path / "t.csv", index=False
    )
    _check_table(pd.DataFrame({"d": [13.83302329046693, None], "s": ["a", ""]}), "t.csv")
    with pytest.raises(AssertionError, match="column d"):
        _check_table(pd.DataFrame({"d": [13.9, None], "s": ["a", ""]}), "t.csv")
    with pytest.raises(AssertionError, match="column s"):
        _check_table(pd.DataFrame({"d": [13.833023290466922, None], "s": ["b", ""]}), "t.csv")


def _roundtrip(df: pd.DataFrame):
    import io

    buf = io.StringIO()
    df.to_csv(buf, index=False)
    buf.seek(0)
    return buf


def _check_json(got, name: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True, default=float) + "\n")
    _assert_close(json.loads(json.dumps(got, default=float)), json.loads(path.read_text()), name)


def _assert_close(got, want, where: str) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), (
            f"{where}: keys {sorted(got)} != {sorted(want)}"
        )
        for k in want:
            _assert_close(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: lengths differ"
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close(g, w, f"{where}[{k}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, (int, float)), f"{where}: {got!r} is not a number"
        if math.isnan(want):
            assert math.isnan(got), f"{where}: {got} != NaN"
        else:
            atol = (
                RANKING_STAT_ATOL
                if any(s in where.rsplit(".", 1)[-1] for s in RANKING_STATS)
                else ATOL
            )
            assert math.isclose(got, want, rel_tol=RTOL, abs_tol=atol), f"{where}: {got} != {want}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def test_screen_matches_golden(sample_cifs, tmp_path):
    from mofbalora.screen import screen

    folder = tmp_path / "cands"
    folder.mkdir()
    for p in sample_cifs[:4]:
        shutil.copy(p, folder / p.name)
    (folder / "empty.cif").write_text("")
    table = screen(
        [str(folder)],
        model="default",
        n_samples=4,
        out=tmp_path / "ranked.csv",
        progress=False,
        checks="off",
        seed=3,
    )
    _check_table(table.drop(columns=["path"]), "screen_default.csv", key="structure_id")


def test_evaluate_matches_golden(qmof_path, tmp_path):
    from mofbalora.evaluate import evaluate

    metrics = evaluate(
        "default",
        data=qmof_path,
        split="test",
        limit=6,
        n_samples=4,
        out=tmp_path / "e.json",
        seed=1,
    )
    metrics = {k: v for k, v in metrics.items() if k not in ("seconds", "model")}
    _check_json(metrics, "evaluate_default.json")
    _check_table(pd.read_csv(tmp_path / "e.csv"), "evaluate_default.csv")


@pytest.mark.parametrize("pool_prediction", ["batch", "per_structure"])
def test_campaign_round_matches_golden(al_cfg, tmp_path, pool_prediction):
    from mofbalora.al.campaign import Campaign, simulated_campaign

    batches = []

    def hook(point, campaign):
        if point == "label":  # the selected batch, just before its labels are committed
            batches.append(json.loads(json.dumps(campaign.pending)))

    cfg = al_cfg(n_rounds=1, pool_prediction=pool_prediction)
    simulated_campaign(tmp_path / "c", cfg)
    c = Campaign(tmp_path / "c", hook=hook)
    c.run()
    # the tiny model's draws spread by ~1e-6 eV, the size of float32 differences between CPUs on a
    # 2 eV gap, so how its stds rank the test errors is not a property of the code (seen: -0.24 on
    # one machine, -0.55 on another); ranking statistics are compared on the shipped model's
    # evaluation above, whose spreads are far above that noise
    noise = ("seconds", "test_spearman_std_abs_error")
    history = [{k: v for k, v in row.items() if k not in noise} for row in c.history]
    for batch in batches:
        for row in batch:
            row.pop("path")
    # both ways of predicting the pool draw the same numbers (BaLoRA's draws are keyed by structure)
    _check_json(
        {"history": history, "batches": batches, "labelled": c.labelled, "pool": c.pool},
        "campaign_round.json",
    )


#: left out of `make test-fast` (trains models, starts clusters or runs notebooks); `make test` runs
#: it
pytestmark = pytest.mark.slow
