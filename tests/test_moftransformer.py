"""MOFTransformer backbone: the package's preparation, checkpoint loading, BaLoRA fine-tuning, CLI
use.

The pretrained weights cannot be downloaded here, so a small randomly initialised ``moftransformer``
model is saved in the package's Lightning checkpoint format and loaded through the user's path.
Skipped where the extra is not installed (``make install-dev`` installs it, as CI does).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

if importlib.util.find_spec("moftransformer") is None:
    pytest.skip(
        "the moftransformer extra is not installed (bash scripts/install_moftransformer.sh)",
        allow_module_level=True,
    )

from mofbalora.adapters import AdapterConfig, adapter_layers  # noqa: E402
from mofbalora.adapters.context import sampling  # noqa: E402
from mofbalora.backbones import load_backbone  # noqa: E402
from mofbalora.backbones.moftransformer import architecture_from_state  # noqa: E402
from mofbalora.backbones.moftransformer_prep import PreparationError, package_module  # noqa: E402
from mofbalora.featurize import featurize_files  # noqa: E402

TINY = {
    "hid_dim": 32,
    "num_layers": 2,
    "num_heads": 2,
    "mlp_ratio": 2,
    "patch_size": 10,
    "atom_fea_len": 16,
    "nbr_fea_len": 16,
    "max_graph_len": 64,
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random tiny MOFTransformer with its pre-training (MPP) and regression heads, saved as the
    package's Lightning checkpoint: {"state_dict", "hyper_parameters": {"config"}, ...}."""
    import pytorch_lightning as pl

    config = dict(package_module("config").config())
    config.update(
        TINY,
        load_path="",
        loss_names={k: int(k in ("mpp", "regression")) for k in config["loss_names"]},
    )
    torch.manual_seed(3)
    module = package_module("modules.module").Module(config)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_pmtransformer.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": {"config": config},
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": pl.__version__,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def backbone(checkpoint):
    return load_backbone("moftransformer", checkpoint=str(checkpoint))


@pytest.fixture(scope="module")
def cifs(sample_cifs):
    """A dense MOF (no pore admits the methane-like probe of the energy grid) and two porous
    ones."""
    by_name = {p.stem: p for p in sample_cifs}
    return [by_name["qmof-0000295"], by_name["qmof-0009829"], by_name["qmof-000dce3"]]


@pytest.fixture(scope="module")
def prepared(backbone, cifs):
    inputs, errors = featurize_files(backbone, cifs, progress=False)
    assert errors == [None] * 3
    return inputs


def test_checkpoint_loads_through_the_users_path(checkpoint, backbone):
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    state = backbone.model.state_dict()
    assert set(state) < set(saved)
    for key in state:
        torch.testing.assert_close(state[key], saved[key], rtol=0, atol=0)
    assert backbone.dropped_keys and all(
        k.startswith(("mpp_head.", "regression_head.")) for k in backbone.dropped_keys
    )
    assert {k: backbone.config[k] for k in TINY} == TINY and backbone.embedding_dim == 32
    # what a checkpoint without hyper-parameters still tells
    inferred = architecture_from_state(saved)
    assert {
        k: inferred[k]
        for k in ("hid_dim", "num_layers", "atom_fea_len", "nbr_fea_len", "patch_size", "img_size")
    } == {
        **{
            k: TINY[k]
            for k in ("hid_dim", "num_layers", "atom_fea_len", "nbr_fea_len", "patch_size")
        },
        "img_size": 30,
    }
    assert not any(p.requires_grad for p in backbone.parameters())


def test_bad_checkpoints_are_refused_with_the_reason(checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="moftransformer download pretrain_model"):
        load_backbone("moftransformer", checkpoint=str(tmp_path / "missing.ckpt"))
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="expected a dict with a 'state_dict'"):
        load_backbone("moftransformer", checkpoint=str(tmp_path / "other.ckpt"))
    ckpt = torch.load(checkpoint, weights_only=True)
    del ckpt["state_dict"]["transformer.blocks.1.mlp.fc2.weight"]
    torch.save(ckpt, tmp_path / "partial.ckpt")
    with pytest.raises(ValueError, match=r"lacks 1 weights.*blocks\.1\.mlp\.fc2\.weight"):
        load_backbone("moftransformer", checkpoint=str(tmp_path / "partial.ckpt"))
    with pytest.raises(ValueError, match="unknown MOFTransformer adapter placement 'readout'"):
        load_backbone("moftransformer", checkpoint=str(checkpoint), adapt="readout")


