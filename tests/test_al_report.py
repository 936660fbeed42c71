"""The benchmark report's comparison point (one round, one set of seeds for every strategy while
campaigns still run) and its target table (paired bootstrap over seeds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mofbalora.al.report import (
    comparison_point,
    paired_ratio_interval,
    summarize_curves,
    target_checks,
)

STRATEGIES = ("random", "greedy_mean", "balora_lcb", "ensemble_lcb")


def _table(last_round: dict) -> pd.DataFrame:
    """Rows of (strategy, seed, round) up to ``last_round[(strategy, seed)]``, with made-up but
    strategy-specific numbers: balora finds 1.2x greedy's sub-0.5 eV structures; the test MAE falls
    faster for balora and the ensemble than for random."""
    rows = []
    slope = {"random": 0.02, "greedy_mean": 0.01, "balora_lcb": 0.05, "ensemble_lcb": 0.04}
    strict = {"random": 5, "greedy_mean": 50, "balora_lcb": 60, "ensemble_lcb": 40}
    train = {"random": 10.0, "greedy_mean": 10.0, "balora_lcb": 10.0, "ensemble_lcb": 100.0}
    for (strategy, seed), last in last_round.items():
        for r in range(last + 1):
            rows.append(
                {
                    "strategy": strategy,
                    "seed": seed,
                    "round": r,
                    "n_labelled": 500 + 100 * r,
                    "n_acquired": 100 * r,
                    "relative_dft_cost": 100.0 * r,
                    "n_low_gap_found": 80 * r,
                    "test_mae_ev": 0.5 - slope[strategy] * r + 0.001 * seed,
                    "test_spearman": 0.3,
                    "n_found_strict": strict[strategy] * r + seed,
                    "recall_smallest": 0.1 * r if strategy != "random" else 0.0,
                    "round_seconds": 20.0,
                    "train_seconds": train[strategy],
                    "low_gap_base_rate": 0.2,
                }
            )
    return pd.DataFrame(rows)


def test_comparison_point_leaves_out_a_lagging_seed_not_every_strategy():
    last = {(s, 0): 4 for s in STRATEGIES}
    last.update({(s, 1): 4 for s in STRATEGIES})
    last[("balora_lcb", 1)] = 1  # seed 1's balora campaign lags
    last.update({(s, 2): 3 for s in STRATEGIES if s != "ensemble_lcb"})  # seed 2 lacks one
    assert comparison_point(_table(last)) == (4, [0])
    last[("balora_lcb", 1)] = 5
    assert comparison_point(_table(last)) == (4, [0, 1])
    with pytest.raises(ValueError, match="no seed"):
        comparison_point(_table({("random", 0): 2, ("balora_lcb", 1): 2}))


def test_paired_ratio_interval_resamples_seeds_jointly():
    # the ratio is 2 in every seed, however different the seeds: a paired interval is exactly 2
    lo, hi = paired_ratio_interval([2.0, 20.0, 200.0], [1.0, 10.0, 100.0])
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)
    lo, hi = paired_ratio_interval([1.0, 3.0, 2.0], [1.0, 1.0, 1.0])
    assert 1.0 <= lo < 2.0 < hi <= 3.0
    assert np.isnan(paired_ratio_interval([], [])[0])


def test_target_checks_measure_each_target_and_wait_for_the_last_round():
    last = {(s, seed): 10 for s in STRATEGIES for seed in (0, 1, 2)}
    table = _table(last)
    rows = {
        (r["target"].split(":")[0], r["strategy"]): r
        for r in target_checks(table, summarize_curves(table), 10, 10)
    }
    disc = rows[("discovery", "balora_lcb")]
    # (60·10 + mean seed 1) / (50·10 + 1) = 601 / 501
    assert disc["measured"].startswith(f"{601 / 501:.2f}× greedy")
    assert disc["verdict"] == "met"
    # random's final MAE 0.301 (mean over seeds); balora (slope 0.05) reaches it at round 4
    learn = rows[("learning", "balora_lcb")]
    assert learn["measured"] == "900 of 1500 labels (60%)" and learn["verdict"] == "met"
    assert rows[("learning", "ensemble_lcb")]["verdict"] == "met"  # round 5: 1000 labels, 67 %
    cost = rows[("vs the LoRA ensemble", "balora_lcb")]
    assert "training 0.10× its seconds" in cost["measured"]  # 11 rounds × 10 s / 11 × 100 s
    assert cost["verdict"] == "met"
    # before the last round every verdict is interim
    early = target_checks(table, summarize_curves(table[table["round"] <= 6]), 6, 10)
    assert {r["verdict"] for r in early} == {"interim (round 6 of 10)"}


def test_one_report_writer_at_a_time(tmp_path):
    import fcntl
    import threading
    import time

    from mofbalora.al.report import REPORT_LOCK, write_report

    runs = tmp_path / "runs"
    runs.mkdir()
    with pytest.raises(FileNotFoundError, match="no campaign"):
        write_report(runs, tmp_path / "out")  # the lock does not hide the reader's error
    errors: list = []

    def writer():
        try:
            write_report(runs, tmp_path / "out")
        except FileNotFoundError as exc:  # reached the reading: the lock was free
            errors.append((time.monotonic(), exc))

    with open(runs / REPORT_LOCK, "a") as fh:  # another process's writer holds the lock
        fcntl.flock(fh, fcntl.LOCK_EX)
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.5)
        assert not errors  # still waiting
        released = time.monotonic()
        fcntl.flock(fh, fcntl.LOCK_UN)
    t.join(10)
    assert len(errors) == 1 and errors[0][0] >= released


def test_benchmark_progress_and_its_command(tmp_path, capsys):
    import json

    import yaml

    from mofbalora.al.report import progress
    from mofbalora.cli import main

    def campaign(strategy, seed, rounds_seconds, phase="select"):
        d = tmp_path / "runs" / strategy / f"seed_{seed}"
        d.mkdir(parents=True)
        history = [
            {"round": r, "seconds": {"select": s, "train": 0.0, "evaluate": 0.0}}
            for r, s in enumerate(rounds_seconds)
        ]
        state = {"name": strategy, "seed": seed, "round": max(len(history) - 1, 0)}
        (d / "campaign.json").write_text(json.dumps({**state, "phase": phase, "history": history}))
        (d / "config.yaml").write_text(yaml.safe_dump({"al": {"n_rounds": 4}}))

    campaign("balora_lcb", 0, [50.0, 100.0, 300.0])  # 2 of 4 warm rounds: 200 s each
    campaign("balora_lcb", 1, [50.0], phase="train")  # none yet: its strategy's pace elsewhere
    campaign("gbm_lcb", 0, [9.0, 10.0, 10.0, 10.0, 10.0])  # finished
    t = progress(tmp_path / "runs").set_index(["strategy", "seed"])
    assert t.loc[("balora_lcb", 0), "remaining_seconds"] == pytest.approx(2 * 200.0)
    assert t.loc[("balora_lcb", 1), "remaining_seconds"] == pytest.approx(4 * 200.0)
    assert t.loc[("gbm_lcb", 0), "remaining_seconds"] == 0
    assert main(["al", "status", "--runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "1 of 3 campaigns finished" in out and "about 0.3 h of process time" in out
    with pytest.raises(FileNotFoundError, match="no campaign"):
        progress(tmp_path / "runs" / "none")
    # round 0 everywhere: no pace to extrapolate, and the total says so rather than "0.0 h"
    tmp_path = tmp_path / "fresh"
    campaign("balora_lcb", 0, [50.0])
    campaign("gbm_lcb", 0, [9.0])
    assert main(["al", "status", "--runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "0 of 2 campaigns finished; the time they need is known once" in out and " h " not in out
