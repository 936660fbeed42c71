"""BaLoRA (Coscia, Löwe, Welling, arXiv 2605.08110): LoRA whose down-projection θ_A is stochastic
with an input-adaptive multiplicative noise level α(x) > 0,

    q(ω_A | x) = N(θ_A, α(x) θ_A²)  elementwise,

sampled by the low-rank local reparameterisation (noise in the r-dimensional rank space):

    h = θ_A x + sqrt(d(x)) ⊙ ε_r,   d(x) = α(x) · (θ_A ⊙ θ_A)(x ⊙ x),   ε_r ~ N(0, I_r)
    y = W0 x + b + s · θ_B h.

With ε = 0 (``sampling(stochastic=False)``, or eval mode) the layer is exactly LoRA with weights θ
and merges like LoRA (merge folds in the posterior mean θ_B θ_A).

Open choices of the paper, as implemented here (documented in the README; ablated in reports/):

* **α-network** (``alpha_network``): ``"probe"`` (default) — a per-layer linear probe on the layer's
  own input, ``logit = w·x + b`` (in + 1 parameters), α = exp(logit), i.e. α = p/(1−p) for a dropout
  rate p = sigmoid(logit) as in BARNN; ``"constant"`` — one learned logit per layer, the
  non-adaptive control. ``"shared"`` — one small network (:class:`SharedAlphaNetwork`) maps a pooled
  structure descriptor to one logit per adapted layer and structure (the model supplies it through
  the sampling context). Initialised at α = α0.
* **Prior and KL**: p(ω_A) = N(0, α0 θ_A²) with α0 = p0/(1−p0) (``prior_dropout`` p0, default 0.1).
  Per weight KL(N(θ, αθ²) ‖ N(0, α0θ²)) = ½[ln(α0/α) + (α+1)/α0 − 1] — independent of θ (derivation:
  the Gaussian KL ln(σ2/σ1) + (σ1² + (μ1−μ2)²)/(2σ2²) − ½ with σ1² = αθ², σ2² = α0θ², μ1 = θ, μ2 =
  0). Summed over the r × in entries of θ_A and averaged over the rows of the layer input. The
  trainer adds β · KL / N_train to the data loss.
* **Noise scope** (``noise_scope``), where the rows of the layer input (atoms, edges, ...) belong to
  structures (named row sets, :mod:`mofbalora.rows`):

  - ``"structure"``: one shared standard normal E_g (r × in) per structure g, and
    ω_A(x_i) = θ_A + sqrt(α(x_i)) |θ_A| ⊙ E_g, so the noise of row i is sqrt(α_i) · (|θ_A| ⊙ E_g)
    x_i: a grouped matrix product with the cost of θ_A x. α is computed per row, so this is one
    weight sample per structure exactly when α is the same on all its rows
    (``alpha_network="constant"``, or ``"shared"``: one α per structure); with the per-row
    ``"probe"`` it is one shared noise direction E_g whose size sqrt(α_i) varies by row (each row's
    marginal is q(ω_A | x_i); rows x and −2x of equal α are correlated −1, as one shared weight
    makes them). The shipped default model uses it (``probe``; chosen on validation,
    ``reports/accuracy/``).
  - ``"row"`` (the default of :class:`~mofbalora.adapters.config.AdapterConfig` and of run
    configurations): the paper's rank-space equation applied per row, noise_i = sqrt(d(x_i)) ⊙ ε_i
    with independent ε_i ~ N(0, I_r): exact for an independent weight draw per row (local
    reparameterisation). Chosen on ``reports/noise_scope`` (3 seeds on QMOF with the readout head:
    the lowest test MAE, a Spearman(σ, |err|) within one seed-sd of the others, the cheapest
    product); the shipped model's all-layer recipe sets ``structure``.
  - ``"rank_shared"``: an approximation kept for comparison (the project's earlier ``structure``):
    noise_i = sqrt(d(x_i)) ⊙ ε_g with one rank-space ε_g per structure. Each row's marginal is
    right, but all rows of a structure become perfectly correlated, which is not any weight sample.

  Draws come from the counter-based generator (:mod:`mofbalora.adapters.noise`, Threefry-4x32) keyed
  by (seed, structure key, pass, layer, row, element), each field unchanged into the cipher, so
  distinct tuples never share a draw: a structure draws the same numbers whatever it is batched
  with. The structure key is its file's content digest, or, for a structure featurized in Python,
  the canonical hash of its lattice, species and coordinates (:mod:`mofbalora.data.content_key`).
* The α logit is kept in [-9, 3] (α ∈ [1.2e-4, 20]) by a smooth clamp (softplus on both sides),
  whose gradient never vanishes, so a probe pushed to a bound can come back.
* A layer called more than once in one model forward adds its KL over the calls (rows of all calls).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mofbalora.adapters import context
from mofbalora.adapters.lora import LoRALinear, bag_sum, gathered_product, repeat_rows
from mofbalora.adapters.noise import keyed_normal, with_row
from mofbalora.rows import in_frozen_pass

AlphaNetwork = Literal["probe", "constant", "shared"]
NoiseScope = Literal["structure", "row", "rank_shared"]
ALPHA_NETWORKS = ("probe", "constant", "shared")
NOISE_SCOPES = ("structure", "row", "rank_shared")
LOGIT_MIN, LOGIT_MAX = -9.0, 3.0


def dropout_to_alpha(p: float) -> float:
    """α = p / (1 − p) for a dropout rate p in (0, 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"dropout rate must be in (0, 1), got {p}")
    return p / (1.0 - p)