def test_prepared_inputs_are_the_packages_graph_and_energy_grid(prepared, cifs):
    from mofbalora.data.structures import read_structure

    for x, cif in zip(prepared, cifs, strict=True):
        n_super = len(x["atom_num"])
        # supercell ≥ 8 Å
        assert x["n_atoms"] == len(read_structure(cif)) and n_super % x["n_atoms"] == 0
        assert x["nbr_idx"].shape == x["nbr_dist"].shape == (n_super, 12)
        assert (
            0 <= x["nbr_idx"].min() and x["nbr_idx"].max() < n_super and (x["nbr_dist"] > 0.5).all()
        )
        assert sorted(i for group in x["uni_idx"] for i in group) == list(range(n_super))
        assert x["grid"].shape == (27_000,) and x["grid_cell"] == [30, 30, 30]
        assert 1 <= x["grid"].min() and x["grid"].max() <= 102
        assert 0.1 < x["volume"] < 10  # supercell ≥ 30 Å per edge, volume / 60³
    dense, porous = prepared[0], prepared[1:]
    assert (dense["grid"] == 102).all()  # every grid point repulsive: the top energy bin
    assert all(len(np.unique(x["grid"])) > 20 and (x["grid"] < 60).sum() > 100 for x in porous)


def test_class_token_rows_are_deterministic_and_noise_is_per_structure(backbone, prepared):
    batch = backbone.collate(prepared)
    out = backbone(batch)
    assert out.atom_embedding.shape == (3, 32) and out.structure_index.tolist() == [0, 1, 2]
    torch.testing.assert_close(backbone(batch).atom_embedding, out.atom_embedding, rtol=0, atol=0)
    # one structure alone gives the same row as in the batch (no cross-talk through padding)
    torch.testing.assert_close(
        backbone(backbone.collate(prepared[1:2])).atom_embedding,
        out.atom_embedding[1:2],
        rtol=1e-5,
        atol=1e-6,
    )

    from mofbalora.model import build_model

    model = build_model(
        "balora",
        backbone="moftransformer",
        backbone_options={"checkpoint": backbone.checkpoint},
        adapter=AdapterConfig(kind="balora", rank=4),
    )
    layers = adapter_layers(model.backbone)
    assert len(layers) == 4 * TINY["num_layers"]
    for _, layer in layers:
        torch.nn.init.normal_(layer.adapter_B, std=0.5)
    seen = []
    hook = layers[0][1].register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].shape))
    twice = model.backbone.collate([prepared[0], prepared[0]])
    with sampling(stochastic=True, generator=torch.Generator().manual_seed(0)):
        a = model.backbone(twice).atom_embedding
    hook.remove()
    # rows = structures × tokens, as the row groups say
    assert seen[0] == (2, backbone.n_tokens, 32)
    assert not torch.allclose(a[0], a[1])  # two copies of one structure: two independent draws
    with sampling(stochastic=False):
        mean = model.backbone(twice).atom_embedding
    torch.testing.assert_close(mean[0], mean[1], rtol=0, atol=1e-6)


def test_known_preparation_failures_are_per_structure_errors(
    backbone, checkpoint, sample_cifs, tmp_path
):
    from pymatgen.core import Lattice, Structure

    # a 70 Å cell: the energy-grid supercell exceeds the package's 60 Å limit
    coords = [[0.01 * i, 0.015 * (i % 4), 0.02 * (i % 3)] for i in range(14)]
    big = Structure(Lattice.cubic(70.0), ["C"] * 7 + ["O"] * 7, coords)
    with pytest.raises(PreparationError, match="cell_too_large") as err:
        backbone.featurize([big])
    assert err.value.cause == "cell_too_large"
    big.to(filename=str(tmp_path / "big.cif"))
    inputs, errors = featurize_files(
        backbone, [sample_cifs[1], tmp_path / "big.cif"], progress=False, use_cache=False
    )
    assert (
        inputs[1] is None
        and errors[1].reason == "featurization_failed"
        and "cell_too_large" in errors[1].message
    )
    assert errors[0] is None and inputs[0]["n_atoms"] > 0
    # the good structure's input, prepared before the failure, was reused in the retry
    assert not backbone._kept
    # more topologically unique atoms than graph tokens allowed (the package's limit, lowered here)
    strict = load_backbone("moftransformer", checkpoint=str(checkpoint), max_num_unique_atoms=5)
    assert strict.featurize_namespace() != backbone.featurize_namespace()
    inputs, errors = featurize_files(strict, [sample_cifs[0]], progress=False)
    assert inputs == [None] and "too_many_unique_atoms" in errors[0].message


