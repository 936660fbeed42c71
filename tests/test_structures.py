"""Tests for mofbalora.data.structures: both QMOF CIF dialects, and one documented reason per bad
input.

QMOF files are read from the shared data folder (``$MOFBALORA_QMOF`` or ``../shared/data/qmof``);
the tests that need them are skipped where it is absent. Every bad file is synthesized in
``tmp_path``.
"""

from __future__ import annotations

import os
import random
import tarfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from mofbalora.data.structures import (
    DEFAULT_MAX_ATOMS,
    DEFAULT_MIN_DISTANCE_A,
    REASONS,
    StructureError,
    read_structure,
    read_structures,
    structure_to_atoms,
)

ROOT = Path(__file__).resolve().parents[1]
# an empty $MOFBALORA_QMOF counts as unset, as in mofbalora.data.qmof.default_qmof_path
QMOF = Path(os.environ.get("MOFBALORA_QMOF") or ROOT.parent / "shared" / "data" / "qmof")
ORIGINALS = QMOF / "original_cif_sample"
TARBALL = QMOF / "relaxed_structures.tar.xz"

needs_qmof = pytest.mark.skipif(
    not (ORIGINALS.is_dir() and TARBALL.is_file()), reason=f"QMOF sample not found under {QMOF}"
)


def _original_paths() -> list[Path]:
    return sorted(ORIGINALS.glob("*.cif")) if ORIGINALS.is_dir() else []


