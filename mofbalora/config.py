"""Run configurations: one dataclass per concern, holding the defaults and checked once, at load.

A configuration is nested YAML (``workflows/*.yaml``) over the defaults, then ``section.key=value``
overrides (``model.regime=lora``). :func:`load_config` merges the three, rejects unknown keys (naming the
key and the known ones) and builds the section dataclasses, whose ``__post_init__`` rejects bad values
(naming the key and the valid choices), so a bad run fails at load instead of hours into training. The
result is returned as the plain nested dict the rest of the code reads (``cfg["optim"]["lr"]``) and YAML
writes; :func:`typed` gives the same configuration as a :class:`RunConfig` of dataclasses.

Sections: ``data`` (:class:`DataConfig`), ``backbone`` (open: ``name`` plus that backbone's constructor
options, checked by the backbone itself), ``model`` (:class:`ModelConfig`), ``adapter``
(:class:`AdapterSection`), ``optim`` (:class:`OptimConfig`), ``gbm`` (open: the gradient-boosting
baseline's options), ``run`` (:class:`RunSection`). Campaigns add ``al`` and ``benchmark``
(:mod:`mofbalora.al.config`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from mofbalora.adapters.balora import ALPHA_NETWORKS, NOISE_SCOPES
from mofbalora.backbones import BACKBONES
from mofbalora.backbones.base import DEVICES
from mofbalora.heads import POOLINGS
from mofbalora.io import atomic_write_bytes
from mofbalora.model import REGIMES

LIKELIHOODS = ("mse", "l1", "huber", "gaussian_nll", "laplace_nll")
ALEATORIC_LIKELIHOODS = ("gaussian_nll", "laplace_nll")
SCHEDULES = ("cosine", "constant")
#: every regime ``finetune`` trains: the model's regimes and the gradient-boosting baseline
RUN_REGIMES = (*REGIMES, "gbm")


def check_choice(key: str, value: Any, choices) -> None:
    """ValueError ``unknown <key> <value>; choose from [...]`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"unknown {key} {value!r}; choose from {list(choices)}")


def check_int(key: str, value: Any, low: int, *, optional: bool = False) -> None:
    """ValueError unless ``value`` is an integer >= ``low`` (or None when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{key} must be an integer >= {low}{' or null' if optional else ''}, got {value!r}")


def check_number(key: str, value: Any, low: float, *, optional: bool = False) -> None:
    """ValueError unless ``value`` is a number >= ``low`` (or None when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
        raise ValueError(f"{key} must be a number >= {low}{' or null' if optional else ''}, got {value!r}")


@dataclass
class DataConfig:
    path: str | None = None           # dataset folder (None: $MOFBALORA_QMOF or ../shared/data/qmof)
    labels: str | None = None         # labels CSV for a plain folder of CIFs
    id_column: str = "id"
    target_column: str = "bandgap"
    split: str = "qmof_v1"            # shipped split name or a JSON path
    train_size: int | None = None     # first N ids of the split's train part (None: all)
    val_size: int | None = None
    test_size: int | None = None

    def __post_init__(self) -> None:
        for part in ("train", "val", "test"):
            check_int(f"data.{part}_size", getattr(self, f"{part}_size"), 1, optional=True)


@dataclass
class ModelConfig:
    regime: Literal["balora", "lora", "mc_dropout", "lora_ensemble", "head_only", "full", "gbm"] = "balora"
    likelihood: Literal["mse", "l1", "huber", "gaussian_nll", "laplace_nll"] = "mse"  # the NLLs add an aleatoric output
    head_hidden: int = 64
    pooling: Literal["mean_max", "mean", "mean_max_std", "mean_max_attention"] = "mean_max"
    head_atom_mlp: int = 0            # width of the head's per-atom MLP before pooling (0: none)
    nll_beta: float = 0.0             # β-NLL weight exponent in [0, 1] (NLL likelihoods; 0: the plain NLL)

    def __post_init__(self) -> None:
        check_choice("model.regime", self.regime, RUN_REGIMES)
        check_choice("model.likelihood", self.likelihood, LIKELIHOODS)
        check_choice("model.pooling", self.pooling, POOLINGS)
        check_int("model.head_hidden", self.head_hidden, 1)
        check_int("model.head_atom_mlp", self.head_atom_mlp, 0)
        if not (isinstance(self.nll_beta, (int, float)) and 0.0 <= self.nll_beta <= 1.0):
            raise ValueError(f"model.nll_beta must be a number in [0, 1], got {self.nll_beta!r}")
        if self.nll_beta and self.likelihood not in ALEATORIC_LIKELIHOODS:
            raise ValueError(f"model.nll_beta={self.nll_beta!r} weights a negative log-likelihood; it needs "
                             f"model.likelihood in {ALEATORIC_LIKELIHOODS}, got {self.likelihood!r}")


@dataclass
class AdapterSection:
    """The ``adapter`` section (its kind is ``model.regime``; :class:`~mofbalora.adapters.AdapterConfig` is
    built from both by :func:`mofbalora.train.model_from_config`)."""

    targets: list[str] = field(default_factory=list)  # empty: the backbone's preset for its ``adapt`` setting
    exclude: list[str] = field(default_factory=list)
    rank: int = 8
    lora_alpha: float | None = None   # None: = rank (scale 1)
    alpha_network: Literal["probe", "constant", "shared"] = "probe"
    prior_dropout: float = 0.1
    noise_scope: Literal["structure", "row", "rank_shared"] = "row"
    mc_dropout: float = 0.1
    n_members: int = 5

    def __post_init__(self) -> None:
        for key in ("targets", "exclude"):
            if not isinstance(getattr(self, key), list):
                raise ValueError(f"adapter.{key} must be a list of module-name patterns, got {getattr(self, key)!r}")
        check_int("adapter.rank", self.rank, 1)
        check_number("adapter.lora_alpha", self.lora_alpha, 0, optional=True)
        check_choice("adapter.alpha_network", self.alpha_network, ALPHA_NETWORKS)
        check_choice("adapter.noise_scope", self.noise_scope, NOISE_SCOPES)
        for key in ("prior_dropout", "mc_dropout"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"adapter.{key} must be a probability in [0, 1), got {value!r}")
        check_int("adapter.n_members", self.n_members, 1)


@dataclass
class OptimConfig:
    lr: float = 3.0e-3
    weight_decay: float = 1.0e-4
    epochs: int = 40
    batch_size: int = 32
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = 1
    patience: int = 8                 # early stopping on validation MAE (epochs without improvement)
    kl_weight: float = 1.0            # β
    kl_warmup_epochs: int = 0
    grad_clip: float | None = 5.0

    def __post_init__(self) -> None:
        check_choice("optim.schedule", self.schedule, SCHEDULES)
        for key in ("lr", "weight_decay", "kl_weight"):
            check_number(f"optim.{key}", getattr(self, key), 0)
        check_number("optim.grad_clip", self.grad_clip, 0, optional=True)
        for key, low in (("epochs", 0), ("batch_size", 1), ("warmup_epochs", 0), ("patience", 1),
                         ("kl_warmup_epochs", 0)):
            check_int(f"optim.{key}", getattr(self, key), low)


@dataclass
class RunSection:
    seed: int = 0
    device: str = "cpu"               # cpu | cuda | cuda:N | auto
    threads: int | None = None
    out: str | None = None
    eval_samples: int = 32
    eval_test: bool = True

    def __post_init__(self) -> None:
        check_int("run.seed", self.seed, 0)
        check_choice("run.device", str(self.device).split(":")[0], (*DEVICES, "auto"))
        check_int("run.threads", self.threads, 1, optional=True)
        check_int("run.eval_samples", self.eval_samples, 1)


#: typed sections (a dataclass each); the open sections hold free options with these defaults
SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "adapter": AdapterSection,
                             "optim": OptimConfig, "run": RunSection}
OPEN_DEFAULTS: dict[str, dict[str, Any]] = {"backbone": {"name": "chgnet", "adapt": "readout"}, "gbm": {}}
#: section order of a written configuration
ORDER = ("data", "backbone", "model", "adapter", "optim", "gbm", "run")


@dataclass
class RunConfig:
    """A fine-tuning configuration as dataclasses (:func:`typed`); ``backbone`` and ``gbm`` stay dicts."""

    data: DataConfig
    backbone: dict
    model: ModelConfig
    adapter: AdapterSection
    optim: OptimConfig
    gbm: dict
    run: RunSection


def section_defaults(sections: Mapping[str, type]) -> dict[str, dict[str, Any]]:
    """{section: {key: default}} of dataclass sections."""
    return {name: asdict(cls()) for name, cls in sections.items()}


def defaults() -> dict[str, dict[str, Any]]:
    """The fine-tune defaults as a nested dict (a fresh copy)."""
    built = {**section_defaults(SECTIONS), **copy.deepcopy(OPEN_DEFAULTS)}
    return {name: built[name] for name in ORDER}


#: the fine-tune defaults (a read-only view for documentation; :func:`defaults` gives a copy to change)
DEFAULTS: dict[str, dict[str, Any]] = defaults()


def validate(cfg: Mapping[str, Any], sections: Mapping[str, type] = SECTIONS) -> None:
    """Build every typed section of ``cfg`` (their ``__post_init__`` raise ValueError naming the key and the
    choices) and check the open ones; ``cfg`` is not changed."""
    for name, cls in sections.items():
        if name in cfg:
            section = cfg[name]
            if not isinstance(section, Mapping):
                raise ValueError(f"config section {name!r} must be a mapping, got {section!r}")
            unknown = set(section) - {f.name for f in fields(cls)}
            if unknown:
                raise ValueError(f"unknown config key {name + '.' + sorted(unknown)[0]!r}; "
                                 f"choose from {sorted(f.name for f in fields(cls))}")
            cls(**section)
    if "backbone" in cfg:
        check_choice("backbone.name", cfg["backbone"].get("name"), BACKBONES)


def typed(cfg: Mapping[str, Any]) -> RunConfig:
    """The fine-tune sections of a loaded configuration as dataclasses."""
    return RunConfig(**{name: SECTIONS[name](**cfg[name]) if name in SECTIONS else dict(cfg[name])
                        for name in ORDER})


#: sections whose keys are not fixed: ``backbone`` holds ``name`` plus that backbone's constructor options
#: (e.g. ``checkpoint`` and ``task`` for UMA), checked by the backbone itself
OPEN_SECTIONS = ("backbone.", "gbm.")


def deep_update(base: dict, changes: Mapping, where: str = "", open_sections=OPEN_SECTIONS) -> dict:
    """Merge ``changes`` into ``base`` in place; a key ``base`` lacks raises ValueError naming it (except
    inside ``open_sections``)."""
    for key, value in changes.items():
        if key not in base and where not in open_sections:
            raise ValueError(f"unknown config key {where + key!r}; choose from {sorted(base)}")
        if isinstance(base.get(key), dict) and isinstance(value, Mapping):
            deep_update(base[key], value, where + key + ".", open_sections)
        else:
            base[key] = value
    return base


def dotted(changes: Mapping[str, Any]) -> dict:
    """``{"a.b": value}`` → ``{"a": {"b": value}}``."""
    out: dict = {}
    for key, value in changes.items():
        node = out
        parts = str(key).strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def parse_override(text: str) -> dict:
    """``a.b=value`` → {"a": {"b": value}} (the value parsed as YAML: numbers, booleans, lists, null)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    return dotted({key: yaml.safe_load(raw) if raw != "" else None})


def merge_config(base: dict, path: str | Path | None = None, overrides=(), extra: Mapping | None = None, *,
                 sections: Mapping[str, type] = SECTIONS, what: str = "run configuration") -> dict:
    """``base`` (defaults, changed in place) updated by the YAML file at ``path``, the ``section.key=value``
    ``overrides`` and ``extra``, then validated; returns it."""
    if path is not None:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a {what} must be a mapping")
        deep_update(base, data)
    for o in overrides or []:
        deep_update(base, parse_override(o))
    if extra:
        deep_update(base, extra)
    validate(base, sections)
    return base


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                extra: dict | None = None) -> dict:
    """The fine-tune defaults updated by a YAML file, dotted overrides and ``extra``; checked (ValueError)."""
    return merge_config(defaults(), path, overrides, extra)


def dump_config(cfg: dict, path: str | Path) -> None:
    atomic_write_bytes(Path(path), yaml.safe_dump(cfg, sort_keys=False).encode())
