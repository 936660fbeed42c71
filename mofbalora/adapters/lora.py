"""Plain LoRA (Hu et al. 2021) around a frozen ``nn.Linear``, optionally with MC dropout on the adapter
path, and with K independent members for a LoRA ensemble on one shared frozen base.

``y = W0 x + b + s · θ_B θ_A x`` with ``s = lora_alpha / r``, θ_B initialised at zero. All adapter tensors
carry the ``adapter_`` prefix so they can be frozen, filtered and saved by name; the wrapped layer is held
as ``base_layer`` (never copied).
"""

from __future__ import annotations

import itertools
import math
import zlib

import torch
from torch import nn

from mofbalora.adapters import context
from mofbalora.adapters.noise import stream_heads
from mofbalora.rows import current_row_sets, in_frozen_pass

_LAYER_COUNTER = itertools.count(1)


def layer_key(name: str) -> int:
    """The noise key of an adapted module, from its name (stable across processes and runs)."""
    return zlib.crc32(name.encode())


class LoRALinear(nn.Module):
    """LoRA around ``base_layer``.

    ``mc_dropout`` > 0 applies dropout to the adapter path's input in stochastic passes (MC dropout).
    ``n_members`` > 1 holds independent adapters (an ensemble); the active one comes from
    ``sampling(member=k)``.
    """

    kind = "lora"
    #: the named row set (:mod:`mofbalora.rows`) the input rows belong to, set at injection from the
    #: backbone's rules; None: every row is its own structure (a plain MLP whose rows are structures)
    row_set: str | None = None
    #: the adapted module's name (set at injection): error messages and the noise layer key
    adapter_name: str = ""
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
        #: key of this layer's noise streams: crc32 of its name once injected, else construction order
        self.noise_key = next(_LAYER_COUNTER)
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

    def set_identity(self, name: str, row_set: str | None) -> None:
        """Called at injection: the module name (noise key, messages) and the row set of its inputs."""
        self.adapter_name, self.row_set, self.noise_key = name, row_set, layer_key(name)

    def row_owner(self, n_rows: int, device) -> torch.Tensor:
        """Batch structure index of each of ``n_rows`` input rows, from the layer's named row set."""
        if self.row_set is None:
            return torch.arange(n_rows, device=device)
        sets = current_row_sets()
        owner = sets.get(self.row_set)
        name = self.adapter_name or type(self).__name__
        if owner is None:
            raise ValueError(f"adapter {name!r}: its input rows are the row set {self.row_set!r}, which the running "
                             f"backbone did not name (named: {sorted(sets)})")
        if owner.numel() != n_rows:
            raise ValueError(f"adapter {name!r}: row set {self.row_set!r} has {owner.numel()} rows, but the layer "
                             f"input has {n_rows}")
        return owner.to(device)

    def noise_heads(self, structures: torch.Tensor) -> torch.Tensor:
        """Counter-based stream heads of this layer for the batch structures ``structures`` (indices)."""
        state = context.current()
        idx = structures.detach().cpu().long()
        if state.structure_keys is None:
            words = torch.stack([torch.zeros_like(idx), idx, torch.zeros_like(idx)], 1)
        else:
            keys = state.structure_keys.cpu()
            if idx.numel() and int(idx.max()) >= keys.shape[0]:
                raise ValueError(f"adapter {self.adapter_name!r}: structure index {int(idx.max())} but keys for "
                                 f"{keys.shape[0]} structures")
            words = keys[idx]
        seed = state.noise_seed
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (), generator=state.generator))
        return stream_heads(seed, words, self.noise_key)

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

    def base_only(self, x: torch.Tensor) -> torch.Tensor | None:
        """Inside :func:`mofbalora.rows.frozen_pass`: the base layer's output (the pretrained model alone)."""
        if not in_frozen_pass():
            return None
        if self.merged:
            raise ValueError(f"adapter {self.adapter_name!r} is merged into its base layer: unmerge it before a frozen pass")
        return self.base_layer(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (y := self.base_only(x)) is not None:
            return y
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
