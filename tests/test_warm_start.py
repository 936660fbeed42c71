"""Warm start (mofbalora/warm_start.py): a trunk placement (``last_block_cached``) starting from a trained
readout model holds the readout model's weights exactly, its block's adapters as initialised, and predicts
what the readout model predicts."""

from __future__ import annotations

import pytest
import torch

from mofbalora.adapters import AdapterConfig
from mofbalora.heads import HeadConfig

HEAD = HeadConfig(hidden_dim=32, atom_mlp=32, pooling="mean_max", aleatoric=True)
ADAPTER = AdapterConfig(kind="balora", rank=4, prior_dropout=0.3, noise_scope="structure")


def _model(adapt: str, **options):
    from mofbalora.model import build_model

    return build_model("balora", backbone_options={"adapt": adapt, "features": "all_layers", **options},
                       adapter=ADAPTER, head=HEAD)


@pytest.fixture(scope="module")
def readout_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = _model("readout")
    torch.manual_seed(1)
    for p in model.trainable_parameters():  # a "trained" readout model: nothing at its initial value
        p.data.add_(torch.randn_like(p) * 0.05)
    return model.save(tmp_path_factory.mktemp("readout-model")), model


def test_warm_start_loads_the_readout_model_exactly(readout_dir):
    from mofbalora.warm_start import warm_start

    directory, source = readout_dir
    torch.manual_seed(2)
    trunk = _model("last_block_cached", cut_dtype="float32")
    before = {k: v.clone() for k, v in trunk.trained_state().items()}
    report = warm_start(trunk, directory)
    state, src = trunk.trained_state(), source.trained_state()
    assert report["loaded"] == sorted(src)
    assert report["fresh"] and all(".atom_conv_layers.3." in k for k in report["fresh"])
    for k, v in src.items():
        assert torch.equal(state[k], v), k  # bit for bit
    for k in report["fresh"]:
        assert torch.equal(state[k], before[k]), k
        if "adapter_B" in k:
            assert not state[k].any()  # θ_B = 0: the block starts as the pretrained one


def test_the_warm_started_model_predicts_what_the_readout_model_predicts(readout_dir, qmof):
    from mofbalora.data.structures import read_structure
    from mofbalora.warm_start import warm_start

    directory, source = readout_dir
    trunk = _model("last_block_cached", cut_dtype="float32")
    warm_start(trunk, directory)
    structures = [read_structure(p) for p in qmof.cif_paths[3:5]]
    for m in (source, trunk):
        m.eval()
    with torch.no_grad():
        a = source.predict_inputs(source.backbone.featurize(structures), n_samples=1).mean_ev
        b = trunk.predict_inputs(trunk.backbone.featurize(structures), n_samples=1).mean_ev
    assert abs(a - b).max() < 1e-4, (a, b)


def test_warm_start_refuses_what_does_not_fit(readout_dir):
    from mofbalora.model import build_model
    from mofbalora.warm_start import warm_start

    directory, _ = readout_dir
    other_head = build_model("balora", backbone_options={"adapt": "last_block_cached", "features": "all_layers"},
                             adapter=ADAPTER, head=HeadConfig(hidden_dim=16, atom_mlp=32, aleatoric=True))
    with pytest.raises(ValueError, match="another shape"):
        warm_start(other_head, directory)
    lora = build_model("lora", backbone_options={"adapt": "last_block_cached", "features": "all_layers"},
                       adapter=AdapterConfig(kind="lora", rank=4), head=HEAD)
    with pytest.raises(ValueError, match="regime"):
        warm_start(lora, directory)
