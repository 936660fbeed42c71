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
        return torch.cat([p(x, index, dim_size=n_structures) for p in self.parts], dim=1)


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
        self, atom_embedding: torch.Tensor, structure_index: torch.Tensor, n_structures: int
    ):
        x = self.atom_mlp(atom_embedding) if self.atom_mlp is not None else atom_embedding
        pooled = self.pooling(x, structure_index, n_structures)
        out = self.mlp(pooled)
        gap = F.softplus(out[:, 0])
        var = F.softplus(out[:, 1]) + 1e-4 if self.config.aleatoric else None
        return gap, var, pooled
