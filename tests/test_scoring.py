"""The scoring core: the Predictor contract, the typed row, ScoringConfig, executors and ranking."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from mofbalora.scoring import (
    BATCH_COLUMNS,
    COLUMNS,
    INTERVAL_COLUMNS,
    MANIFEST_PREDICTION_COLUMNS,
    Predictor,
    ScoringConfig,
    explain_columns,
    rank,
)

#: the central probability of the "68" columns (a Gaussian's ±1σ) and of the "95" ones
P68, P95 = 0.6826894921370859, 0.95


@pytest.fixture(scope="module")
def cands(tmp_path_factory, sample_cifs):
    d = tmp_path_factory.mktemp("scoring-cands")
    for p in sample_cifs[:5]:
        shutil.copy(p, d / p.name)
    (d / "empty.cif").write_text("")
    return d


@pytest.fixture(scope="module")
def gbm_run(tmp_path_factory, tiny_split, qmof_path):
    from mofbalora.config import load_config
    from mofbalora.train import finetune

    cfg = load_config(
        None,
        [
            f"data.path={qmof_path}",
            f"data.split={tiny_split}",
            "run.eval_samples=4",
            "run.threads=1",
            "model.regime=gbm",
            "gbm.max_iter=20",
            "gbm.min_samples_leaf=2",
        ],
    )
    out = tmp_path_factory.mktemp("gbm-run")
    finetune(cfg, out, progress=False)
    return out


def test_both_model_kinds_implement_the_predictor_contract(gbm_run):
    from mofbalora.model import load_model

    default, gbm = load_model("default"), load_model(gbm_run)
    for m in (default, gbm):
        assert isinstance(m, Predictor)
        fp = m.fingerprint()
        assert len(fp) == 16 and fp == m.fingerprint()
    assert default.fingerprint() != gbm.fingerprint()
    default.calibration = {**(default.calibration or {}), "std_factor": 9.0, "std_floor_ev": 0.0}
    # the calibration is part of it
    assert default.fingerprint() != load_model("default").fingerprint()


def test_screen_with_a_gradient_boosting_run_end_to_end(gbm_run, cands, tmp_path, capsys):
    from mofbalora.cli import main

    out = tmp_path / "ranked.csv"
    assert (
        main(
            [
                "screen",
                str(cands),
                "--model",
                str(gbm_run),
                "--checks",
                "off",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == 6
    ok = table[table["status"] == "ok"]
    assert len(ok) == 5 and (table.loc[table["structure_id"] == "empty", "error"] == "empty").all()
    assert sorted(ok["rank"].astype(int)) == [1, 2, 3, 4, 5]
    assert (ok["bandgap_std_ev"].astype(float) > 0).all()
    # the baseline records no training domain: unknown, not out
    assert (ok["in_domain"] == "").all()
    # written in rank order, error rows last; counts as integers
    assert table["rank"].tolist()[:5] == ["1", "2", "3", "4", "5"] or table["rank"].tolist()[
        :5
    ] == [1, 2, 3, 4, 5]
    assert all("." not in str(v) for v in ok["n_atoms"])


def test_worker_processes_give_the_one_process_table(cands, tmp_path):
    from mofbalora.screen import screen

    one = screen([str(cands)], n_samples=4, checks="off", seed=2, progress=False)
    two = screen(
        [str(cands)], n_samples=4, checks="off", seed=2, progress=False, workers=2, chunk_size=2
    )
    # the same rows, ranks and statuses; numbers to float32 tolerance (one thread per worker, other
    # batches)
    pd.testing.assert_frame_equal(one, two, check_exact=False, rtol=1e-4, atol=1e-5)
    assert one["status"].tolist().count("ok") == 5


def test_scoring_config_names_the_bad_value_and_the_choices():
    assert ScoringConfig().n_samples == 32 and ScoringConfig.defaults()["acquisition"] == "std"
    cases = [
        ({"n_samples": 0}, "n_samples must be an integer >= 1"),
        ({"n_samples": 2.5}, "n_samples"),
        ({"acquisition": "lcbb"}, "unknown acquisition 'lcbb'; choose from"),
        ({"kappa": -1.0}, "kappa must be a finite number >= 0"),
        ({"target_ev": (2.0, 1.0)}, r"lo < hi"),
        ({"acquisition": "target"}, "needs a band-gap window"),
        ({"goal": "up"}, "unknown goal 'up'"),
        ({"checks": "strict"}, "unknown checks policy 'strict'"),
        ({"domain": "drop"}, "unknown domain policy 'drop'"),
        ({"repeats_top": -1}, "repeats_top must be an integer >= 0"),
        ({"chunk_size": 0}, "chunk_size"),
    ]
    for values, message in cases:
        with pytest.raises(ValueError, match=message):
            ScoringConfig(**values)
    with pytest.raises(
        ValueError, match=r"unknown scoring setting\(s\) \['samples'\]; choose from"
    ):
        ScoringConfig.from_dict({"samples": 4})
    assert ScoringConfig(target_ev=[1, 2]).target_ev == (1.0, 2.0)


def test_explain_columns_covers_every_column_of_the_table():
    text = explain_columns()
    lines = text.splitlines()
    assert [line.split()[0] for line in lines] == list(COLUMNS)
    assert all(len(line.split(None, 1)) == 2 for line in lines)  # every column has a description
    assert "[eV]" in next(line for line in lines if line.startswith("bandgap_spread_ev"))


def _record(i: int, median: float, spread: float, *, in_domain=True, status="ok") -> dict:
    rng = np.random.default_rng(i)
    draws = median + spread * rng.standard_normal(64)
    return {
        "key": f"k{i}",
        "path": f"p{i}.cif",
        "structure_id": f"s{i}",
        "status": status,
        "bandgap_mean_ev": float(draws.mean()),
        "bandgap_std_ev": float(draws.std(ddof=1)),
        "samples_ev": draws.tolist(),
        "in_domain": in_domain,
        "formula": "X",
        "n_atoms": 10,
    }


def test_rank_puts_in_domain_rows_first_and_skips_error_rows():
    records = [
        _record(0, 1.0, 0.5, in_domain=False),
        _record(1, 1.0, 0.1),
        _record(2, 1.0, 0.3),
        {"key": "k3", "path": "p3.cif", "structure_id": "s3", "status": "error", "error": "empty"},
    ]
    table = rank(records, ScoringConfig(acquisition="std"))
    assert table["rank"].tolist()[:3] == [3, 2, 1] and pd.isna(table["rank"].iloc[3])
    ignore = rank(records, ScoringConfig(acquisition="std", domain="ignore"))
    assert ignore["rank"].tolist()[:3] == [1, 3, 2]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--samples", "0"], "argument --samples: expected a positive integer, got 0"),
        (["--samples", "-3"], "argument --samples: expected a positive integer, got -3"),
        (["--top", "-1"], "argument --top: expected a positive integer, got -1"),
        (["--repeats-top", "-2"], "argument --repeats-top: expected an integer >= 0, got -2"),
        (["--acquisition", "lcbb"], "argument --acquisition: invalid choice: 'lcbb'"),
    ],
)
def test_screen_refuses_bad_flags_before_any_work(
    argv, message, cands, tmp_path, capsys, monkeypatch
):
    from mofbalora.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["screen", str(cands), "--out", str(tmp_path / "r.csv"), *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no table, no partial files


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--target", "2", "1"], "--target must be a window lo < hi in eV, got (2.0, 1.0)"),
        (["--acquisition", "target"], "acquisition 'target' needs a band-gap window"),
        (["--out", "r.xlsx"], "unknown table format '.xlsx'"),
    ],
)
def test_screen_checks_combinations_before_the_model_loads(
    argv, message, cands, tmp_path, capsys, monkeypatch
):
    import mofbalora.model
    from mofbalora.cli import main

    def no_loading(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(mofbalora.model, "load_model", no_loading)
    monkeypatch.chdir(tmp_path)
    argv = argv if "--out" in argv else ["--out", "r.csv", *argv]
    assert main(["screen", str(cands), *argv]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_explain_columns_from_the_cli(capsys):
    from mofbalora.cli import main

    assert main(["screen", "--explain-columns"]) == 0
    out = capsys.readouterr().out
    assert all(col in out for col in COLUMNS)


def test_a_runaway_draw_does_not_buy_a_batch_place():
    """A structure whose few runaway draws give it the largest raw std (the campaign's old ranking)
    is not picked: rank and select_rows use the median and the capped robust spread, as the
    screen does."""
    from mofbalora.acquisition import acquisition_scores
    from mofbalora.scoring import select_rows

    records = [_record(i, 1.0 + 0.1 * i, 0.05 + 0.02 * i) for i in range(6)]
    runaway = np.full(64, 2.0)
    runaway[:3] = [40.0, 35.0, 45.0]  # 3 of 64 softplus draws ran away
    records.append(
        {
            **_record(6, 2.0, 0.0),
            "samples_ev": runaway.tolist(),
            "bandgap_mean_ev": float(runaway.mean()),
            "bandgap_std_ev": float(runaway.std(ddof=1)),
        }
    )
    raw = acquisition_scores(
        "std",
        np.array([r["bandgap_mean_ev"] for r in records]),
        np.array([r["bandgap_std_ev"] for r in records]),
    )
    assert int(np.argmax(raw)) == 6  # the raw-std ranking puts it first
    table = rank(records, ScoringConfig(acquisition="std"))
    picks = select_rows(table, 3)
    assert 6 not in picks and table.loc[6, "physical_flag"] == "runaway_draws"
    assert [int(table.loc[i, "rank"]) for i in picks] == [1, 2, 3]


def test_evaluate_announces_what_it_will_featurize(qmof_path, tmp_path, caplog):
    import logging

    from mofbalora.evaluate import evaluate

    with caplog.at_level(logging.INFO, logger="mofbalora.featurize"):
        evaluate(
            "default", data=qmof_path, split="test", limit=2, n_samples=2, out=tmp_path / "e.json"
        )
    said = [r.getMessage() for r in caplog.records if r.name == "mofbalora.featurize"]
    assert any(m.startswith("will featurize test 2 (") and "cached)" in m for m in said), said


def _ok(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["status"] == "ok"]


def test_interval_columns_are_the_calibrated_laplace_of_the_default(cands):
    """The shipped default states a Laplace predictive (trained with laplace_nll, calibration fitted
    in that family): its 68.27 % interval is mean ± b·ln(1/(1−p)) with b = σ_cal/√2 (±0.81 σ_cal,
    not a Gaussian's ±1 σ_cal), its 95 % one ±2.12 σ_cal; lower ends clipped at 0; error rows
    have none."""
    from mofbalora.model import load_model
    from mofbalora.screen import screen

    model = load_model("default")
    assert model.calibration["family"] == "laplace"
    table = screen([str(cands)], model=model, n_samples=4, checks="off", seed=2, progress=False)
    assert list(table.columns) == list(COLUMNS) and set(INTERVAL_COLUMNS) <= set(COLUMNS)
    ok = _ok(table)
    mean, sd = (
        ok["bandgap_mean_ev"].to_numpy(float),
        ok["bandgap_std_calibrated_ev"].to_numpy(float),
    )
    b = sd / np.sqrt(2)
    for level, p in (("68", P68), ("95", P95)):
        half = b * np.log(1 / (1 - p))
        np.testing.assert_allclose(
            ok[f"bandgap_hi{level}_ev"].to_numpy(float), mean + half, rtol=1e-12
        )
        np.testing.assert_allclose(
            ok[f"bandgap_lo{level}_ev"].to_numpy(float),
            np.maximum(mean - half, 0),
            rtol=1e-12,
            atol=1e-15,
        )
    # not Gaussian ±1σ
    assert not np.allclose(ok["bandgap_hi68_ev"].to_numpy(float) - mean, sd, rtol=0.05)
    errors = table[table["status"] == "error"]
    assert len(errors) == 1 and errors[list(INTERVAL_COLUMNS)].isna().all().all()


def test_interval_columns_of_the_gradient_boosting_run_are_gaussian(gbm_run, cands):
    """The baseline's std is its 16-84 % quantile half-width, a Gaussian's ±1σ: its family is
    Gaussian (its calibration says so) and its 68.27 % interval is mean ± σ_cal, its 95 % one mean ±
    1.96 σ_cal. Its one "draw" is its point prediction, so its robust spread is its std."""
    from mofbalora.model import load_model
    from mofbalora.screen import screen

    gbm = load_model(gbm_run)
    assert gbm.calibration["family"] == "gaussian"
    ok = _ok(screen([str(cands)], model=gbm, checks="off", progress=False))
    mean, sd = (
        ok["bandgap_mean_ev"].to_numpy(float),
        ok["bandgap_std_calibrated_ev"].to_numpy(float),
    )
    np.testing.assert_allclose(ok["bandgap_hi68_ev"].to_numpy(float), mean + sd, rtol=1e-9)
    np.testing.assert_allclose(
        ok["bandgap_lo68_ev"].to_numpy(float), np.maximum(mean - sd, 0), rtol=1e-9, atol=1e-15
    )
    np.testing.assert_allclose(
        ok["bandgap_hi95_ev"].to_numpy(float), mean + 1.959963984540054 * sd, rtol=1e-9
    )
    np.testing.assert_allclose(
        ok["bandgap_spread_ev"].to_numpy(float), ok["bandgap_std_ev"].to_numpy(float), rtol=1e-12
    )
    np.testing.assert_allclose(ok["bandgap_median_ev"].to_numpy(float), mean, rtol=1e-12)


def test_rows_resumed_without_intervals_get_the_same_ones(cands):
    """A screen resumed from partial rows written before the intervals were columns fills them in
    (``add_intervals``) with the numbers a fresh record gets."""
    from mofbalora.model import load_model
    from mofbalora.scoring import add_intervals, file_keys, score_chunk

    model = load_model("default")
    paths = sorted(cands.glob("*.cif"))
    keys, ids = file_keys(paths)
    cfg = ScoringConfig(n_samples=4, checks="off", seed=5)
    fresh = score_chunk(model, paths, keys, ids, cfg)
    assert sum(r["status"] == "ok" for r in fresh) == 5
    old = [{k: v for k, v in r.items() if k not in INTERVAL_COLUMNS} for r in fresh]
    assert add_intervals(model, old) == 5 and add_intervals(model, old) == 0
    for a, b in zip(fresh, old, strict=True):
        for col in INTERVAL_COLUMNS:
            assert (col in a) == (col in b) and (
                col not in a or a[col] == pytest.approx(b[col], rel=1e-12)
            )


def test_every_table_view_carries_the_intervals_and_explains_them():
    for view in (BATCH_COLUMNS, MANIFEST_PREDICTION_COLUMNS):
        assert [c for c in view if c in INTERVAL_COLUMNS] == list(INTERVAL_COLUMNS)
    from mofbalora.al.candidates import BATCH_COLUMNS as CAMPAIGN_BATCH
    from mofbalora.dft import MANIFEST_COLUMNS

    assert set(INTERVAL_COLUMNS) <= set(CAMPAIGN_BATCH) and set(INTERVAL_COLUMNS) <= set(
        MANIFEST_COLUMNS
    )
    lines = {line.split()[0]: line for line in explain_columns().splitlines()}
    for col in INTERVAL_COLUMNS:
        assert lines[col].endswith("[eV]")
    assert "Laplace" in lines["bandgap_lo68_ev"] and "Gaussian" in lines["bandgap_lo68_ev"]


def test_the_checks_reuse_the_structure_featurization_parsed(cands, tmp_path, monkeypatch):
    """With both caches empty, score_chunk parses each file once (featurization's structure goes to
    the checks), and the verdicts are those of a fresh check of the file."""
    import mofbalora.featurize
    import mofbalora.scoring
    from mofbalora.checks import checker_available, run_checks
    from mofbalora.data.structures import read_structure
    from mofbalora.model import load_model
    from mofbalora.scoring import file_keys, score_chunk

    if not checker_available():
        pytest.skip("mofchecker-next is not installed")
    # no cached features, no cached verdicts
    monkeypatch.setenv("MOFBALORA_CACHE", str(tmp_path / "cache"))
    reads: list[str] = []

    def counted(path, **kw):  # the real parser, counted
        reads.append(str(path))
        return read_structure(path, **kw)

    monkeypatch.setattr(mofbalora.featurize, "read_structure", counted)
    monkeypatch.setattr(mofbalora.scoring, "read_structure", counted)
    model = load_model("default")
    paths = sorted(cands.glob("*.cif"))
    keys, ids = file_keys(paths)
    records = score_chunk(model, paths, keys, ids, ScoringConfig(n_samples=2, checks="flag"))
    # once each (the empty file fails at parse)
    assert sorted(reads) == sorted(str(p) for p in paths)
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == 5 and all(r["checks"] in ("ok", "failed") for r in ok)
    for rec in ok:
        fresh = run_checks(read_structure(rec["path"]), rec["path"], charges=False)
        assert {k: rec[k] for k in fresh} == fresh
