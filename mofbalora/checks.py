"""MOF chemistry checks for screening: MOFChecker's diagnostics (through ``mofchecker-next``) and
pymatgen's CIF consistency check, one verdict per structure.

``mofchecker-next`` (a maintained, faster re-implementation of MOFChecker 2.0; GPL-2.0) is an
optional extra (``pip install "mofbalora[checks]"``, or ``bash scripts/install_checks.sh
.venv/bin/python``), imported only when checks run. Each failure has a short name (the MOFChecker
descriptor without ``has_``):

==================================  ================================================================
name                                what it usually means
==================================  ================================================================
``no_metal``                        no metal atom: not a MOF (or metal atoms lost)
``atomic_overlaps``                 atoms closer than their covalent radii allow (disorder,
                                    duplicated atoms)
``overcoordinated_c`` / ``_n`` /    an atom with more bonds than it can have (disorder, wrong bonds)
``_h``
``undercoordinated_c`` / ``_n``     C or N with too few bonds: typically **missing hydrogen atoms**
``undercoordinated_rare_earth`` /   a rare-earth / alkali or alkaline-earth metal with too few
                                    neighbours
``undercoordinated_alkali_alkaline``
``lone_molecule``                   a finite molecule not bonded to the framework (solvent, counter-
                                    ion)
``suspicious_terminal_oxo``         a terminal oxo on a metal that does not form them (missing H on
                                    O)
``high_charges``                    EQeq partial charges out of the plausible range (only with
                                    ``charges=True``: not in the default set, see below)
``geometrically_exposed_metal``     a metal with an implausibly open coordination sphere (missing
                                    ligand)
``cif_composition``                 pymatgen's ``CifParser.check``: the atoms do not match the CIF's
                                    formula
==================================  ================================================================

Open metal sites, 2-D connectivity and linker charges are chemistry, not errors, and are not
failures. A diagnostic that raises on a structure is recorded in ``checks_detail`` and the others
still count; a checker that fails on the whole structure gives ``checks="error"`` for that structure
only.

The charge check is opt-in (``charges=True`` on :func:`run_checks`, :func:`checks_of_file`,
:func:`check_cache`): its EQeq Ewald sum grows with the square of the atom count, and it was 78 % of
the checks' cost on CoRE MOF cells (94 % after the speed-ups below) for a verdict that adds little
(``high_charges`` is the only flag of about 0.4 % of CoRE MOF structures; reports/checks_speed.md).
The other verdicts do not depend on it (:func:`without_charges`).

The verdicts depend on the file and the checker, not on any model: :func:`checks_of_file` keeps them
in the content cache (:mod:`mofbalora.data.cache`, keyed by the file's sha256 under a namespace
naming the checker and the check set, :func:`check_namespace`), so screening the same candidates
again with another model does not run them again, and verdicts with and without the charge check are
never mixed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import types
import warnings
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

CheckPolicy = Literal["off", "flag", "exclude"]
CHECK_POLICIES: tuple[str, ...] = ("off", "flag", "exclude")
#: flag: every structure is ranked and its failed checks are shown; nothing is removed on a
#: heuristic's word
DEFAULT_CHECK_POLICY: CheckPolicy = "flag"
#: the ``error`` reason of a row excluded by ``checks="exclude"`` (failed check names in ``detail``)
FAILED_CHECKS_REASON = "failed_checks"
INSTALL_HINT = (
    "MOF chemistry checks need the optional extra mofchecker-next (GPL-2.0): "
    'pip install "mofbalora[checks]" (Python 3.10) or '
    "bash scripts/install_checks.sh .venv/bin/python"
)
CHECKER = "mofchecker-next 0.1.2"

#: failure name -> (mofchecker descriptor, the value that means the check failed)
FAILURES: dict[str, tuple[str, bool]] = {
    "no_metal": ("has_metal", False),
    "atomic_overlaps": ("has_atomic_overlaps", True),
    "overcoordinated_c": ("has_overcoordinated_c", True),
    "overcoordinated_n": ("has_overcoordinated_n", True),
    "overcoordinated_h": ("has_overcoordinated_h", True),
    "undercoordinated_c": ("has_undercoordinated_c", True),
    "undercoordinated_n": ("has_undercoordinated_n", True),
    "undercoordinated_rare_earth": ("has_undercoordinated_rare_earth", True),
    "undercoordinated_alkali_alkaline": ("has_undercoordinated_alkali_alkaline", True),
    "lone_molecule": ("has_lone_molecule", True),
    "suspicious_terminal_oxo": ("has_suspicious_terminal_oxo", True),
    "high_charges": ("has_high_charges", True),
    "geometrically_exposed_metal": ("has_geometrically_exposed_metal", True),
}
CIF_FAILURE = "cif_composition"
#: the EQeq diagnostic (an Ewald sum, O(N^2) in the atom count): run only with ``charges=True``
CHARGE_FAILURE = "high_charges"
#: whether the checks include :data:`CHARGE_FAILURE` unless told otherwise (reports/checks_speed.md)
DEFAULT_CHARGES = False
#: the one diagnostic that needs libconeangle (no wheels for Python > 3.10; its source build needs
#: Fortran and a git download), not run where libconeangle is missing
CONE_ANGLE_FAILURE = "geometrically_exposed_metal"


def check_policy(policy: str) -> CheckPolicy:
    """``policy`` validated (off | flag | exclude)."""
    if policy not in CHECK_POLICIES:
        raise ValueError(f"unknown checks policy {policy!r}; choose from {list(CHECK_POLICIES)}")
    return policy  # type: ignore[return-value]


def checker_available() -> bool:
    """Whether ``mofchecker-next`` is installed (without importing it)."""
    return importlib.util.find_spec("mofchecker_next") is not None


def _pymatgen_compat() -> None:
    """structuregraph-helpers 0.0.9 (the latest; mofchecker-next builds its bond graph with it) uses
    two pymatgen names that pymatgen has since renamed; add the old names as aliases of the same
    objects."""
    from pymatgen.analysis import local_env
    from pymatgen.analysis.graphs import StructureGraph

    if not hasattr(local_env, "BrunnerNN_relative") and hasattr(local_env, "BrunnerNNRelative"):
        local_env.BrunnerNN_relative = local_env.BrunnerNNRelative
    if not hasattr(StructureGraph, "with_local_env_strategy") and hasattr(
        StructureGraph, "from_local_env_strategy"
    ):
        StructureGraph.with_local_env_strategy = StructureGraph.from_local_env_strategy


def _missing_cone_angle(*args, **kwargs):
    raise RuntimeError(
        "libconeangle is not installed: geometrically_exposed_metal cannot be checked"
    )


def has_cone_angle() -> bool:
    module = sys.modules.get("libconeangle")
    if module is not None:
        return getattr(module, "cone_angle", None) is not _missing_cone_angle
    return importlib.util.find_spec("libconeangle") is not None


def import_checker():
    """``mofchecker_next.batch.check_structure``, or ImportError with the install command.

    Also installs the speed-ups of :func:`speedups` (once per process; the verdicts are the same
    without).
    """
    if not checker_available():
        raise ImportError(INSTALL_HINT)
    _pymatgen_compat()
    if not has_cone_angle():
        # mofchecker-next imports libconeangle at module level but only one diagnostic calls it:
        # stand in with a module that refuses, and do not request that diagnostic (see
        # diagnostics())
        stub = types.ModuleType("libconeangle")
        stub.cone_angle = _missing_cone_angle
        sys.modules["libconeangle"] = stub
    _install_speedups(_import_graph_helpers())
    from mofchecker_next.batch import check_structure

    return check_structure


# -- speed-ups that leave every verdict as it is ---------------------------------------------------
# Measured in benchmarks/bench_checks.py and reports/checks_speed.md; tests/test_checks_speed.py
# checks that the check columns are the same with them off (``speedups(False)``) and on, on CoRE MOF
# and QMOF files.
#
# 1. structuregraph_helpers.create loads its three cut-off tables (370 kB of YAML) with PyYAML's
#    pure-Python loader when first imported: 2.5-11 s per process. libyaml's C loader reads the same
#    tables (equal dicts, same key order) in 0.4 s.
# 2. pymatgen builds the bond graph with one ``Structure.get_neighbors`` per site
#    (CutOffDictNN.get_nn_info), and MOFChecker counts each H's neighbours the same way. Each call
#    runs pymatgen's cell-list search over every atom of the cell and rebuilds the coordinate
#    arrays: O(N^2) per structure. :func:`_site_neighbours` gives each site the same neighbours,
#    images and distances in the same order from one search per structure.
# 3. The graph's neighbour lists (``get_connected_sites``, asked twice per C atom, each neighbour
#    rebuilt through a dict round trip) and edge list are made once per graph and without the round
#    trip, and the lone-molecule test's 3x3x3 supercell graph is built from arrays
#    (:func:`_fast_finite_components`).
# Each replaces a library function by one that returns the same value, and each takes the library's
# own path when ``speedups(False)``. The EQeq charges (``high_charges``) are untouched: see
# :data:`DEFAULT_CHARGES`.

#: the speed-ups :func:`run_checks` takes: ``neighbours`` (2), ``graph`` (3); off: the libraries'
#: own paths
_FAST = {"neighbours": True, "graph": True}
#: a centre's candidate atoms are found within (cut-off + this margin, Å): a superset of its
#: neighbours
_CANDIDATE_MARGIN_A = 0.5
_NUMERICAL_TOL = 1e-8  # Structure.get_neighbors' default numerical_tol


@contextlib.contextmanager
def speedups(enabled: bool, **routes: bool) -> Iterator[None]:
    """Within the block, :func:`run_checks` takes the speed-ups above (``True``, the default outside
    any block) or the libraries' own paths (``False``: the reference, for tests and benchmarks);
    ``routes`` overrides one of them (``neighbours=``, ``graph=``). The columns are the same either
    way. (The C YAML loader is chosen once per process, at the first import.)"""
    unknown = sorted(set(routes) - set(_FAST))
    if unknown:
        raise ValueError(f"unknown speed-up(s) {unknown}; choose from {sorted(_FAST)}")
    before = dict(_FAST)
    _FAST.update({name: bool(routes.get(name, enabled)) for name in _FAST})
    try:
        yield
    finally:
        _FAST.update(before)


def _import_graph_helpers(c_loader: bool = True):
    """``structuregraph_helpers.create``, imported (the first time) with libyaml's C loader standing
    in for ``yaml.UnsafeLoader`` while its module-level ``yaml.load`` calls run, when PyYAML has
    libyaml."""
    module = sys.modules.get("structuregraph_helpers.create")
    if module is not None:
        return module
    import yaml

    fast = getattr(yaml, "CUnsafeLoader", None) if c_loader else None
    plain = yaml.UnsafeLoader
    if fast is not None:
        yaml.UnsafeLoader = fast
    try:
        import structuregraph_helpers.create as module
    finally:
        yaml.UnsafeLoader = plain
    return module


def _periodic_structure(structure) -> bool:
    from pymatgen.core import IStructure

    return isinstance(structure, IStructure) and len(structure) > 0


def _site_neighbours(structure, centres: Sequence[int], r: float) -> list | None:
    """``structure.get_neighbors(structure[c], r)`` for each ``c`` in ``centres``, as ``(indices,
    images, distances)`` arrays in that call's order, from one neighbour search for the whole
    structure; None where pymatgen's compiled search is missing (then the caller takes pymatgen's
    own path).

    pymatgen's ``find_points_in_spheres`` finds one centre's neighbours by walking the cells around
    it (a grid anchored at the centre alone) and, within a cell, the atoms in the order they were
    given. So one search at ``r`` + a margin gives each centre a superset of its neighbours, and the
    same search over just those candidates (in index order) with that centre alone returns what the
    search over all atoms returns, distances and images included (the same arithmetic on the same
    coordinates), in the same order. Then the filters of ``Structure.get_neighbor_list``
    (``exclude_self`` with a one-site list: index 0 at zero distance) and ``get_all_neighbors`` (the
    centre itself) as pymatgen applies them.
    """
    import numpy as np

    try:
        from pymatgen.optimization.neighbors import find_points_in_spheres
    except ImportError:
        return None
    from pymatgen.core.sites import Site

    tol = _NUMERICAL_TOL
    sites = structure.sites
    cart = np.ascontiguousarray(structure.cart_coords, dtype=float)
    matrix = np.ascontiguousarray(structure.lattice.matrix, dtype=float)
    pbc = np.ascontiguousarray(structure.pbc, dtype=np.int64)
    finite = bool(np.isfinite(cart).all())
    centres = np.asarray(centres, dtype=np.int64)
    if len(centres) == 0:
        return []
    ci, pi, _, _ = find_points_in_spheres(
        cart,
        np.ascontiguousarray(cart[centres]),
        r=r + _CANDIDATE_MARGIN_A,
        pbc=pbc,
        lattice=matrix,
        tol=tol,
    )
    order = np.lexsort((pi, ci))
    ci, pi = ci[order], pi[order]
    bounds = np.searchsorted(ci, np.arange(len(centres) + 1))
    empty = (np.zeros(0, dtype=np.int64), np.zeros((0, 3)), np.zeros(0))
    out = []
    for k, c in enumerate(centres):
        candidates = np.unique(pi[bounds[k] : bounds[k + 1]])
        if len(candidates) == 0:
            out.append(empty)
            continue
        _, local, images, dists = find_points_in_spheres(
            np.ascontiguousarray(cart[candidates]),
            np.ascontiguousarray(cart[c : c + 1]),
            r=r,
            pbc=pbc,
            lattice=matrix,
            tol=tol,
        )
        index = candidates[local]
        keep = ~((index == 0) & (dists <= tol))
        csite = sites[c]
        for j in np.flatnonzero(keep & (dists <= tol)):  # get_all_neighbors drops the centre itself
            # the same site: pymatgen's test below is True (NaN coords aside)
            if index[j] == c and finite:
                keep[j] = False
                continue
            psite = sites[index[j]]
            if not (
                psite.species != csite.species
                or not np.allclose(psite.coords, csite.coords, atol=Site.position_atol)
                or psite.properties != csite.properties
            ):
                keep[j] = False
        out.append((index[keep], images[keep], dists[keep]))
    return out


def _fast_all_nn_info(strategy, structure) -> list[list[dict]]:
    """``CutOffDictNN.get_all_nn_info`` (``get_nn_info`` for every site) from
    :func:`_site_neighbours`: the same neighbour dicts (site, image, weight, site_index) in the
    same order."""
    from pymatgen.core.local_env import NearNeighbors
    from pymatgen.core.structure import PeriodicNeighbor

    lists = None
    if _FAST["neighbours"] and _periodic_structure(structure):
        lists = _site_neighbours(structure, range(len(structure)), strategy._max_dist)
    if lists is None:
        return NearNeighbors.get_all_nn_info(strategy, structure)
    sites = structure.sites
    frac = structure.frac_coords
    lattice = structure.lattice
    species = [site.species_string for site in sites]
    lookup = strategy._lookup_dict
    out = []
    for c, (index, images, dists) in enumerate(lists):
        cut = lookup.get(species[c], {})
        nn = []
        for p, image, d in zip(index, images, dists, strict=True):
            if not d < cut.get(species[p], 0.0):
                continue
            psite = sites[p]
            site = PeriodicNeighbor(
                species=psite.species,
                coords=frac[p] + image,
                lattice=lattice,
                properties=psite.properties,
                nn_distance=d,
                index=p,
                image=tuple(image),
                label=psite.label,
            )
            nn.append({"site": site, "image": site.image, "weight": d, "site_index": site.index})
        out.append(nn)
    return out


def _fast_overcoordinated_h(plain):
    """mofchecker-next's ``overcoordinated_hydrogen_indices`` (H with more than one neighbour within
    the H van der Waals radius, one ``get_neighbors`` per H) from :func:`_site_neighbours`."""

    def overcoordinated_hydrogen_indices(structure, vdw_h_radius: float) -> list[int]:
        if not (_FAST["neighbours"] and _periodic_structure(structure)):
            return plain(structure, vdw_h_radius)
        hydrogens = [i for i, site in enumerate(structure) if int(site.specie.Z) == 1]
        lists = _site_neighbours(structure, hydrogens, float(vdw_h_radius))
        if lists is None:
            return plain(structure, vdw_h_radius)
        return [i for i, (index, _, _) in zip(hydrogens, lists, strict=True) if len(index) > 1]

    overcoordinated_hydrogen_indices.plain = plain
    return overcoordinated_hydrogen_indices


# a StructureGraph attribute: the graph's answers, kept for the other diagnostics
_MEMO = "_mofbalora_memo"


def _connected_sites(graph, n, jimage=(0, 0, 0)):
    """pymatgen's ``StructureGraph.get_connected_sites(n, jimage)`` step by step (the same
    ConnectedSite tuples, put in a set in the same order and sorted the same way), but each
    neighbour's site made directly rather than through ``site.as_dict()`` /
    ``PeriodicSite.from_dict`` (a new Lattice and Composition per neighbour): the same species,
    fractional coordinates (the same float sums) and label, on an equal lattice. Sites with
    properties (which that round trip rewrites in place) take pymatgen's own path."""
    import numpy as np
    from pymatgen.core.graphs import ConnectedSite
    from pymatgen.core.sites import PeriodicSite

    structure = graph.structure
    connected_sites = set()
    connected_site_images = set()
    out_edges = [(u, v, d, "out") for u, v, d in graph.graph.out_edges(n, data=True)]
    in_edges = [(u, v, d, "in") for u, v, d in graph.graph.in_edges(n, data=True)]
    for u, v, data, dirc in out_edges + in_edges:
        to_jimage = data["to_jimage"]
        if dirc == "in":
            u, v = v, u
            to_jimage = np.multiply(-1, to_jimage)
        to_jimage = tuple(map(int, np.add(to_jimage, jimage)))
        v_site = structure[v]
        if v_site.properties:
            return type(graph).get_connected_sites(graph, n, jimage)
        abc = np.add(v_site.frac_coords.astype(float).tolist(), to_jimage).tolist()
        site = PeriodicSite(v_site.species, abc, structure.lattice, label=v_site.label)
        relative_jimage = np.subtract(to_jimage, jimage)
        dist = structure[u].distance(structure[v], jimage=relative_jimage)
        weight = data.get("weight")
        if (v, to_jimage) not in connected_site_images:
            connected_sites.add(
                ConnectedSite(site=site, jimage=to_jimage, index=v, weight=weight, dist=dist)
            )
            connected_site_images.add((v, to_jimage))
    _connected = list(connected_sites)
    _connected.sort(key=lambda x: x.dist)
    return _connected


