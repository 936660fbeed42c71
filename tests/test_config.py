"""Run configurations: every shipped workflow loads; bad keys and values fail at load, naming key and choices."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mofbalora.al.config import AL_DEFAULTS, load_campaign_config
from mofbalora.config import DEFAULTS, load_config, typed

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
#: workflow files that are not run configurations, and what reads them
OTHER = {"sweep_ablations.yaml": "sweep", "dask_slurm.yaml": "dask"}


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_workflow_file_loads(path):
    kind = OTHER.get(path.name)
    if kind == "sweep":
        from mofbalora.sweep import load_sweep

        spec = load_sweep(path)
        cfg = load_config(spec["base"])
        for overrides in spec["settings"].values():  # every setting of the grid is a valid configuration
            load_config(spec["base"], [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
                                       for k, v in (overrides or {}).items()])
    elif kind == "dask":
        data = yaml.safe_load(path.read_text())
        assert data["kind"] in ("slurm", "pbs") and isinstance(data["cluster"], dict)
        return
    elif "al" in yaml.safe_load(path.read_text()):
        cfg = load_campaign_config(path)
        assert set(cfg) == {*DEFAULTS, *AL_DEFAULTS}
    else:
        cfg = load_config(path)
    assert typed(cfg).optim.epochs == cfg["optim"]["epochs"]


@pytest.mark.parametrize(("override", "message"), [
    ("optim.schedule=linear", "unknown optim.schedule 'linear'; choose from ['cosine', 'constant']"),
    ("optim.shedule=cosine", "unknown config key 'optim.shedule'; choose from"),
    ("model.regime=bayes", "unknown model.regime 'bayes'; choose from ['balora', 'lora'"),
    ("model.likelihood=l2", "unknown model.likelihood 'l2'"),
    ("adapter.noise_scope=atom", "unknown adapter.noise_scope 'atom'"),
    ("adapter.rank=0", "adapter.rank must be an integer >= 1, got 0"),
    ("optim.lr=1e-3", "optim.lr must be a number >= 0, got '1e-3'"),  # YAML reads 1e-3 as a string
    ("run.device=tpu", "unknown run.device 'tpu'"),
    ("backbone.name=mace", "unknown backbone.name 'mace'"),
    ("data.train_size=0", "data.train_size must be an integer >= 1 or null, got 0"),
])
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
    assert resolve(args)["model"]["regime"] == "gbm"
    with pytest.raises(ValueError, match="unknown model.regime 'bayes'"):
        resolve(build_parser().parse_args(["finetune", "--set", "model.regime=bayes", "--out", "x"]))
