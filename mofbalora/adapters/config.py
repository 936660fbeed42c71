"""Adapter hyperparameters, serialisable to JSON (recorded beside every adapter checkpoint)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

AdapterKind = Literal["lora", "balora", "mc_dropout", "lora_ensemble"]
ADAPTER_KINDS = ("lora", "balora", "mc_dropout", "lora_ensemble")


@dataclass
class AdapterConfig:
    """What to inject and where.

    ``targets`` / ``exclude`` are module-name patterns: an exact name (``"mlp.0"``), a suffix
    (``"*.mlp_out.layers.1"`` or any name ending in ``".<pattern>"``), or a regular expression
    (``"re:^trunk\\..*"``).
    """

    kind: AdapterKind = "balora"
    targets: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    rank: int = 8
    lora_alpha: float | None = None
    # BaLoRA
    alpha_network: str = "probe"
    prior_dropout: float = 0.1
    noise_scope: str = "row"
    # MC dropout baseline
    mc_dropout: float = 0.1
    # ensemble baseline
    n_members: int = 5

    def __post_init__(self) -> None:
        if self.kind not in ADAPTER_KINDS:
            raise ValueError(f"unknown adapter kind {self.kind!r}; choose from {list(ADAPTER_KINDS)}")
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.kind == "lora_ensemble" and self.n_members < 2:
            raise ValueError(f"an ensemble needs n_members >= 2, got {self.n_members}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AdapterConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown adapter option(s) {sorted(unknown)}; choose from {sorted(cls.__dataclass_fields__)}")
        return cls(**data)