def _fast_build_graph(plain):
    """mofchecker-next's ``build_structure_graph``, whose graph (built once per structure and shared
    by the diagnostics, never changed after) answers ``get_connected_sites`` with
    :func:`_connected_sites` and remembers the answers (undercoordinated C asks twice per C atom),
    and remembers its edge list (five diagnostics walk it)."""

    def build_structure_graph(*args, **kwargs):
        graph = plain(*args, **kwargs)
        if _FAST["graph"]:
            connected: dict = {}
            owner = weakref.ref(graph)  # no reference cycle: the graph goes when the checker goes

            def get_connected_sites(n, jimage=(0, 0, 0)):
                try:
                    key = (n, tuple(jimage))
                    hit = connected.get(key)
                except TypeError:  # unhashable
                    return _connected_sites(owner(), n, jimage)
                if hit is None:
                    hit = connected[key] = _connected_sites(owner(), n, jimage)
                return list(hit)

            graph.get_connected_sites = get_connected_sites
            setattr(graph, _MEMO, {})
        return graph

    build_structure_graph.plain = plain
    return build_structure_graph


def _fast_edges_and_images(plain):
    """mofchecker-next's ``structure_graph_edges_and_images``, once per graph of
    :func:`_fast_build_graph`."""

    def structure_graph_edges_and_images(structure_graph):
        memo = getattr(structure_graph, _MEMO, None)
        if memo is None or not _FAST["graph"]:
            return plain(structure_graph)
        if "edges" not in memo:
            memo["edges"] = plain(structure_graph)
        edges, images = memo["edges"]
        return list(edges), list(images)

    structure_graph_edges_and_images.plain = plain
    return structure_graph_edges_and_images