@pytest.fixture(scope="module")
def stripped_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stripped twins of the 12 original-dialect CIFs, extracted from the tarball into a temp
    folder."""
    wanted = {f"relaxed_structures/{p.name}" for p in _original_paths()}
    out = tmp_path_factory.mktemp("stripped")
    found = 0
    with tarfile.open(TARBALL, mode="r|xz") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                fh = tar.extractfile(member)
                assert fh is not None
                (out / Path(member.name).name).write_bytes(fh.read())
                found += 1
                if found == len(wanted):
                    break
    assert found == len(wanted) == 12
    return out


@pytest.fixture()
def real_cif() -> Path:
    return ORIGINALS / "qmof-000512e.cif"  # 40 atoms


def _cif(
    atoms: list[tuple],
    cell: tuple = (10.0, 10.0, 10.0, 90.0, 90.0, 90.0),
    *,
    columns: tuple[str, ...] = (
        "label",
        "type_symbol",
        "fract_x",
        "fract_y",
        "fract_z",
        "occupancy",
    ),
    symops: tuple[str, ...] = ("x, y, z",),
    newline: str = "\n",
) -> str:
    """A small CIF; each atom is a tuple of values for ``columns``."""
    a, b, c, al, be, ga = cell
    lines = [
        "data_test",
        f"_cell_length_a {a}",
        f"_cell_length_b {b}",
        f"_cell_length_c {c}",
        f"_cell_angle_alpha {al}",
        f"_cell_angle_beta {be}",
        f"_cell_angle_gamma {ga}",
        "_symmetry_space_group_name_H-M 'P 1'",
        "loop_",
        " _symmetry_equiv_pos_as_xyz",
        *(f"  '{op}'" for op in symops),
        "loop_",
        *(f" _atom_site_{col}" for col in columns),
        *("  " + "  ".join(str(v) for v in atom) for atom in atoms),
    ]
    return newline.join(lines) + newline


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _reason(path: Path, **limits) -> str:
    with pytest.raises(StructureError) as info:
        read_structure(path, **limits)
    err = info.value
    assert err.reason in REASONS
    assert err.path == str(path)
    assert err.detail  # every error says specifically what is wrong
    return err.reason


GOOD_ATOMS = [("C1", "C", 0.0, 0.0, 0.0, 1.0), ("O1", "O", 0.5, 0.5, 0.5, 1.0)]


# --------------------------------------------------------------------------- good inputs


@needs_qmof
def test_qmof_dialects_give_same_structure(stripped_dir: Path) -> None:
    originals = _original_paths()
    assert len(originals) == 12
    for original in originals:
        text = original.read_text()
        assert "_atom_site_pbe_ddec_charge" in text  # the official dialect, with extra columns
        twin = stripped_dir / original.name
        assert "_atom_site_pbe_ddec_charge" not in twin.read_text()
        a, b = read_structure(original), read_structure(twin)
        assert a.is_ordered and b.is_ordered
        assert [str(s.specie) for s in a] == [str(s.specie) for s in b], original.name
        np.testing.assert_allclose(a.lattice.matrix, b.lattice.matrix, atol=1e-6, rtol=0)
        np.testing.assert_allclose(a.frac_coords, b.frac_coords, atol=1e-6, rtol=0)


@needs_qmof
def test_qmof_structure_matches_file(real_cif: Path) -> None:
    s = read_structure(real_cif)
    assert len(s) == 40
    assert s.composition.reduced_formula == "KHC6(NO2)4"
    assert all(len(site.species) == 1 and site.species.num_atoms == 1 for site in s)
    assert s[0].label  # CIF labels are kept


def test_symmetry_ops_crlf_and_awkward_layout_read(tmp_path: Path) -> None:
    # CoRE MOF-like: CRLF line ends, unquoted 'P 1'-style values, extra columns, symmetry
    # operations.
    text = _cif(
        [
            ("Zn1", "1.0000", "0.1", "0.2", "0.3", "Biso", "1.000", "Zn"),
            ("O1", "1.0", "0.25", "0.25", "0.25", "Biso", "1.0", "O"),
        ],
        columns=(
            "label",
            "occupancy",
            "fract_x",
            "fract_y",
            "fract_z",
            "thermal_displace_type",
            "B_iso_or_equiv",
            "type_symbol",
        ),
        symops=("x, y, z", "-x, -y, -z"),
        newline="\r\n",
    ).replace("_symmetry_space_group_name_H-M 'P 1'", "_symmetry_space_group_name_H-M P -1")
    s = read_structure(_write(tmp_path, "awkward.cif", text))
    assert len(s) == 4  # two sites, each doubled by the inversion
    assert sorted(str(x.specie) for x in s) == ["O", "O", "Zn", "Zn"]


def test_latin1_comment_is_decoded(tmp_path: Path) -> None:
    text = "# author: M\u00fcller, G\u00f6teborg\n" + _cif(GOOD_ATOMS)
    path = _write(tmp_path, "latin1.cif", text.encode("latin-1"))
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")
    assert len(read_structure(path)) == 2


def test_first_block_with_atoms_is_used(tmp_path: Path) -> None:
    text = (
        "data_global\n_publ_section_title 'two blocks'\n\n"
        + _cif(GOOD_ATOMS)
        + "\n"
        + _cif([("Cu1", "Cu", 0.0, 0.0, 0.0, 1.0)]).replace("data_test", "data_second")
    )
    s = read_structure(_write(tmp_path, "blocks.cif", text))
    assert sorted(str(x.specie) for x in s) == ["C", "O"]


def test_oxidation_states_are_dropped(tmp_path: Path) -> None:
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.cif import CifWriter

    s = Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.add_oxidation_state_by_element({"Mg": 2, "O": -2})
    path = tmp_path / "oxi.cif"
    CifWriter(s).write_file(str(path))
    back = read_structure(path)
    assert sorted(str(x.specie) for x in back) == ["Mg", "O"]


def test_structure_to_atoms() -> None:
    from pymatgen.core import Lattice, Structure

    s = Structure(Lattice.cubic(5.0), ["Cu", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    atoms = structure_to_atoms(s)
    assert atoms.get_chemical_symbols() == ["Cu", "O"]
    assert all(atoms.pbc)
    np.testing.assert_allclose(atoms.cell.array, s.lattice.matrix)
    np.testing.assert_allclose(atoms.positions, s.cart_coords)
    disordered = Structure(Lattice.cubic(5.0), [{"Cu": 0.5}], [[0, 0, 0]])
    with pytest.raises(ValueError, match="disordered"):
        structure_to_atoms(disordered)


def test_defaults_documented() -> None:
    assert DEFAULT_MAX_ATOMS == 1000
    assert DEFAULT_MIN_DISTANCE_A == 0.5


# --------------------------------------------------------------------------- bad inputs


def test_unreadable_missing_and_directories(tmp_path: Path) -> None:
    assert _reason(tmp_path / "nope.cif") == "unreadable"
    folder = tmp_path / "x.cif"
    folder.mkdir()
    assert _reason(folder) == "unreadable"
    assert _reason(tmp_path) == "unreadable"


def test_unreadable_permission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "locked.cif", _cif(GOOD_ATOMS))
    # root reads anything: only the patched case then
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        path.chmod(0)
        try:
            assert _reason(path) == "unreadable"
        finally:
            path.chmod(0o644)

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(StructureError, match="permission denied") as info:
        read_structure(path)
    assert info.value.reason == "unreadable"


def test_empty(tmp_path: Path) -> None:
    assert _reason(_write(tmp_path, "empty.cif", "")) == "empty"
    assert _reason(_write(tmp_path, "blank.cif", "  \n\n\t\r\n")) == "empty"


@needs_qmof
@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.9])
def test_truncated_mid_line_is_not_cif(tmp_path: Path, real_cif: Path, fraction: float) -> None:
    data = real_cif.read_bytes()
    cut = int(len(data) * fraction)
    while data[cut - 1 : cut] in (b"\n", b" "):  # make sure the cut falls inside a token
        cut += 1
    assert _reason(_write(tmp_path, "cut.cif", data[:cut])) == "not_cif"


@needs_qmof
def test_truncated_between_rows_is_not_cif(tmp_path: Path, real_cif: Path) -> None:
    lines = real_cif.read_text().splitlines(keepends=True)
    # Cut at a line end, 5 atoms short: caught by the pymatgen dialect's own _chemical_formula_sum.
    with pytest.raises(StructureError, match="_chemical_formula_sum") as info:
        read_structure(_write(tmp_path, "cut_rows.cif", "".join(lines[:-5])))
    assert info.value.reason == "not_cif"
    # Cut right after the atom-site loop header: a loop without rows.
    first_row = next(i for i, line in enumerate(lines) if line.split()[:1] == ["K"])
    assert _reason(_write(tmp_path, "cut_loop.cif", "".join(lines[:first_row]))) == "not_cif"
    # Cut before the cell.
    assert _reason(_write(tmp_path, "cut_head.cif", "".join(lines[:3]))) == "not_cif"


@needs_qmof
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("keep_header", [False, True])
def test_shuffled_lines_are_not_cif(tmp_path: Path, seed: int, keep_header: bool) -> None:
    for original in _original_paths():
        lines = original.read_text().splitlines()
        head, body = (lines[:2], lines[2:]) if keep_header else ([], lines)
        random.Random(seed).shuffle(body)
        path = _write(tmp_path, f"shuffled_{original.name}", "\n".join(head + body) + "\n")
        assert _reason(path) == "not_cif", original.name


def test_non_utf8_and_binary_are_not_cif(tmp_path: Path) -> None:
    rng = random.Random(0)
    high = bytes(rng.randrange(0x80, 0x100) for _ in range(2000))
    with pytest.raises(UnicodeDecodeError):
        high.decode("utf-8")
    assert _reason(_write(tmp_path, "latin.cif", high)) == "not_cif"
    assert _reason(_write(tmp_path, "nul.cif", b"data_x\n\x00\x01\x02" + high)) == "not_cif"
    assert (
        _reason(_write(tmp_path, "prose.cif", "This is not a crystal.\nJust words.\n")) == "not_cif"
    )
    assert _reason(_write(tmp_path, "block_only.cif", "data_x\n_cell_length_a 5\n")) == "not_cif"


def test_unknown_element_symbols_are_not_cif(tmp_path: Path) -> None:
    for symbol in ["Q", "Xx", "1"]:
        atoms = [*GOOD_ATOMS, ("X1", symbol, 0.25, 0.25, 0.25, 1.0)]
        path = _write(tmp_path, f"sym_{symbol}.cif", _cif(atoms))
        with pytest.raises(StructureError, match="element") as info:
            read_structure(path)
        assert info.value.reason == "not_cif", symbol
    deuterium = [*GOOD_ATOMS, ("D1", "D", 0.25, 0.25, 0.25, 1.0)]
    assert [str(x.specie) for x in read_structure(_write(tmp_path, "d.cif", _cif(deuterium)))][
        -1
    ] == "H"


def test_nan_and_unknown_coordinates_are_degenerate(tmp_path: Path) -> None:
    nan = [("C1", "C", "nan", 0.0, 0.0, 1.0), ("O1", "O", 0.5, 0.5, 0.5, 1.0)]
    unknown = [("C1", "C", 0.1, "?", 0.0, 1.0), ("O1", "O", 0.5, 0.5, 0.5, 1.0)]
    inf = [("C1", "C", 0.1, 0.2, "inf", 1.0), ("O1", "O", 0.5, 0.5, 0.5, 1.0)]
    for name, atoms in [("nan", nan), ("unknown", unknown), ("inf", inf)]:
        assert _reason(_write(tmp_path, f"{name}.cif", _cif(atoms))) == "degenerate_cell", name


def test_missing_coordinate_column_is_degenerate(tmp_path: Path) -> None:
    atoms = [(label, el, x, y) for label, el, x, y, _z, _o in GOOD_ATOMS]
    text = _cif(atoms, columns=("label", "type_symbol", "fract_x", "fract_y"))
    with pytest.raises(StructureError, match="_atom_site_fract_z") as info:
        read_structure(_write(tmp_path, "no_z.cif", text))
    assert info.value.reason == "degenerate_cell"


@pytest.mark.parametrize(
    "cell",
    [
        (10.0, 10.0, 0.0, 90.0, 90.0, 90.0),  # zero length
        (10.0, 10.0, 10.0, 120.0, 120.0, 120.0),  # coplanar axes: zero volume
        (1e-2, 1e-2, 1e-2, 90.0, 90.0, 90.0),  # volume 1e-6 Å^3
        (10.0, 10.0, -5.0, 90.0, 90.0, 90.0),
        (10.0, 10.0, 10.0, 90.0, 90.0, 0.0),
        (10.0, "nan", 10.0, 90.0, 90.0, 90.0),
    ],
)
def test_degenerate_cells(tmp_path: Path, cell: tuple) -> None:
    assert _reason(_write(tmp_path, "cell.cif", _cif(GOOD_ATOMS, cell))) == "degenerate_cell"


@needs_qmof
def test_huge_supercell_rejected_early_and_lean(tmp_path: Path, real_cif: Path) -> None:
    from pymatgen.io.cif import CifWriter

    structure = read_structure(real_cif)
    structure.make_supercell([5, 5, 5])
    assert len(structure) == 5000
    path = tmp_path / "supercell.cif"
    CifWriter(structure).write_file(str(path))
    tracemalloc.start()
    start = time.perf_counter()
    try:
        reason = _reason(path)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reason == "too_many_atoms"
    assert peak < 100 * 2**20  # no N x N distance matrix (5000^2 doubles would be 200 MB)
    assert time.perf_counter() - start < 10
    # A raised limit lets the same file through.
    assert len(read_structure(path, max_atoms=5000)) == 5000


def test_too_many_atoms_counts_symmetry_expansion(tmp_path: Path) -> None:
    text = _cif(GOOD_ATOMS, symops=("x, y, z", "-x+1/2, -y, z+1/2"))
    path = _write(tmp_path, "sym.cif", text)
    assert len(read_structure(path)) == 4
    with pytest.raises(StructureError, match="after symmetry expansion") as info:
        read_structure(path, max_atoms=3)
    assert info.value.reason == "too_many_atoms"


def test_partial_occupancy_and_mixed_sites_are_disordered(tmp_path: Path) -> None:
    half = [("C1", "C", 0.0, 0.0, 0.0, 0.5), ("O1", "O", 0.5, 0.5, 0.5, 1.0)]
    assert _reason(_write(tmp_path, "half.cif", _cif(half))) == "disordered"
    mixed = [
        ("Zn1", "Zn", 0.0, 0.0, 0.0, 0.5),
        ("Co1", "Co", 0.0, 0.0, 0.0, 0.5),
        ("O1", "O", 0.5, 0.5, 0.5, 1.0),
    ]
    assert _reason(_write(tmp_path, "mixed.cif", _cif(mixed))) == "disordered"
    over = [
        ("C1", "C", 0.0, 0.0, 0.0, 1.0),
        ("C2", "C", 0.0, 0.0, 0.0, 0.5),
        ("O1", "O", 0.5, 0.5, 0.5, 1.0),
    ]
    assert _reason(_write(tmp_path, "over.cif", _cif(over))) == "disordered"


def test_overlapping_atoms(tmp_path: Path) -> None:
    close = [
        ("C1", "C", 0.0, 0.0, 0.0, 1.0),
        ("C2", "C", 0.01, 0.0, 0.0, 1.0),
        ("O1", "O", 0.5, 0.5, 0.5, 1.0),
    ]
    path = _write(tmp_path, "close.cif", _cif(close))  # 0.1 Å apart in a 10 Å cell
    with pytest.raises(StructureError, match=r"0\.100 Å") as info:
        read_structure(path)
    assert info.value.reason == "overlapping_atoms"
    assert len(read_structure(path, min_distance_a=0.05)) == 3  # the limit is a parameter
    assert len(read_structure(path, min_distance_a=0)) == 3  # 0 disables the check
    # Across the periodic boundary: x = 0.995 and x = 0.003 are 0.08 Å apart.
    wrap = [("C1", "C", 0.995, 0.0, 0.0, 1.0), ("C2", "C", 0.003, 0.0, 0.0, 1.0)]
    assert _reason(_write(tmp_path, "wrap.cif", _cif(wrap))) == "overlapping_atoms"
    # The same atom written twice (CoRE MOF-style duplicate): distance 0.
    dup = [
        ("C1", "C", 0.2, 0.2, 0.2, 1.0),
        ("C1b", "C", 0.2, 0.2, 0.2, 1.0),
        ("O1", "O", 0.5, 0.5, 0.5, 1.0),
    ]
    assert _reason(_write(tmp_path, "dup.cif", _cif(dup))) == "overlapping_atoms"
    # An atom too close to its own periodic image (0.4 Å cell axis).
    thin = [("C1", "C", 0.0, 0.0, 0.0, 1.0)]
    assert (
        _reason(_write(tmp_path, "thin.cif", _cif(thin, (0.4, 10.0, 10.0, 90.0, 90.0, 90.0))))
        == "overlapping_atoms"
    )


def test_bad_limits_raise_value_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "ok.cif", _cif(GOOD_ATOMS))
    for bad in [
        {"max_atoms": 0},
        {"max_atoms": 2.5},
        {"min_distance_a": -1.0},
        {"min_distance_a": float("nan")},
    ]:
        with pytest.raises(ValueError, match=str(next(iter(bad.values())))):
            read_structure(path, **bad)


def test_error_message_names_path_and_reason(tmp_path: Path) -> None:
    err = StructureError("empty", tmp_path / "a.cif")
    assert str(err).startswith(str(tmp_path / "a.cif") + ": empty: ")
    with pytest.raises(ValueError, match="choose from"):
        StructureError("weird", "a.cif")
    import pickle

    again = pickle.loads(pickle.dumps(StructureError("not_cif", "a.cif", "detail")))
    assert (again.reason, again.path, again.detail) == ("not_cif", "a.cif", "detail")


# --------------------------------------------------------------------------- batches


def test_read_structures_skip_and_raise(tmp_path: Path) -> None:
    good1 = _write(tmp_path, "good1.cif", _cif(GOOD_ATOMS))
    good2 = _write(tmp_path, "good2.cif", _cif(GOOD_ATOMS, (8.0, 8.0, 8.0, 90.0, 90.0, 90.0)))
    empty = _write(tmp_path, "empty.cif", "")
    missing = tmp_path / "missing.cif"
    half = _write(tmp_path, "half.cif", _cif([("C1", "C", 0.0, 0.0, 0.0, 0.5)]))
    paths = [empty, good1, missing, half, str(good2)]

    good, errors = read_structures(paths)
    assert [p for p, _s in good] == [good1, good2]
    assert all(len(s) == 2 for _p, s in good)
    assert [(Path(e.path), e.reason) for e in errors] == [
        (empty, "empty"),
        (missing, "unreadable"),
        (half, "disordered"),
    ]

    with pytest.raises(StructureError) as info:
        read_structures(paths, on_error="raise")
    assert (info.value.reason, info.value.path) == ("empty", str(empty))

    good, errors = read_structures([good1], max_atoms=1)
    assert good == [] and errors[0].reason == "too_many_atoms"
    with pytest.raises(ValueError, match="choose from"):
        read_structures(paths, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_atom"):
        read_structures(paths, max_atom=5)
