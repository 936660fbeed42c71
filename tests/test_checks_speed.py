"""The checks' speed-ups (mofbalora.checks: C YAML loader, one neighbour search per structure, the
graph's answers made once) give exactly what the libraries' own paths give, on real CoRE MOF and
QMOF files and on structures made to hit the edge cases; and the optional charge check keeps its
verdicts apart."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from mofbalora import checks
from mofbalora.data.structures import read_structure

pytestmark = [
    pytest.mark.skipif(not checks.checker_available(), reason=checks.INSTALL_HINT),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def checker():
    checks.import_checker()
    from mofchecker_next.checks import _subgraph_rx, geometry
    from mofchecker_next.checks import graph as graph_module

    return graph_module, geometry, _subgraph_rx


@pytest.fixture(scope="module")
def coremof_structures(tmp_path_factory):
    """Five CoRE MOF 2019-ASR structures of at most 300 atoms (a fixed random draw), with their
    files."""
    from mofbalora.data.candidates import export_coremof
    from mofbalora.data.structures import StructureError

    out = []
    for path in export_coremof("2019-ASR", tmp_path_factory.mktemp("coremof"), limit=16, seed=3):
        try:
            s = read_structure(path)
        except StructureError:
            continue
        if len(s) <= 300:
            out.append((path, s))
    assert len(out) >= 5
    return out[:5]


def _nn_key(all_nn_info):
    return [
        [
            (
                d["site_index"],
                d["image"],
                d["weight"],
                d["site"],
                tuple(d["site"].frac_coords),
                tuple(d["site"].coords),
                d["site"].nn_distance,
                d["site"].label,
                type(d["image"][0]),
            )
            for d in nn
        ]
        for nn in all_nn_info
    ]


def _everything(structure, path, graph_module, geometry, subgraph_rx, charges):
    """What each speed-up touches, and the check columns, with the current setting."""
    import structuregraph_helpers.create as create
    from mofchecker_next.core import MOFChecker

    strategy = create.get_local_env_method("vesta")
    graph = graph_module.build_structure_graph(structure)
    edges = [
        (u, v, k, tuple(int(x) for x in d["to_jimage"]))
        for u, v, k, d in graph.graph.edges(keys=True, data=True)
    ]
    connected = [
        [
            (c.index, c.jimage, c.dist, c.site, tuple(c.site.coords))
            for c in graph.get_connected_sites(i)
        ]
        for i in range(len(structure))
    ]
    mc = MOFChecker(structure)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        indices = {
            name: getattr(mc, name)
            for name in (
                "overvalent_c_indices",
                "overcoordinated_n_indices",
                "overvalent_h_indices",
                "undercoordinated_c_indices",
                "undercoordinated_n_indices",
                "undercoordinated_rare_earth_indices",
                "_undercoordinated_alkali_alkaline_indices",
                "lone_molecule_indices",
                "suspicious_terminal_oxo_indices",
            )
        }
    return {
        "nn_info": _nn_key(strategy.get_all_nn_info(structure)),
        "edges": edges,
        "connected": connected,
        "edge_list": graph_module.structure_graph_edges_and_images(graph),
        "components": subgraph_rx.finite_component_indices(graph),
        "h": geometry.overcoordinated_hydrogen_indices(structure, 1.1),
        "indices": indices,
        "columns": checks.run_checks(structure, path, charges=charges),
    }


def _assert_same_with_and_without(structure, path, checker, charges=False):
    with checks.speedups(False):
        plain = _everything(structure, path, *checker, charges=charges)
    with checks.speedups(True):
        fast = _everything(structure, path, *checker, charges=charges)
    for key in plain:
        assert fast[key] == plain[key], key
    return plain


def test_c_yaml_loader_reads_the_same_cutoff_tables(checker):
    import structuregraph_helpers.create as create
    import yaml

    # the stand-in was put back
    assert yaml.UnsafeLoader is not getattr(yaml, "CUnsafeLoader", None)
    tables = {
        "tuned_vesta.yml": create._VESTA_CUTOFFS,
        "atom_typing_radii.yml": create._ATOM_TYPING_CUTOFFS,
        "li_radii.yml": create._LI_TYPING_CUTOFFS,
    }
    for name, loaded in tables.items():
        text = (Path(create.__file__).parent / "data" / name).read_text(encoding="utf8")
        plain = yaml.load(text, Loader=yaml.UnsafeLoader)  # noqa: S506 (the library's own files)
        assert list(plain.items()) == list(loaded.items())  # same keys (tuples), values and order
        pairs = zip(plain.items(), loaded.items(), strict=True)
        assert all(type(a) is type(b) for pair in pairs for a, b in zip(*pair, strict=True))
    assert create.VestaCutoffDictNN._max_dist == max(create._VESTA_CUTOFFS.values())


def test_speedups_give_the_same_graph_and_columns_on_qmof(checker, sample_cifs):
    # with EQeq on both paths: the full sample is in benchmarks/bench_checks.py
    for path in sample_cifs[:3]:
        _assert_same_with_and_without(read_structure(path), path, checker, charges=True)


def test_speedups_give_the_same_graph_and_columns_on_coremof(checker, coremof_structures):
    failed = set()
    for path, structure in coremof_structures:
        plain = _assert_same_with_and_without(structure, path, checker)
        failed.update(plain["columns"]["failed_checks"].split(";"))
    assert failed - {""}, "the draw should include some failing structures"


def test_speedups_keep_pymatgen_order_and_filters_on_awkward_structures(checker, sample_cifs):
    """A site stored outside the cell, a skewed supercell, an atom doubled on atom 0 (pymatgen's
    one-site neighbour search drops index 0 at zero distance, and get_all_neighbors the centre
    itself), a lone water."""
    path = next(p for p in sample_cifs if p.stem == "qmof-000dce3")
    base = read_structure(path)
    shifted = base.copy()
    shifted.replace(3, shifted[3].species, shifted[3].frac_coords + np.array([1.0, -2.0, 0.0]))
    skewed = base.copy()
    skewed.make_supercell([[2, 1, 0], [0, 1, 0], [0, 0, 1]])
    doubled = base.copy()
    doubled.append(doubled[0].species, doubled[0].frac_coords)
    wet = base.copy()
    centre = wet.lattice.get_cartesian_coords([0.5, 0.5, 0.5])
    for species, offset in (("O", [0, 0, 0]), ("H", [0.96, 0, 0]), ("H", [-0.24, 0.93, 0])):
        wet.append(species, centre + np.array(offset), coords_are_cartesian=True)
    for structure in (shifted, skewed, doubled, wet):
        _assert_same_with_and_without(structure, None, checker)


def test_a_wrong_neighbour_order_would_be_caught(checker, sample_cifs, monkeypatch):
    """The comparison above is sharp: the graph built from the same neighbours in another order
    differs."""
    path = sample_cifs[0]
    structure = read_structure(path)
    with checks.speedups(False):
        plain = _everything(structure, path, *checker, charges=False)
    real = checks._fast_all_nn_info
    monkeypatch.setattr(
        checks, "_fast_all_nn_info", lambda strategy, s: [nn[::-1] for nn in real(strategy, s)]
    )
    import structuregraph_helpers.create as create

    strategy = create.get_local_env_method("vesta")
    monkeypatch.setattr(
        strategy, "get_all_nn_info", lambda s: checks._fast_all_nn_info(strategy, s)
    )
    with checks.speedups(True):
        reversed_ = _everything(structure, path, *checker, charges=False)
    assert reversed_["nn_info"] != plain["nn_info"]


def test_speedups_reject_an_unknown_route():
    with pytest.raises(ValueError, match="neighbours"), checks.speedups(True, kdtree=True):
        pass


def test_charges_are_optional_and_cached_apart(sample_cifs):
    path = next(p for p in sample_cifs if p.stem == "qmof-00019ff")
    structure = read_structure(path)
    with_charges = checks.run_checks(structure, path, charges=True)
    without = checks.run_checks(structure, path, charges=False)
    assert checks.without_charges(with_charges) == without
    assert "high_charges" not in checks.diagnostics(charges=False)
    assert "high_charges" in checks.diagnostics(charges=True)
    assert checks.check_namespace(True) != checks.check_namespace(False)
    cone = "cone" if checks.has_cone_angle() else "no-cone"
    # the verdicts cached so far
    assert checks.check_namespace(True) == f"checks/mofchecker-next-0.1.2-{cone}-v1"


def test_without_charges_drops_only_the_charge_verdict():
    cols = {
        "checks": "failed",
        "failed_checks": "lone_molecule;high_charges",
        "checks_detail": "has_high_charges: ValueError: x; cif_composition: Missing elements H",
    }
    assert checks.without_charges(cols) == {
        "checks": "failed",
        "failed_checks": "lone_molecule",
        "checks_detail": "cif_composition: Missing elements H",
    }
    only = {"checks": "failed", "failed_checks": "high_charges", "checks_detail": ""}
    assert checks.without_charges(only) == {
        "checks": "ok",
        "failed_checks": "",
        "checks_detail": "",
    }


def test_remembered_verdicts_never_mix_check_sets(tmp_path, monkeypatch):
    monkeypatch.setenv("MOFBALORA_CACHE", str(tmp_path / "cache"))
    rows = [
        {
            "key": "a" * 64,
            "status": "ok",
            "checks": "failed",
            "failed_checks": "high_charges",
            "checks_detail": "",
        }
    ]
    assert checks.remember_checks(rows, charges=False) == 1
    assert checks.check_cache(charges=False).get("a" * 64) == {
        "checks": "ok",
        "failed_checks": "",
        "checks_detail": "",
    }
    # rows of an unknown check set may lack high_charges: never stored where it counts
    assert checks.remember_checks(rows, charges=True) == 0
    assert checks.check_cache(charges=True).get("a" * 64) is None
    assert checks.remember_checks(rows, charges=True, records_charges=True) == 1
    assert checks.check_cache(charges=True).get("a" * 64)["failed_checks"] == "high_charges"
