"""Band-gap heads: per-atom embeddings → PBE band gap (eV), optionally with an aleatoric variance.

The head optionally transforms each atom first (``atom_mlp`` > 0: LayerNorm, then a two-layer SiLU
MLP of that width; what lets it read wide, unnormalised multi-layer features), pools per structure,
then a small MLP. Poolings (torch-geometric's aggregation modules):

- ``mean_max`` (default): mean and max over atoms, concatenated: a band gap is set by the frontier
  states, which a max over atoms can pick out where a mean would dilute them;
- ``mean``; ``mean_max_std``; ``mean_max_attention`` (adds a learned softmax-attention sum over
  atoms).

Outputs go through softplus so that predicted gaps (and variances) are positive: band gaps are ≥ 0.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mofbalora.validation import check_bool, check_choice, check_int, strict

POOLINGS = ("mean_max", "mean", "mean_max_std", "mean_max_attention")


@dataclass
class HeadConfig:
    """The head's settings: the one dataclass of them, saved in ``model_config.json`` (``head``) and
    built from a run configuration's ``model`` section (``model.head_hidden``, ``model.pooling``,
    ``model.head_atom_mlp``; ``aleatoric`` follows ``model.likelihood``; see
    :class:`mofbalora.config.ModelConfig`)."""

    hidden_dim: int = 64
    pooling: Literal["mean_max", "mean", "mean_max_std", "mean_max_attention"] = "mean_max"
    aleatoric: bool = False
    #: width of the per-atom MLP before pooling (0: pool the embeddings as they are)
    atom_mlp: int = 0

    def __post_init__(self) -> None:
        check_int("head.hidden_dim (model.head_hidden)", self.hidden_dim, 1)
        check_choice("head.pooling (model.pooling)", self.pooling, POOLINGS)
        check_int("head.atom_mlp (model.head_atom_mlp)", self.atom_mlp, 0)
        check_bool("head.aleatoric", self.aleatoric)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HeadConfig:
        """From a saved mapping (``model_config.json``'s ``head``); an unknown key is refused,
        naming it and the valid ones."""
        return strict(cls, data, "head.", what="head option")


class Pooling(nn.Module):
    """Per-structure pooling of (n_atoms, d) rows → (n_structures, k·d)."""

    def __init__(self, how: str, dim: int) -> None:
        super().__init__()
        from torch_geometric.nn import aggr

        if how not in POOLINGS:
            raise ValueError(f"unknown pooling {how!r}; choose from {list(POOLINGS)}")
        parts = {
            "mean": aggr.MeanAggregation(),
            "max": aggr.MaxAggregation(),
            "std": aggr.StdAggregation(),
            "attention": aggr.AttentionalAggregation(nn.Linear(dim, 1)),
        }
        self.names = how.split("_")
        self.parts = nn.ModuleList([parts[n] for n in self.names])
        self.width = dim * len(self.names)

    def forward(self, x: torch.Tensor, index: torch.Tensor, n_structures: int) -> torch.Tensor:
        if torch.is_grad_enabled() or "attention" not in self.names:
            return torch.cat([p(x, index, dim_size=n_structures) for p in self.parts], dim=1)
        # inference: the sums over atoms as one sparse (structures × rows) product each, with no
        # (rows × d) temporary (torch_geometric's attention builds the weighted rows: 3x the time
        # of the product on a prediction's stacked draws); equal to it to float round-off
        members = _Members(index, n_structures)
        return torch.cat(
            [
                members.attention(p.gate_nn, x)
                if name == "attention"
                else members.mean(x)
                if name == "mean"
                else p(x, index, dim_size=n_structures)
                for name, p in zip(self.names, self.parts, strict=True)
            ],
            dim=1,
        )


class _Members:
    """Which rows belong to which structure, as a CSR pattern (structures × rows): sums of rows
    per structure as one sparse product."""

    def __init__(self, index: torch.Tensor, n_structures: int) -> None:
        self.index, self.n = index, n_structures
        self.counts = torch.bincount(index, minlength=n_structures)
        self.crow = torch.zeros(n_structures + 1, dtype=torch.long, device=index.device)
        self.crow[1:] = torch.cumsum(self.counts, 0)
        runs = index.numel() < 2 or bool((index[1:] >= index[:-1]).all())
        # a structure's rows in row order (a batch lays them out in runs: no sort)
        self.rows = (
            torch.arange(index.numel(), device=index.device)
            if runs
            else torch.argsort(index, stable=True)
        )

    def weighted_sum(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """(structures, d): Σ over each structure's rows of weight_i · x_i."""
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            members = torch.sparse_csr_tensor(
                self.crow, self.rows, weight[self.rows], size=(self.n, x.shape[0])
            )
            return members @ x

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """torch_geometric's ``MeanAggregation``."""
        total = self.weighted_sum(x, x.new_ones(x.shape[0]))
        return total / self.counts.clamp_min(1).unsqueeze(1).to(x.dtype)

    def attention(self, gate_nn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """torch_geometric's ``AttentionalAggregation(gate_nn)``: softmax of the gate over each
        structure's rows (shifted by its maximum), the weighted sum of the rows."""
        gate = gate_nn(x).squeeze(1)
        peak = gate.new_full((self.n,), float("-inf")).scatter_reduce_(0, self.index, gate, "amax")
        weight = (gate - peak[self.index]).exp_()
        total = weight.new_zeros(self.n).index_add_(0, self.index, weight).add_(1e-16)
        return self.weighted_sum(x, weight) / total.unsqueeze(1)


def pool(
    atom_embedding: torch.Tensor, structure_index: torch.Tensor, n_structures: int, how: str
) -> torch.Tensor:
    """Parameter-free pooling (``mean`` / ``mean_max`` / ``mean_max_std``) of (n_atoms, d) rows."""
    if how == "mean_max_attention":
        raise ValueError("attention pooling has weights: use the Pooling module")
    return Pooling(how, atom_embedding.shape[1])(atom_embedding, structure_index, n_structures)


class BandGapHead(nn.Module):
    """Pooled MLP head. ``forward`` returns (gap_ev (B,), aleatoric_var_ev2 (B,) or None, pooled
    (B, p))."""

    def __init__(self, embedding_dim: int, config: HeadConfig | None = None) -> None:
        super().__init__()
        self.config = config or HeadConfig()
        c = self.config
        self.atom_mlp = None
        dim = embedding_dim
        if c.atom_mlp:
            self.atom_mlp = nn.Sequential(
                nn.LayerNorm(embedding_dim),
                nn.Linear(embedding_dim, c.atom_mlp),
                nn.SiLU(),
                nn.Linear(c.atom_mlp, c.atom_mlp),
                nn.SiLU(),
            )
            dim = c.atom_mlp
        self.pooling = Pooling(c.pooling, dim)
        self.mlp = nn.Sequential(
            nn.Linear(self.pooling.width, c.hidden_dim),
            nn.SiLU(),
            nn.Linear(c.hidden_dim, 2 if c.aleatoric else 1),
        )
        # start near the QMOF mean gap (about 2 eV): softplus(1.9) ≈ 2.04
        nn.init.constant_(self.mlp[-1].bias, 1.9)

    def forward(
        self,
        atom_embedding: torch.Tensor,
        structure_index: torch.Tensor,
        n_structures: int,
        shared_embedding: torch.Tensor | None = None,
    ):
        """``shared_embedding``: trailing per-atom columns the same in every one of the stacked
        copies that ``atom_embedding``'s rows hold (:class:`~mofbalora.backbones.base.
        BackboneOutput`); the result equals the head on the built rows to float round-off."""
        if shared_embedding is None:
            x = self.atom_mlp(atom_embedding) if self.atom_mlp is not None else atom_embedding
        elif self.atom_mlp is not None:
            x = self._atom_mlp_shared(atom_embedding, shared_embedding)
        else:
            copies = atom_embedding.shape[0] // max(shared_embedding.shape[0], 1)
            x = torch.cat([atom_embedding, shared_embedding.repeat(copies, 1)], dim=1)
        pooled = self.pooling(x, structure_index, n_structures)
        out = self.mlp(pooled)
        gap = F.softplus(out[:, 0])
        var = F.softplus(out[:, 1]) + 1e-4 if self.config.aleatoric else None
        return gap, var, pooled

    def _atom_mlp_shared(self, per_copy: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        """The per-atom MLP of the rows ``x = [per_copy, shared repeated]`` (copy-major) without
        building them: its LayerNorm and first linear layer are linear in x but for the norm's
        mean and std, so

            W ((x − μ) / s ⊙ γ + β) + c = (W_γ,a a + W_γ,f f − μ W_γ 1) / s + W β + c,

        W_γ = W diag γ split into the columns of the per-copy part a and the shared part f. The
        product W_γ,f f (most of the columns: 384 of 448 in the all-layer head) and f's own mean
        and spread are taken once per atom, not once per copy; μ and s combine the two parts'
        statistics by Chan et al.'s pairwise update. Equal to the module on the built rows to float
        round-off."""
        norm, first = self.atom_mlp[0], self.atom_mlp[1]
        n, k, m = shared.shape[0], per_copy.shape[1], shared.shape[1]
        width = k + m
        copies = per_copy.shape[0] // max(n, 1)
        weight = first.weight * norm.weight if norm.weight is not None else first.weight
        offset = first.bias if first.bias is not None else weight.new_zeros(weight.shape[0])
        if norm.bias is not None:
            offset = offset + first.weight @ norm.bias
        var_f, mean_f = torch.var_mean(shared, dim=1, correction=0)
        shared_part = shared @ weight[:, k:].T  # (n, h): once for all copies
        # the per-copy part's spread as E[a²] − ā² from one sum and one norm (torch.var_mean over
        # 64-wide rows took 10x longer); its 64 columns are the readout's outputs, of moderate mean,
        # and the frozen part's spread, centred, carries most of the total
        mean_a = (per_copy.sum(1) / k).view(copies, n)
        var_a = (torch.linalg.vector_norm(per_copy, dim=1).square().view(copies, n) / k).sub_(
            mean_a.square()
        )
        delta = mean_a - mean_f
        mean = (k * mean_a + m * mean_f) / width
        var = (k * var_a + m * var_f + delta * delta * (k * m / width)) / width
        rstd = torch.rsqrt(var + norm.eps).view(-1, 1)
        # −μ as one more column of a: the mean's term rides on the per-copy product
        z = (
            torch.cat([per_copy, -mean.view(-1, 1)], dim=1)
            @ torch.cat([weight[:, :k], weight.sum(1, keepdim=True)], dim=1).T
        )
        z.view(copies, n, -1).add_(shared_part)
        z = torch.addcmul(offset, z, rstd)
        return self.atom_mlp[2:](z)
