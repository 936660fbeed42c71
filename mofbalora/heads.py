"""Band-gap heads: per-atom embeddings → PBE band gap (eV), optionally with an aleatoric variance.

The head pools per-atom embeddings per structure (mean and max, concatenated: a band gap is set by the
frontier states, which a max over atoms can pick out where a mean would dilute them), then a small MLP.
Outputs go through softplus so that predicted gaps (and variances) are positive: band gaps are ≥ 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

POOLINGS = ("mean_max", "mean")


@dataclass
class HeadConfig:
    hidden_dim: int = 64
    pooling: str = "mean_max"
    aleatoric: bool = False

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; choose from {list(POOLINGS)}")

    def to_dict(self) -> dict:
        return asdict(self)


def pool(atom_embedding: torch.Tensor, structure_index: torch.Tensor, n_structures: int, how: str) -> torch.Tensor:
    """Per-structure pooling of (n_atoms, d) rows → (n_structures, d) or (n_structures, 2d)."""
    d = atom_embedding.shape[1]
    counts = torch.bincount(structure_index, minlength=n_structures).clamp_min(1).unsqueeze(1)
    mean = atom_embedding.new_zeros(n_structures, d).index_add(0, structure_index, atom_embedding) / counts
    if how == "mean":
        return mean
    mx = atom_embedding.new_full((n_structures, d), float("-inf")).scatter_reduce(
        0, structure_index.unsqueeze(1).expand(-1, d), atom_embedding, reduce="amax", include_self=True)
    return torch.cat([mean, mx], dim=1)


class BandGapHead(nn.Module):
    """Pooled MLP head. ``forward`` returns (gap_ev (B,), aleatoric_var_ev2 (B,) or None, pooled (B, p))."""

    def __init__(self, embedding_dim: int, config: HeadConfig | None = None) -> None:
        super().__init__()
        self.config = config or HeadConfig()
        width = embedding_dim * (2 if self.config.pooling == "mean_max" else 1)
        self.mlp = nn.Sequential(nn.Linear(width, self.config.hidden_dim), nn.SiLU(),
                                 nn.Linear(self.config.hidden_dim, 2 if self.config.aleatoric else 1))
        # start near the QMOF mean gap (about 2 eV): softplus(1.9) ≈ 2.04
        nn.init.constant_(self.mlp[-1].bias, 1.9)

    def forward(self, atom_embedding: torch.Tensor, structure_index: torch.Tensor, n_structures: int):
        pooled = pool(atom_embedding, structure_index, n_structures, self.config.pooling)
        out = self.mlp(pooled)
        gap = F.softplus(out[:, 0])
        var = F.softplus(out[:, 1]) + 1e-4 if self.config.aleatoric else None
        return gap, var, pooled
