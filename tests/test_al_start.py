"""The real loop starts from what ships: ``al suggest --candidates`` with no configuration starts
from the shipped model (its training data labelled, the candidates as the pool) and fine-tunes it
warm each round."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from mofbalora.al.campaign import Campaign
from mofbalora.al.real import ingest
from mofbalora.cli import main
from mofbalora.model import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.slow


class Killed(Exception):
    """Stands in for a kill at a hook point."""


def _weights(state: Path, round_: int) -> dict[str, torch.Tensor]:
    return load_file(
        str(state / "rounds" / f"round_{round_:03d}" / "checkpoints" / "best" / "model.safetensors")
    )


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def coremof_files(tmp_path_factory) -> list[Path]:
    from mofbalora.data.candidates import export_coremof

    return export_coremof(
        "2019-ASR", tmp_path_factory.mktemp("coremof"), limit=6, seed=3, include_disordered=False
    )


def _results(path: Path, batch: pd.DataFrame, gaps: list[float]) -> Path:
    pd.DataFrame({"structure_id": batch["structure_id"], "bandgap_ev": gaps}).to_csv(
        path, index=False
    )
    return path


def test_two_real_rounds_from_the_shipped_model(coremof_files, qmof, qmof_path, tmp_path):
    state = tmp_path / "campaign"
    # the shipped model's own recipe and training data, capped so the test featurizes a handful of
    # structures
    sizes = [
        f"data.path={qmof_path}",
        "data.train_size=16",
        "data.val_size=4",
        "data.test_size=4",
        "al.round_epochs=2",
        "al.n_samples=4",
        "al.batch_size=2",
        "run.threads=1",
    ]
    args = [
        "al",
        "suggest",
        "--state",
        str(state),
        "--candidates",
        str(coremof_files[0].parent),
        "--quiet",
        "--no-dft-inputs",
        *(a for s in sizes for a in ("--set", s)),
    ]
    assert main(args) == 0

    c = Campaign(state)
    shipped = load_file(str(DEFAULT_MODEL_DIR / "model.safetensors"))
    assert (c.round, c.phase, c.mode) == (0, "label", "real")
    assert c.cfg.al.start_model == "default" and c.history[0]["start_model"] == "default"
    assert _same(_weights(state, 0), shipped)  # round 0 is the shipped model, not a fresh one
    assert (
        c.cfg.backbone.options["features"] == "all_layers"
        and c.cfg.model.likelihood == "laplace_nll"
    )
    # its labelled set is its own training data (the train part of qmof_v1, here the first 16), with
    # QMOF's gaps
    from mofbalora.data.splits import load_split

    train = load_split("qmof_v1")["train"][:16]
    assert sorted(c.labelled) == sorted(train)
    assert all(
        c.labelled[i] == pytest.approx(float(qmof.bandgaps_ev[qmof.index_of(i)])) for i in train
    )
    pool0 = list(c.pool)
    assert len(pool0) >= 4 and not set(pool0) & set(c.labelled)  # the CoRE MOF candidates
    assert {Path(c.path_of(k)).parent for k in pool0} == {coremof_files[0].parent.resolve()}
    # the shipped model's domain and calibration rank the pool
    batch1 = pd.read_csv(state / "batch_001.csv")
    assert len(batch1) == 2 and set(batch1["structure_id"]) <= set(pool0)
    assert batch1["in_domain"].notna().all()
    note = (state / "batch_001.md").read_text()
    assert (
        "κ·s − m with κ = 2" in note
        and "warm-started from default" in note
        and "16 labelled" in note
    )

    # round 1: fake DFT labels, warm-started fine-tune of the shipped model
    assert (
        main(
            [
                "al",
                "ingest",
                "--state",
                str(state),
                str(_results(tmp_path / "r1.csv", batch1, [0.4, 2.2])),
                "--quiet",
            ]
        )
        == 0
    )
    c = Campaign(state)
    first = set(batch1["structure_id"])
    assert (c.round, c.phase, len(c.labelled)) == (1, "select", 18)
    assert not first & set(c.pool) and len(c.pool) == len(pool0) - 2
    assert {k: c.labelled[k] for k in batch1["structure_id"]} == dict(
        zip(batch1["structure_id"], [0.4, 2.2], strict=True)
    )
    r1 = _weights(state, 1)
    # the round trained from the shipped model (epochs ran) and kept whichever of its start and its
    # epochs validates best (al.round_keep_start): the start itself, exactly, when no epoch beat it
    epochs = pd.read_csv(state / "rounds" / "round_001" / "metrics.csv")
    assert len(epochs) >= 1
    assert _same(r1, shipped) == (c.history[1]["best_epoch"] == 0)
    if c.history[1]["best_epoch"]:
        assert c.history[1]["val_mae_ev"] == pytest.approx(epochs["val_mae_ev"].min())
    assert c.history[1]["n_labelled"] == 18 and c.history[1]["picked"] == list(
        batch1["structure_id"]
    )

    # round 2, killed in its first epoch; ingesting the same file again finishes it
    assert main(["al", "suggest", "--state", str(state), "--quiet", "--no-dft-inputs"]) == 0
    batch2 = pd.read_csv(state / "batch_002.csv")
    assert len(batch2) == 2 and not set(batch2["structure_id"]) & first
    results2 = _results(tmp_path / "r2.csv", batch2, [1.1, 0.7])

    def kill(point, campaign):
        if point == "epoch":
            raise Killed(point)

    from mofbalora.al.dft_results import read_dft_results

    c = Campaign(state, hook=kill)
    labels, paths = read_dft_results(results2, c)
    c.add_labels(labels, paths)
    with pytest.raises(Killed):
        c.train()
    assert (Campaign(state).round, Campaign(state).phase) == (2, "train")
    ingest(state, results2)

    c = Campaign(state)
    assert (c.round, c.phase, len(c.labelled), len(c.history)) == (2, "select", 20, 3)
    assert len(c.pool) == len(pool0) - 4 and not (first | set(batch2["structure_id"])) & set(c.pool)
    r2 = _weights(state, 2)
    # the resumed round kept its start (round 1's model) or an epoch that beat it on validation
    assert _same(r2, r1) == (c.history[2]["best_epoch"] == 0)
    assert c.history[2]["val_mae_ev"] <= c.history[1]["val_mae_ev"] + 1e-6
    # a round model carries the start model's training domain and calibration (the screen's ranking
    # needs them)
    saved = (
        state / "rounds" / "round_002" / "checkpoints" / "best" / "model_config.json"
    ).read_text()
    assert '"training_domain"' in saved and '"calibration"' in saved
