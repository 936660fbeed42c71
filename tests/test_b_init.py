"""θ_B's initialisation (``adapter.b_init_std``): zeros by default (LoRA's start), N(0, σ²) when
asked, for every adapter kind, from a run configuration to the layers; bad values refused."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mofbalora.adapters import AdapterConfig, BaLoRALinear, LoRALinear, inject_adapters


def _adapted(kind: str, b_init_std: float, seed: int = 0) -> list[LoRALinear]:
    """A two-layer MLP (256 → 128 → 64) with both layers adapted at rank 8."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 64))
    cfg = AdapterConfig(kind=kind, targets=["0", "2"], rank=8, b_init_std=b_init_std, n_members=2)
    inject_adapters(model, cfg)
    return [model[0], model[2]]


@pytest.mark.parametrize("cls", [LoRALinear, BaLoRALinear])
def test_theta_b_starts_at_exactly_zero_by_default(cls):
    assert AdapterConfig().b_init_std == 0.0
    layer = cls(nn.Linear(16, 8), rank=4)
    assert layer.b_init_std == 0.0 and not layer.adapter_B.any()
    for layer in _adapted("balora", 0.0):
        assert not layer.adapter_B.any()


@pytest.mark.parametrize("kind", ["balora", "lora", "mc_dropout", "lora_ensemble"])
def test_theta_b_is_drawn_with_the_asked_std_and_theta_a_is_unchanged(kind):
    std = 0.02
    drawn, zero = _adapted(kind, std), _adapted(kind, 0.0)
    first = drawn[0].adapter_B.detach()  # 128 × 8 entries per member
    assert first.numel() >= 1024
    assert abs(float(first.std()) / std - 1) < 0.10
    assert abs(float(first.mean())) < 4 * std / math.sqrt(first.numel())
    assert all(a.b_init_std == std and a.adapter_B.any() for a in drawn)
    # θ_B is drawn right after its layer's θ_A: the same seed gives that θ_A with or without it
    assert torch.equal(drawn[0].adapter_A, zero[0].adapter_A)
    if kind == "lora_ensemble":  # members drawn independently
        assert not torch.equal(first[0], first[1])


def test_the_initial_update_follows_theta_b():
    """With θ_B ≠ 0 the adapted layer no longer starts as the pretrained one."""
    torch.manual_seed(0)
    base = nn.Linear(32, 16)
    x = torch.randn(5, 32)
    with torch.no_grad():
        assert torch.equal(LoRALinear(base, 4)(x), base(x))
        assert not torch.allclose(LoRALinear(base, 4, b_init_std=0.1)(x), base(x))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-0.1, "adapter.b_init_std must be a number >= 0, got -0.1"),
        (float("nan"), "adapter.b_init_std must be finite, got nan"),
        (float("inf"), "adapter.b_init_std must be finite, got inf"),
        ("0.1", "adapter.b_init_std must be a number >= 0, got '0.1'"),
    ],
)
def test_a_bad_b_init_std_is_refused_naming_it(value, message):
    with pytest.raises(ValueError, match=message):
        AdapterConfig(b_init_std=value)


@pytest.mark.parametrize("value", [-1.0, float("nan")])
def test_the_layer_refuses_a_bad_b_init_std(value):
    with pytest.raises(ValueError, match=f"b_init_std must be a finite number >= 0, got {value}"):
        LoRALinear(nn.Linear(4, 4), 2, b_init_std=value)


def test_b_init_std_round_trips_and_reaches_the_model_from_a_run_config():
    from mofbalora.config import RunConfig, load_config, typed

    cfg = AdapterConfig(kind="balora", b_init_std=0.02)
    assert AdapterConfig.from_dict(cfg.to_dict()) == cfg
    # a saved model's config written before the option: the default
    old = {k: v for k, v in cfg.to_dict().items() if k != "b_init_std"}
    assert AdapterConfig.from_dict(old).b_init_std == 0.0
    run = typed(load_config(None, ["adapter.b_init_std=0.02"]))
    assert run.adapter.b_init_std == 0.02 and run.model_adapter().b_init_std == 0.02
    assert RunConfig.from_dict(run.to_dict()) == run
    with pytest.raises(ValueError, match="adapter.b_init_std must be a number >= 0, got -1"):
        load_config(None, ["adapter.b_init_std=-1"])


def test_a_warm_start_loads_its_source_and_draws_only_the_fresh_theta_b(tmp_path):
    """The documented trade: with ``b_init_std`` > 0 the tensors only the trunk model has (the
    block's θ_B) are drawn, so it no longer starts as its source; what the source trained is loaded
    bit for bit (tests/test_warm_start.py: with the default the block's θ_B stays 0)."""
    from mofbalora.heads import HeadConfig
    from mofbalora.model import build_model
    from mofbalora.warm_start import warm_start

    head = HeadConfig(hidden_dim=16, atom_mlp=16, aleatoric=True)

    def model(adapt: str, b_init_std: float):
        return build_model(
            "balora",
            backbone_options={"adapt": adapt, "features": "all_layers", "cut_dtype": "float32"},
            adapter=AdapterConfig(kind="balora", rank=2, b_init_std=b_init_std),
            head=head,
        )

    torch.manual_seed(0)
    source = model("readout", 0.0)
    directory = source.save(tmp_path / "source")
    trunk = model("last_block_cached", 0.02)
    report = warm_start(trunk, directory)
    state = trunk.trained_state()
    assert all(torch.equal(state[k], v) for k, v in source.trained_state().items())
    fresh_b = [state[k] for k in report["fresh"] if k.endswith("adapter_B")]
    assert fresh_b and all(b.any() for b in fresh_b)
