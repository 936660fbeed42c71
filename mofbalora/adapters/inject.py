"""Injecting adapters into any ``nn.Module`` by walking ``named_modules()`` and matching target
names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mofbalora.adapters.balora import BaLoRALinear
from mofbalora.adapters.config import AdapterConfig
from mofbalora.adapters.lora import LoRALinear
from mofbalora.rows import matches

#: base layer type → factory(base_layer, config) → adapter module. Extension point for linear-like
#: layers that are not ``nn.Linear`` (e.g. SO(3)-linear or mixture-of-experts linears of UMA, e3nn
#: linears).
ADAPTER_FACTORIES: dict[type, Callable[[nn.Module, AdapterConfig], nn.Module]] = {}


def register_adapter_type(
    base_type: type, factory: Callable[[nn.Module, AdapterConfig], nn.Module]
) -> None:
    """Teach :func:`inject_adapters` to wrap ``base_type`` with ``factory(base_layer, config)``."""
    ADAPTER_FACTORIES[base_type] = factory


def linear_factory(
    lora_cls: type[LoRALinear] = LoRALinear, balora_cls: type[BaLoRALinear] = BaLoRALinear
) -> Callable[[nn.Module, AdapterConfig], nn.Module]:
    """The factory for a linear-like layer: ``balora_cls`` for BaLoRA, ``lora_cls`` for the
    baselines."""

    def factory(base: nn.Module, cfg: AdapterConfig) -> nn.Module:
        common = {"b_init_std": cfg.b_init_std}
        if cfg.kind == "balora":
            return balora_cls(
                base,
                cfg.rank,
                cfg.lora_alpha,
                alpha_network=cfg.alpha_network,
                prior_dropout=cfg.prior_dropout,
                noise_scope=cfg.noise_scope,
                **common,
            )
        if cfg.kind == "lora":
            return lora_cls(base, cfg.rank, cfg.lora_alpha, **common)
        if cfg.kind == "mc_dropout":
            return lora_cls(base, cfg.rank, cfg.lora_alpha, mc_dropout=cfg.mc_dropout, **common)
        return lora_cls(base, cfg.rank, cfg.lora_alpha, n_members=cfg.n_members, **common)

    return factory


register_adapter_type(nn.Linear, linear_factory())


@dataclass
class InjectionSummary:
    adapted: list[str]
    n_trainable: int
    n_adapter: int
    n_alpha_network: int
    n_frozen: int

    def __str__(self) -> str:
        lines = [f"adapted {len(self.adapted)} layer(s):"] + [f"  {n}" for n in self.adapted]
        share = self.n_alpha_network / self.n_adapter if self.n_adapter else 0.0
        lines.append(
            f"adapter parameters {self.n_adapter:,} (α-network {self.n_alpha_network:,}, "
            f"{share:.1%}); trainable total {self.n_trainable:,}; frozen {self.n_frozen:,}"
        )
        return "\n".join(lines)


def inject_adapters(
    model: nn.Module, config: AdapterConfig, row_set_for: Callable[[str], str | None] | None = None
) -> InjectionSummary:
    """Wrap every module whose name matches ``config.targets`` (and no ``config.exclude``), freeze
    the rest.

    ``row_set_for(name)`` names the row set (:mod:`mofbalora.rows`) of each adapted module's input
    rows (a backbone's :meth:`~mofbalora.backbones.base.Backbone.row_set_for`); without it every row
    is its own structure.

    Matched modules without parameters of their own (activations, containers) are passed over.
    Raises ValueError listing the patterns and some module names when nothing matches, and TypeError
    when a matched module with parameters has no registered adapter type.
    """
    if not config.targets:
        raise ValueError("no adapter targets given")
    chosen = [
        (n, m)
        for n, m in model.named_modules()
        if n
        and any(matches(n, p) for p in config.targets)
        and not any(matches(n, p) for p in config.exclude)
        and not isinstance(m, LoRALinear)
        and (type(m) in ADAPTER_FACTORIES or any(True for _ in m.parameters(recurse=False)))
    ]
    if not chosen:
        names = [n for n, _ in model.named_modules() if n][:25]
        raise ValueError(
            f"no module matches targets {config.targets} (exclude {config.exclude}); "
            f"some module names: {names}"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    adapted = []
    for name, module in chosen:
        factory = next((f for t, f in ADAPTER_FACTORIES.items() if type(module) is t), None)
        if factory is None:
            raise TypeError(
                f"module {name!r} of type {type(module).__name__} has no adapter; "
                f"supported: {[t.__name__ for t in ADAPTER_FACTORIES]}"
            )
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        adapter = factory(module, config)
        # a registered adapter type need not derive from LoRALinear
        if hasattr(adapter, "set_identity"):
            adapter.set_identity(name, row_set_for(name) if row_set_for is not None else None)
        setattr(parent, child, adapter)
        adapted.append(name)
    for n, p in model.named_parameters():
        p.requires_grad_("adapter_" in n)
    return summarize(model, adapted)


def summarize(model: nn.Module, adapted: list[str] | None = None) -> InjectionSummary:
    n_adapter = sum(p.numel() for n, p in model.named_parameters() if "adapter_" in n)
    n_alpha = sum(p.numel() for n, p in model.named_parameters() if "adapter_alpha" in n)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    if adapted is None:
        adapted = [n for n, _ in adapter_layers(model)]
    return InjectionSummary(adapted, n_train, n_adapter, n_alpha, n_frozen)


def adapter_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def total_kl(model: nn.Module) -> torch.Tensor:
    """Sum of the adapters' KL terms from the last forward pass (0 for non-Bayesian adapters)."""
    kls = [m.kl() for _, m in adapter_layers(model)]
    return torch.stack(kls).sum() if kls else torch.zeros(())


def kl_terms(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer KL terms of the last forward (each a mean over that layer's rows) and the row
    counts.

    Data-parallel training needs the counts to turn per-process means into the mean over the global
    batch.
    """
    layers = [m for _, m in adapter_layers(model) if hasattr(m, "kl_rows")]
    if not layers:
        return torch.zeros(0), torch.zeros(0)
    return torch.stack([m.kl() for m in layers]), torch.tensor([float(m.kl_rows()) for m in layers])


def merge_adapters(model: nn.Module) -> None:
    for _, m in adapter_layers(model):
        m.merge()


def unmerge_adapters(model: nn.Module) -> None:
    for _, m in adapter_layers(model):
        m.unmerge()


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "adapter_" in k}