def test_finetune_evaluate_and_screen_with_balora(
    checkpoint, tiny_cfg, tmp_path, qmof_path, tiny_split, cifs, prepared
):
    from mofbalora.cli import main
    from mofbalora.model import load_model
    from mofbalora.train import finetune

    cfg = tiny_cfg(
        "backbone.name=moftransformer",
        f"backbone.checkpoint={checkpoint}",
        "backbone.adapt=blocks",
        "data.train_size=4",
        "data.val_size=2",
        "data.test_size=2",
        "optim.batch_size=2",
        "optim.epochs=2",
        "optim.lr=0.01",
        "adapter.rank=4",
        "run.eval_samples=4",
    )
    result = finetune(cfg, tmp_path / "run", progress=False)
    assert result["n_train"] == 4 and np.isfinite(result["test"]["mae_ev"])
    model = load_model(tmp_path / "run")
    assert model.backbone.checkpoint == str(checkpoint) and model.regime == "balora"
    assert any(
        float(layer.adapter_B.detach().abs().max()) > 0
        for _, layer in adapter_layers(model.backbone)
    )
    pred = model.predict_inputs(prepared, n_samples=8, seed=1)
    assert pred.samples_ev.shape == (3, 8) and (pred.std_ev > 0).all() and (pred.mean_ev > 0).all()

    report = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "run"),
                "--data",
                str(qmof_path),
                "--split-name",
                str(tiny_split),
                "--limit",
                "2",
                "--samples",
                "4",
                "--out",
                str(report),
            ]
        )
        == 0
    )
    assert json.loads(report.read_text())["n"] == 2
    ranked = tmp_path / "ranked.csv"
    bad = tmp_path / "not_a_cif.cif"
    bad.write_text("this is not a CIF\n")
    assert (
        main(
            [
                "screen",
                *map(str, cifs[:2]),
                str(bad),
                "--model",
                str(tmp_path / "run"),
                "--samples",
                "4",
                "--out",
                str(ranked),
                "--quiet",
            ]
        )
        == 0
    )
    import pandas as pd

    table = pd.read_csv(ranked)
    assert sorted(table["status"]) == ["error", "ok", "ok"]
    assert (table.loc[table.status == "ok", "bandgap_std_ev"] > 0).all()


def test_shipped_workflow_builds_balora_on_every_block(checkpoint):
    from pathlib import Path

    from mofbalora.config import load_config
    from mofbalora.train import model_from_config

    workflow = Path(__file__).resolve().parents[1] / "workflows" / "finetune_moftransformer.yaml"
    cfg = load_config(workflow, [f"backbone.checkpoint={checkpoint}"])
    model = model_from_config(cfg)
    names = [name for name, _ in adapter_layers(model.backbone)]
    assert len(names) == 4 * TINY["num_layers"] and model.regime == "balora"
    assert {n.rsplit(".", 2)[-2] + "." + n.rsplit(".", 1)[-1] for n in names} == {
        "attn.qkv",
        "attn.proj",
        "mlp.fc1",
        "mlp.fc2",
    }
    with pytest.raises(TypeError, match="unexpected keyword argument 'checkpoint_path'"):
        model_from_config(load_config(workflow, [f"backbone.checkpoint_path={checkpoint}"]))


#: left out of `make test-fast` (trains models, starts clusters or runs notebooks); `make test` runs
#: it
pytestmark = pytest.mark.slow
