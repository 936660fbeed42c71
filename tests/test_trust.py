"""Trust is the caller's, never an artifact's: a model folder (or a campaign folder) whose stored
configuration asks for full unpickling of the checkpoint it names is refused by ``evaluate``,
``screen`` and ``al`` unless the caller passes ``--trust-checkpoint`` / ``trust_checkpoint=True``;
trust is never written into what a run saves; every read of saved weights checks the base model
they were trained on. Real loaders, no mocks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mofbalora.backbones.checkpoint import UntrustedCheckpointError
from mofbalora.cli import main


def _evil_checkpoint(tmp_path: Path, planted) -> Path:
    """A JMP checkpoint whose unpickling runs ``planted`` (a conftest ``payload``)."""
    path = tmp_path / "jmp-evil.pt"
    torch.save({"hyper_parameters": planted}, path)
    return path


@pytest.fixture()
def evil_model(tmp_path, marker, payload) -> Path:
    """The folder of the issue: only ``model_config.json`` (backbone ``jmp``, ``checkpoint`` naming
    a pickle whose unpickling runs code, ``trust_checkpoint: true``) and an empty
    ``model.safetensors``."""
    folder = tmp_path / "evil-model"
    folder.mkdir()
    cfg = {
        "regime": "balora",
        "backbone": {
            "name": "jmp",
            "size": "tiny",
            "cutoff": 5.0,
            "max_neighbors": 8,
            "checkpoint": str(_evil_checkpoint(tmp_path, payload(marker))),
            "trust_checkpoint": True,
        },
        "adapter": {"kind": "balora", "rank": 2},
        "head": {"hidden_dim": 8},
        "base": {"backbone": "jmp-tiny"},
        "calibration": None,
    }
    (folder / "model_config.json").write_text(json.dumps(cfg))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def _refused(capsys) -> str:
    err = capsys.readouterr().err
    assert "--trust-checkpoint" in err and "asks for full unpickling" in err, err
    return err


def test_evaluate_refuses_a_model_folder_that_asks_for_trust(evil_model, marker, qmof_path, capsys):
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(evil_model),
                "--data",
                str(qmof_path),
                "--limit",
                "1",
                "--samples",
                "1",
            ]
        )
        == 2
    )
    _refused(capsys)
    assert not marker.exists()

    from mofbalora.evaluate import evaluate

    with pytest.raises(
        UntrustedCheckpointError, match=r"model_config\.json asks .*trust_checkpoint=True"
    ):
        evaluate(evil_model, data=qmof_path, limit=1, n_samples=1)
    assert not marker.exists()
    # the caller's explicit trust is honoured: the checkpoint is unpickled (this one then fails to
    # load)
    with pytest.raises(Exception):  # noqa: B017 (whatever the payload's leftovers make JMP raise)
        evaluate(evil_model, data=qmof_path, limit=1, n_samples=1, trust_checkpoint=True)
    assert marker.exists()


def test_screen_refuses_a_model_folder_that_asks_for_trust(
    evil_model, marker, sample_cifs, tmp_path, capsys
):
    out = tmp_path / "ranked.csv"
    assert (
        main(
            [
                "screen",
                str(sample_cifs[0]),
                "--model",
                str(evil_model),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 2
    )
    _refused(capsys)
    assert not marker.exists() and not out.exists()

    from mofbalora.screen import screen

    with pytest.raises(UntrustedCheckpointError, match="--trust-checkpoint"):
        screen([str(sample_cifs[0])], model=str(evil_model), out=out, progress=False)
    assert not marker.exists()
    with pytest.raises(Exception):  # noqa: B017
        screen(
            [str(sample_cifs[0])],
            model=str(evil_model),
            out=out,
            progress=False,
            trust_checkpoint=True,
        )
    assert marker.exists()


def test_the_al_commands_refuse_a_campaign_folder_that_asks_for_trust(
    al_cfg, tmp_path, marker, capsys, payload
):
    """A campaign folder is an artifact too: its ``config.yaml`` cannot switch on unpickling."""
    from mofbalora.al.state import CONFIG_FILE, CampaignState
    from mofbalora.io import write_yaml

    state = tmp_path / "campaign"
    cfg = al_cfg()
    cfg["backbone"] = {
        "name": "jmp",
        "size": "tiny",
        "cutoff": 5.0,
        "max_neighbors": 8,
        "adapt": "blocks",
        "checkpoint": str(_evil_checkpoint(tmp_path, payload(marker))),
        "trust_checkpoint": True,
    }
    CampaignState.new(
        name="evil",
        mode="real",
        seed=0,
        rng_state=np.random.default_rng(0).bit_generator.state,
        paths={},
    ).write(state)  # round 0, about to train
    write_yaml(state / CONFIG_FILE, cfg)

    for argv in (
        ["al", "suggest", "--state", str(state), "--quiet"],
        ["al", "status", "--state", str(state)],
    ):
        assert main(argv) == 2
        _refused(capsys)
    results = tmp_path / "results.csv"
    results.write_text("structure_id,bandgap_ev\n")
    assert main(["al", "ingest", "--state", str(state), str(results), "--quiet"]) == 2
    _refused(capsys)
    assert not marker.exists()

    # with the flag the caller's trust is honoured: training round 0 builds the backbone, unpickling
    # the file (which then fails to load, as an error code or an exception)
    try:
        code = main(["al", "suggest", "--state", str(state), "--quiet", "--trust-checkpoint"])
    except Exception:  # noqa: BLE001
        code = None
    assert code != 0 and marker.exists()


def test_trust_is_never_written_by_a_run(tiny_cfg, tmp_path):
    """A caller's trust (here on CHGNet, which reads no third-party file) reaches neither the run's
    config.yaml nor its model_config.json; a stored ``trust_checkpoint: false`` of older files
    still loads."""
    import yaml

    from mofbalora.model import load_model
    from mofbalora.train import finetune

    cfg = tiny_cfg(
        "model.regime=head_only",
        "optim.epochs=1",
        "run.eval_test=false",
        "backbone.trust_checkpoint=true",
    )
    run = tmp_path / "run"
    finetune(cfg, run, progress=False, trust_checkpoint=True)
    assert "trust_checkpoint" not in yaml.safe_load((run / "config.yaml").read_text())["backbone"]
    saved = run / "checkpoints" / "best" / "model_config.json"
    stored = json.loads(saved.read_text())
    assert "trust_checkpoint" not in stored["backbone"]
    stored["backbone"]["trust_checkpoint"] = False  # what a model saved before could hold
    saved.write_text(json.dumps(stored))
    assert load_model(run).regime == "head_only"
    stored["backbone"]["trust_checkpoint"] = True
    saved.write_text(json.dumps(stored))
    with pytest.raises(UntrustedCheckpointError, match="--trust-checkpoint"):
        load_model(run)
    assert load_model(run, trust_checkpoint=True).regime == "head_only"


def test_every_read_of_saved_weights_checks_the_base(tiny_model, tmp_path):
    """Resuming a run, reloading its best model and warm-starting a campaign round all read through
    io.read_checkpoint, which refuses weights trained on another base before reading them."""
    from mofbalora.config import load_config
    from mofbalora.io import BaseModelMismatchError
    from mofbalora.model import load_model, load_weights
    from mofbalora.train import Trainer

    run = tmp_path / "run"
    shutil.copytree(tiny_model, run)
    model = load_model(run)
    for folder in (run / "checkpoints" / "best", run / "checkpoints" / "last"):
        path = folder / "model_config.json"
        stored = json.loads(path.read_text())
        stored["base"] = {**stored["base"], "weights_sha256": "0" * 64}
        path.write_text(json.dumps(stored))
    with pytest.raises(BaseModelMismatchError, match="trained on another base model"):
        load_weights(model, run / "checkpoints" / "best")
    with pytest.raises(BaseModelMismatchError):
        load_model(run)
    cfg = load_config(run / "config.yaml")
    with pytest.raises(BaseModelMismatchError):
        Trainer(cfg, run, model=model).load_state()


@pytest.mark.slow
def test_dask_workers_load_a_folder_that_asks_for_trust_only_with_the_callers_flag(
    evil_model, marker, sample_cifs
):
    """The caller's trust decision travels to the Dask workers that load the model: without the flag
    a worker refuses the folder (nothing unpickled); with it the worker does unpickle the checkpoint
    (the payload runs there: this one then fails to load). A Dask screen of the folder is refused
    before any worker starts."""
    distributed = pytest.importorskip("distributed")
    from mofbalora.parallel.dask_screen import DaskExecutor, local_cluster
    from mofbalora.scoring import ScoringConfig, file_keys
    from mofbalora.screen import screen

    paths = [str(sample_cifs[0])]
    with pytest.raises(UntrustedCheckpointError, match="--trust-checkpoint"):
        screen(paths, model=str(evil_model), dask="local:1", progress=False)
    assert not marker.exists()
    keys, ids = file_keys(paths)
    cfg = ScoringConfig(n_samples=1, checks="off")
    cluster = local_cluster(1)
    client = distributed.Client(cluster)
    try:
        executor = DaskExecutor(client, str(evil_model))
        try:
            with pytest.raises(
                UntrustedCheckpointError, match=r"model_config\.json asks .*--trust-checkpoint"
            ):
                list(executor.map([[0]], paths, keys, ids, cfg))
        finally:
            executor.close()
        assert not marker.exists()
        executor = DaskExecutor(client, str(evil_model), trust_checkpoint=True)
        try:
            with pytest.raises(Exception):  # noqa: B017 (whatever the payload's leftovers make JMP raise)
                list(executor.map([[0]], paths, keys, ids, cfg))
        finally:
            executor.close()
        assert marker.exists()  # unpickled on the worker: the caller's trust reached it
    finally:
        client.close()
        cluster.close()
