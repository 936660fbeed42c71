"""Plain LoRA (Hu et al. 2021) around a frozen ``nn.Linear``, optionally with MC dropout on the adapter
path, and with K independent members for a LoRA ensemble on one shared frozen base.

``y = W0 x + b + s · θ_B θ_A x`` with ``s = lora_alpha / r``, θ_B initialised at zero. All adapter tensors
carry the ``adapter_`` prefix so they can be frozen, filtered and saved by name; the wrapped layer is held
as ``base_layer`` (never copied).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mofbalora.adapters import context


class LoRALinear(nn.Module):
    """LoRA around ``base_layer``.

    ``mc_dropout`` > 0 applies dropout to the adapter path's input in stochastic passes (MC dropout).
    ``n_members`` > 1 holds independent adapters (an ensemble); the active one comes from
    ``sampling(member=k)``.
    """

    kind = "lora"
    #: base layer types this adapter wraps (subclasses for linear-like layers extend it, see adapters/mole.py)
    base_types: tuple[type, ...] = (nn.Linear,)

    def __init__(self, base_layer: nn.Linear, rank: int = 8, lora_alpha: float | None = None,
                 mc_dropout: float = 0.0, n_members: int = 1) -> None:
        super().__init__()
        if not isinstance(base_layer, self.base_types):
            wraps = ", ".join("nn.Linear" if t is nn.Linear else t.__name__ for t in self.base_types)
            raise TypeError(f"{type(self).__name__} wraps {wraps}, got {type(base_layer).__name__}; "
                            "register a linear-like adapter with mofbalora.adapters.register_adapter_type")
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if not 0.0 <= mc_dropout < 1.0:
            raise ValueError(f"mc_dropout must be in [0, 1), got {mc_dropout}")
        self.base_layer = base_layer
        self.rank = rank
        self.lora_alpha = float(lora_alpha if lora_alpha is not None else rank)
        self.scale = self.lora_alpha / rank
        self.mc_dropout = mc_dropout
        self.n_members = n_members
        self.merged = False
        shape_a, shape_b = self.adapter_shapes()
        dev = next(base_layer.parameters()).device
        self.adapter_A = nn.Parameter(torch.empty(shape_a, device=dev))
        self.adapter_B = nn.Parameter(torch.zeros(shape_b, device=dev))
        self.reset_adapter()

    def adapter_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of θ_A (members × r × in) and θ_B (members × out × r); other layer types add axes."""
        return ((self.n_members, self.rank, self.base_layer.in_features),
                (self.n_members, self.base_layer.out_features, self.rank))

    def reset_adapter(self) -> None:
        for k in range(self.n_members):  # as nn.Linear's default init, independently per member
            nn.init.kaiming_uniform_(self.adapter_A.data[k], a=math.sqrt(5))
        nn.init.zeros_(self.adapter_B)

    # -- helpers ------------------------------------------------------------------------------------
    @property
    def in_features(self) -> int:  # host models read these from the layer they call (e.g. UMA's SO(2) conv)
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def _member(self) -> int:
        m = context.current().member
        if self.n_members == 1:
            return 0
        if m is None or not 0 <= m < self.n_members:
            raise ValueError(f"ensemble adapter with {self.n_members} members needs sampling(member=k), got {m!r}")
        return m

    def _stochastic(self) -> bool:
        s = context.current().stochastic
        return self.training if s is None else s

    def delta_weight(self) -> torch.Tensor:
        """s · θ_B θ_A of the active member (out × in): the posterior-mean update."""
        k = self._member()
        return self.scale * self.adapter_B[k] @ self.adapter_A[k]

    def merge(self) -> None:
        if self.n_members > 1:
            raise ValueError("an ensemble adapter cannot be merged: its members differ")
        if not self.merged:
            self.base_layer.weight.data += self.delta_weight().to(self.base_layer.weight.dtype)
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            self.base_layer.weight.data -= self.delta_weight().to(self.base_layer.weight.dtype)
            self.merged = False

    def kl(self) -> torch.Tensor:
        return self.adapter_A.new_zeros(())

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scale={self.scale:g}, mc_dropout={self.mc_dropout}, n_members={self.n_members}"

    # -- forward ------------------------------------------------------------------------------------
    def adapter_hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Rank-space activation θ_A x (deterministic part)."""
        return x @ self.adapter_A[self._member()].T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged:
            return y
        xa = x
        if self.mc_dropout > 0 and self._stochastic():
            keep = 1.0 - self.mc_dropout
            mask = context.draw("rand", tuple(x.shape), device=x.device) < keep
            xa = x * mask / keep
        h = self.adapter_hidden(xa)
        return y + self.scale * (h @ self.adapter_B[self._member()].T)
