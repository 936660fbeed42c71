"""Tests for active-learning campaigns (mofbalora.al.campaign and ``mofbalora al``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mofbalora.al.campaign import Campaign, simulated_campaign
from mofbalora.al.config import AL_DEFAULTS, load_campaign_config, strategy_config
from mofbalora.al.report import collect_runs, final_summary, write_report
from mofbalora.cli import main

REPO = Path(__file__).resolve().parents[1]


class Killed(Exception):
    """Stands in for a kill at a hook point."""


def _tensors(state_dir: Path, round_: int) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Campaign(state_dir).model_dir(round_) / "model.safetensors"))


def _without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_killed_campaign_resumes_to_the_same_state(al_cfg, tmp_path):
    import torch

    # thompson + kcenter: picks depend on the stored RNG state, the model samples and the embeddings
    cfg = al_cfg(acquisition="thompson", diversity="kcenter")
    straight = tmp_path / "straight"
    simulated_campaign(straight, cfg).run()

    # a kill before each kind of commit and in the middle of a training, in different rounds
    kills = [("select", 0), ("epoch", 1), ("label", 1), ("train", 2)]

    def hook(point, campaign):
        if kills and (point, campaign.round) == kills[0]:
            kills.pop(0)
            raise Killed(point)

    resumed = tmp_path / "resumed"
    simulated_campaign(resumed, cfg)
    starts = 0
    while True:
        starts += 1
        try:
            Campaign(resumed, hook=hook).run()
            break
        except Killed:
            continue
    assert not kills and starts == 5

    a, b = Campaign(straight), Campaign(resumed)
    assert (a.round, a.phase) == (b.round, b.phase) == (2, "select")
    assert _without_seconds(a.history) == _without_seconds(b.history)
    assert a.labelled == b.labelled and a.pool == b.pool
    assert a.state.rng_state == b.state.rng_state
    for r in range(3):
        ta, tb = _tensors(straight, r), _tensors(resumed, r)
        assert ta.keys() == tb.keys()
        assert all(torch.equal(ta[k], tb[k]) for k in ta)

    # the campaign's invariants
    picked = [k for row in a.history for k in row["picked"]]
    assert [row["n_labelled"] for row in a.history] == [6, 9, 12]
    assert len(set(picked)) == 6 and not set(picked) & set(a.state.initial)
    assert not (set(a.state.test_ids) | set(a.state.val_ids)) & (set(a.labelled) | set(a.pool))
    assert all(row["test_mae_ev"] > 0 for row in a.history)


def test_create_refuses_a_test_structure_in_the_pool(al_cfg, tmp_path, tiny_split):
    from mofbalora.data.splits import load_split

    split = load_split(tiny_split)
    with pytest.raises(ValueError, match="in both pool and test"):
        Campaign.create(
            tmp_path / "c",
            al_cfg(),
            labelled=split["train"][:4],
            pool=split["train"][4:8] + split["test"][:1],
            val_ids=split["val"],
            test_ids=split["test"],
        )


def test_suggest_ingest_suggest_round_trip(al_cfg, qmof, tiny_split, tmp_path):
    from mofbalora.data.splits import load_split

    config = tmp_path / "al.yaml"
    config.write_text(yaml.safe_dump(al_cfg(batch_size=2)))
    state = tmp_path / "campaign"
    candidates = [str(qmof.cif_paths[qmof.index_of(i)]) for i in load_split(tiny_split)["train"]]

    assert (
        main(
            [
                "al",
                "suggest",
                "--state",
                str(state),
                "--candidates",
                *candidates,
                "--config",
                str(config),
                "--quiet",
            ]
        )
        == 0
    )
    c = Campaign(state)
    # the 6 initial labelled structures come from the same train part: their files are not added
    # again
    assert len(c.pool) == 10 and not set(c.pool) & set(c.labelled)
    batch1 = pd.read_csv(state / "batch_001.csv")
    assert list(batch1["rank"]) == [1, 2] and set(batch1["status"]) == {"ok"}
    assert set(batch1["structure_id"]) <= set(c.pool)
    assert len(pd.read_csv(state / "dft_inputs" / "batch_001" / "manifest.csv")) == 2

    # asked again before ingesting, suggest rewrites the same batch
    assert main(["al", "suggest", "--state", str(state), "--quiet"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(state / "batch_001.csv"), batch1)

    gap = {i: float(qmof.bandgaps_ev[qmof.index_of(i)]) for i in batch1["structure_id"]}
    first, second = batch1["structure_id"]
    results = tmp_path / "results.csv"  # one row matched by id, one by path only
    pd.DataFrame(
        [
            {"structure_id": first, "path": "", "bandgap_ev": gap[first]},
            {"structure_id": "", "path": batch1["path"][1], "bandgap_ev": gap[second]},
        ]
    ).to_csv(results, index=False)
    assert main(["al", "ingest", "--state", str(state), str(results), "--quiet"]) == 0
    c = Campaign(state)
    assert (c.round, c.phase, len(c.history)) == (1, "select", 2)
    assert {k: c.labelled[k] for k in gap} == gap
    assert c.history[1]["picked"] == [first, second] and len(c.pool) == 8

    # ingesting the same file again changes nothing; a contradicting label is refused
    assert main(["al", "ingest", "--state", str(state), str(results), "--quiet"]) == 0
    assert Campaign(state).round == 1
    pd.DataFrame([{"structure_id": first, "bandgap_ev": gap[first] + 1.0}]).to_csv(
        results, index=False
    )
    assert main(["al", "ingest", "--state", str(state), str(results), "--quiet"]) == 2

    assert (
        main(["al", "suggest", "--state", str(state), "--batch", "2", "--no-dft-inputs", "--quiet"])
        == 0
    )
    batch2 = pd.read_csv(state / "batch_002.csv")
    assert len(batch2) == 2 and not set(batch2["structure_id"]) & (set(gap) | set(c.state.initial))
    assert set(batch2["round"]) == {2}


def test_workflow_config_holds_the_benchmark():
    cfg = load_campaign_config(REPO / "workflows" / "al_qmof.yaml")
    assert cfg["benchmark"]["seeds"] == [0, 1, 2]
    assert set(cfg["benchmark"]["strategies"]) == {
        "random",
        "greedy_mean",
        "balora_std",
        "balora_lcb",
        "balora_lcb_epistemic",
        "ensemble_lcb",
        "gbm_lcb",
    }
    assert (cfg["al"]["initial_labelled"], cfg["al"]["batch_size"], cfg["al"]["n_rounds"]) == (
        500,
        100,
        10,
    )
    # the benchmark trains the shipped recipe: the architecture of load_model("default")
    from mofbalora.al.start import start_model_document

    shipped = start_model_document("default")
    for section in ("backbone", "adapter"):
        assert {k: v for k, v in cfg[section].items() if k not in ("targets", "n_members")} == {
            k: v for k, v in shipped[section].items() if k not in ("targets", "n_members")
        }
    assert {k: v for k, v in cfg["model"].items() if k != "warm_start"} == {
        k: v for k, v in shipped["model"].items() if k != "warm_start"
    }
    assert {k: cfg["optim"][k] for k in ("lr", "epochs", "weight_decay")} == {
        k: shipped["optim"][k] for k in ("lr", "epochs", "weight_decay")
    }
    ens = strategy_config(cfg, "ensemble_lcb", 2)
    assert (ens.model.regime, ens.al.acquisition, ens.run.seed) == ("lora_ensemble", "lcb", 2)
    with pytest.raises(ValueError, match="unknown strategy 'ucb'; choose from"):
        strategy_config(cfg, "ucb", 0)
    with pytest.raises(ValueError, match="unknown al.acquisition 'best'"):
        load_campaign_config(None, ["al.acquisition=best"])
    with pytest.raises(ValueError, match="unknown config key 'al.batch'"):
        load_campaign_config(None, ["al.batch=3"])


def _fake_run(root: Path, strategy: str, seed: int, found: list[int], mae: list[float]) -> None:
    """A finished campaign folder with a given discovery and learning curve (batches of 10)."""
    folder = root / strategy / f"seed_{seed}"
    folder.mkdir(parents=True)
    cfg = {
        "data": {"split": "qmof_v1"},
        "al": {**AL_DEFAULTS["al"], "initial_labelled": 20, "batch_size": 10},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    history = [
        {
            "round": r,
            "n_labelled": 20 + 10 * r,
            "n_acquired": 10 * r,
            "relative_dft_cost": 10.0 * r,
            "n_low_gap_found": f,
            "test_mae_ev": m,
            "val_mae_ev": m,
        }
        for r, (f, m) in enumerate(zip(found, mae, strict=True))
    ]
    state = {
        "name": strategy,
        "seed": seed,
        "pool_stats": {"low_gap_fraction": 0.2},
        "history": history,
    }
    (folder / "campaign.json").write_text(json.dumps(state))


def test_report_names_the_strategy_with_most_discoveries_per_calculation(tmp_path):
    runs = tmp_path / "runs"
    for seed, extra in enumerate([0, 2]):
        _fake_run(runs, "random", seed, [0, 2, 4 + extra], [0.9, 0.8, 0.7])
        _fake_run(runs, "balora_lcb", seed, [0, 6, 12 + extra], [0.9, 0.75, 0.6])
    summary = final_summary(collect_runs(runs))
    best = summary.iloc[0]
    assert best["strategy"] == "balora_lcb"
    assert best["found_per_calculation"] == pytest.approx(0.65)  # (12/20 + 14/20) / 2
    assert best["found_per_calculation_sd"] == pytest.approx(0.0707107, rel=1e-5)

    md = write_report(runs, tmp_path / "report")
    text = md.read_text()
    assert (
        "**balora_lcb** finds the most MOFs with a PBE "
        "band gap below 1 eV per DFT calculation: 0.650" in text
    )
    assert "2.6× random" in text  # 0.65 / 0.25
    for name in ("learning_curves.png", "discovery_curves.png", "curves.csv", "summary.csv"):
        assert (md.parent / name).stat().st_size > 0
    curves = pd.read_csv(md.parent / "curves.csv")
    last = curves[(curves["strategy"] == "random") & (curves["round"] == 2)].iloc[0]
    assert (last["n_low_gap_found"], last["n_seeds"]) == (5.0, 2)


#: left out of `make test-fast` (trains models, starts clusters or runs notebooks); `make test` runs
#: it
pytestmark = pytest.mark.slow


def test_random_rounds_skip_the_draws_and_pick_the_same(al_cfg, tmp_path, monkeypatch):
    from mofbalora.al import campaign as campaign_module

    cfg = al_cfg(acquisition="random", n_samples=8)
    simulated_campaign(tmp_path / "fast", cfg).run()
    monkeypatch.setattr(campaign_module, "RANDOM_SKIPS_DRAWS", False)
    simulated_campaign(tmp_path / "draws", cfg).run()
    fast, draws = Campaign(tmp_path / "fast"), Campaign(tmp_path / "draws")
    assert [row["picked"] for row in fast.history] == [row["picked"] for row in draws.history]
    assert _without_seconds(fast.history) == _without_seconds(draws.history)
    assert fast.state.rng_state == draws.state.rng_state


def test_a_warm_round_never_ends_worse_on_validation_than_it_began(al_cfg, tmp_path):
    import torch

    # a learning rate far too high: the warm rounds' epochs are no better than their start
    cfg = al_cfg(round_lr=1.0, round_epochs=2, round_patience=2, n_rounds=3)
    simulated_campaign(tmp_path / "kept", cfg).run()
    kept = Campaign(tmp_path / "kept").history
    vals = [row["val_mae_ev"] for row in kept]
    assert all(b <= a + 1e-6 for a, b in zip(vals, vals[1:], strict=False))
    assert any(row["best_epoch"] == 0 for row in kept[1:])
    for r, row in enumerate(kept[1:], start=1):
        if row["best_epoch"] == 0:  # kept: the round's model is its start, tensor for tensor
            a, b = _tensors(tmp_path / "kept", r - 1), _tensors(tmp_path / "kept", r)
            assert all(torch.equal(a[k], b[k]) for k in a)
    # a learning rate of 0: every epoch equals the start; the start is kept (best epoch 0), where
    # without round_keep_start the round's first epoch is
    for keep, first in ((True, 0), (False, 1)):
        cfg = al_cfg(round_lr=0.0, round_epochs=2, round_patience=2, round_keep_start=keep)
        simulated_campaign(tmp_path / f"zero-{keep}", cfg).run()
        assert [row["best_epoch"] for row in Campaign(tmp_path / f"zero-{keep}").history[1:]] == [
            first
        ] * 2
