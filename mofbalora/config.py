"""Run configurations: nested YAML with defaults, ``--set section.key=value`` overrides, validated keys."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from mofbalora.io import atomic_write_bytes

DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {
        "path": None,            # dataset folder (None: $MOFBALORA_QMOF or ../shared/data/qmof)
        "labels": None,          # labels CSV for a plain folder of CIFs
        "id_column": "id",
        "target_column": "bandgap",
        "split": "qmof_v1",      # shipped split name or a JSON path
        "train_size": None,      # first N ids of the split's train part (None: all)
        "val_size": None,
        "test_size": None,
    },
    "backbone": {"name": "chgnet", "adapt": "readout"},
    "model": {
        "regime": "balora",      # balora | lora | mc_dropout | lora_ensemble | head_only | full | gbm
        "likelihood": "mse",     # mse | l1 | huber | gaussian_nll (adds an aleatoric-variance output)
        "head_hidden": 64,
        "pooling": "mean_max",   # mean_max | mean | mean_max_std | mean_max_attention
        "head_atom_mlp": 0,      # width of the head's per-atom MLP before pooling (0: none)
    },
    "adapter": {
        "targets": [],           # empty: the backbone's preset for its ``adapt`` setting
        "exclude": [],
        "rank": 8,
        "lora_alpha": None,      # None: = rank (scale 1)
        "alpha_network": "probe",
        "prior_dropout": 0.1,
        "noise_scope": "row",      # row | structure (one exact weight sample per structure) | rank_shared
        "mc_dropout": 0.1,
        "n_members": 5,
    },
    "optim": {
        "lr": 3.0e-3,
        "weight_decay": 1.0e-4,
        "epochs": 40,
        "batch_size": 32,
        "schedule": "cosine",    # cosine | constant
        "warmup_epochs": 1,
        "patience": 8,           # early stopping on validation MAE (epochs without improvement)
        "kl_weight": 1.0,        # β
        "kl_warmup_epochs": 0,
        "grad_clip": 5.0,
    },
    "gbm": {},                   # gradient-boosting baseline: HistGradientBoostingRegressor options (mofbalora.gbm)
    "run": {
        "seed": 0,
        "device": "cpu",         # cpu | cuda | auto
        "threads": None,
        "out": None,
        "eval_samples": 32,
        "eval_test": True,
    },
}


#: sections whose keys are not fixed: ``backbone`` holds ``name`` plus that backbone's constructor options
#: (e.g. ``checkpoint`` and ``task`` for UMA), checked by the backbone itself
OPEN_SECTIONS = ("backbone.", "gbm.")


def deep_update(base: dict, changes: dict, where: str = "") -> dict:
    for key, value in changes.items():
        if key not in base and where not in OPEN_SECTIONS:
            raise ValueError(f"unknown config key {where + key!r}; choose from {sorted(base)}")
        if isinstance(base.get(key), dict) and isinstance(value, dict):
            deep_update(base[key], value, where + key + ".")
        else:
            base[key] = value
    return base


def parse_override(text: str) -> dict:
    """``a.b=value`` → {"a": {"b": value}} (the value parsed as YAML: numbers, booleans, lists, null)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else None
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                extra: dict | None = None) -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a run configuration must be a mapping")
        deep_update(cfg, data)
    for o in overrides or []:
        deep_update(cfg, parse_override(o))
    if extra:
        deep_update(cfg, extra)
    return cfg


def dump_config(cfg: dict, path: str | Path) -> None:
    atomic_write_bytes(Path(path), yaml.safe_dump(cfg, sort_keys=False).encode())
