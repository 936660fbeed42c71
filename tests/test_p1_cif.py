"""The P1 fast reader (mofbalora.data.p1_cif) gives exactly what the whole pymatgen way gives, and
steps aside for every file outside its case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mofbalora.data.structures as structures
from mofbalora.data.p1_cif import ordered_p1_structure
from mofbalora.data.structures import StructureError, read_structure


def _read(path: Path, fast: bool, monkeypatch) -> object:
    """read_structure with or without the fast reader: a structure, or (reason, message)."""
    with monkeypatch.context() as m:
        if not fast:
            m.setattr(structures, "_parse_p1", lambda *args: None)
        try:
            return read_structure(path)
        except StructureError as exc:
            return (exc.reason, str(exc))


def _assert_identical(a, b) -> None:
    if isinstance(a, tuple) or isinstance(b, tuple):
        assert a == b
        return
    assert np.array_equal(a.lattice.matrix, b.lattice.matrix)
    assert [str(s.specie) for s in a] == [str(s.specie) for s in b]
    assert [s.species for s in a] == [s.species for s in b]
    assert np.array_equal(a.frac_coords, b.frac_coords)
    assert np.array_equal(a.cart_coords, b.cart_coords)
    assert [s.label for s in a] == [s.label for s in b]
    assert a.site_properties == b.site_properties


def _taken(path: Path) -> bool:
    return structures._parse_p1(structures.read_cif_text(path), path, 1000) is not None


@pytest.fixture(scope="module")
def real_files(tmp_path_factory, qmof, sample_cifs) -> list[Path]:
    """QMOF files of both dialects and CoRE MOF 2019 files (ASR and FSR: ASE, Materials Studio and
    CSD exports, with errors among them)."""
    from mofbalora.data.candidates import export_coremof

    out = tmp_path_factory.mktemp("p1")
    coremof = export_coremof("2019-ASR", out / "asr", limit=40, seed=11)
    coremof += export_coremof("2019-FSR", out / "fsr", limit=20, seed=12)
    return list(sample_cifs) + list(qmof.cif_paths[::900]) + list(coremof)


def test_fast_reader_equals_pymatgen_on_real_files(real_files, monkeypatch):
    taken = 0
    for path in real_files:
        _assert_identical(_read(path, True, monkeypatch), _read(path, False, monkeypatch))
        taken += _taken(path)
    # most real files are P1 with distinct, fully occupied atoms: the fast reader must serve them
    assert taken >= 0.8 * len(real_files), (taken, len(real_files))


HEADER = """data_test
_cell_length_a 10.0
_cell_length_b 11.0
_cell_length_c 12.5
_cell_angle_alpha 90
_cell_angle_beta 100.5
_cell_angle_gamma 90
{symmetry}
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
{rows}
"""
IDENTITY = "loop_\n_symmetry_equiv_pos_as_xyz\n'x, y, z'"
ROWS = [  # elements out of pymatgen's order, a coordinate near 1/3 and 2/3, negative and > 1
    "O1 O 0.10 0.20 0.30 1.0",
    "Zn1 Zn 0.50 0.33334 0.70 1.0",
    "C1 C 0.25 -0.05 0.66666 1.0",
    "H1 H 0.75 0.85 1.05 1.0",
    "O2 O 0.60 0.10 0.15 1.0",
    "C2 C 0.90 0.45 0.40 1.0",
    "Cu1 Cu 0.05 0.95 0.90 1.0",
]


def _write(tmp_path: Path, name: str, rows=ROWS, symmetry=IDENTITY) -> Path:
    path = tmp_path / f"{name}.cif"
    path.write_text(HEADER.format(symmetry=symmetry, rows="\n".join(rows)))
    return path


def test_fast_reader_orders_wraps_and_snaps_as_pymatgen(tmp_path, monkeypatch):
    path = _write(tmp_path, "p1")
    assert _taken(path)
    fast = _read(path, True, monkeypatch)
    _assert_identical(fast, _read(path, False, monkeypatch))
    assert fast.frac_coords.min() >= 0 and fast.frac_coords.max() < 1  # wrapped
    assert (fast.frac_coords == 1 / 3).any() and (fast.frac_coords == 2 / 3).any()  # snapped
    # sites grouped by element, the file's order kept within an element
    assert [s.label for s in fast if str(s.specie) == "O"] == ["O1", "O2"]


@pytest.mark.parametrize(
    ("name", "rows", "symmetry"),
    [
        ("symmetry_ops", ROWS, "loop_\n_symmetry_equiv_pos_as_xyz\n'x, y, z'\n'-x, -y, -z'"),
        ("no_symmetry_items", ROWS, "_symmetry_space_group_name_H-M 'P 1'"),
        ("half_occupied", ROWS[:-1] + ["Cu1 Cu 0.05 0.95 0.90 0.5"], IDENTITY),
        ("uncertainty", ROWS[:-1] + ["Cu1 Cu 0.05(2) 0.95 0.90 1.0"], IDENTITY),
        ("charged_symbol", ROWS[:-1] + ["Cu1 Cu2+ 0.05 0.95 0.90 1.0"], IDENTITY),
        ("deuterium", ROWS[:-1] + ["D1 D 0.05 0.95 0.90 1.0"], IDENTITY),
        ("same_position", ROWS + ["C3 C 0.90 0.45 0.40 1.0"], IDENTITY),
        ("same_position_pbc", ROWS + ["C3 C 0.90 0.45 1.40005 1.0"], IDENTITY),
        ("unknown_coordinate", ROWS[:-1] + ["Cu1 Cu 0.05 ? 0.90 1.0"], IDENTITY),
        ("negative_length", ROWS, IDENTITY),
    ],
)
def test_files_outside_the_case_take_the_pymatgen_way(tmp_path, monkeypatch, name, rows, symmetry):
    path = _write(tmp_path, name, rows, symmetry)
    if name == "negative_length":
        path.write_text(path.read_text().replace("_cell_length_a 10.0", "_cell_length_a -3"))
    assert not _taken(path)
    _assert_identical(_read(path, True, monkeypatch), _read(path, False, monkeypatch))


def test_a_cut_pymatgen_file_is_still_caught(sample_cifs, tmp_path, monkeypatch):
    """The QMOF dialect states its formula: a file cut between atom rows fails on both ways."""
    lines = sample_cifs[0].read_text().splitlines()
    path = tmp_path / "cut.cif"
    path.write_text("\n".join(lines[:-3]) + "\n")
    fast = _read(path, True, monkeypatch)
    assert fast == _read(path, False, monkeypatch)
    assert fast[0] == "not_cif" and "_chemical_formula_sum" in fast[1]


def test_block_without_type_symbols_is_left_to_pymatgen(tmp_path):
    from pymatgen.io.cif import CifFile

    text = HEADER.format(symmetry=IDENTITY, rows="\n".join(ROWS)).replace(
        "_atom_site_type_symbol\n", ""
    )
    text = "\n".join(
        " ".join(p for k, p in enumerate(line.split()) if k != 1) if line[:1].isupper() else line
        for line in text.splitlines()
    )
    block = next(iter(CifFile.from_str(text).data.values()))
    assert "_atom_site_type_symbol" not in block.data
    assert ordered_p1_structure(block) is None
