"""LoRA and BaLoRA adapters: small, exact, tested. See ``balora.py`` for the equations and open
choices."""

from __future__ import annotations

from mofbalora.adapters.balora import BaLoRALinear, dropout_to_alpha, kl_per_weight
from mofbalora.adapters.config import ADAPTER_KINDS, AdapterConfig
from mofbalora.adapters.context import sample_forward, sampling, seeded_generator
from mofbalora.adapters.inject import (
    InjectionSummary,
    adapter_layers,
    adapter_state_dict,
    inject_adapters,
    kl_terms,
    merge_adapters,
    register_adapter_type,
    total_kl,
    unmerge_adapters,
)
from mofbalora.adapters.io import BaseModelMismatchError, load_adapter, save_adapter
from mofbalora.adapters.lora import LoRALinear

__all__ = [
    "ADAPTER_KINDS",
    "AdapterConfig",
    "BaLoRALinear",
    "BaseModelMismatchError",
    "InjectionSummary",
    "LoRALinear",
    "adapter_layers",
    "adapter_state_dict",
    "dropout_to_alpha",
    "inject_adapters",
    "kl_per_weight",
    "kl_terms",
    "load_adapter",
    "merge_adapters",
    "register_adapter_type",
    "sample_forward",
    "sampling",
    "save_adapter",
    "seeded_generator",
    "total_kl",
    "unmerge_adapters",
]
