"""The array-built bond graph (mofbalora/backbones/chgnet_graph.py) equals CHGNet's own, row for
row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

GRAPH_FIELDS = (
    "atomic_number",
    "atom_frac_coord",
    "atom_graph",
    "neighbor_image",
    "directed2undirected",
    "undirected2directed",
    "bond_graph",
    "lattice",
)


@pytest.fixture(scope="module")
def converters():
    from chgnet.graph import CrystalGraphConverter

    from mofbalora.backbones.chgnet_graph import use_array_graphs

    def make():
        return CrystalGraphConverter(atom_graph_cutoff=6, bond_graph_cutoff=3, algorithm="fast")

    return make(), use_array_graphs(make())


@pytest.fixture(scope="module")
def structures(sample_cifs, tmp_path_factory):
    from mofbalora.data.candidates import export_coremof
    from mofbalora.data.structures import StructureError, read_structure

    out = []
    paths = list(sample_cifs[:8]) + export_coremof(
        "2019-ASR", tmp_path_factory.mktemp("coremof"), limit=16, seed=5
    )
    for path in paths:
        try:
            out.append((path, read_structure(path)))
        except StructureError:
            continue
    assert len(out) >= 16
    return out + small_cells()


def small_cells():
    """Cells smaller than the cutoffs: bonds to an atom's own periodic images, several bonds per
    atom pair."""
    from pymatgen.core import Lattice, Structure

    fcc = Structure(
        Lattice.cubic(3.6), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    )
    rock_salt = Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    tilted = Structure(
        Lattice.from_parameters(2.9, 3.1, 5.0, 80, 95, 110),
        ["Zn", "O", "C"],
        [[0, 0, 0], [0.4, 0.45, 0.3], [0.7, 0.2, 0.8]],
    )
    return [("fcc Cu", fcc), ("rock salt MgO", rock_salt), ("triclinic ZnOC", tilted)]


def test_the_graphs_equal_chgnets_own(converters, structures):
    chgnet_own, fast = converters
    with_angles = 0
    for path, structure in structures:
        want, got = chgnet_own(structure), fast(structure)
        for field in GRAPH_FIELDS:
            a, b = getattr(want, field), getattr(got, field)
            assert a.dtype == b.dtype and a.shape == b.shape, (path, field)
            assert torch.equal(a, b), (path, field)
        with_angles += want.bond_graph.shape[0] > 0
    assert with_angles >= len(structures) - 1


def test_a_structure_without_short_bonds_gives_an_empty_bond_graph_like_chgnet(converters):
    from pymatgen.core import Lattice, Structure

    chgnet_own, fast = converters
    # neighbours at 4 Å: atom-graph edges but none under the 3 Å bond-graph cutoff
    sparse = Structure(Lattice.cubic(4.0), ["Cu"], [[0, 0, 0]])
    want, got = chgnet_own(sparse), fast(sparse)
    assert want.bond_graph.numel() == 0
    assert (
        torch.equal(want.bond_graph, got.bond_graph)
        and want.bond_graph.shape == got.bond_graph.shape
    )
    assert torch.equal(want.undirected2directed, got.undirected2directed)


def test_the_backbone_uses_it_and_its_trunk_output_is_unchanged(structures):
    from chgnet.graph import CrystalGraphConverter

    from mofbalora.backbones.chgnet import CHGNetBackbone
    from mofbalora.backbones.chgnet_graph import _ArrayGraphs

    bb = CHGNetBackbone()
    assert isinstance(bb.trunk.graph_converter.create_graph, _ArrayGraphs)
    own = CrystalGraphConverter(
        atom_graph_cutoff=bb.trunk.graph_converter.atom_graph_cutoff,
        bond_graph_cutoff=bb.trunk.graph_converter.bond_graph_cutoff,
        algorithm="fast",
    )
    _, structure = structures[0]
    with torch.no_grad():
        fast = bb.trunk_activations([bb._graph(structure)])[0]
        ref = bb.trunk_activations([own(structure)])[0]
    for name in fast:
        np.testing.assert_array_equal(fast[name], ref[name], err_msg=name)
