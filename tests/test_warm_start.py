"""Warm start (mofbalora/warm_start.py): a trunk placement (``last_block_cached``) starting from a
trained readout model holds the readout model's weights exactly, its block's adapters as
initialised, and predicts what the readout model predicts."""

from __future__ import annotations

import pytest
import torch

from mofbalora.adapters import AdapterConfig
from mofbalora.heads import HeadConfig

HEAD = HeadConfig(hidden_dim=32, atom_mlp=32, pooling="mean_max", aleatoric=True)
ADAPTER = AdapterConfig(kind="balora", rank=4, prior_dropout=0.3, noise_scope="structure")


def _model(adapt: str, **options):
    from mofbalora.model import build_model

    return build_model(
        "balora",
        backbone_options={"adapt": adapt, "features": "all_layers", **options},
        adapter=ADAPTER,
        head=HEAD,
    )


@pytest.fixture(scope="module")
def readout_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = _model("readout")
    torch.manual_seed(1)
    # a "trained" readout model: nothing at its initial value
    for p in model.trainable_parameters():
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
    other_head = build_model(
        "balora",
        backbone_options={"adapt": "last_block_cached", "features": "all_layers"},
        adapter=ADAPTER,
        head=HeadConfig(hidden_dim=16, atom_mlp=32, aleatoric=True),
    )
    with pytest.raises(ValueError, match="another shape"):
        warm_start(other_head, directory)
    lora = build_model(
        "lora",
        backbone_options={"adapt": "last_block_cached", "features": "all_layers"},
        adapter=AdapterConfig(kind="lora", rank=4),
        head=HEAD,
    )
    with pytest.raises(ValueError, match="regime"):
        warm_start(lora, directory)


def _trunk_run_config(tiny_split, qmof_path, *overrides):
    """A run configuration of the trunk placement with the fixture's head and adapters (float32
    cut)."""
    from mofbalora.config import load_run_config

    return load_run_config(
        None,
        [
            f"data.path={qmof_path}",
            f"data.split={tiny_split}",
            "data.train_size=4",
            "data.val_size=2",
            "backbone.adapt=last_block_cached",
            "backbone.features=all_layers",
            "backbone.cut_dtype=float32",
            "model.likelihood=laplace_nll",
            "model.head_hidden=32",
            "model.head_atom_mlp=32",
            "model.pooling=mean_max",
            "adapter.rank=4",
            "adapter.prior_dropout=0.3",
            "adapter.noise_scope=structure",
            "optim.epochs=1",
            "optim.batch_size=2",
            "optim.warmup_epochs=0",
            "run.threads=1",
            *overrides,
        ],
    )


def test_a_warm_started_run_starts_as_its_source_and_trains_only_what_it_should(
    readout_dir, tiny_split, qmof_path, tmp_path
):
    from mofbalora.featurize import load_inputs
    from mofbalora.train import Trainer, parameter_group, split_ids

    directory, source = readout_dir
    cfg = _trunk_run_config(
        tiny_split,
        qmof_path,
        f"model.warm_start={directory}",
        "optim.lr_scale.head=0",
        "optim.lr_scale.trunk=2",
    )
    torch.manual_seed(3)
    trainer = Trainer(cfg, tmp_path / "run")
    src = source.trained_state()
    assert trainer.warm_started is not None and trainer.warm_started["loaded"] == sorted(src)
    ds, ids = split_ids(cfg)
    _, tr_x, tr_y = load_inputs(trainer.model, ds, ids["train"], False)
    _, va_x, va_y = load_inputs(trainer.model, ds, ids["val"], False)
    _, src_x, _ = load_inputs(source, ds, ids["train"], False)
    # the first prediction is the source model's: the block's adapters start at θ_B = 0
    for m in (source, trainer.model):
        m.eval()
    with torch.no_grad():
        first = trainer.model.predict_inputs(tr_x, n_samples=1).mean_ev
        expected = source.predict_inputs(src_x, n_samples=1).mean_ev
    assert abs(first - expected).max() < 1e-4, (first, expected)
    # the head is frozen (lr_scale 0): not in the optimiser; the block's adapters at twice the
    # readout's rate
    names = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert set(names) == {"alpha", "readout", "trunk"}
    before = {k: v.clone() for k, v in trainer.model.trained_state().items()}
    trainer.fit(tr_x, tr_y, va_x, va_y, progress=False)
    assert (
        names["trunk"]["lr"] == pytest.approx(2 * names["readout"]["lr"])
        and names["readout"]["lr"] > 0
    )
    after = trainer.model.trained_state()
    for k, v in after.items():
        if parameter_group(k) == "head":
            assert torch.equal(v, src[k]), k  # frozen: still the source's, bit for bit
    moved = {parameter_group(k) for k, v in after.items() if not torch.equal(v, before[k])}
    assert moved == {"alpha", "readout", "trunk"}, moved
    block_b = [
        v for k, v in after.items() if ".atom_conv_layers.3." in k and k.endswith("adapter_B")
    ]
    assert block_b and all(b.abs().max() > 0 for b in block_b)  # the block's adapters left θ_B = 0


def test_warm_start_and_learning_rate_settings_are_checked(
    readout_dir, tiny_split, qmof_path, tmp_path
):
    from mofbalora.train import Trainer

    with pytest.raises(ValueError, match="lr_scale group 'heads'"):
        _trunk_run_config(tiny_split, qmof_path, "optim.lr_scale.heads=0")
    with pytest.raises(ValueError, match="optim.lr_scale.trunk must be a number >= 0"):
        _trunk_run_config(tiny_split, qmof_path, "optim.lr_scale.trunk=-1")
    with pytest.raises(ValueError, match="model.warm_start"):
        _trunk_run_config(tiny_split, qmof_path, "model.warm_start=3")
    # a readout placement has no adapter in the trunk to scale
    with pytest.raises(ValueError, match=r"lr_scale names \['trunk'\]"):
        Trainer(
            _trunk_run_config(
                tiny_split,
                qmof_path,
                "backbone.adapt=readout",
                "backbone.cut_dtype=float16",
                "optim.lr_scale.trunk=2",
            ),
            tmp_path / "a",
        )
    # another head than the source's: refused before anything trains
    with pytest.raises(ValueError, match="another shape"):
        Trainer(
            _trunk_run_config(
                tiny_split, qmof_path, f"model.warm_start={readout_dir[0]}", "model.head_hidden=16"
            ),
            tmp_path / "b",
        )
    with pytest.raises(FileNotFoundError, match="no model found"):
        Trainer(
            _trunk_run_config(tiny_split, qmof_path, f"model.warm_start={tmp_path / 'nothing'}"),
            tmp_path / "c",
        )
