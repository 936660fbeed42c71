"""Adapter-only checkpoints: ``adapter.safetensors`` + ``adapter_config.json`` naming the base model
and the sha256 of its frozen weights; loading onto a different base raises.

The format is the package's one checkpoint format (:func:`mofbalora.io.save_checkpoint`: safetensors
tensors + a JSON config with a ``base`` identity), the one :meth:`mofbalora.model.BandGapModel.save`
writes too; only the file names and the config's other fields differ."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mofbalora.adapters.config import AdapterConfig
from mofbalora.adapters.extensions import enable_adapter_extensions
from mofbalora.adapters.inject import adapter_state_dict, inject_adapters
from mofbalora.io import (
    BaseModelMismatchError,
    check_base_identity,
    read_checkpoint,
    save_checkpoint,
)

__all__ = [
    "BaseModelMismatchError",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "load_adapter",
    "read_adapter",
    "save_adapter",
]

WEIGHTS_FILE = "adapter.safetensors"
CONFIG_FILE = "adapter_config.json"


def save_adapter(
    model: nn.Module,
    directory: str | Path,
    config: AdapterConfig,
    base_identity: dict,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write the adapter tensors (and optional extra tensors, e.g. a head, prefixed ``extra.``)
    and config."""
    tensors = dict(adapter_state_dict(model))
    tensors.update({f"extra.{k}": v for k, v in (extra_tensors or {}).items()})
    payload = {"adapter": config.to_dict(), "base": base_identity, "metadata": metadata or {}}
    return save_checkpoint(
        directory, tensors, payload, weights_file=WEIGHTS_FILE, config_file=CONFIG_FILE
    )


def read_adapter(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    return read_checkpoint(
        directory, weights_file=WEIGHTS_FILE, config_file=CONFIG_FILE, what="adapter"
    )


def load_adapter(
    model: nn.Module, directory: str | Path, base_identity: dict
) -> tuple[AdapterConfig, dict]:
    """Inject the saved adapter into ``model`` (its frozen base) and load its weights.

    Returns (config, extra tensors). Raises :class:`BaseModelMismatchError` when ``base_identity``
    differs from the one recorded at save time.
    """
    payload, tensors = read_adapter(directory)
    check_base_identity(payload["base"], base_identity, directory)
    config = AdapterConfig.from_dict(payload["adapter"])
    enable_adapter_extensions(getattr(model, "adapter_extensions", ()))
    inject_adapters(model, config)
    adapter = {k: v for k, v in tensors.items() if not k.startswith("extra.")}
    missing = set(adapter_state_dict(model)) - set(adapter)
    unexpected = set(adapter) - set(adapter_state_dict(model))
    if missing or unexpected:
        raise ValueError(
            f"adapter tensors do not fit the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    model.load_state_dict(adapter, strict=False)
    return config, {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
