"""BaLoRA (Coscia, Löwe, Welling, arXiv 2605.08110): LoRA whose down-projection θ_A is stochastic with an
input-adaptive multiplicative noise level α(x) > 0,

    q(ω_A | x) = N(θ_A, α(x) θ_A²)  elementwise,

sampled by the low-rank local reparameterisation (noise in the r-dimensional rank space):

    h = θ_A x + sqrt(d(x)) ⊙ ε_r,   d(x) = α(x) · (θ_A ⊙ θ_A)(x ⊙ x),   ε_r ~ N(0, I_r)
    y = W0 x + b + s · θ_B h.

With ε = 0 (``sampling(stochastic=False)``, or eval mode) the layer is exactly LoRA with weights θ and
merges like LoRA (merge folds in the posterior mean θ_B θ_A).

Open choices of the paper, as implemented here (documented in the README; ablated in reports/):

* **α-network** (``alpha_network``): ``"probe"`` (default) — a per-layer linear probe on the layer's own
  input, ``logit = w·x + b`` (in + 1 parameters), α = exp(logit), i.e. α = p/(1−p) for a dropout rate
  p = sigmoid(logit) as in BARNN; ``"constant"`` — one learned logit per layer, the non-adaptive control.
  ``"shared"`` — one small network (:class:`SharedAlphaNetwork`) maps a pooled structure descriptor to one
  logit per adapted layer and structure (the model supplies it through the sampling context).
  The logit is clamped to [-9, 3] (α ∈ [1.2e-4, 20]) for numerical safety. Initialised at α = α0.
* **Prior and KL**: p(ω_A) = N(0, α0 θ_A²) with α0 = p0/(1−p0) (``prior_dropout`` p0, default 0.1). Per
  weight KL(N(θ, αθ²) ‖ N(0, α0θ²)) = ½[ln(α0/α) + (α+1)/α0 − 1] — independent of θ (derivation: the
  Gaussian KL ln(σ2/σ1) + (σ1² + (μ1−μ2)²)/(2σ2²) − ½ with σ1² = αθ², σ2² = α0θ², μ1 = θ, μ2 = 0).
  Summed over the r × in entries of θ_A and averaged over the rows of the layer input. The trainer adds
  β · KL / N_train to the data loss.
* **Noise scope** (``noise_scope``): ``"structure"`` (default) — one ε_r per structure shared by all its
  rows (atoms, edges) so a draw acts like one weight sample for the structure; ``"row"`` — independent
  ε_r per row.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from mofbalora.adapters import context
from mofbalora.adapters.lora import LoRALinear

AlphaNetwork = Literal["probe", "constant", "shared"]
NoiseScope = Literal["structure", "row"]
ALPHA_NETWORKS = ("probe", "constant", "shared")
NOISE_SCOPES = ("structure", "row")
LOGIT_MIN, LOGIT_MAX = -9.0, 3.0


def dropout_to_alpha(p: float) -> float:
    """α = p / (1 − p) for a dropout rate p in (0, 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"dropout rate must be in (0, 1), got {p}")
    return p / (1.0 - p)


def kl_per_weight(alpha: torch.Tensor, alpha0: float) -> torch.Tensor:
    """KL(N(θ, αθ²) ‖ N(0, α0θ²)) per weight = ½[ln(α0/α) + (α+1)/α0 − 1] (nats), elementwise in α."""
    return 0.5 * (math.log(alpha0) - torch.log(alpha) + (alpha + 1.0) / alpha0 - 1.0)


