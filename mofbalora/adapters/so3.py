"""LoRA / BaLoRA around an SO(3)-linear layer (fairchem's ``SO3_Linear``, UMA's atom-wise
feed-forward).

An SO(3)-linear layer maps spherical-harmonic features x (rows × (lmax+1)² × in) with one matrix W_l
per degree l, shared by the 2l + 1 components m of that degree (a bias on l = 0 only); this is what
keeps it equivariant. The adapter does the same: a low-rank update per degree, ``s · θ_B,l θ_A,l``,
mixing channels only, never m-components; it merges exactly into W_l.

BaLoRA's rank-space local reparameterisation (``balora.py``) cannot be used here: its noise variance
depends on each row, so the 2l + 1 rows of one degree would get differently scaled noise and the
samples would stop being equivariant. Instead the weight noise is sampled exactly, once per
structure (the noise scope) and degree: ω_A,l = θ_A,l ⊙ (1 + sqrt(α) E_l), E_l ~ N(0, 1) elementwise
(r × in numbers per structure, degree and layer), and applied to all m of that degree, which is the
same posterior q(ω_A | x) = N(θ_A, α θ_A²) elementwise with the same KL. α(x) comes from the l = 0
(invariant) input only, so it is the same for every m. ``noise_scope="row"`` draws E per row (atom)
instead; the rank-space ``rank_shared`` approximation is refused here. Draws are keyed per structure
(and row) by the counter-based generator, as in ``balora.py``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mofbalora.adapters import context
from mofbalora.adapters.balora import BaLoRALinear, _row_heads, soft_clamp
from mofbalora.adapters.inject import ADAPTER_FACTORIES, linear_factory, register_adapter_type
from mofbalora.adapters.lora import LoRALinear
from mofbalora.adapters.noise import keyed_normal


def _shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
    n_l = self.base_layer.lmax + 1
    return (
        (self.n_members, n_l, self.rank, self.base_layer.in_features),
        (self.n_members, n_l, self.base_layer.out_features, self.rank),
    )


def _reset(self) -> None:
    for k in range(self.n_members):
        for lval in range(self.adapter_A.shape[1]):
            nn.init.kaiming_uniform_(self.adapter_A.data[k, lval], a=math.sqrt(5))
    self.reset_adapter_B()


def _delta(self) -> torch.Tensor:
    """s · θ_B,l θ_A,l per degree ((lmax+1) × out × in), the layout of ``SO3_Linear.weight``."""
    k = self._member()
    return self.scale * self.adapter_B[k] @ self.adapter_A[k]


def _per_component(self, t: torch.Tensor) -> torch.Tensor:
    """A per-degree tensor repeated for each component m of its degree: (lmax+1, ...) →
    ((lmax+1)², ...)."""
    return t[self.base_layer.expand_index]


class SO3LoRALinear(LoRALinear):
    """LoRA (and its MC-dropout / ensemble baselines) around an SO(3)-linear layer; MC dropout masks
    input channels, one mask per row shared by all m."""

    # (fairchem's SO3_Linear,) once register_so3_adapters() has run
    base_types: tuple[type, ...] = ()
    adapter_shapes = _shapes
    reset_adapter = _reset
    delta_weight = _delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (y := self.base_only(x)) is not None:
            return y
        y = self.base_layer(x)
        if self.merged:
            return y
        k = self._member()
        xa = x
        if self.mc_dropout > 0 and self._stochastic():
            keep = 1.0 - self.mc_dropout
            mask = context.draw("rand", (x.shape[0], 1, x.shape[2]), device=x.device)
            xa = x * (mask < keep) / keep
        h = torch.einsum("nmi,mri->nmr", xa, _per_component(self, self.adapter_A[k]))
        return y + self.scale * torch.einsum(
            "nmr,mor->nmo", h, _per_component(self, self.adapter_B[k])
        )


class SO3BaLoRALinear(BaLoRALinear):
    """BaLoRA around an SO(3)-linear layer, with exact per-structure weight noise (module
    docstring)."""

    base_types: tuple[type, ...] = ()
    adapter_shapes = _shapes
    reset_adapter = _reset
    delta_weight = _delta

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.noise_scope == "rank_shared":
            raise ValueError(
                "noise_scope='rank_shared' is not available on SO(3)-linear layers (its "
                "row-dependent noise scale would break "
                "equivariance); choose from ['structure', 'row']"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (y := self.base_only(x)) is not None:
            return y
        y = self.base_layer(x)
        k = self._member()
        A, B = self.adapter_A[k], self.adapter_B[k]
        stochastic = self._stochastic()
        need_kl = torch.is_grad_enabled()
        if self.merged and not stochastic and not need_kl:
            return y
        alpha = None
        # α from the invariant l = 0 channel: one value per row, for all m
        if stochastic or need_kl:
            alpha = torch.exp(soft_clamp(self._logit(x[:, 0, :])))
        self._set_kl(alpha if need_kl else None, A.numel())
        h = None if self.merged else torch.einsum("nmi,mri->nmr", x, _per_component(self, A))
        if stochastic:
            noise = self._weight_noise(x, A) * alpha.sqrt()[:, None, None]
            h = noise if h is None else h + noise
        elif h is None:
            return y
        return y + self.scale * torch.einsum("nmr,mor->nmo", h, _per_component(self, B))

    def _weight_noise(self, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        """(ω_A − θ_A)/sqrt(α) applied to x: Σ_i x_nmi θ_A,l(m),ji E_g(n),l(m),ji with E ~ N(0, 1),
        one E per structure (``structure``) or per row (``row``), from the counter-based keyed
        generator."""
        n_rows, n_l = x.shape[0], A.shape[0]
        owner = self.row_owner(n_rows, x.device)
        uniq, group = torch.unique(owner, return_inverse=True)
        heads = self.noise_heads(uniq)
        if self.noise_scope == "row":
            heads, group = _row_heads(heads, group), torch.arange(n_rows, device=x.device)
        E = keyed_normal(heads, A.numel(), dtype=x.dtype).to(x.device).view(-1, *A.shape)
        noise = x.new_empty(n_rows, x.shape[1], self.rank)
        for lval in range(n_l):
            comps = slice(lval * lval, (lval + 1) ** 2)
            # (rows, r, in): the draw of each row's structure
            weights = (A[lval] * E[:, lval])[group]
            noise[:, comps] = torch.einsum("nmi,nri->nmr", x[:, comps], weights)
        return noise


def register_so3_adapters() -> None:
    """Teach :func:`~mofbalora.adapters.inject_adapters` to wrap fairchem's ``SO3_Linear``.
    Idempotent."""
    from fairchem.core.models.uma.nn.so3_layers import SO3_Linear

    SO3LoRALinear.base_types = SO3BaLoRALinear.base_types = (SO3_Linear,)
    if SO3_Linear not in ADAPTER_FACTORIES:
        register_adapter_type(SO3_Linear, linear_factory(SO3LoRALinear, SO3BaLoRALinear))
