"""Adapter-only checkpoints: ``adapter.safetensors`` + ``adapter_config.json`` naming the base model and the
sha256 of its frozen weights; loading onto a different base raises."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from mofbalora.adapters.config import AdapterConfig
from mofbalora.adapters.inject import adapter_state_dict, inject_adapters

WEIGHTS_FILE = "adapter.safetensors"
CONFIG_FILE = "adapter_config.json"


class BaseModelMismatchError(ValueError):
    """The adapter was trained on another base model."""


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def save_adapter(model: nn.Module, directory: str | Path, config: AdapterConfig, base_identity: dict,
                 extra_tensors: dict[str, torch.Tensor] | None = None, metadata: dict | None = None) -> Path:
    """Write the adapter tensors (and optional extra tensors, e.g. a head, prefixed ``extra.``) and config."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in adapter_state_dict(model).items()}
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra.{k}"] = v.detach().contiguous()
    _atomic_write_bytes(directory / WEIGHTS_FILE, save(tensors))
    payload = {"adapter": config.to_dict(), "base": base_identity, "metadata": metadata or {}}
    _atomic_write_bytes(directory / CONFIG_FILE, json.dumps(payload, indent=2).encode())
    return directory


def read_adapter(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{directory}: no {CONFIG_FILE}; is this an adapter folder?")
    return json.loads(cfg_path.read_text()), load_file(str(directory / WEIGHTS_FILE))


def load_adapter(model: nn.Module, directory: str | Path, base_identity: dict) -> tuple[AdapterConfig, dict]:
    """Inject the saved adapter into ``model`` (its frozen base) and load its weights.

    Returns (config, extra tensors). Raises :class:`BaseModelMismatchError` when ``base_identity`` differs
    from the one recorded at save time.
    """
    payload, tensors = read_adapter(directory)
    saved = payload["base"]
    if saved != base_identity:
        diff = {k: (saved.get(k), base_identity.get(k)) for k in set(saved) | set(base_identity)
                if saved.get(k) != base_identity.get(k)}
        raise BaseModelMismatchError(f"adapter in {directory} was trained on another base model: "
                                     f"(saved, given) differ in {diff}")
    config = AdapterConfig.from_dict(payload["adapter"])
    inject_adapters(model, config)
    adapter = {k: v for k, v in tensors.items() if not k.startswith("extra.")}
    missing = set(adapter_state_dict(model)) - set(adapter)
    unexpected = set(adapter) - set(adapter_state_dict(model))
    if missing or unexpected:
        raise ValueError(f"adapter tensors do not fit the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    model.load_state_dict(adapter, strict=False)
    return config, {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