def _fast_finite_components(plain):
    """mofchecker-next's ``finite_component_indices`` (the lone-molecule test: components of the
    3x3x3 supercell graph that touch no supercell boundary and have an atom in the origin cell) with
    the edges of each cell and the per-node tests computed as arrays: the same rustworkx graph
    (nodes, edges and edge order), the same components, the same output."""

    def finite_component_indices(structure_graph):
        if not _FAST["graph"]:
            return plain(structure_graph)
        import numpy as np
        import rustworkx as rx
        from mofchecker_next.checks._subgraph_rx import _cells

        n = len(structure_graph)
        frac = structure_graph.structure.frac_coords
        rows = [
            (int(u), int(v), *(int(x) for x in d.get("to_jimage", (0, 0, 0))))
            for u, v, d in structure_graph.graph.edges(data=True)
        ]
        table = np.array(rows, dtype=np.int64).reshape(-1, 5)
        u, v, jimage = table[:, 0], table[:, 1], table[:, 2:]
        cells = _cells()
        order = np.full((3, 3, 3), -1, dtype=np.int64)
        # the 27 cells {0,1,2}^3 -> their index (the reference's dict)
        for ci, c in enumerate(cells):
            order[tuple(c)] = ci
        n_super = n * len(cells)
        graph = rx.PyGraph(multigraph=True)
        graph.add_nodes_from(range(n_super))
        boundary = np.zeros(n_super, dtype=bool)
        for ci, c in enumerate(cells):
            target = c + jimage
            inside = ((target >= 0) & (target <= 2)).all(axis=1)
            wrapped = np.mod(target, 3)
            a = ci * n + u
            b = order[wrapped[:, 0], wrapped[:, 1], wrapped[:, 2]] * n + v
            graph.add_edges_from(list(zip(a.tolist(), b.tolist(), (~inside).tolist(), strict=True)))
            boundary[a[~inside]] = True
            boundary[b[~inside]] = True
        nodes = np.arange(n_super)
        in_cell = (
            np.all(cells[nodes // n] + frac[nodes % n] <= 1.0, axis=1)
            if n
            else np.zeros(0, dtype=bool)
        )
        out, seen = [], set()
        for comp in rx.connected_components(graph):
            members = np.fromiter(comp, dtype=np.int64, count=len(comp))
            if boundary[members].any() or not in_cell[members].any():
                continue
            key = tuple(sorted(set((members % n).tolist())))
            if key not in seen:
                seen.add(key)
                out.append(list(key))
        return out

    finite_component_indices.plain = plain
    return finite_component_indices


def _install_speedups(graph_helpers) -> None:
    """Route the vesta cut-off strategy's ``get_all_nn_info`` (what
    ``StructureGraph.from_local_env_strategy`` calls) and the H-overcoordination count through
    :func:`_site_neighbours`, and mofchecker-next's graph helpers through their array / remembering
    versions above (idempotent; each takes the library's own path when :func:`speedups` is off)."""
    from pymatgen.core.local_env import CutOffDictNN

    strategy = graph_helpers.get_local_env_method("vesta")
    if type(strategy).get_nn_info is CutOffDictNN.get_nn_info and "get_all_nn_info" not in vars(
        strategy
    ):
        strategy.get_all_nn_info = types.MethodType(_fast_all_nn_info, strategy)
    from mofchecker_next.checks import _subgraph_rx, geometry
    from mofchecker_next.checks import graph as graph_module

    for module, name, wrap in (
        (geometry, "overcoordinated_hydrogen_indices", _fast_overcoordinated_h),
        (graph_module, "build_structure_graph", _fast_build_graph),
        (graph_module, "structure_graph_edges_and_images", _fast_edges_and_images),
        (_subgraph_rx, "finite_component_indices", _fast_finite_components),
    ):
        if not hasattr(getattr(module, name), "plain"):
            setattr(module, name, wrap(getattr(module, name)))


def diagnostics(charges: bool = DEFAULT_CHARGES) -> dict[str, tuple[str, bool]]:
    """The failures this installation checks (all of :data:`FAILURES` when libconeangle is present
    and ``charges``; without ``charges``, no :data:`CHARGE_FAILURE`)."""
    return {
        k: v
        for k, v in FAILURES.items()
        if (k != CONE_ANGLE_FAILURE or has_cone_angle()) and (k != CHARGE_FAILURE or charges)
    }


def cif_consistency(path: str | Path, structure) -> str | None:
    """pymatgen's ``CifParser(path).check(structure)``: None if the structure's atoms match the
    CIF's stated composition, else pymatgen's reason (e.g. "Missing elements H from PMG structure
    composition")."""
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CifParser(str(path)).check(structure)


def run_checks(
    structure, path: str | Path | None = None, *, charges: bool = DEFAULT_CHARGES
) -> dict:
    """The check columns of one ordered pymatgen structure (``path``: its CIF, for the consistency
    check).

    ``charges``: also run the EQeq ``high_charges`` diagnostic (most of the checks' cost on CoRE MOF
    cells; the other verdicts do not depend on it).

    Returns ``{"checks": "ok" | "failed" | "error", "failed_checks": "a;b", "checks_detail": str}``.
    Never raises for a bad structure: a checker crash gives ``checks="error"`` with the message in
    ``checks_detail``. Raises ImportError (with the install command) when mofchecker-next is
    missing.
    """
    check_structure = import_checker()
    wanted = diagnostics(charges)
    failed: list[str] = []
    notes: list[str] = []
    status = "ok"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = check_structure(structure, descriptors=sorted({d for d, _ in wanted.values()}))
    except Exception as exc:  # the checker failed on this structure as a whole
        result = {}
        status = "error"
        notes.append(f"{CHECKER}: {type(exc).__name__}: {exc}"[:200])
    errors = result.get("errors", {})
    for name, (descriptor, bad) in wanted.items():
        if descriptor in result and bool(result[descriptor]) == bad:
            failed.append(name)
    for descriptor, message in errors.items():
        notes.append(f"{descriptor}: {message}"[:160])
    if path is not None:
        try:
            reason = cif_consistency(path, structure)
        except Exception as exc:
            reason = None
            notes.append(f"CifParser.check: {type(exc).__name__}: {exc}"[:160])
        if reason:
            failed.append(CIF_FAILURE)
            notes.append(f"{CIF_FAILURE}: {' '.join(reason.split())}"[:200])
    if failed:
        status = "failed"
    return {"checks": status, "failed_checks": ";".join(failed), "checks_detail": "; ".join(notes)}


#: bump when :func:`run_checks`' columns change meaning (the cache namespace carries it)
CHECKS_CACHE_VERSION = 1
#: the check columns (what the cache stores)
CHECK_COLUMNS = ("checks", "failed_checks", "checks_detail")


def check_namespace(charges: bool = DEFAULT_CHARGES) -> str:
    """The name of this installation's check set (checker version, libconeangle or not, EQeq charges
    or not): the check cache's namespace, and what a resumable screen should record so that verdicts
    of two check sets are never mixed. With ``charges`` it is the namespace of the verdicts cached
    before the charges became optional (the same set)."""
    cone = "cone" if has_cone_angle() else "no-cone"
    charge = "" if charges else "-no-charges"
    return f"checks/{CHECKER.replace(' ', '-')}-{cone}{charge}-v{CHECKS_CACHE_VERSION}"


def check_cache(charges: bool = DEFAULT_CHARGES):
    """The content cache of check verdicts for this installation and check set
    (:func:`check_namespace`)."""
    from mofbalora.data.cache import ContentCache

    return ContentCache(check_namespace(charges))


def checks_of_file(
    path: str | Path, digest: str | None, read, cache=None, *, charges: bool = DEFAULT_CHARGES
) -> dict:
    """:func:`run_checks` of the structure in ``path`` (``read(path)`` parses it) through the check
    cache.

    ``digest``: the file's sha256 (None: not cached). A verdict of ``checks="error"`` (the checker
    crashed) is not cached, so a transient failure is retried next time; a file that cannot be read
    raises as ``read`` does. ``cache``: default ``check_cache(charges)``; one passed in must be of
    the same check set.
    """
    cache = cache if cache is not None else check_cache(charges)
    if digest is not None:
        hit = cache.get(digest)
        if isinstance(hit, dict) and set(hit) == set(CHECK_COLUMNS):
            return hit
    cols = run_checks(read(path), path, charges=charges)
    if digest is not None and cols["checks"] != "error":
        cache.put(digest, cols)
    return cols


def without_charges(cols: dict) -> dict:
    """The check columns a run without the charge check gives, from those of a run with it: each
    diagnostic is computed on its own, so that is the same columns less ``high_charges`` (and its
    error note, if it raised); ``failed`` becomes ``ok`` when nothing else failed."""
    failed = [
        n for n in str(cols.get("failed_checks") or "").split(";") if n and n != CHARGE_FAILURE
    ]
    descriptor = FAILURES[CHARGE_FAILURE][0]
    notes = [
        n
        for n in str(cols.get("checks_detail") or "").split("; ")
        if n and not n.startswith(f"{descriptor}: ")
    ]
    status = cols.get("checks")
    if status in ("ok", "failed"):
        status = "failed" if failed else "ok"
    return {"checks": status, "failed_checks": ";".join(failed), "checks_detail": "; ".join(notes)}


def remember_checks(
    records, cache=None, *, charges: bool = DEFAULT_CHARGES, records_charges: bool | None = None
) -> int:
    """Put the check columns of already screened rows (``key`` = content digest) into the check
    cache of ``charges``; returns how many were stored. Used when a screen starts over (another
    model): the rows are discarded, their verdicts are not.

    ``records_charges``: whether the rows were checked with the charge check (None: unknown). Rows
    with it go into a cache without it less ``high_charges`` (:func:`without_charges`), and so do
    rows of unknown set (without the charge check they are unchanged by that); rows without it, or
    of unknown set, are never stored in a cache with it (their missing ``high_charges`` would
    read as a pass)."""
    if charges and records_charges is not True:
        return 0
    cache = cache if cache is not None else check_cache(charges)
    n = 0
    for rec in records:
        key = rec.get("key") or ""
        if (
            rec.get("status") != "ok"
            or rec.get("checks") not in ("ok", "failed")
            or key.startswith("path:")
        ):
            continue
        cols = {c: str(rec.get(c) or "") for c in CHECK_COLUMNS}
        cache.put(key, cols if charges else without_charges(cols))
        n += 1
    return n


def not_run(reason: str = "") -> dict:
    """The check columns of a structure that was not checked."""
    return {"checks": "not_run", "failed_checks": "", "checks_detail": reason}
