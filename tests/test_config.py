"""Run configurations: every shipped workflow loads; bad keys and values fail at load, naming key
and choices."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mofbalora.al.config import AL_DEFAULTS, campaign_config, load_campaign_config
from mofbalora.config import DEFAULTS, RunConfig, dump_config, load_config, typed

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
#: workflow files that are not run configurations, and what reads them
OTHER = {"sweep_ablations.yaml": "sweep", "dask_slurm.yaml": "dask"}


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_workflow_file_loads(path):
    kind = OTHER.get(path.name)
    if kind == "sweep":
        from mofbalora.sweep import load_sweep

        spec = load_sweep(path)
        cfg = load_config(spec.base)
        # every setting of the grid is a valid configuration
        for overrides in spec.settings.values():
            load_config(
                spec.base,
                [
                    f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
                    for k, v in (overrides or {}).items()
                ],
            )
    elif kind == "dask":
        data = yaml.safe_load(path.read_text())
        assert data["kind"] in ("slurm", "pbs") and isinstance(data["cluster"], dict)
        return
    elif "al" in yaml.safe_load(path.read_text()):
        cfg = load_campaign_config(path)
        assert set(cfg) == {*DEFAULTS, *AL_DEFAULTS}
        assert campaign_config(cfg).to_dict() == cfg  # the typed form writes the same document back
        return
    else:
        cfg = load_config(path)
    assert typed(cfg).optim.epochs == cfg["optim"]["epochs"]
    assert typed(cfg).to_dict() == cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "optim.schedule=linear",
            "unknown optim.schedule 'linear'; choose from ['cosine', 'constant']",
        ),
        ("optim.shedule=cosine", "unknown config key 'optim.shedule'; choose from"),
        ("model.regime=bayes", "unknown model.regime 'bayes'; choose from ['balora', 'lora'"),
        ("model.likelihood=l2", "unknown model.likelihood 'l2'"),
        ("adapter.noise_scope=atom", "unknown adapter.noise_scope 'atom'"),
        ("adapter.rank=0", "adapter.rank must be an integer >= 1, got 0"),
        (
            "optim.lr=1e-3",
            "optim.lr must be a number >= 0, got '1e-3'",
        ),  # YAML reads 1e-3 as a string
        ("run.device=tpu", "unknown run.device 'tpu'"),
        ("backbone.name=mace", "unknown backbone.name 'mace'"),
        ("data.train_size=0", "data.train_size must be an integer >= 1 or null, got 0"),
    ],
)
def test_bad_values_fail_at_load_naming_key_and_choices(override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(None, [override])


def test_campaign_sections_are_checked_at_load():
    with pytest.raises(ValueError, match="unknown al.diversity 'greedy'"):
        load_campaign_config(None, ["al.diversity=greedy"])
    with pytest.raises(ValueError, match="al.round_epochs must be an integer >= 1 or null"):
        load_campaign_config(None, ["al.round_epochs=0"])


def test_defaults_live_in_the_dataclasses_and_overrides_reach_them():
    cfg = load_config(None, ["model.regime=lora", "adapter.targets=[a, b]"])
    t = typed(cfg)
    assert (t.model.regime, t.adapter.targets, t.optim.schedule) == ("lora", ["a", "b"], "cosine")
    assert DEFAULTS["adapter"]["targets"] == [] and load_config()["adapter"]["targets"] == []


def test_build_model_leaves_the_callers_adapter_targets_alone():
    from mofbalora.adapters import AdapterConfig
    from mofbalora.model import build_model

    adapter = AdapterConfig(kind="lora", rank=2)
    model = build_model("lora", adapter=adapter)
    assert adapter.targets == [] and model.adapter_config.targets


def test_finetune_command_accepts_every_regime_the_config_does():
    from mofbalora.cli import build_parser
    from mofbalora.commands.finetune import resolve

    # `--adapter gbm` used to be refused by a second, narrower regime check in the command
    args = build_parser().parse_args(["finetune", "--adapter", "gbm", "--out", "runs/gbm"])
    assert resolve(args).model.regime == "gbm"
    with pytest.raises(ValueError, match="unknown model.regime 'bayes'"):
        resolve(
            build_parser().parse_args(["finetune", "--set", "model.regime=bayes", "--out", "x"])
        )


# -- typed end to end ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "adapter.kind=lora",
            "unknown config key 'adapter.kind'; choose from ['alpha_network', 'b_init_std', "
            "'exclude'",
        ),
        (
            "model.head_hidden=0",
            r"head.hidden_dim (model.head_hidden) must be an integer >= 1, got 0",
        ),
        (
            "model.pooling=sum",
            "unknown head.pooling (model.pooling) 'sum'; choose from ['mean_max'",
        ),
        (
            "model.head_size=3",
            "unknown config key 'model.head_size'; choose from ['head_atom_mlp', 'head_hidden'",
        ),
        (
            "adapter.prior_dropout=1.5",
            "adapter.prior_dropout must be a probability in [0, 1), got 1.5",
        ),
        ("gbm=3", "config section 'gbm' must be a mapping, got 3"),
    ],
)
def test_every_section_refuses_unknown_keys_and_bad_values(override, message):
    with pytest.raises(
        ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        load_config(None, [override])


def test_an_ensemble_of_one_member_fails_at_load_not_at_model_build():
    with pytest.raises(ValueError, match="adapter.n_members must be an integer >= 2, got 1"):
        load_config(None, ["model.regime=lora_ensemble", "adapter.n_members=1"])
    load_config(None, ["model.regime=lora", "adapter.n_members=1"])  # other regimes ignore it


def test_one_dataclass_per_concept_head_and_adapter_are_the_models_own():
    from mofbalora.adapters import AdapterConfig
    from mofbalora.heads import HeadConfig

    cfg = typed(
        load_config(
            None,
            [
                "model.likelihood=laplace_nll",
                "model.head_hidden=16",
                "model.pooling=mean",
                "adapter.rank=4",
                "model.regime=mc_dropout",
            ],
        )
    )
    assert cfg.model.head == HeadConfig(hidden_dim=16, pooling="mean", aleatoric=True, atom_mlp=0)
    # the kind is model.regime
    assert isinstance(cfg.adapter, AdapterConfig) and cfg.adapter.kind is None
    assert cfg.model_adapter() == AdapterConfig(kind="mc_dropout", rank=4)
    assert typed(load_config(None, ["model.regime=head_only"])).model_adapter() is None


@pytest.mark.parametrize("cls", ["HeadConfig", "AdapterConfig"])
def test_saved_model_sections_refuse_unknown_keys(cls):
    from mofbalora.adapters import AdapterConfig
    from mofbalora.heads import HeadConfig

    klass = {"HeadConfig": HeadConfig, "AdapterConfig": AdapterConfig}[cls]
    good = klass().to_dict()
    assert klass.from_dict(good) == klass()
    with pytest.raises(
        ValueError, match=r"unknown .* option '(head|adapter)\.widht'; choose from \["
    ):
        klass.from_dict({**good, "widht": 3})


def test_typed_configuration_round_trips_through_its_document(tmp_path):
    cfg = typed(
        load_config(
            None,
            [
                "model.regime=lora",
                "adapter.targets=[a]",
                "backbone.features=all_layers",
                "gbm.max_iter=7",
                "optim.epochs=3",
            ],
        )
    )
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.backbone.options == {"adapt": "readout", "features": "all_layers"} and cfg.gbm == {
        "max_iter": 7
    }
    dump_config(cfg, tmp_path / "c.yaml")
    assert typed(load_config(tmp_path / "c.yaml")) == cfg
    # a partial document is read over the defaults
    assert RunConfig.from_dict({"optim": {"epochs": 2}}).optim.epochs == 2


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="bad.yaml: a run configuration must be a mapping"):
        load_config(path)
