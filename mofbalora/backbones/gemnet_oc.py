"""GemNet-OC (Gasteiger et al., TMLR 2022) as used by JMP (Shoghi et al., ICLR 2024), in plain
torch.

Written from the GemNet / GemNet-OC / JMP papers and an understanding of the architecture;
aggregation uses ``index_add`` / ``index_put`` (no compiled scatter extensions). The module tree and
parameter (and buffer) names follow JMP's ``GemNetOCBackbone`` so that a JMP checkpoint's
``backbone.*`` tensors load key by key: ``bases`` (shared basis functions and their
down-projections, the edge embedding), ``int_blocks.{i}`` (triplet, quadruplet, atom→edge, edge→atom
and atom–atom interactions, edge and atom updates), ``out_blocks.{i}`` and ``out_mlp_E``. Force
outputs are not built (band gaps need none).

The forward pass returns JMP's per-atom output embedding (``out_mlp_E``), the input of JMP's heads.
Conventions and the graph construction are in :mod:`mofbalora.backbones.gemnet_graph`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class GemNetOCConfig:
    """Hyperparameters (names as in JMP's ``BackboneConfig``)."""

    num_spherical: int
    num_radial: int
    num_blocks: int
    emb_size_atom: int
    emb_size_edge: int
    emb_size_trip_in: int
    emb_size_trip_out: int
    emb_size_quad_in: int
    emb_size_quad_out: int
    emb_size_aint_in: int
    emb_size_aint_out: int
    emb_size_rbf: int
    emb_size_cbf: int
    emb_size_sbf: int
    num_before_skip: int
    num_after_skip: int
    num_concat: int
    num_atom: int
    num_output_afteratom: int
    num_atom_emb_layers: int
    num_global_out_layers: int
    num_elements: int = 120
    envelope_exponent: int = 5
    rbf_cutoff: float = 12.0  # JMP's ``absolute_rbf_cutoff`` (Å)

    def to_dict(self) -> dict:
        return asdict(self)


#: JMP-S = JMP's ``BackboneConfig.base()``; JMP-L = ``BackboneConfig.large()``
#: (facebookresearch/JMP, src/jmp/models/gemnet/config.py). ``tiny`` is ours: random weights only,
#: for tests and benchmarks.
SIZES: dict[str, GemNetOCConfig] = {
    "s": GemNetOCConfig(
        num_spherical=7,
        num_radial=128,
        num_blocks=4,
        emb_size_atom=256,
        emb_size_edge=512,
        emb_size_trip_in=64,
        emb_size_trip_out=64,
        emb_size_quad_in=32,
        emb_size_quad_out=32,
        emb_size_aint_in=64,
        emb_size_aint_out=64,
        emb_size_rbf=16,
        emb_size_cbf=16,
        emb_size_sbf=32,
        num_before_skip=2,
        num_after_skip=2,
        num_concat=1,
        num_atom=3,
        num_output_afteratom=3,
        num_atom_emb_layers=2,
        num_global_out_layers=2,
    ),
    "l": GemNetOCConfig(
        num_spherical=7,
        num_radial=128,
        num_blocks=6,
        emb_size_atom=256,
        emb_size_edge=1024,
        emb_size_trip_in=64,
        emb_size_trip_out=128,
        emb_size_quad_in=64,
        emb_size_quad_out=32,
        emb_size_aint_in=64,
        emb_size_aint_out=64,
        emb_size_rbf=32,
        emb_size_cbf=16,
        emb_size_sbf=64,
        num_before_skip=2,
        num_after_skip=2,
        num_concat=4,
        num_atom=3,
        num_output_afteratom=3,
        num_atom_emb_layers=2,
        num_global_out_layers=2,
    ),
    "tiny": GemNetOCConfig(
        num_spherical=4,
        num_radial=16,
        num_blocks=2,
        emb_size_atom=32,
        emb_size_edge=32,
        emb_size_trip_in=8,
        emb_size_trip_out=8,
        emb_size_quad_in=4,
        emb_size_quad_out=4,
        emb_size_aint_in=8,
        emb_size_aint_out=8,
        emb_size_rbf=4,
        emb_size_cbf=4,
        emb_size_sbf=8,
        num_before_skip=1,
        num_after_skip=1,
        num_concat=1,
        num_atom=1,
        num_output_afteratom=1,
        num_atom_emb_layers=1,
        num_global_out_layers=1,
    ),
}

_INV_SQRT_2 = 1.0 / math.sqrt(2.0)


# ------------------------------------------------------------------------------------------------
# small layers
# ------------------------------------------------------------------------------------------------
class ScaledSiLU(nn.Module):
    """SiLU divided by 0.6, which keeps unit variance roughly constant through deep stacks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(x) * (1.0 / 0.6)


class Dense(nn.Module):
    """Bias-free linear layer (``.linear``, where adapters attach) with an optional scaled SiLU."""

    def __init__(self, n_in: int, n_out: int, activation: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out, bias=False)
        self.activation = ScaledSiLU() if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))


class ResidualLayer(nn.Module):
    """Two activated dense layers with a skip connection, output scaled by 1/√2."""

    def __init__(self, units: int) -> None:
        super().__init__()
        self.dense_mlp = nn.Sequential(Dense(units, units, True), Dense(units, units, True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.dense_mlp(x)) * _INV_SQRT_2


class ScaleFactor(nn.Module):
    """A fitted constant factor (JMP stores it in checkpoints); 0 means "not fitted" and leaves x
    unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale_factor", torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale_factor
        return torch.where(s != 0, x * s, x)


def _residuals(units: int, n: int) -> nn.ModuleList:
    return nn.ModuleList([ResidualLayer(units) for _ in range(n)])


# ------------------------------------------------------------------------------------------------
# basis functions
# ------------------------------------------------------------------------------------------------
class GaussianBasis(nn.Module):
    """Gaussians on [0, 1] (distances scaled by the cutoff); centres and widths are buffers as in
    JMP."""

    def __init__(self, num: int, start: float = 0.0, stop: float = 1.0) -> None:
        super().__init__()
        offset = torch.linspace(start, stop, num)
        self.register_buffer("offset", offset)
        self.register_buffer(
            "temps", torch.full_like(offset, 0.5 / ((stop - start) / (num - 1)) ** 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.temps.abs() * (x[:, None] - self.offset[None, :]) ** 2)


class RadialBasis(nn.Module):
    """Polynomial envelope (smooth to zero at the cutoff) times Gaussians of d / cutoff."""

    def __init__(self, num_radial: int, cutoff: float, exponent: int) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = int(exponent)
        self.rbf = GaussianBasis(num_radial)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        x = d / self.cutoff
        p = self.p
        env = (
            1
            - (p + 1) * (p + 2) / 2 * x**p
            + p * (p + 2) * x ** (p + 1)
            - p * (p + 1) / 2 * x ** (p + 2)
        )
        env = torch.where(x < 1, env, torch.zeros_like(x))
        return env[:, None] * self.rbf(x)


def legendre_sph(cos: torch.Tensor, n: int) -> torch.Tensor:
    """Real spherical harmonics with m = 0, Y_l0 = sqrt((2l+1)/4π) P_l(cos), l < n: (len, n)."""
    p = [torch.ones_like(cos), cos]
    for ell in range(2, n):
        p.append(((2 * ell - 1) * cos * p[-1] - (ell - 1) * p[-2]) / ell)
    return torch.stack(
        [math.sqrt((2 * ell + 1) / (4 * math.pi)) * p[ell] for ell in range(n)], dim=1
    )


class CircularBasisLayer(nn.Module):
    """Radial basis of an edge and Y_l0 of one angle."""

    def __init__(self, num_spherical: int, radial_basis: RadialBasis) -> None:
        super().__init__()
        self.num_spherical = num_spherical
        self.radial_basis = radial_basis

    def forward(self, d: torch.Tensor, cos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.radial_basis(d), legendre_sph(cos, self.num_spherical)


class SphericalBasisLayer(nn.Module):
    """Radial basis and the outer product Y_l0(cos φ) ⊗ Y_l'0(cos θ) of two angles (JMP:
    ``legendre_outer``)."""

    def __init__(self, num_spherical: int, radial_basis: RadialBasis) -> None:
        super().__init__()
        self.num_spherical = num_spherical
        self.radial_basis = radial_basis

    def forward(self, d, cos_phi, theta) -> tuple[torch.Tensor, torch.Tensor]:
        a = legendre_sph(cos_phi, self.num_spherical)
        b = legendre_sph(torch.cos(theta), self.num_spherical)
        return self.radial_basis(d), (a[:, :, None] * b[:, None, :]).reshape(cos_phi.shape[0], -1)


class BasisEmbedding(nn.Module):
    """Down-projection of a radial basis (and, with ``num_spherical``, its pairing with an
    angular basis)."""

    def __init__(self, num_radial: int, emb_size: int, num_spherical: int | None = None) -> None:
        super().__init__()
        self.num_spherical = num_spherical
        shape = (
            (emb_size, num_radial)
            if num_spherical is None
            else (num_radial, num_spherical, emb_size)
        )
        self.weight = nn.Parameter(torch.empty(shape))

    def radial(self, rad: torch.Tensor, n_sph: int) -> torch.Tensor:
        """rad (E, R) → (E, emb, n_sph), with JMP's memory layout of ``weight``."""
        return (rad @ self.weight.reshape(self.weight.shape[0], -1)).reshape(
            rad.shape[0], -1, n_sph
        )


def _pad(
    values: torch.Tensor, outer: torch.Tensor, inner: torch.Tensor, n_outer: int, k: int
) -> torch.Tensor:
    out = values.new_zeros((n_outer, k, *values.shape[1:]))
    return out.index_put((outer, inner), values)


class EfficientInteractionBilinear(nn.Module):
    """Σ over triplets/quadruplets of basis ⊗ message, then one bilinear map (GemNet's efficient
    form)."""

    def __init__(self, emb_in: int, emb_interm: int, emb_out: int) -> None:
        super().__init__()
        self.bilinear = Dense(emb_in * emb_interm, emb_out, False)

    def forward(
        self,
        rad_w: torch.Tensor,
        sph_padded: torch.Tensor,
        m: torch.Tensor,
        out: torch.Tensor,
        agg: torch.Tensor,
        k: int,
        to_atoms: tuple[torch.Tensor, int] | None = None,
    ) -> torch.Tensor:
        """rad_w (E, I, S), sph_padded (E, S, K), m (n_trip, C) → (E, out) or, with ``to_atoms=(atom
        of each edge, n_atoms)``, summed over each atom's edges first → (n_atoms, out)."""
        m_pad = _pad(m, out, agg, sph_padded.shape[0], k)  # (E, K, C)
        sph_m = torch.bmm(sph_padded, m_pad)  # (E, S, C)
        x = torch.bmm(rad_w, sph_m)  # (E, I, C)
        if to_atoms is not None:
            atom, n_atoms = to_atoms
            x = x.new_zeros((n_atoms, *x.shape[1:])).index_add(0, atom, x)
        return self.bilinear(x.reshape(x.shape[0], -1))


class EdgeEmbedding(nn.Module):
    """Edge features from the two atoms' embeddings and an edge input: dense([h_s, h_t, m])."""

    def __init__(self, atom: int, edge_in: int, out: int) -> None:
        super().__init__()
        self.dense = Dense(2 * atom + edge_in, out, True)

    def forward(
        self, h: torch.Tensor, m: torch.Tensor, s: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        return self.dense(torch.cat([h[s], h[t], m], dim=-1))


# ------------------------------------------------------------------------------------------------
# bases shared by all blocks
# ------------------------------------------------------------------------------------------------
def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1).clamp(-1.0, 1.0)


class Bases(nn.Module):
    def __init__(self, c: GemNetOCConfig) -> None:
        super().__init__()
        R, cut, p = c.num_radial, c.rbf_cutoff, c.envelope_exponent
        self.radial_basis = RadialBasis(R, cut, p)
        spherical = RadialBasis(R, cut, p)  # shared by three layers, as in JMP
        self.cbf_basis_qint = CircularBasisLayer(c.num_spherical, RadialBasis(R, cut, p))
        self.sbf_basis_qint = SphericalBasisLayer(c.num_spherical, spherical)
        self.radial_basis_aeaint = RadialBasis(R, cut, p)
        self.cbf_basis_aeint = CircularBasisLayer(c.num_spherical, spherical)
        self.cbf_basis_eaint = CircularBasisLayer(c.num_spherical, RadialBasis(R, cut, p))
        self.radial_basis_aint = RadialBasis(R, cut, p)
        self.cbf_basis_tint = CircularBasisLayer(c.num_spherical, spherical)

        ns = c.num_spherical
        self.mlp_rbf_qint = Dense(R, c.emb_size_rbf, False)
        self.mlp_cbf_qint = BasisEmbedding(R, c.emb_size_cbf, ns)
        self.mlp_sbf_qint = BasisEmbedding(R, c.emb_size_sbf, ns**2)
        self.mlp_rbf_aeint = Dense(R, c.emb_size_rbf, False)
        self.mlp_cbf_aeint = BasisEmbedding(R, c.emb_size_cbf, ns)
        self.mlp_rbf_eaint = Dense(R, c.emb_size_rbf, False)
        self.mlp_cbf_eaint = BasisEmbedding(R, c.emb_size_cbf, ns)
        self.mlp_rbf_aint = BasisEmbedding(R, c.emb_size_rbf)
        self.mlp_rbf_tint = Dense(R, c.emb_size_rbf, False)
        self.mlp_cbf_tint = BasisEmbedding(R, c.emb_size_cbf, ns)
        self.mlp_rbf_h = Dense(R, c.emb_size_rbf, False)
        self.mlp_rbf_out = Dense(R, c.emb_size_rbf, False)
        self.edge_emb = EdgeEmbedding(c.emb_size_atom, R, c.emb_size_edge)
        self.num_spherical = ns

    def forward(self, h: torch.Tensor, geo: dict, idx: dict, n_atoms: int) -> dict:
        ns = self.num_spherical
        main, ae, q, aa = geo["main"], geo["a2ee2a"], geo["qint"], geo["a2a"]
        k = {name: int(idx[f"k_{name}"]) for name in ("e2e", "a2e", "e2a", "quad", "a2ee2a", "a2a")}
        n_main, n_ae = main["d"].shape[0], ae["d"].shape[0]
        rad_main = self.radial_basis(main["d"])

        # triplets c->a <- b
        cos_e2e = _dot(main["v"][idx["e2e_out"]], main["v"][idx["e2e_in"]])
        rad_cir_e2e, cir_e2e = self.cbf_basis_tint(main["d"], cos_e2e)

        # quadruplets: angles c-a-b, a-b-d and the dihedral between the planes (c,a,b) and (a,b,d)
        v_ba = q["v"][idx["qin_out"]]
        v_db = main["v"][idx["qin_in"]]
        cos_abd = _dot(v_ba, v_db)
        cross_db = torch.linalg.cross(v_db, v_ba)[idx["quad_from_qin"]]
        v_ca = main["v"][idx["qout_out"]]
        v_ba_out = q["v"][idx["qout_in"]]
        cos_cab = _dot(v_ca, v_ba_out)
        cross_ca = torch.linalg.cross(v_ca, v_ba_out)[idx["quad_from_qout"]]
        dihedral = torch.atan2(
            torch.linalg.cross(cross_ca, cross_db).norm(dim=-1), (cross_ca * cross_db).sum(-1)
        )
        rad_cir_q, cir_q = self.cbf_basis_qint(q["d"], cos_abd)
        rad_sph_q, sph_q = self.sbf_basis_qint(main["d"], cos_cab[idx["quad_from_qout"]], dihedral)

        # atom-to-edge and edge-to-atom triplets
        rad_ae = self.radial_basis_aeaint(ae["d"])
        cos_a2e = _dot(main["v"][idx["a2e_out"]], ae["v"][idx["a2e_in"]])
        rad_cir_a2e, cir_a2e = self.cbf_basis_aeint(main["d"], cos_a2e)
        cos_e2a = _dot(ae["v"][idx["e2a_out"]], main["v"][idx["e2a_in"]])
        rad_cir_e2a, cir_e2a = self.cbf_basis_eaint(ae["d"], cos_e2a)
        rad_aa = self.radial_basis_aint(aa["d"])

        def padded_sph(values, outer, agg, n_outer, kk):
            return _pad(values, outer, agg, n_outer, kk).transpose(1, 2)  # (E, S, K)

        out = {
            "qint_rad": self.mlp_rbf_qint(rad_main),
            # circular basis of the triplets d->b->a, one row per input triplet: (n_qin, emb_cbf)
            "qint_cir": torch.bmm(
                self.mlp_cbf_qint.radial(rad_cir_q, ns)[idx["qin_out"]], cir_q[:, :, None]
            ).squeeze(-1),
            "qint_sph": (
                self.mlp_sbf_qint.radial(rad_sph_q, ns * ns),
                padded_sph(sph_q, idx["quad_out"], idx["quad_agg"], n_main, k["quad"]),
            ),
            "a2e_rad": self.mlp_rbf_aeint(rad_ae),
            "a2e_cir": (
                self.mlp_cbf_aeint.radial(rad_cir_a2e, ns),
                padded_sph(cir_a2e, idx["a2e_out"], idx["a2e_agg"], n_main, k["a2e"]),
            ),
            "e2a_rad": self.mlp_rbf_eaint(rad_main),
            "e2a_cir": (
                self.mlp_cbf_eaint.radial(rad_cir_e2a, ns),
                padded_sph(cir_e2a, idx["e2a_out"], idx["e2a_agg"], n_ae, k["e2a"]),
            ),
            # atom-atom: per atom, (emb_rbf, K) radial weights of its padded a2a neighbours
            "a2a_rad": _pad(
                rad_aa @ self.mlp_rbf_aint.weight.T, aa["t"], idx["a2a_rank"], n_atoms, k["a2a"]
            ).transpose(1, 2),
            "e2e_rad": self.mlp_rbf_tint(rad_main),
            "e2e_cir": (
                self.mlp_cbf_tint.radial(rad_cir_e2e, ns),
                padded_sph(cir_e2e, idx["e2e_out"], idx["e2e_agg"], n_main, k["e2e"]),
            ),
            "atom_update": self.mlp_rbf_h(rad_main),
            "output": self.mlp_rbf_out(rad_main),
            "m": self.edge_emb(h, rad_main, main["s"], main["t"]),
        }
        return out


# ------------------------------------------------------------------------------------------------
# interactions
# ------------------------------------------------------------------------------------------------
class TripletInteraction(nn.Module):
    """Messages from edges (or atoms) b→a to edges c→a, weighted by distance and the angle cab."""

    def __init__(
        self,
        emb_in: int,
        emb_out: int,
        trip_in: int,
        trip_out: int,
        emb_rbf: int,
        emb_cbf: int,
        symmetric: bool,
    ) -> None:
        super().__init__()
        self.symmetric = symmetric
        self.dense_ba = Dense(emb_in, emb_in, True)
        self.mlp_rbf = Dense(emb_rbf, emb_in, False)
        self.scale_rbf = ScaleFactor()
        self.mlp_cbf = EfficientInteractionBilinear(trip_in, emb_cbf, trip_out)
        self.scale_cbf_sum = ScaleFactor()
        self.down_projection = Dense(emb_in, trip_in, True)
        self.up_projection_ca = Dense(trip_out, emb_out, True)
        if symmetric:
            self.up_projection_ac = Dense(trip_out, emb_out, True)

    def forward(self, m, rad, cir, trip_in, trip_out, agg, k, swap, expand=None, to_atoms=None):
        x = self.dense_ba(m)
        if expand is not None:
            x = x[expand]
        x = self.scale_rbf(x * self.mlp_rbf(rad))
        x = self.down_projection(x)[trip_in]
        x = self.scale_cbf_sum(self.mlp_cbf(cir[0], cir[1], x, trip_out, agg, k, to_atoms))
        if not self.symmetric:
            return self.up_projection_ca(x)
        return (self.up_projection_ca(x) + self.up_projection_ac(x)[swap]) * _INV_SQRT_2


class QuadrupletInteraction(nn.Module):
    """Messages along d→b→a←c: distance d_db, angle abd, and (distance d_ca, angle cab,
    dihedral)."""

    def __init__(self, c: GemNetOCConfig) -> None:
        super().__init__()
        e = c.emb_size_edge
        self.dense_db = Dense(e, e, True)
        self.mlp_rbf = Dense(c.emb_size_rbf, e, False)
        self.scale_rbf = ScaleFactor()
        self.mlp_cbf = Dense(c.emb_size_cbf, c.emb_size_quad_in, False)
        self.scale_cbf = ScaleFactor()
        self.mlp_sbf = EfficientInteractionBilinear(
            c.emb_size_quad_in, c.emb_size_sbf, c.emb_size_quad_out
        )
        self.scale_sbf_sum = ScaleFactor()
        self.down_projection = Dense(e, c.emb_size_quad_in, True)
        self.up_projection_ca = Dense(c.emb_size_quad_out, e, True)
        self.up_projection_ac = Dense(c.emb_size_quad_out, e, True)

    def forward(self, m, bases, idx, swap):
        x = self.dense_db(m)
        x = self.scale_rbf(x * self.mlp_rbf(bases["qint_rad"]))
        x = self.down_projection(x)[idx["qin_in"]]
        x = self.scale_cbf(x * self.mlp_cbf(bases["qint_cir"]))
        x = x[idx["quad_from_qin"]]
        rad_w, sph = bases["qint_sph"]
        x = self.scale_sbf_sum(
            self.mlp_sbf(rad_w, sph, x, idx["quad_out"], idx["quad_agg"], int(idx["k_quad"]))
        )
        return (self.up_projection_ca(x) + self.up_projection_ac(x)[swap]) * _INV_SQRT_2


class PairInteraction(nn.Module):
    """Atom-atom messages over the a2a graph with a radial bilinear layer."""

    def __init__(self, c: GemNetOCConfig) -> None:
        super().__init__()
        self.bilinear = Dense(c.emb_size_rbf * c.emb_size_aint_in, c.emb_size_aint_out, False)
        self.scale_rbf_sum = ScaleFactor()
        self.down_projection = Dense(c.emb_size_atom, c.emb_size_aint_in, True)
        self.up_projection = Dense(c.emb_size_aint_out, c.emb_size_atom, True)

    def forward(self, h, rad_padded, a2a, rank, k):
        x = self.down_projection(h)[a2a["s"]]
        x = torch.bmm(rad_padded, _pad(x, a2a["t"], rank, h.shape[0], k))  # (N, rbf, C)
        x = self.scale_rbf_sum(self.bilinear(x.reshape(h.shape[0], -1)))
        return self.up_projection(x)


def _sum_to_atoms(x: torch.Tensor, t: torch.Tensor, n_atoms: int) -> torch.Tensor:
    return x.new_zeros((n_atoms, x.shape[1])).index_add(0, t, x)


class AtomUpdateBlock(nn.Module):
    """Atom features from the radial-weighted sum of their incoming edge features."""

    def __init__(self, c: GemNetOCConfig, n_hidden: int) -> None:
        super().__init__()
        self.dense_rbf = Dense(c.emb_size_rbf, c.emb_size_edge, False)
        self.scale_sum = ScaleFactor()
        first = (
            [Dense(c.emb_size_edge, c.emb_size_atom, True)]
            if c.emb_size_edge != c.emb_size_atom
            else []
        )
        self.layers = nn.ModuleList(
            first + [ResidualLayer(c.emb_size_atom) for _ in range(n_hidden)]
        )

    def aggregate(self, m, rad, t, n_atoms):
        x = self.scale_sum(_sum_to_atoms(m * self.dense_rbf(rad), t, n_atoms))
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, h, m, rad, t):
        return self.aggregate(m, rad, t, h.shape[0])


class OutputBlock(AtomUpdateBlock):
    """Per-block atom output: the atom update, then (with the block's atom features) more
    residual layers."""

    def __init__(self, c: GemNetOCConfig) -> None:
        super().__init__(c, c.num_atom)
        # same modules under JMP's second name (both names are in its state dict)
        self.seq_energy_pre = self.layers
        self.seq_energy2 = (
            _residuals(c.emb_size_atom, c.num_output_afteratom) if c.num_output_afteratom else None
        )

    def forward(self, h, m, rad, t):
        x = self.aggregate(m, rad, t, h.shape[0])
        if self.seq_energy2 is not None:
            x = (x + h) * _INV_SQRT_2
            for layer in self.seq_energy2:
                x = layer(x)
        return x


class InteractionBlock(nn.Module):
    def __init__(self, c: GemNetOCConfig) -> None:
        super().__init__()
        a, e = c.emb_size_atom, c.emb_size_edge
        self.dense_ca = Dense(e, e, True)
        self.trip_interaction = TripletInteraction(
            e,
            e,
            c.emb_size_trip_in,
            c.emb_size_trip_out,
            c.emb_size_rbf,
            c.emb_size_cbf,
            symmetric=True,
        )
        self.quad_interaction = QuadrupletInteraction(c)
        self.atom_edge_interaction = TripletInteraction(
            a,
            e,
            c.emb_size_trip_in,
            c.emb_size_trip_out,
            c.emb_size_rbf,
            c.emb_size_cbf,
            symmetric=True,
        )
        self.edge_atom_interaction = TripletInteraction(
            e,
            a,
            c.emb_size_trip_in,
            c.emb_size_trip_out,
            c.emb_size_rbf,
            c.emb_size_cbf,
            symmetric=False,
        )
        self.atom_interaction = PairInteraction(c)
        self.layers_before_skip = _residuals(e, c.num_before_skip)
        self.layers_after_skip = _residuals(e, c.num_after_skip)
        self.atom_emb_layers = _residuals(a, c.num_atom_emb_layers)
        self.atom_update = AtomUpdateBlock(c, c.num_atom)
        self.concat_layer = EdgeEmbedding(a, e, e)
        self.residual_m = _residuals(e, c.num_concat)

    def forward(self, h, m, bases, geo, idx):
        main, swap = geo["main"], geo["main"]["swap"]
        n_atoms = h.shape[0]
        x_skip = self.dense_ca(m)
        x_e2e = self.trip_interaction(
            m,
            bases["e2e_rad"],
            bases["e2e_cir"],
            idx["e2e_in"],
            idx["e2e_out"],
            idx["e2e_agg"],
            int(idx["k_e2e"]),
            swap,
        )
        x_q = self.quad_interaction(m, bases, idx, swap)
        x_a2e = self.atom_edge_interaction(
            h,
            bases["a2e_rad"],
            bases["a2e_cir"],
            idx["a2e_in"],
            idx["a2e_out"],
            idx["a2e_agg"],
            int(idx["k_a2e"]),
            swap,
            expand=geo["a2ee2a"]["s"],
        )
        h_e2a = self.edge_atom_interaction(
            m,
            bases["e2a_rad"],
            bases["e2a_cir"],
            idx["e2a_in"],
            idx["e2a_out"],
            idx["e2a_agg"],
            int(idx["k_e2a"]),
            swap,
            to_atoms=(geo["a2ee2a"]["t"], n_atoms),
        )
        h_a2a = self.atom_interaction(
            h, bases["a2a_rad"], geo["a2a"], idx["a2a_rank"], int(idx["k_a2a"])
        )

        x = (x_skip + x_e2e + x_q + x_a2e) * 0.5  # 1/sqrt(4 edge interactions)
        h = (h + h_e2a + h_a2a) * (1.0 / math.sqrt(3.0))
        for layer in self.layers_before_skip:
            x = layer(x)
        m = (m + x) * _INV_SQRT_2
        for layer in self.layers_after_skip:
            m = layer(m)
        for layer in self.atom_emb_layers:
            h = layer(h)
        h = (h + self.atom_update(h, m, bases["atom_update"], main["t"])) * _INV_SQRT_2
        m2 = self.concat_layer(h, m, main["s"], main["t"])
        for layer in self.residual_m:
            m2 = layer(m2)
        return h, (m + m2) * _INV_SQRT_2


class FinalMLP(nn.Module):
    def __init__(self, c: GemNetOCConfig) -> None:
        super().__init__()
        a = c.emb_size_atom
        self.out_mlp = nn.Sequential(
            Dense(a * (c.num_blocks + 1), a, True),
            *[ResidualLayer(a) for _ in range(c.num_global_out_layers)],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_mlp(x)


class GemNetOC(nn.Module):
    """GemNet-OC trunk: initial atom features ``h`` (from the atom embedding) → per-atom output
    features."""

    def __init__(self, config: GemNetOCConfig) -> None:
        super().__init__()
        self.config = config
        self.bases = Bases(config)
        self.int_blocks = nn.ModuleList(
            [InteractionBlock(config) for _ in range(config.num_blocks)]
        )
        self.out_blocks = nn.ModuleList([OutputBlock(config) for _ in range(config.num_blocks + 1)])
        self.out_mlp_E = FinalMLP(config)

    def forward(self, h: torch.Tensor, geo: dict, idx: dict) -> torch.Tensor:
        bases = self.bases(h, geo, idx, h.shape[0])
        m = bases["m"]
        t = geo["main"]["t"]
        xs = [self.out_blocks[0](h, m, bases["output"], t)]
        for i, block in enumerate(self.int_blocks):
            h, m = block(h, m, bases, geo, idx)
            xs.append(self.out_blocks[i + 1](h, m, bases["output"], t))
        return self.out_mlp_E(torch.cat(xs, dim=-1))


@torch.no_grad()
def init_random_(module: nn.Module, seed: int) -> None:
    """Deterministic random weights (He-normal linear layers, uniform(±√3) embeddings, basis
    weights)."""
    g = torch.Generator().manual_seed(int(seed))
    for name, p in sorted(module.named_parameters()):
        if p.dim() == 1:
            p.zero_()
        elif "embedding" in name:
            p.uniform_(-math.sqrt(3.0), math.sqrt(3.0), generator=g)
        else:
            # BasisEmbedding (R, S, emb): fan-in R
            fan_in = p.shape[1] if p.dim() == 2 else p.shape[0]
            p.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=g)
