"""``mofbalora al snapshot``: a compact copy of every campaign (state, configuration, the latest
round's model) resumes to the same campaigns as the full runs folder, and never moves a campaign
back."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from mofbalora.al.benchmark import run_benchmark
from mofbalora.al.campaign import Campaign
from mofbalora.al.report import progress
from mofbalora.al.snapshot import snapshot_campaign, snapshot_runs
from mofbalora.cli import main

pytestmark = pytest.mark.slow

STRATEGIES = {
    "balora_lcb": {"model.regime": "balora", "al.acquisition": "lcb"},
    "gbm_lcb": {"model.regime": "gbm", "al.acquisition": "lcb"},
}


def _history(state) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in Campaign(state).history]


def test_a_snapshot_resumes_to_the_same_campaigns(al_cfg, tmp_path, capsys):
    cfg = al_cfg("backbone.features=all_layers", "model.likelihood=laplace_nll")
    cfg["benchmark"].update(strategies=STRATEGIES, seeds=[0])
    straight, half = tmp_path / "straight", tmp_path / "half"
    run_benchmark(cfg, straight)  # rounds 0, 1, 2
    auto = tmp_path / "auto"
    run_benchmark(cfg, half, n_rounds=1, snapshot=auto)  # refreshed after every round

    snap = tmp_path / "snap"
    rows = snapshot_runs(half, snap)
    assert [(r.campaign, r.rounds_trained, r.copied) for r in rows] == [
        ("balora_lcb/seed_0", 2, True),
        ("gbm_lcb/seed_0", 2, True),
    ]
    # only what a campaign resumes from: no round 0 model, no epoch checkpoints, no metrics
    files = sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())
    assert not [f for f in files if "round_000" in f or "checkpoints/last" in f]
    assert "balora_lcb/seed_0/rounds/round_001/checkpoints/best/model.safetensors" in files
    # the gradient-boosting model is fitted again on resume (19 MB a round at full scale)
    assert not [f for f in files if f.startswith("gbm_lcb/seed_0/rounds")]
    assert progress(snap)["rounds_trained"].tolist() == [2, 2]  # the report reads it as it is
    assert files == sorted(str(p.relative_to(auto)) for p in auto.rglob("*") if p.is_file())
    assert [(r.copied, r.destination_rounds) for r in snapshot_runs(half, auto)] == [(False, 2)] * 2

    # the runs folder is lost; the snapshot is copied back (through the CLI) and the run goes on
    shutil.rmtree(half)
    restored = tmp_path / "restored"
    assert main(["al", "snapshot", "--runs", str(snap), "--out", str(restored)]) == 0
    assert "2 of 2 campaign(s) copied" in capsys.readouterr().out
    run_benchmark(cfg, restored)
    for name in STRATEGIES:
        a, b = straight / name / "seed_0", restored / name / "seed_0"
        assert _history(a) == _history(b)
        assert Campaign(a).labelled == Campaign(b).labelled and Campaign(a).pool == Campaign(b).pool
    ta, tb = (
        load_file(str(Campaign(s / "balora_lcb" / "seed_0").model_dir(2) / "model.safetensors"))
        for s in (straight, restored)
    )
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)

    # a snapshot never moves a campaign back: the older copy leaves the restored one as it is
    before = (restored / "gbm_lcb" / "seed_0" / "campaign.json").read_text()
    rows = snapshot_runs(snap, restored)
    assert [(r.copied, r.destination_rounds) for r in rows] == [(False, 3), (False, 3)]
    assert (restored / "gbm_lcb" / "seed_0" / "campaign.json").read_text() == before
    # ... and refuses to replace a different campaign
    with pytest.raises(ValueError, match="another campaign"):
        other = tmp_path / "other"
        shutil.copytree(snap / "gbm_lcb" / "seed_0", other)
        text = (other / "campaign.json").read_text().replace('"seed": 0', '"seed": 7')
        (other / "campaign.json").write_text(
            text.replace('"history": [', '"history": [{}, {}, {}, ', 1)
        )
        snapshot_campaign(other, restored / "gbm_lcb" / "seed_0")


def test_snapshot_of_a_folder_without_campaigns_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no campaign"):
        snapshot_runs(tmp_path, tmp_path / "out")
