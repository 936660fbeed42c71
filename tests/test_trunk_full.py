"""The full-scale driver of issue 26 (reports/trunk/full/run.py): its plan (order, warm starts,
reuse of reports/accuracy), resumability checks, the shipping rule, and a tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def driver():
    spec = importlib.util.spec_from_file_location(
        "trunk_full_run", ROOT / "reports" / "trunk" / "full" / "run.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["trunk_full_run"] = module
    spec.loader.exec_module(module)
    return module


def _names(runs) -> list[str]:
    return [f"{r.recipe}-s{r.seed}" for r in runs]


def test_full_scale_plan_runs_trunk_seed_0_first_and_reuses_the_measured_baselines(
    driver, tmp_path
):
    s = driver.Settings(runs=tmp_path / "runs", results=tmp_path / "results")
    runs, reused = driver.plan(s)
    assert _names(runs) == [
        f"{recipe}-s{seed}"
        for seed in (0, 1, 2)
        for recipe in ("readout_balora", "trunk_balora", "readout_lora", "trunk_lora")
    ]
    # gbm and the deterministic head for seeds 0-2 and the 5-member ensemble were measured by
    # reports/accuracy at this split, size and T: nothing of them is rerun
    assert set(reused) == {
        *((v, s_) for v in ("gbm", "head_only") for s_ in (0, 1, 2)),
        ("lora_ensemble", 0),
    }
    assert reused[("head_only", 1)]["test_mae_ev"] == pytest.approx(0.22680872229901056)
    assert reused[("lora_ensemble", 0)]["test_spearman_epistemic"] == pytest.approx(
        0.32232897087186224
    )
    assert all(r["source"].startswith("reused: reports/accuracy/") for r in reused.values())


def test_trunk_runs_warm_start_from_their_own_seeds_source(driver, tmp_path):
    s = driver.Settings(runs=tmp_path / "runs", seeds=(1,), variants=("trunk_lora",))
    runs, _ = driver.plan(s)
    assert _names(runs) == ["readout_lora-s1", "trunk_lora-s1"]
    trunk = runs[1]
    assert f"model.warm_start={runs[0].folder}" in trunk.overrides
    assert "model.regime=lora" in trunk.overrides and "run.seed=1" in trunk.overrides
    cfg = driver.run_config(trunk)
    assert cfg.backbone.options["adapt"] == "last_block_cached"
    assert cfg.model.regime == "lora" and cfg.data.train_size is None
    assert cfg.optim.lr_scale == {"head": 0}


def test_a_smoke_run_reuses_nothing_and_runs_every_baseline(driver, tmp_path):
    s = driver.Settings(
        runs=tmp_path, limit_train=20, limit_val=8, limit_test=8, epochs=1, seeds=(0,)
    )
    runs, reused = driver.plan(s)
    assert reused == {}
    assert _names(runs) == [
        "readout_balora-s0",
        "trunk_balora-s0",
        "readout_lora-s0",
        "trunk_lora-s0",
        "gbm-s0",
        "head_only-s0",
        *(f"lora_member-s{m}" for m in range(5)),
    ]
    assert runs[0].folder.name == "readout_balora-n20-v8-t8-e1-s0"
    cfg = driver.run_config(runs[1])
    assert (cfg.data.train_size, cfg.data.val_size, cfg.data.test_size) == (20, 8, 8)
    assert cfg.optim.epochs == 1


def test_dry_run_prints_the_plan_and_writes_nothing(driver, tmp_path, capsys):
    argv = ["--dry-run", "--runs", str(tmp_path / "r"), "--results", str(tmp_path / "res")]
    assert driver.main([*argv, "--seeds", "0", "--variants", "trunk_balora", "gbm"]) == 0
    out = capsys.readouterr().out
    assert "| 1 | readout_balora-n14609-s0 | todo |" in out
    assert "| 2 | trunk_balora-n14609-s0 | todo |" in out
    assert "gbm seed 0: reused: reports/accuracy/results-14609-s0.csv (gbm)" in out
    assert "**total**" in out
    assert list(tmp_path.iterdir()) == []


def test_settings_refuse_bad_values(driver, tmp_path):
    with pytest.raises(ValueError, match=r"unknown variant\(s\) \['nope'\]"):
        driver.Settings(variants=("nope",))
    with pytest.raises(ValueError, match="--limit-train: expected >= 1, got 0"):
        driver.Settings(limit_train=0)


def test_status_and_a_folder_holding_another_configuration(driver, tmp_path):
    from mofbalora.config import dump_config

    s = driver.Settings(runs=tmp_path, limit_train=20, limit_val=8, limit_test=8, epochs=2)
    runs, _ = driver.plan(s)
    run = runs[1]
    assert driver.run_status(run) == ("todo", 0)
    (run.folder / "checkpoints" / "last").mkdir(parents=True)
    (run.folder / "metrics.csv").write_text("epoch,loss\n1,0.5\n")
    assert driver.run_status(run) == ("partial", 1)
    # the same configuration (another thread count) is accepted, another recipe is refused
    dump_config(driver.run_config(run), run.folder / "config.yaml")
    other = driver.Settings(
        runs=tmp_path, limit_train=20, limit_val=8, limit_test=8, epochs=2, threads=2
    )
    driver.check_folder(driver.plan(other)[0][1], driver.run_config(driver.plan(other)[0][1]))
    dump_config(driver.run_config(runs[0]), run.folder / "config.yaml")
    with pytest.raises(ValueError, match="holds another configuration"):
        driver.check_folder(run, driver.run_config(run))
    (run.folder / "metrics.json").write_text("{}")
    assert driver.run_status(run) == ("done", -1)
    assert driver.estimate_seconds(run, s) == 0.0
    assert driver.estimate_seconds(runs[0], s) > 0.0


def _rule_rows(driver, trunk_val_mae, gains, epi_ratio=3.0, seeds=(0, 1, 2)):
    rows = []
    for k, seed in enumerate(seeds):
        base = {
            "val_mae_ev": 0.226 + 0.002 * k,
            "val_spearman_epistemic": 0.18,
            "val_mean_epistemic_std_ev": 0.006,
            "val_spearman_total": 0.30,
        }
        rows.append(driver._row("readout_balora", seed, "run: x", **base))
        trunk = {
            "val_mae_ev": trunk_val_mae[k],
            "val_spearman_epistemic": 0.18 + gains[k],
            "val_mean_epistemic_std_ev": 0.006 * epi_ratio,
            "val_spearman_total": 0.30,
        }
        rows.append(driver._row("trunk_balora", seed, "run: x", **trunk))
    return rows


def test_the_shipping_rule(driver):
    # readout val MAE 0.226 / 0.228 / 0.230 (sd 0.002): the trunk must be below 0.228 - 0.004
    ship = _rule_rows(driver, [0.220, 0.222, 0.223], [0.05, 0.02, -0.01])
    assert driver.shipping_rule(ship)[0] == "ship"
    too_close = _rule_rows(driver, [0.225, 0.226, 0.227], [0.05, 0.02, 0.01])
    verdict, text = driver.shipping_rule(too_close)
    assert verdict == "keep" and "(a) val MAE" in text and "not met" in text.splitlines()[0]
    quiet = _rule_rows(driver, [0.220, 0.222, 0.223], [0.05, 0.02, 0.01], epi_ratio=1.5)
    assert driver.shipping_rule(quiet)[0] == "keep"
    worse_ranking = _rule_rows(driver, [0.220, 0.222, 0.223], [0.05, -0.02, -0.01])
    assert driver.shipping_rule(worse_ranking)[0] == "keep"
    assert driver.shipping_rule(ship[:-1])[0] is None
    # reused rows never decide it
    reused = [{**r, "source": "reused: x"} for r in ship]
    assert driver.shipping_rule(reused)[0] is None


def test_table_marks_what_has_not_run(driver, tmp_path):
    s = driver.Settings(runs=tmp_path, results=tmp_path / "results")
    _, reused = driver.plan(s)
    text = driver.table(list(reused.values()), s)
    assert "| 1. BaLoRA, last block + readout, all-layer head | – | not yet run |" in text
    assert "| 6. deterministic head | 0, 1, 2 | reused | 0.229 ± 0.003 |" in text


def test_the_report_covers_every_variant_whichever_ones_run(driver, tmp_path):
    """``--variants trunk_balora --seeds 0`` chooses what to run; the table still lists the others
    (it once dropped them while such a run was going)."""
    s = driver.Settings(
        runs=tmp_path, results=tmp_path / "results", variants=("trunk_balora",), seeds=(0,)
    )
    runs, reused = driver.plan(s)
    assert not reused  # the restricted plan reuses nothing ...
    driver.report(s, runs, reused)
    text = (tmp_path / "results" / "table.md").read_text()
    # ... but the report takes every variant's reused rows and marks the rest as not yet run
    assert "| 6. deterministic head | 0, 1, 2 | reused |" in text
    assert "| 2. LoRA, same placement | – | not yet run |" in text


@pytest.mark.slow
def test_tiny_end_to_end(driver, tmp_path, qmof_path, monkeypatch):
    """Every step on 8 training / 8 val / 4 test structures, one epoch, T = 2: the trunk runs
    warm-start from their source, the ensemble is scored, per-run JSON and the table written, and a
    rerun trains nothing."""
    monkeypatch.setenv("MOFBALORA_QMOF", str(qmof_path))
    argv = [
        "--runs",
        str(tmp_path / "runs"),
        "--results",
        str(tmp_path / "results"),
        "--limit-train",
        "8",
        "--limit-val",
        "8",
        "--limit-test",
        "4",
        "--epochs",
        "1",
        "--eval-samples",
        "2",
        "--seeds",
        "0",
        "--members",
        "0",
        "1",
    ]
    assert driver.main(argv) == 0
    results = tmp_path / "results"
    names = sorted(p.name for p in (results / "runs").glob("*.json"))
    assert names == [
        f"{v}-s0.json"
        for v in sorted(
            [
                "trunk_balora",
                "trunk_lora",
                "readout_balora",
                "lora_ensemble",
                "gbm",
                "head_only",
                "readout_lora",
            ]
        )
    ]
    trunk = json.loads((results / "runs" / "trunk_balora-s0.json").read_text())
    assert trunk["source"] == "run: trunk_balora-n8-v8-t4-e1-T2-s0"
    assert trunk["test_mean_epistemic_std_ev"] > 0 and trunk["contribution_block_ev"] >= 0
    lora = json.loads((results / "runs" / "trunk_lora-s0.json").read_text())
    assert lora["test_spearman_epistemic"] is None and lora["test_mae_ev"] > 0
    ens = json.loads((results / "runs" / "lora_ensemble-s0.json").read_text())
    assert ens["test_mean_epistemic_std_ev"] > 0 and ens["test_coverage95_calibrated"] is not None
    table = (results / "table.md").read_text()
    assert "SMOKE RUN, not a result" in table and "not yet run" not in table
    cfg = (tmp_path / "runs" / "trunk_balora-n8-v8-t4-e1-T2-s0" / "config.yaml").read_text()
    assert str(tmp_path / "runs" / "readout_balora-n8-v8-t4-e1-T2-s0") in cfg
    stamp = {p: p.stat().st_mtime for p in (tmp_path / "runs").glob("*/metrics.json")}
    assert driver.main(argv) == 0
    assert {p: p.stat().st_mtime for p in (tmp_path / "runs").glob("*/metrics.json")} == stamp


def test_a_second_driver_on_the_same_runs_is_refused(driver, tmp_path):
    import os

    (tmp_path / "driver.lock").write_text(str(os.getppid()))  # a live process, not this one
    with pytest.raises(RuntimeError, match=f"driver {os.getppid()} is running"):
        driver.hold_lock(tmp_path)
    (tmp_path / "driver.lock").write_text("999999999")  # stale: taken over
    assert driver.hold_lock(tmp_path).read_text() == str(os.getpid())


def test_offdomain_quintiles_follow_the_distance():
    import numpy as np

    spec = importlib.util.spec_from_file_location(
        "trunk_full_offdomain", ROOT / "reports" / "trunk" / "full" / "offdomain.py"
    )
    offdomain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(offdomain)
    distance = np.random.default_rng(0).uniform(10, 100, 50)
    lines = offdomain.quintile_table(distance, {"grows": distance / 1000, "flat": 0 * distance})
    means = [float(line.split("|")[3]) for line in lines[2:]]
    assert len(means) == 5 and means == sorted(means) and means[0] < means[-1]
    assert sum(int(line.split("|")[2]) for line in lines[2:]) == 50
    assert offdomain.spearman(distance, distance**2) == pytest.approx(1.0)