def kl_per_weight(alpha: torch.Tensor, alpha0: float) -> torch.Tensor:
    """KL(N(θ, αθ²) ‖ N(0, α0θ²)) per weight = ½[ln(α0/α) + (α+1)/α0 − 1] (nats), elementwise in
    α."""
    return 0.5 * (math.log(alpha0) - torch.log(alpha) + (alpha + 1.0) / alpha0 - 1.0)


def soft_clamp(logit: torch.Tensor, lo: float = LOGIT_MIN, hi: float = LOGIT_MAX) -> torch.Tensor:
    """``logit`` kept inside (lo, hi) smoothly: hi − softplus(hi − lo − softplus(logit − lo)); equal
    to ``logit`` to within exp(−distance to the nearer bound), with a gradient that never
    vanishes."""
    return hi - F.softplus(hi - lo - F.softplus(logit - lo))


def structure_groups(owner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(owner, return_inverse=True)``, without its sort when the owners come in
    non-decreasing runs (as a batch lays out its structures' rows): then the two are equal, and
    this takes one pass."""
    if owner.numel() < 2 or bool((owner[1:] >= owner[:-1]).all()):
        return torch.unique_consecutive(owner, return_inverse=True)
    return torch.unique(owner, return_inverse=True)


def _positions(group: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Each row's position among the rows of its group (in row order); no sort when groups come
    in runs."""
    n = group.shape[0]
    starts = torch.cumsum(counts, 0) - counts
    if n < 2 or bool((group[1:] >= group[:-1]).all()):
        return torch.arange(n, device=group.device) - starts[group]
    order = torch.argsort(group, stable=True)
    pos = torch.empty_like(group)
    pos[order] = torch.arange(n, device=group.device) - starts[group[order]]
    return pos


def grouped_matmul(x: torch.Tensor, group: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Row i times its group's matrix: ``out[i] = weights[group[i]] @ x[i]``; x (n, in), group (n,)
    in [0, G), weights (G, r, in) → (n, r).

    Rows that come in runs of their group (as a batch lays out its structures' rows) are multiplied
    run by run, on views of x (no copy, no padding; on a CPU the index copies of the padded form
    below cost more than the products: about 7,600 edge rows per QMOF structure). Other rows are
    scattered into padded per-group blocks and multiplied with one batched matmul per size bucket
    (groups whose row counts share a power of two), so padding wastes at most half of a block and
    there is no Python loop over groups. Each output is one dot product over ``in``, so a row's
    result does not depend on the other groups of the batch beyond float round-off. Differentiable
    in ``x`` and ``weights`` (3× faster on a CPU than gathering a weight matrix per row).
    """
    n, r = x.shape[0], weights.shape[1]
    if n == 0:
        return x.new_zeros(n, r)
    counts = torch.bincount(group, minlength=weights.shape[0])
    # groups in runs (a batch's layout): one product per run
    if n < 2 or bool((group[1:] >= group[:-1]).all()):
        sizes = counts.tolist()
        copies = 1 if torch.is_grad_enabled() else _stacked_copies(sizes)  # (bmm's out=)
        if copies > 1:
            return _copies_matmul(x, sizes[: len(sizes) // copies], weights, copies)
        return torch.cat(
            [rows @ weights[g].T for g, rows in enumerate(torch.split(x, sizes)) if sizes[g]]
        )
    out = x.new_zeros(n, r)
    pos = _positions(group, counts)
    bucket = torch.ceil(torch.log2(counts.clamp_min(1).to(torch.float64))).to(torch.long)
    row_bucket = bucket[group]
    local = torch.empty_like(counts)
    # the buckets that hold rows (no sort of the rows)
    for b in torch.unique(bucket[counts > 0]).tolist():
        gs = torch.nonzero((bucket == b) & (counts > 0)).squeeze(1)
        local[gs] = torch.arange(len(gs), device=x.device)
        rows = torch.nonzero(row_bucket == b).squeeze(1)
        slot, p = local[group[rows]], pos[rows]
        padded = x.new_zeros(len(gs), int(counts[gs].max()), x.shape[1]).index_put(
            (slot, p), x[rows]
        )
        prod = torch.bmm(padded, weights[gs].transpose(1, 2))
        out = out.index_put((rows,), prod[slot, p])
    return out


def _stacked_copies(sizes: list[int]) -> int:
    """How many times the run sizes ``sizes`` repeat one period (the T stacked draws of a
    prediction lay out the same structures T times over); 1 when they do not."""
    g = len(sizes)
    for period in range(1, g // 2 + 1):
        if g % period == 0 and sizes[period:] == sizes[:-period]:
            return g // period
    return 1


def _copies_matmul(
    x: torch.Tensor, sizes: list[int], weights: torch.Tensor, copies: int
) -> torch.Tensor:
    """:func:`grouped_matmul` of rows laid out as ``copies`` periods of runs of ``sizes`` rows
    (group t · len(sizes) + s is run s of period t): one batched product per run position s
    over all periods, on strided views of x (a loop of one small product per run took twice the
    time on a prediction's T = 32 stacked draws)."""
    r, period = weights.shape[1], sum(sizes)
    stacked = x.reshape(copies, period, x.shape[1])
    per_copy = weights.reshape(copies, len(sizes), r, weights.shape[2])
    out = x.new_empty(copies, period, r)
    start = 0
    for s, size in enumerate(sizes):
        if size:
            rows = slice(start, start + size)
            torch.bmm(stacked[:, rows], per_copy[:, s].transpose(1, 2), out=out[:, rows])
        start += size
    return out.view(-1, r)


class BaLoRALinear(LoRALinear):
    """Bayesian LoRA around a frozen ``nn.Linear`` (see the module docstring for the equations)."""

    kind = "balora"

    def __init__(
        self,
        base_layer: nn.Linear,
        rank: int = 8,
        lora_alpha: float | None = None,
        *,
        alpha_network: AlphaNetwork = "probe",
        prior_dropout: float = 0.1,
        noise_scope: NoiseScope = "row",
        b_init_std: float = 0.0,
    ) -> None:
        super().__init__(base_layer, rank=rank, lora_alpha=lora_alpha, b_init_std=b_init_std)
        if alpha_network not in ALPHA_NETWORKS:
            raise ValueError(
                f"unknown alpha_network {alpha_network!r}; choose from {list(ALPHA_NETWORKS)}"
            )
        if noise_scope not in NOISE_SCOPES:
            raise ValueError(
                f"unknown noise_scope {noise_scope!r}; choose from {list(NOISE_SCOPES)}"
            )
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
        #: column of this layer in the shared α-network's output (set by
        #: :class:`SharedAlphaNetwork`)
        self.shared_alpha_index: int | None = None
        self._kl: torch.Tensor | None = None
        self._kl_sum: torch.Tensor | None = None
        self._kl_rows = 0
        self._kl_scope: object | None = None

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", alpha_network={self.alpha_network}, noise_scope={self.noise_scope},"
            f" prior_dropout={self.prior_dropout}, row_set={self.row_set}"
        )

    # -- α(x) and KL -------------------------------------------------------------------------------
    def alpha(self, x: torch.Tensor) -> torch.Tensor:
        """α(x) > 0 per row of ``x`` (..., in) → (..., 1)."""
        return torch.exp(soft_clamp(self._logit(x))).unsqueeze(-1)

    def _logit(self, x: torch.Tensor) -> torch.Tensor:
        if self.alpha_network == "probe":
            return x @ self.adapter_alpha_w + self.adapter_alpha_b
        return self._row_logit(math.prod(x.shape[:-1]), x.device).reshape(x.shape[:-1])

    def _row_logit(self, n_rows: int, device) -> torch.Tensor:
        """(n_rows,) α logits of the α-networks that do not read the row itself (constant,
        shared)."""
        if self.alpha_network == "constant":
            return self.adapter_alpha_b.expand(n_rows)
        logits = context.current().shared_alpha_logits
        if logits is None or self.shared_alpha_index is None:
            raise ValueError(
                "a BaLoRA layer with alpha_network='shared' needs a SharedAlphaNetwork: build the "
                "model with mofbalora.model.build_model, or pass sampling(shared_alpha_logits=...)"
            )
        return logits[:, self.shared_alpha_index][self.row_owner(n_rows, device)]

    def kl(self) -> torch.Tensor:
        """KL of the last model forward (averaged over the rows of every call in it, summed over the
        r × in weights)."""
        return self._kl if self._kl is not None else self.adapter_A.new_zeros(())

    def _set_kl(self, alpha: torch.Tensor | None, n_weights: int) -> None:
        """Add this call's per-row KL to the forward's (a new ``kl_scope`` starts afresh; without a
        scope every call starts afresh)."""
        if alpha is None:
            self._kl, self._kl_sum, self._kl_rows, self._kl_scope = None, None, 0, None
            return
        scope = context.current().kl_scope
        # summed in float64: a data-parallel run adds the same terms in other groupings (round-off)
        total = kl_per_weight(alpha.double(), self.alpha0).sum()
        if scope is not None and scope is self._kl_scope and self._kl_sum is not None:
            self._kl_sum, self._kl_rows = self._kl_sum + total, self._kl_rows + int(alpha.numel())
        else:
            self._kl_sum, self._kl_rows = total, int(alpha.numel())
        self._kl_scope = scope
        self._kl = (n_weights * self._kl_sum / max(self._kl_rows, 1)).to(alpha.dtype)

    def kl_rows(self) -> int:
        """Number of rows the last forward's KL was averaged over (0 when it computed none)."""
        return self._kl_rows if self._kl is not None else 0

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (y := self.base_only(x)) is not None:
            return y
        y = self.base_layer(x)
        A = self.adapter_A[self._member()]
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
        alpha = torch.exp(soft_clamp(logit)).unsqueeze(-1) if logit is not None else None
        self._set_kl(alpha if need_kl else None, A.numel())
        if stochastic:
            noise = self._noise(x, A, alpha)
            if self.merged:  # the mean is already in W0
                return self.add_update(y, noise, inplace=self._owns_output())
            h = h + noise
        elif self.merged:
            return y
        return self.add_update(y, h, inplace=self._owns_output())

    def gathered_terms(
        self,
        pre: torch.Tensor,
        parts: Sequence[torch.Tensor],
        index: Sequence[torch.Tensor],
        copies: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """:meth:`forward` for rows given as gathered parts, stacked ``copies`` times, from their
        frozen pre-activation ``pre``, left as a sum (:meth:`LoRALinear.gathered_terms`; the rows
        themselves: the inherited :meth:`LoRALinear.forward_gathered`). θ_A x, the α logit and
        (θ_A²)(x²) are taken on the parts' rows, once for all copies; only the noise is drawn per
        copy, from the same streams :meth:`forward` uses for the built, stacked rows (so the same
        numbers, up to float round-off)."""
        if in_frozen_pass():
            return super().gathered_terms(pre, parts, index, copies)
        n = pre.shape[0]
        A = self.adapter_A[self._member()]
        stochastic = self._stochastic()
        need_kl = torch.is_grad_enabled()
        if self.merged and not stochastic and not need_kl:
            return pre, None, None
        if stochastic and self.alpha_network == "probe":
            hl = gathered_product(parts, index, torch.cat([A, self.adapter_alpha_w.unsqueeze(0)]))
            h, logit = hl[:, :-1], hl[:, -1] + self.adapter_alpha_b
        else:  # deterministic: the very same product as LoRA's gathered path
            h = gathered_product(parts, index, A)
            logit = None
            if stochastic or need_kl:
                logit = (
                    gathered_product(parts, index, self.adapter_alpha_w.unsqueeze(0))[:, 0]
                    + self.adapter_alpha_b
                    if self.alpha_network == "probe"
                    else self._row_logit(copies * n, pre.device)
                )
        alpha = torch.exp(soft_clamp(logit)).unsqueeze(-1) if logit is not None else None
        # an α of the row itself: the same in every copy
        if alpha is not None and alpha.shape[0] != copies * n:
            alpha = repeat_rows(alpha, copies)
        self._set_kl(alpha if need_kl else None, A.numel())
        if not stochastic:
            return (pre if self.merged else self.add_update(pre, h, inplace=True)), None, None
        noise = self._gathered_noise(parts, index, A, alpha, copies)
        # one projection of mean and noise together (the mean is already in W0 when merged)
        if not self.merged:  # θ_A x, added into each copy's fresh noise rows (no stacked copy of h)
            noise = noise.view(copies, n, -1).add_(h).view(copies * n, -1)
        return pre, noise, self.update_matrix()

    def _gathered_noise(
        self,
        parts: Sequence[torch.Tensor],
        index: Sequence[torch.Tensor],
        A: torch.Tensor,
        alpha: torch.Tensor,
        copies: int,
    ) -> torch.Tensor:
        """:meth:`_noise` of gathered rows stacked ``copies`` times: (copies · n_rows, r). Each row
        of a part must belong to one structure (the rows that gather it do): atoms and bonds of a
        graph do."""
        n = index[0].shape[0]
        owner = self.row_owner(copies * n, alpha.device)
        uniq, group = structure_groups(owner)
        heads = self.noise_heads(uniq)
        if self.noise_scope != "structure":
            # (θ_A²)(x²)
            var = repeat_rows(gathered_product([p * p for p in parts], index, A * A), copies)
            return torch.sqrt((alpha * var).clamp_min(1e-24)) * self._rank_eps(
                heads, group, alpha.dtype
            )
        # |θ_A| ⊙ E_g, (structures, r, in)
        weights = A.abs() * self._weight_eps(heads, A, alpha.dtype)
        by_copy = group.view(copies, n)
        per_copy = int(by_copy[0].max()) + 1 if n else 0
        if (
            copies > 1
            and n
            and bool(
                (
                    by_copy
                    == by_copy[0] + per_copy * torch.arange(copies, device=group.device)[:, None]
                ).all()
            )
        ):
            return alpha.sqrt() * _copies_noise(
                parts, index, by_copy[0], weights.view(copies, per_copy, *A.shape)
            )
        products, bags, start, offset = [], [], 0, 0
        for p, i in zip(parts, index, strict=True):
            part_group = by_copy.new_full((copies, p.shape[0]), -1)
            part_group[:, i] = by_copy  # the structure of each part row in each copy
            # a row no edge reads gets its predecessor's group (the groups stay in runs; it is never
            # read)
            part_group = torch.cummax(part_group, dim=1).values.clamp_min(0)
            products.append(
                grouped_matmul(
                    repeat_rows(p, copies),
                    part_group.reshape(-1),
                    weights[:, :, start : start + p.shape[1]],
                )
            )
            # row i of copy t reads row t · n_part + index[i] of this part's products
            bags.append(
                (offset + p.shape[0] * torch.arange(copies, device=i.device)[:, None] + i).reshape(
                    -1
                )
            )
            start, offset = start + p.shape[1], offset + copies * p.shape[0]
        total = bag_sum(torch.cat(products), torch.stack(bags, 1))
        return alpha.sqrt() * total

    def _rank_eps(self, heads: torch.Tensor, group: torch.Tensor, dtype) -> torch.Tensor:
        """(rows, r) rank-space ε of the ``row`` and ``rank_shared`` scopes; ``group``: each row's
        index into ``heads`` (its structure's stream)."""
        if self.noise_scope == "rank_shared":
            return _keyed_normal(heads, self.rank, dtype).to(group.device)[group]
        # row: independent ε per row, keyed by the row's position inside its structure
        return _keyed_normal(_row_heads(heads, group), self.rank, dtype).to(group.device)

    def _weight_eps(self, heads: torch.Tensor, A: torch.Tensor, dtype) -> torch.Tensor:
        """(structures, r, in) standard normal E_g of the ``structure`` scope, one per stream of
        ``heads``."""
        return _keyed_normal(heads, A.numel(), dtype).to(A.device).view(-1, *A.shape)

    def _noise(self, x: torch.Tensor, A: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """(ω_A − θ_A) x per row for the layer's noise scope (module docstring), shape (..., r)."""
        lead = x.shape[:-1]
        rows = x.reshape(-1, x.shape[-1])
        a = alpha.reshape(-1, 1)
        owner = self.row_owner(rows.shape[0], x.device)
        uniq, group = structure_groups(owner)
        heads = self.noise_heads(uniq)
        if self.noise_scope == "structure":
            noise = a.sqrt() * grouped_matmul(
                rows, group, A.abs() * self._weight_eps(heads, A, x.dtype)
            )
        else:
            d = a * ((rows * rows) @ (A * A).T)  # (rows, r): variance of ω_A x
            noise = torch.sqrt(d.clamp_min(1e-24)) * self._rank_eps(heads, group, x.dtype)
        return noise.reshape(*lead, self.rank)


def _copies_noise(
    parts: Sequence[torch.Tensor],
    index: Sequence[torch.Tensor],
    group: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """The ``structure`` scope's noise product of gathered rows for ``copies`` stacked draws that
    lay their structures out alike (copy t's group of a row is t · G + its group in copy 0: a
    prediction's copies): (copies · n_rows, r), copy-major. ``group``: (n_rows,) each row's group in
    copy 0; ``weights``: (copies, G, r, in), |θ_A| ⊙ E of each copy and group.

    Each part row is multiplied by its structure's weights of every copy in one product (rows ×
    copies · r), on the part's own rows: the parts are never repeated per copy (that copy cost
    more than the products)."""
    copies, r = weights.shape[0], weights.shape[2]
    tables, bags, start, offset = [], [], 0, 0
    steps = torch.arange(copies, device=group.device)
    for p, i in zip(parts, index, strict=True):
        part_group = group.new_full((p.shape[0],), -1)
        part_group[i] = group  # the structure of each part row
        # a row no edge reads gets its predecessor's group (the groups stay in runs; it is never
        # read)
        part_group = torch.cummax(part_group, dim=0).values.clamp_min(0)
        sizes = torch.bincount(part_group, minlength=weights.shape[1]).tolist()
        w = weights[:, :, :, start : start + p.shape[1]]
        tables.extend(
            rows @ w[:, g].reshape(copies * r, -1).T
            for g, rows in enumerate(torch.split(p, sizes))
            if sizes[g]
        )
        # row e of copy t reads row index[e] · copies + t of this part's (rows, copies, r) table
        bags.append((offset + i * copies + steps[:, None]).reshape(-1))
        start, offset = start + p.shape[1], offset + copies * p.shape[0]
    return bag_sum(torch.cat(tables).view(-1, r), torch.stack(bags, 1))


def _keyed_normal(heads: torch.Tensor, n: int, dtype) -> torch.Tensor:
    """:func:`~mofbalora.adapters.noise.keyed_normal`, its integer kernels on one CPU thread: a draw
    is some 300 elementwise kernels over small int64 tensors, and with two threads each one forks
    and joins; where the other core is busy every join waits for it. 61,000 edge rows × 8 on a
    2-core machine: 5.6 s with two threads and 0.09 s with one while other work held the cores; 31
    ms and 53 ms on a nearly idle one. The numbers drawn do not depend on the thread count."""
    threads = torch.get_num_threads()
    if heads.device.type != "cpu" or threads == 1:
        return keyed_normal(heads, n, dtype=dtype)
    torch.set_num_threads(1)
    try:
        return keyed_normal(heads, n, dtype=dtype)
    finally:
        torch.set_num_threads(threads)


def _row_heads(heads: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """One stream head per row: its structure's head and its position among that structure's
    rows."""
    pos = _positions(group, torch.bincount(group, minlength=heads.shape[0]))
    return with_row(heads.to(group.device)[group], pos)


class SharedAlphaNetwork(nn.Module):
    """One small network for all BaLoRA layers of a model: a pooled structure descriptor
    (n_structures, d) → one α logit per adapted layer and structure. Its output starts at log α0
    (zero last-layer weights)."""

    def __init__(
        self, layers: list[BaLoRALinear], descriptor_dim: int, hidden_dim: int = 8
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError(
                "a shared α-network needs at least one BaLoRA layer with alpha_network='shared'"
            )
        for j, layer in enumerate(layers):
            layer.shared_alpha_index = j
        self.adapter_alpha_net = nn.Sequential(
            nn.Linear(descriptor_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, len(layers))
        )
        nn.init.zeros_(self.adapter_alpha_net[-1].weight)
        nn.init.constant_(self.adapter_alpha_net[-1].bias, math.log(layers[0].alpha0))

    def forward(self, descriptor: torch.Tensor) -> torch.Tensor:
        return self.adapter_alpha_net(descriptor)