class BaLoRALinear(LoRALinear):
    """Bayesian LoRA around a frozen ``nn.Linear`` (see the module docstring for the equations)."""

    kind = "balora"

    def __init__(self, base_layer: nn.Linear, rank: int = 8, lora_alpha: float | None = None, *,
                 alpha_network: AlphaNetwork = "probe", prior_dropout: float = 0.1,
                 noise_scope: NoiseScope = "structure") -> None:
        super().__init__(base_layer, rank=rank, lora_alpha=lora_alpha)
        if alpha_network not in ALPHA_NETWORKS:
            raise ValueError(f"unknown alpha_network {alpha_network!r}; choose from {list(ALPHA_NETWORKS)}")
        if noise_scope not in NOISE_SCOPES:
            raise ValueError(f"unknown noise_scope {noise_scope!r}; choose from {list(NOISE_SCOPES)}")
        self.alpha_network = alpha_network
        self.noise_scope = noise_scope
        self.prior_dropout = prior_dropout
        self.alpha0 = dropout_to_alpha(prior_dropout)
        init_logit = math.log(self.alpha0)
        dev = next(base_layer.parameters()).device
        if alpha_network == "probe":
            self.adapter_alpha_w = nn.Parameter(torch.zeros(base_layer.in_features, device=dev))
        if alpha_network != "shared":
            self.adapter_alpha_b = nn.Parameter(torch.full((), init_logit, device=dev))
        #: column of this layer in the shared α-network's output (set by :class:`SharedAlphaNetwork`)
        self.shared_alpha_index: int | None = None
        self._kl: torch.Tensor | None = None
        self._kl_rows = 0

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", alpha_network={self.alpha_network}, noise_scope={self.noise_scope},"
                f" prior_dropout={self.prior_dropout}")

    # -- α(x) and KL --------------------------------------------------------------------------------
    def alpha(self, x: torch.Tensor) -> torch.Tensor:
        """α(x) > 0 per row of ``x`` (..., in) → (..., 1)."""
        return torch.exp(self._logit(x).clamp(LOGIT_MIN, LOGIT_MAX)).unsqueeze(-1)

    def _logit(self, x: torch.Tensor) -> torch.Tensor:
        if self.alpha_network == "probe":
            return x @ self.adapter_alpha_w + self.adapter_alpha_b
        if self.alpha_network == "constant":
            return self.adapter_alpha_b.expand(x.shape[:-1])
        logits = context.current().shared_alpha_logits
        if logits is None or self.shared_alpha_index is None:
            raise ValueError("a BaLoRA layer with alpha_network='shared' needs a SharedAlphaNetwork: build the "
                             "model with mofbalora.model.build_model, or pass sampling(shared_alpha_logits=...)")
        column = logits[:, self.shared_alpha_index]
        n_rows = math.prod(x.shape[:-1])
        groups = context.groups_for(n_rows, x.device)
        if groups is not None:
            column = column[groups[0]]
        elif column.shape[0] != n_rows:
            raise ValueError(f"shared α logits for {column.shape[0]} structures, but {n_rows} rows and no row groups")
        return column.reshape(x.shape[:-1])

    def kl(self) -> torch.Tensor:
        """KL of the last forward pass (averaged over its rows, summed over the r × in weights)."""
        return self._kl if self._kl is not None else self.adapter_A.new_zeros(())

    def _set_kl(self, alpha: torch.Tensor | None, n_weights: int) -> None:
        """Keep this pass's KL (n_weights × mean over rows of the per-weight KL) and its row count."""
        self._kl = None if alpha is None else n_weights * kl_per_weight(alpha, self.alpha0).mean()
        self._kl_rows = 0 if alpha is None else int(alpha.numel())

    def kl_rows(self) -> int:
        """Number of rows the last forward's KL was averaged over (0 when it computed none)."""
        return self._kl_rows if self._kl is not None else 0

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        k = self._member()
        A, B = self.adapter_A[k], self.adapter_B[k]
        stochastic = self._stochastic()
        need_kl = torch.is_grad_enabled()  # the KL is a training term: skip it in inference
        if self.merged and not stochastic and not need_kl:
            return y
        if stochastic and self.alpha_network == "probe":  # θ_A x and the α logit in one product
            hl = x @ torch.cat([A, self.adapter_alpha_w.unsqueeze(0)]).T
            h, logit = hl[..., :-1], hl[..., -1] + self.adapter_alpha_b
        else:  # deterministic: the very same product as LoRA, so ε = 0 equals LoRA bit for bit
            h = x @ A.T
            logit = self._logit(x) if (stochastic or need_kl) else None
        alpha = torch.exp(logit.clamp(LOGIT_MIN, LOGIT_MAX)).unsqueeze(-1) if logit is not None else None
        self._set_kl(alpha if need_kl else None, A.numel())
        if stochastic:
            d = alpha * ((x * x) @ (A * A).T)  # (..., r): variance of ω_A x
            eps = self._rank_noise(x.shape[:-1], x.device, x.dtype)
            noise = torch.sqrt(d.clamp_min(1e-24)) * eps
            if self.merged:  # the mean is already in W0
                return y + self.scale * (noise @ B.T)
            h = h + noise
        elif self.merged:
            return y
        return y + self.scale * (h @ B.T)

    def _rank_noise(self, lead_shape: torch.Size, device, dtype) -> torch.Tensor:
        """ε_r for every row: shared within a structure (``structure`` scope) or per row."""
        n_rows = math.prod(lead_shape)
        groups = context.groups_for(n_rows, device) if self.noise_scope == "structure" else None
        if groups is None:
            eps = context.draw("randn", (n_rows, self.rank), device=device, dtype=dtype)
        else:
            index, n_groups = groups
            eps = context.group_noise(n_groups, (self.rank,), device=device, dtype=dtype)[index]
        return eps.reshape(*lead_shape, self.rank)


class SharedAlphaNetwork(nn.Module):
    """One small network for all BaLoRA layers of a model: a pooled structure descriptor (n_structures, d)
    → one α logit per adapted layer and structure. Its output starts at log α0 (zero last-layer weights)."""

    def __init__(self, layers: list[BaLoRALinear], descriptor_dim: int, hidden_dim: int = 8) -> None:
        super().__init__()
        if not layers:
            raise ValueError("a shared α-network needs at least one BaLoRA layer with alpha_network='shared'")
        for j, layer in enumerate(layers):
            layer.shared_alpha_index = j
        self.adapter_alpha_net = nn.Sequential(nn.Linear(descriptor_dim, hidden_dim), nn.SiLU(),
                                               nn.Linear(hidden_dim, len(layers)))
        nn.init.zeros_(self.adapter_alpha_net[-1].weight)
        nn.init.constant_(self.adapter_alpha_net[-1].bias, math.log(layers[0].alpha0))

    def forward(self, descriptor: torch.Tensor) -> torch.Tensor:
        return self.adapter_alpha_net(descriptor)
