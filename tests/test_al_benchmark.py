"""The benchmark driver (``mofbalora al run``): strategies advance round by round, a kill anywhere
resumes to the same campaigns, and the report is regenerated with the discovery, recall and
learning tables."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from mofbalora.al.benchmark import run_benchmark
from mofbalora.al.campaign import Campaign

pytestmark = pytest.mark.slow

STRATEGIES = {
    "balora_lcb_epistemic": {"model.regime": "balora", "al.acquisition": "lcb_epistemic"},
    "gbm_lcb": {"model.regime": "gbm", "al.acquisition": "lcb"},
}


class Killed(Exception):
    """Stands in for a kill at a hook point."""


def _history(state) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in Campaign(state).history]


def test_benchmark_resumes_after_kills_and_regenerates_the_report(al_cfg, tmp_path):
    cfg = al_cfg("backbone.features=all_layers", "model.likelihood=laplace_nll")
    cfg["benchmark"].update(strategies=STRATEGIES, seeds=[0])
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_benchmark(cfg, straight, report=tmp_path / "report_straight")

    # kills before commits and inside a training, in both strategies and in different rounds (in the
    # order the campaigns meet them: every campaign's round 0, then every campaign's round 1, ...)
    kills = [
        ("train", "balora_lcb_epistemic", 0),
        ("epoch", "balora_lcb_epistemic", 1),
        ("select", "gbm_lcb", 0),
        ("label", "gbm_lcb", 1),
        ("train", "gbm_lcb", 2),
    ]

    def hook(point, campaign):
        if kills and (point, campaign.state.name, campaign.round) == kills[0]:
            kills.pop(0)
            raise Killed(point)

    starts = 0
    while True:
        starts += 1
        try:
            run_benchmark(cfg, resumed, report=tmp_path / "report", hook=hook)
            break
        except Killed:
            continue
    assert not kills and starts == 6

    for name in STRATEGIES:
        a, b = straight / name / "seed_0", resumed / name / "seed_0"
        ca, cb = Campaign(a), Campaign(b)
        assert (ca.round, ca.phase) == (cb.round, cb.phase) == (2, "select")
        assert _history(a) == _history(b) and ca.labelled == cb.labelled and ca.pool == cb.pool
        assert [row["n_labelled"] for row in ca.history] == [6, 9, 12]
        assert all(row["test_mae_ev"] > 0 for row in ca.history)
    for r in range(3):  # the BaLoRA models of every round are the same tensors
        ta, tb = (
            load_file(
                str(
                    Campaign(s / "balora_lcb_epistemic" / "seed_0").model_dir(r)
                    / "model.safetensors"
                )
            )
            for s in (straight, resumed)
        )
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert (Campaign(resumed / "gbm_lcb" / "seed_0").model_dir(2) / "gbm.skops").is_file()

    # the report: both strategies, every round, the new columns; the same numbers as the
    # uninterrupted run
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert set(runs["strategy"]) == set(STRATEGIES) and sorted(set(runs["round"])) == [0, 1, 2]
    assert runs["recall_smallest"].between(0, 1).all() and runs["n_found_strict"].notna().all()
    text = (tmp_path / "report" / "report.md").read_text()
    assert "recall of the 100 smallest" in text and "labels to random's final MAE" in text
    cols = [
        "strategy",
        "round",
        "n_labelled",
        "n_low_gap_found",
        "n_found_strict",
        "recall_smallest",
        "test_mae_ev",
    ]
    pd.testing.assert_frame_equal(
        runs[cols], pd.read_csv(tmp_path / "report_straight" / "runs.csv")[cols]
    )
