"""Run configurations: one dataclass per concept, holding the defaults and checked once, when built.

A configuration has two forms:

- the *document*: nested YAML (``workflows/*.yaml``, a run's ``config.yaml``), i.e. a plain nested
  dict. :func:`load_config` merges a YAML file over the defaults, then ``section.key=value``
  overrides (``model.regime=lora``) and ``extra``, checks the result and returns it;
- the *typed* :class:`RunConfig`, which the code reads (``cfg.optim.lr``): :meth:`RunConfig.of` (or
  :func:`typed`, :func:`load_run_config`) builds it from a document, :meth:`RunConfig.to_dict`
  writes one.

Building refuses a key no section knows (naming the key and the known ones) and a bad value (each
dataclass's ``__post_init__`` names the key and the valid choices), so a bad run fails at load
instead of hours into training. String look-ups of the document happen here only;
:func:`mofbalora.io.read_yaml` is the one YAML reader.

Sections and their dataclasses (one per concept):

- ``data``: :class:`~mofbalora.data.splits.DataConfig`;
- ``backbone``: :class:`BackboneConfig`, ``name`` plus that backbone's constructor options (open:
  checked by the backbone itself);
- ``model``: :class:`ModelConfig`: regime, likelihood, β-NLL, the head
  (:class:`~mofbalora.heads.HeadConfig`, written as ``model.head_hidden``, ``model.pooling`` and
  ``model.head_atom_mlp``; its ``aleatoric`` follows the likelihood) and ``model.warm_start`` (a
  trained model to start from, :mod:`mofbalora.warm_start`);
- ``adapter``: :class:`~mofbalora.adapters.config.AdapterConfig` without ``kind``, which is
  ``model.regime`` (:meth:`RunConfig.model_adapter`);
- ``optim``: :class:`OptimConfig` (with ``optim.lr_scale``, learning-rate factors per parameter
  group, :data:`PARAM_GROUPS`); ``gbm``: open (the gradient-boosting baseline's options); ``run``:
  :class:`RunSection`.

Campaigns add ``al`` and ``benchmark`` (:class:`mofbalora.al.config.CampaignConfig`).

Trust: ``backbone.trust_checkpoint: true`` in a document *you pass* (``--set
backbone.trust_checkpoint=true``) allows full unpickling of the backbone's checkpoint, like
``--trust-checkpoint``; it is kept on the typed configuration
(:attr:`BackboneConfig.trust_checkpoint`) but never written back (:meth:`RunConfig.to_dict`), so no
stored file can grant it (:mod:`mofbalora.backbones.checkpoint`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml

from mofbalora.adapters.config import ADAPTER_KINDS, AdapterConfig
from mofbalora.backbones import BACKBONES
from mofbalora.backbones.base import DEVICES
from mofbalora.backbones.checkpoint import stored_trust_error
from mofbalora.data.splits import DataConfig
from mofbalora.heads import HeadConfig
from mofbalora.io import read_yaml, write_yaml
from mofbalora.model import REGIMES
from mofbalora.validation import (
    check_bool,
    check_choice,
    check_int,
    check_keys,
    check_mapping,
    check_number,
    field_names,
    strict,
)

__all__ = [
    "ALEATORIC_LIKELIHOODS",
    "DEFAULTS",
    "LIKELIHOODS",
    "PARAM_GROUPS",
    "RUN_REGIMES",
    "SCHEDULES",
    "BackboneConfig",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "RunSection",
    "check_choice",
    "check_int",
    "check_number",
    "deep_update",
    "defaults",
    "dotted",
    "dump_config",
    "load_config",
    "load_run_config",
    "merge_config",
    "parse_override",
    "typed",
]

LIKELIHOODS = ("mse", "l1", "huber", "gaussian_nll", "laplace_nll")
ALEATORIC_LIKELIHOODS = ("gaussian_nll", "laplace_nll")
SCHEDULES = ("cosine", "constant")
#: parameter groups of ``optim.lr_scale`` (:func:`mofbalora.train.parameter_group` sorts a model's
#: parameters): the head, BaLoRA's α (probes and a shared α-network), the adapters of CHGNet's
#: readout MLP, every other adapter (inside the trunk: CHGNet's last block), and the backbone's own
#: weights (regime ``full``)
PARAM_GROUPS = ("head", "alpha", "readout", "trunk", "backbone")
#: every regime ``finetune`` trains: the model's regimes and the gradient-boosting baseline
RUN_REGIMES = (*REGIMES, "gbm")
#: the backbone option that grants trust (the caller's; never written back)
TRUST_OPTION = "trust_checkpoint"

C = TypeVar("C", bound="RunConfig")


@dataclass
class BackboneConfig:
    """The ``backbone`` section: ``name`` and that backbone's constructor options (e.g. ``adapt``,
    ``checkpoint``), checked by the backbone when it is built. ``trust_checkpoint``: the caller
    allows full unpickling of the checkpoint the options name; not an option, never written."""

    name: str = "chgnet"
    options: dict[str, Any] = field(default_factory=lambda: {"adapt": "readout"})
    trust_checkpoint: bool = False

    def __post_init__(self) -> None:
        check_choice("backbone.name", self.name, BACKBONES)
        check_bool(f"backbone.{TRUST_OPTION}", self.trust_checkpoint)
        for key in ("name", TRUST_OPTION):
            if key in self.options:
                raise ValueError(
                    f"backbone option {key!r} is a field of BackboneConfig, not one of its options"
                )

    @classmethod
    def from_dict(cls, data: Any) -> BackboneConfig:
        options = dict(check_mapping("backbone", data))
        name = options.pop("name", "chgnet")
        return cls(name=name, options=options, trust_checkpoint=options.pop(TRUST_OPTION, False))

    def to_dict(self) -> dict[str, Any]:
        """The section as written: ``name`` and the options (never ``trust_checkpoint``)."""
        return {"name": self.name, **copy.deepcopy(self.options)}


#: the head's settings as the ``model`` section writes them -> :class:`~mofbalora.heads.HeadConfig`
#: fields
HEAD_KEYS = {"head_hidden": "hidden_dim", "pooling": "pooling", "head_atom_mlp": "atom_mlp"}


@dataclass
class ModelConfig:
    """The ``model`` section: the regime, the training likelihood and the head.

    Written flat: ``model.head_hidden``, ``model.pooling`` and ``model.head_atom_mlp`` are
    :attr:`head`'s ``hidden_dim``, ``pooling`` and ``atom_mlp``; ``head.aleatoric`` follows the
    likelihood (the NLLs add an aleatoric output).

    ``warm_start``: a trained model to start from instead of fresh adapters and head: ``"default"``
    (the shipped model), a run folder or a model folder. Every tensor it trained is copied in bit
    for bit, the tensors only this model has keep their initialisation
    (:func:`mofbalora.warm_start.warm_start`): a trunk placement
    (``backbone.adapt=last_block_cached``) warm-started from a readout model starts as that model
    (the block's θ_B = 0) and fine-tunes BaLoRA in the block. It needs the same regime, head and
    head features as the source. A resumed run continues from its own checkpoint instead."""

    regime: Literal["balora", "lora", "mc_dropout", "lora_ensemble", "head_only", "full", "gbm"] = (
        "balora"
    )
    likelihood: Literal["mse", "l1", "huber", "gaussian_nll", "laplace_nll"] = "mse"
    # β-NLL weight exponent in [0, 1] (NLL likelihoods; 0: the plain NLL)
    nll_beta: float = 0.0
    head: HeadConfig = field(default_factory=HeadConfig)
    # "default", a run folder or a model folder (None: fresh adapters and head)
    warm_start: str | None = None

    def __post_init__(self) -> None:
        check_choice("model.regime", self.regime, RUN_REGIMES)
        check_choice("model.likelihood", self.likelihood, LIKELIHOODS)
        if not (isinstance(self.nll_beta, (int, float)) and 0.0 <= self.nll_beta <= 1.0):
            raise ValueError(f"model.nll_beta must be a number in [0, 1], got {self.nll_beta!r}")
        if self.nll_beta and self.likelihood not in ALEATORIC_LIKELIHOODS:
            raise ValueError(
                f"model.nll_beta={self.nll_beta!r} weights a negative log-likelihood; it needs "
                f"model.likelihood in {ALEATORIC_LIKELIHOODS}, got {self.likelihood!r}"
            )
        if self.head.aleatoric != self.aleatoric:
            self.head = replace(self.head, aleatoric=self.aleatoric)
        if self.warm_start is not None and not (
            isinstance(self.warm_start, str) and self.warm_start.strip()
        ):
            raise ValueError(
                f"model.warm_start must be 'default', a run folder or a model folder (a string), "
                f"or null for a fresh start; got {self.warm_start!r}"
            )

    @property
    def aleatoric(self) -> bool:
        """Whether the likelihood fits an aleatoric variance (the head then has a second output)."""
        return self.likelihood in ALEATORIC_LIKELIHOODS

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        data = check_mapping("model", data)
        own = ("regime", "likelihood", "nll_beta", "warm_start")
        check_keys(data, [*own, *HEAD_KEYS], "model.")
        head = HeadConfig(**{HEAD_KEYS[k]: v for k, v in data.items() if k in HEAD_KEYS})
        return cls(**{k: v for k, v in data.items() if k in own}, head=head)

    def to_dict(self) -> dict[str, Any]:
        return {
            "regime": self.regime,
            "likelihood": self.likelihood,
            "head_hidden": self.head.hidden_dim,
            "pooling": self.head.pooling,
            "head_atom_mlp": self.head.atom_mlp,
            "nll_beta": self.nll_beta,
            "warm_start": self.warm_start,
        }


#: the keys of the ``adapter`` section: every :class:`AdapterConfig` field but ``kind`` (=
#: ``model.regime``)
ADAPTER_KEYS = tuple(k for k in field_names(AdapterConfig) if k != "kind")


def adapter_section(data: Any) -> AdapterConfig:
    """The ``adapter`` section as an :class:`AdapterConfig` whose ``kind`` is None (set by
    ``model.regime``)."""
    data = check_mapping("adapter", data)
    check_keys(data, ADAPTER_KEYS, "adapter.")
    return AdapterConfig(kind=None, **data)


def adapter_document(adapter: AdapterConfig) -> dict[str, Any]:
    return {k: v for k, v in asdict(adapter).items() if k != "kind"}


@dataclass
class OptimConfig:
    lr: float = 3.0e-3
    weight_decay: float = 1.0e-4
    epochs: int = 40
    batch_size: int = 32
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = 1
    # early stopping on validation MAE (epochs without improvement)
    patience: int = 8
    kl_weight: float = 1.0  # β
    kl_warmup_epochs: int = 0
    grad_clip: float | None = 5.0
    #: learning-rate factor per parameter group (:data:`PARAM_GROUPS`; a group not named: 1); 0
    #: freezes the group (e.g. ``{head: 0}``: a warm-started head kept as it is while the adapters
    #: train)
    lr_scale: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("optim.schedule", self.schedule, SCHEDULES)
        check_mapping("optim.lr_scale", self.lr_scale)
        for group, factor in self.lr_scale.items():
            check_choice("optim.lr_scale group", group, PARAM_GROUPS)
            check_number(f"optim.lr_scale.{group}", factor, 0)
        for key in ("lr", "weight_decay", "kl_weight"):
            check_number(f"optim.{key}", getattr(self, key), 0)
        check_number("optim.grad_clip", self.grad_clip, 0, optional=True)
        for key, low in (
            ("epochs", 0),
            ("batch_size", 1),
            ("warmup_epochs", 0),
            ("patience", 1),
            ("kl_warmup_epochs", 0),
        ):
            check_int(f"optim.{key}", getattr(self, key), low)


@dataclass
class RunSection:
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    threads: int | None = None
    out: str | None = None
    eval_samples: int = 32
    eval_test: bool = True

    def __post_init__(self) -> None:
        check_int("run.seed", self.seed, 0)
        check_choice("run.device", str(self.device).split(":")[0], (*DEVICES, "auto"))
        check_int("run.threads", self.threads, 1, optional=True)
        check_int("run.eval_samples", self.eval_samples, 1)


Reader = Callable[[Any], Any]
Writer = Callable[[Any], dict]


def plain_section(cls: type, name: str) -> tuple[Reader, Writer]:
    """(read, write) of a section that is a dataclass field for field."""
    return (lambda data: strict(cls, data, f"{name}."), asdict)


def open_section(name: str) -> tuple[Reader, Writer]:
    """(read, write) of a section of free options (kept as a dict)."""
    return (lambda data: copy.deepcopy(dict(check_mapping(name, data))), copy.deepcopy)


#: each section of a run configuration: how the document's mapping becomes the dataclass, and back
RUN_SECTIONS: dict[str, tuple[Reader, Writer]] = {
    "data": plain_section(DataConfig, "data"),
    "backbone": (BackboneConfig.from_dict, BackboneConfig.to_dict),
    "model": (ModelConfig.from_dict, ModelConfig.to_dict),
    "adapter": (adapter_section, adapter_document),
    "optim": plain_section(OptimConfig, "optim"),
    "gbm": open_section("gbm"),
    "run": plain_section(RunSection, "run"),
}
#: section order of a written configuration
ORDER = tuple(RUN_SECTIONS)


@dataclass
class RunConfig:
    """A fine-tuning configuration: one dataclass per section (``gbm`` stays a dict of free
    options).

    Build it from a document with :meth:`of` / :meth:`from_dict`; :meth:`to_dict` gives the document
    back.
    """

    #: the sections, in written order: name -> (read, write); subclasses add theirs
    SECTIONS: ClassVar[dict[str, tuple[Reader, Writer]]] = RUN_SECTIONS

    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    adapter: AdapterConfig = field(default_factory=lambda: AdapterConfig(kind=None))
    optim: OptimConfig = field(default_factory=OptimConfig)
    gbm: dict[str, Any] = field(default_factory=dict)
    run: RunSection = field(default_factory=RunSection)

    def __post_init__(self) -> None:
        if self.adapter.kind is not None:
            raise ValueError(
                f"the adapter section has no kind (it is model.regime), got {self.adapter.kind!r}"
            )
        # the adapter settings against the regime (an ensemble needs n_members >= 2)
        self.model_adapter()

    def model_adapter(self) -> AdapterConfig | None:
        """The adapters ``model.regime`` injects (the ``adapter`` section with ``kind`` = the
        regime); None for the regimes without adapters (``head_only``, ``full``, ``gbm``)."""
        if self.model.regime not in ADAPTER_KINDS:
            return None
        return replace(self.adapter, kind=self.model.regime)

    # -- the document ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls: type[C], document: Mapping[str, Any]) -> C:
        """The configuration a (possibly partial) document describes: merged over the defaults; an
        unknown key or a bad value raises ValueError naming it."""
        merged = deep_update(
            cls().to_dict(), copy.deepcopy(dict(check_mapping("configuration", document)))
        )
        return cls(**{name: read(merged[name]) for name, (read, _) in cls.SECTIONS.items()})

    @classmethod
    def of(cls: type[C], cfg: RunConfig | Mapping[str, Any]) -> C:
        """``cfg`` itself if it already is one, else built from the document ``cfg``."""
        if isinstance(cfg, cls):
            return cfg
        if isinstance(cfg, RunConfig):  # another kind of configuration: through its document
            out = cls.from_dict(cfg.to_dict())
            out.backbone.trust_checkpoint = cfg.backbone.trust_checkpoint
            return out
        return cls.from_dict(cfg)

    @classmethod
    def from_stored(
        cls: type[C],
        document: Mapping[str, Any],
        *,
        where: str | Path,
        trust_checkpoint: bool = False,
    ) -> C:
        """A configuration read back from a folder (``where``: e.g. a campaign's ``config.yaml``).
        Trust is the caller's alone: ``trust_checkpoint`` is applied, and a document that asks for
        trust itself (``backbone.trust_checkpoint: true``) is refused without it
        (:func:`~mofbalora.backbones.checkpoint.stored_trust_error`), before any backbone is
        built."""
        cfg = cls.from_dict(document)
        if cfg.backbone.trust_checkpoint and not trust_checkpoint:
            raise stored_trust_error(where, cfg.backbone.options.get("checkpoint"))
        cfg.backbone.trust_checkpoint = bool(trust_checkpoint)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """The document (plain nested dict, sections in order), as ``config.yaml`` holds it."""
        return {name: write(getattr(self, name)) for name, (_, write) in self.SECTIONS.items()}

    def with_changes(self: C, changes: Mapping[str, Any]) -> C:
        """A copy with ``{"section.key": value}`` changes (keys and values checked); the caller's
        trust is kept."""
        out = type(self).from_dict(deep_update(self.to_dict(), dotted(changes)))
        out.backbone.trust_checkpoint = self.backbone.trust_checkpoint
        return out


def typed(cfg: RunConfig | Mapping[str, Any]) -> RunConfig:
    """The fine-tune configuration ``cfg`` (a document or already typed) as a :class:`RunConfig`."""
    return RunConfig.of(cfg)


def defaults() -> dict[str, dict[str, Any]]:
    """The fine-tune defaults as a document (a fresh copy)."""
    return RunConfig().to_dict()


#: the fine-tune defaults (a read-only view for documentation; :func:`defaults` gives a copy to
#: change)
DEFAULTS: dict[str, dict[str, Any]] = defaults()

#: sections whose keys are not fixed: ``backbone`` holds ``name`` plus that backbone's constructor
#: options (e.g. ``checkpoint`` and ``task`` for UMA), checked by the backbone itself;
#: ``optim.lr_scale`` names parameter groups, checked by :class:`OptimConfig`
OPEN_SECTIONS = ("backbone.", "gbm.", "optim.lr_scale.")


def deep_update(base: dict, changes: Mapping, where: str = "", open_sections=OPEN_SECTIONS) -> dict:
    """Merge ``changes`` into ``base`` in place; a key ``base`` lacks raises ValueError naming it
    (except inside ``open_sections``)."""
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
    """``a.b=value`` → {"a": {"b": value}} (the value parsed as YAML: numbers, booleans, lists,
    null)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    return dotted({key: yaml.safe_load(raw) if raw != "" else None})


def merge_config(
    base: dict,
    path: str | Path | None = None,
    overrides=(),
    extra: Mapping | None = None,
    *,
    config_type: type[RunConfig] = RunConfig,
    what: str = "run configuration",
) -> dict:
    """``base`` (a default document, changed in place) updated by the YAML file at ``path``, the
    ``section.key=value`` ``overrides`` and ``extra``, then checked by building ``config_type``;
    returns it."""
    if path is not None:
        deep_update(base, read_yaml(path, what=what))
    for o in overrides or []:
        deep_update(base, parse_override(o))
    if extra:
        deep_update(base, extra)
    config_type.from_dict(base)
    return base


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, extra: dict | None = None
) -> dict:
    """The fine-tune defaults updated by a YAML file, dotted overrides and ``extra``: the checked
    document (ValueError naming a bad key or value). :func:`load_run_config` gives it typed."""
    return merge_config(defaults(), path, overrides, extra)


def load_run_config(
    path: str | Path | None = None, overrides: list[str] | None = None, extra: dict | None = None
) -> RunConfig:
    """:func:`load_config` as a :class:`RunConfig`."""
    return RunConfig.from_dict(load_config(path, overrides, extra))


def dump_config(cfg: RunConfig | Mapping[str, Any], path: str | Path) -> None:
    """Write a configuration (typed, or a document) as YAML, atomically; trust is never written."""
    if isinstance(cfg, RunConfig):
        document = cfg.to_dict()
    else:
        document = copy.deepcopy(dict(cfg))
        if isinstance(document.get("backbone"), dict):
            document["backbone"].pop(TRUST_OPTION, None)
    write_yaml(path, document)
