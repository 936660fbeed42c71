"""CHGNet's crystal graphs built with array operations, equal element for element to CHGNet's own.

CHGNet's ``CrystalGraphConverter`` turns a structure into two graphs: the atom graph (the directed
edges of the 6 Å neighbour list, paired into undirected bonds) and the bond graph (its "line graph":
the angles between two bonds shorter than 3 Å that share an atom). It builds both through Python
objects, an ``Edge`` with an ``info`` dictionary per directed edge (about 16,000 for a QMOF
structure), then walks them in a pure-Python triple loop for the bond graph: about 0.25 s of the
~0.3 s a MOF's graph takes on one core, more than the frozen CHGNet forward with two threads. Here
the same arrays come from the neighbour list with NumPy sorting and index arithmetic
(:class:`ArrayGraph`); the converter's own ``forward`` still does everything else (neighbour list,
tensors, the isolated-atom rule), so only the graph step is replaced.

Order matters: CHGNet sums messages over the graphs' rows, and another order would change the
floating-point sums. The rules of CHGNet's graph code (its C ``create_graph`` and
``Graph.line_graph_adjacency_list``) are kept exactly:

- directed edge ``i`` is the ``i``-th neighbour-list entry ``(center, neighbour, image, distance)``;
- an edge opens a new undirected bond unless its reverse ``(neighbour, center, -image)`` came
  earlier, in which case it joins that bond; bonds are numbered in the order they open;
- a bond's first directed edge gives its ``undirected2directed`` entry, its end atoms and its
  distance;
- the bond graph walks the bonds in order, skipping those longer than the cutoff; for each, its two
  ``(end atom, directed edge)`` pairs; for each, the edges leaving that atom that are shorter than
  the cutoff, grouped by neighbour in order of the neighbour's first appearance, each group in edge
  order, less the bond's own edge.

A neighbour list that is not symmetric (an edge without its reverse) falls back to CHGNet's own
objects, which then fail as CHGNet fails. ``tests/test_chgnet_graph.py`` holds every graph tensor
equal to CHGNet's on QMOF and CoRE MOF structures.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ArrayGraph", "use_array_graphs"]


class ArrayGraph:
    """The graph of one structure as arrays, answering what ``CrystalGraphConverter.forward`` asks
    of CHGNet's ``Graph``: :meth:`adjacency_list` and :meth:`line_graph_adjacency_list`."""

    def __init__(
        self,
        n_atoms: int,
        center: np.ndarray,
        neighbour: np.ndarray,
        reverse: np.ndarray,
        distance: np.ndarray,
    ) -> None:
        self.n_atoms, self.center, self.neighbour, self.distance = (
            n_atoms,
            center,
            neighbour,
            distance,
        )
        #: each directed edge's reverse edge
        self.reverse = reverse
        first = reverse > np.arange(len(center))
        #: the opening (first) directed edge of each undirected bond, in bond order
        self.opening = np.flatnonzero(first)
        bond_of_opening = np.cumsum(first) - 1
        #: the undirected bond of each directed edge
        self.to_undirected = (
            np.where(first, bond_of_opening, bond_of_opening[reverse]) if len(center) else reverse
        )

    @classmethod
    def build(cls, n_atoms: int, center, neighbour, image, distance) -> ArrayGraph | None:
        """From a neighbour list (as CHGNet's converter passes it); None when some edge has no
        reverse."""
        center, neighbour = (
            np.asarray(center, dtype=np.int64),
            np.asarray(neighbour, dtype=np.int64),
        )
        image, distance = (
            np.asarray(image, dtype=np.int64).reshape(-1, 3),
            np.asarray(distance, dtype=float),
        )
        n = len(center)
        if n == 0:
            return cls(n_atoms, center, neighbour, np.zeros(0, np.int64), distance)
        # one integer per (center, neighbour, image); the reverse edge's key swaps the atoms and
        # negates the image
        shift = int(np.abs(image).max()) if image.size else 0
        base = 2 * shift + 1

        def key(c, nb, img):
            packed = (
                (img[:, 0] + shift) * base * base + (img[:, 1] + shift) * base + (img[:, 2] + shift)
            )
            return (c * n_atoms + nb) * base**3 + packed

        if (n_atoms * n_atoms) * base**3 >= 2**62:  # too large to pack: let CHGNet do it
            return None
        forward, backward = key(center, neighbour, image), key(neighbour, center, -image)
        order = np.argsort(forward, kind="stable")
        where = np.searchsorted(forward[order], backward)
        where = np.minimum(where, n - 1)
        reverse = order[where]
        if not np.array_equal(forward[reverse], backward):
            return None  # an edge without its reverse: CHGNet's own objects reproduce its behaviour
        if len(np.unique(forward)) != n:
            return None  # a repeated edge: leave it to CHGNet
        return cls(n_atoms, center, neighbour, reverse, distance)

    def adjacency_list(self) -> tuple[Any, Any]:
        """``(atom_graph, directed2undirected)``: ``[center, neighbour]`` per directed edge and
        its bond."""
        if not len(self.center):
            return [], []
        return np.stack([self.center, self.neighbour], axis=1), self.to_undirected

    def line_graph_adjacency_list(self, cutoff: float) -> tuple[Any, Any]:
        """``(bond_graph, undirected2directed)``: rows ``[atom, bond 1, directed edge 1, bond 2,
        directed edge 2]`` for each angle between two bonds under ``cutoff`` Å sharing ``atom``, and
        each bond's first directed edge (``[]`` where CHGNet's lists are empty)."""
        undirected2directed = self.opening if len(self.opening) else []
        # the edges leaving each atom, in CHGNet's walk order: neighbour groups by first appearance,
        # then index
        n = len(self.center)
        if not n:
            return [], undirected2directed
        edge = np.arange(n)
        pair = self.center * self.n_atoms + self.neighbour
        by_pair = np.lexsort((edge, pair))
        starts = np.r_[True, pair[by_pair][1:] != pair[by_pair][:-1]]
        first_of_pair = np.empty(n, dtype=np.int64)
        first_of_pair[by_pair] = by_pair[np.flatnonzero(starts)[np.cumsum(starts) - 1]]
        walk = np.lexsort((edge, first_of_pair, self.center))
        walk = walk[self.distance[walk] < cutoff]
        n_short = np.bincount(self.center[walk], minlength=self.n_atoms)
        begin = np.cumsum(n_short) - n_short

        bonds = np.flatnonzero(self.distance[self.opening] <= cutoff)
        # each short bond from both of its ends: its opening edge (from its center), then that
        # edge's reverse
        own = self.opening[bonds]
        own_edge = np.stack([own, self.reverse[own]], axis=1).reshape(-1)
        if not len(own_edge):
            return [], undirected2directed
        ends = self.center[own_edge]
        bond = np.repeat(bonds, 2)
        length = n_short[ends]
        slot = np.repeat(np.arange(len(ends)), length)
        offset = np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
        other = walk[begin[ends][slot] + offset]
        keep = other != own_edge[slot]
        slot, other = slot[keep], other[keep]
        if not len(slot):
            return [], undirected2directed
        rows = np.stack(
            [ends[slot], bond[slot], own_edge[slot], self.to_undirected[other], other], axis=1
        )
        return rows, undirected2directed


class _ArrayGraphs:
    """A converter's ``create_graph`` that returns an :class:`ArrayGraph` (CHGNet's own objects when
    the neighbour list has an edge without its reverse). A class, not a closure, so a model
    holding it pickles."""

    def __init__(self, create) -> None:
        self.create = create

    def __call__(self, n_atoms, center_index, neighbor_index, image, distance):
        graph = ArrayGraph.build(n_atoms, center_index, neighbor_index, image, distance)
        return (
            self.create(n_atoms, center_index, neighbor_index, image, distance)
            if graph is None
            else graph
        )


def use_array_graphs(converter: Any) -> Any:
    """Make a CHGNet ``CrystalGraphConverter`` build its graphs as :class:`ArrayGraph` (in place;
    returns the converter). The graphs are unchanged, element for element; only the time to build
    them is."""
    if not isinstance(converter.create_graph, _ArrayGraphs):
        converter.create_graph = _ArrayGraphs(converter.create_graph)
    return converter
