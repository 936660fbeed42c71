"""Reading CIF files into pymatgen structures, with an explicit policy for bad structures.

Every failure is a :class:`StructureError` carrying a short machine-readable ``reason`` (see
:data:`REASONS`), so that a batch can tally failures by reason and go on.

Accepted inputs
---------------
* QMOF CIFs in both dialects: the official release (pymatgen-written P1 files with 17 extra
  per-atom columns of charges, spins and bond orders, which are ignored) and the stripped files of
  ``relaxed_structures.tar.xz``. Both give the same species, lattice and coordinates.
* CoRE MOF CIFs (Materials Studio / ASE / CSD exports, CRLF or CR line ends, symmetry operations,
  labels, occupancy and thermal columns). Symmetry operations are applied by pymatgen.
* Any CIF whose first data block holding ``_atom_site_`` items describes one periodic structure.

Most files (all of QMOF, ~95 % of CoRE MOF 2019) are P1 cells of distinct, fully occupied atoms:
those are built straight from pymatgen's tokens by :mod:`mofbalora.data.p1_cif`, the same structure
bit for bit about five times sooner; every other file takes pymatgen's whole parser.

Text is decoded as UTF-8 (with or without a byte-order mark), then as latin-1; a file holding NUL
bytes is binary and rejected. pymatgen's warnings are silenced while parsing.

Reasons and what each covers
----------------------------
Cheap checks on the raw CIF items come first (syntax, cell, coordinates, row count), then pymatgen
builds the structure, then occupancies and distances are checked; the first failing check gives
the reason, so a file with several problems reports the earliest one met.

1. ``unreadable``: missing path, a directory (also one named ``x.cif``), no permission, any other
   OS error while reading.
2. ``empty``: zero bytes, or only whitespace.
3. ``not_cif``: binary content (NUL bytes); text other than blank lines and ``#`` comments
   before the first ``data_`` header; no data block with ``_atom_site_`` items; no cell
   parameters; broken CIF syntax (a loop whose values do not fill its columns, as in a file cut in
   the middle of a line; a loop without columns or values; a tag followed by another tag instead
   of its value; shuffled lines); a coordinate that is neither a number nor a CIF unknown marker;
   an atom symbol that names no element (pymatgen would silently drop the row or make a dummy
   species; ``D`` reads as H); anything else pymatgen cannot turn into a structure. A
   pymatgen-written CIF (first line ``# generated using pymatgen``, the QMOF dialect) whose atoms
   disagree with its own ``_chemical_formula_sum`` is also ``not_cif``: it was cut between rows.
4. ``degenerate_cell``: a non-numeric or non-finite cell parameter, lengths ≤ 0, angles outside
   (0°, 180°), a cell volume ≤ :data:`MIN_CELL_VOLUME_A3` (1e-3 Å^3) or a height between opposite
   faces < :data:`MIN_CELL_HEIGHT_A` (0.01 Å); a missing ``_atom_site_fract_x/y/z`` column, or a
   coordinate that is ``?``, ``.``, NaN or infinite. Checked on the raw CIF items before pymatgen
   builds anything, and again on the result.
5. ``too_many_atoms``: more than ``max_atoms`` atoms (default :data:`DEFAULT_MAX_ATOMS` = 1000).
   The number of atom-site rows is checked *before* pymatgen expands and de-duplicates sites
   (which costs O(N^2) time), so a 5,000-atom P1 supercell is rejected after tokenizing only; the
   expanded site count is checked again after parsing.
6. ``disordered``: any site with partial occupancy (total < 1 - :data:`OCCUPANCY_TOLERANCE`), with
   more than one species (substitutional disorder), or over-occupied by a non-integer amount.
7. ``overlapping_atoms``: two atoms closer than ``min_distance_a`` (default
   :data:`DEFAULT_MIN_DISTANCE_A` = 0.5 Å) under periodic boundary conditions, including an atom
   and its own periodic image. Computed with a cell-list neighbour search of radius
   ``min_distance_a``, so time and memory stay linear in the number of atoms.

Disorder policy (decided here)
------------------------------
The reason comes from the file's content, never from a database flag. Occupancies below one or
mixed species on one site are ``disordered``. Atoms of one element given twice at the *same*
position (pymatgen merges sites within 1e-4 fractional units into one site of occupancy 2, 3...)
are duplicates: ``overlapping_atoms`` at distance 0. CoRE MOF 2019 files marked ``DISORDER`` in
its csv carry full occupancies everywhere; their disorder shows as alternative positions of a
group kept side by side, i.e. as atoms a few tenths of an ångström apart, and is reported as
``overlapping_atoms`` (in a random sample of 3,000 CoRE MOF files: 39% of the flagged ones and
0.3% of the others; pymatgen parsed every one of them).

Returned structures hold plain elements (oxidation states dropped), occupancies of exactly one,
the cell and fractional coordinates as parsed (pymatgen wraps them into [0, 1) and snaps values
within 1e-4 of simple fractions such as 1/3), and the CIF site labels.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ase import Atoms
    from pymatgen.core import Structure

__all__ = [
    "DEFAULT_MAX_ATOMS",
    "DEFAULT_MIN_DISTANCE_A",
    "MIN_CELL_HEIGHT_A",
    "MIN_CELL_VOLUME_A3",
    "OCCUPANCY_TOLERANCE",
    "REASONS",
    "OnError",
    "StructureError",
    "read_structure",
    "read_structures",
    "structure_to_atoms",
]

REASONS = {
    "unreadable": (
        "the file could not be read (missing, a directory, no permission, other OS error)"
    ),
    "empty": "the file is empty or holds only whitespace",
    "not_cif": (
        "no crystal structure could be parsed from the file (binary, garbage, broken CIF syntax)"
    ),
    "disordered": "partial occupancies, mixed species on one site, or non-integer over-occupancy",
    "overlapping_atoms": (
        "two atoms (or an atom and its periodic image) closer than the minimum distance"
    ),
    "degenerate_cell": (
        "missing, zero, negative or non-finite cell volume, or missing/non-finite coordinates"
    ),
    "too_many_atoms": "more atoms than the configured limit",
}

DEFAULT_MAX_ATOMS = 1000
DEFAULT_MIN_DISTANCE_A = 0.5
#: Cells with a volume at or below this (Å^3) are ``degenerate_cell``.
MIN_CELL_VOLUME_A3 = 1e-3
#: Cells thinner than this (Å) between opposite faces are ``degenerate_cell`` (pymatgen refuses
#: them).
MIN_CELL_HEIGHT_A = 0.01
#: A site whose total occupancy is within this of 1 counts as fully occupied.
OCCUPANCY_TOLERANCE = 0.01

OnError = Literal["skip", "raise"]
_ON_ERROR_CHOICES = ("raise", "skip")

_CELL_LENGTHS = ("_cell_length_a", "_cell_length_b", "_cell_length_c")
_CELL_ANGLES = ("_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma")
_FRACT = ("_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z")
_TAG_LIKE = re.compile(r"^_[A-Za-z][^\s'\"]*$")
_PYMATGEN_HEADER = "# generated using pymatgen"
_DETAIL_CHARS = 240


class StructureError(ValueError):
    """A structure file that cannot be used, with a reason from :data:`REASONS`."""

    def __init__(self, reason: str, path: str | Path, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}; choose from {sorted(REASONS)}")
        self.reason = reason
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {reason}: {detail or REASONS[reason]}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the three-argument constructor when pickled (multiprocessing workers).
        return (type(self), (self.reason, self.path, self.detail))


def _short(exc: BaseException) -> str:
    """One-line ``Type: message`` for an exception, cut to a readable length."""
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "..."


def _check_limits(max_atoms: int, min_distance_a: float) -> None:
    """Reject nonsensical limits with an error naming the bad value."""
    if isinstance(max_atoms, bool) or not isinstance(max_atoms, int) or max_atoms < 1:
        raise ValueError(f"max_atoms must be a positive integer, got {max_atoms!r}")
    if (
        isinstance(min_distance_a, bool)
        or not isinstance(min_distance_a, (int, float))
        or not math.isfinite(min_distance_a)
        or min_distance_a < 0
    ):
        raise ValueError(f"min_distance_a must be a finite number >= 0 (Å), got {min_distance_a!r}")


def read_cif_text(path: Path) -> str:
    """Read ``path`` as text (UTF-8, then latin-1), with ``unreadable``/``empty``/``not_cif``
    errors."""
    if path.is_dir():
        raise StructureError("unreadable", path, "is a directory, not a file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StructureError("unreadable", path, "no such file") from None
    except IsADirectoryError:
        raise StructureError("unreadable", path, "is a directory, not a file") from None
    except PermissionError:
        raise StructureError("unreadable", path, "permission denied") from None
    except OSError as exc:
        raise StructureError("unreadable", path, _short(exc)) from None
    if not raw:
        raise StructureError("empty", path, "0 bytes")
    if not raw.strip():
        raise StructureError("empty", path, f"{len(raw)} bytes of whitespace only")
    if b"\x00" in raw:
        raise StructureError("not_cif", path, "binary content (NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # never fails; garbage then fails as CIF below
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _cif_number(value: Any) -> float | None:
    """A CIF numeric item as float (uncertainty in brackets dropped); None when it is not a number.

    The CIF markers ``?`` (unknown) and ``.`` (inapplicable) give NaN.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text in ("?", "."):
        return math.nan
    cut = text.find("(")
    if cut > 0:
        text = text[:cut]
    try:
        return float(text)
    except ValueError:
        return None


def _cell_volume(lengths: list[float], angles_deg: list[float]) -> float:
    """Volume of a cell from its six parameters (NaN-free input); ≤ 0 when the angles are
    impossible."""
    ca, cb, cg = (math.cos(math.radians(x)) for x in angles_deg)
    k = 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg
    a, b, c = lengths
    return a * b * c * math.sqrt(k) if k > 0 else 0.0


def _precheck_block(block: Any, path: Path, max_atoms: int) -> None:
    """Cheap checks on the raw CIF items, before pymatgen builds (and expands) the structure."""
    data = block.data
    for key, value in data.items():
        if isinstance(value, str) and _TAG_LIKE.match(value):
            raise StructureError(
                "not_cif", path, f"{key} has no value (followed by the tag {value})"
            )
    # --- cell
    params: list[float] = []
    for key in _CELL_LENGTHS + _CELL_ANGLES:
        if key not in data:
            raise StructureError("not_cif", path, f"no cell parameter {key}")
        value = data[key]
        if isinstance(value, list):
            raise StructureError("not_cif", path, f"cell parameter {key} appears inside a loop")
        number = _cif_number(value)
        if number is None:
            raise StructureError("degenerate_cell", path, f"{key} = {value!r} is not a number")
        if not math.isfinite(number):
            raise StructureError("degenerate_cell", path, f"{key} = {value!r} is not finite")
        params.append(number)
    lengths, angles = params[:3], params[3:]
    if min(lengths) <= 0:
        raise StructureError("degenerate_cell", path, f"cell lengths {lengths} Å must be > 0")
    if min(angles) <= 0 or max(angles) >= 180:
        raise StructureError("degenerate_cell", path, f"cell angles {angles}° must lie in (0, 180)")
    volume = _cell_volume(lengths, angles)
    if volume <= MIN_CELL_VOLUME_A3:
        raise StructureError(
            "degenerate_cell", path, f"cell volume {volume:.3g} Å^3 <= {MIN_CELL_VOLUME_A3} Å^3"
        )
    a, b, c = lengths
    sines = [math.sin(math.radians(x)) for x in angles]
    heights = [
        volume / (b * c * sines[0]),
        volume / (a * c * sines[1]),
        volume / (a * b * sines[2]),
    ]
    if min(heights) < MIN_CELL_HEIGHT_A:
        raise StructureError(
            "degenerate_cell",
            path,
            f"flat cell: height {min(heights):.3g} Å < {MIN_CELL_HEIGHT_A} Å",
        )
    # --- coordinates
    missing = [key for key in _FRACT if key not in data]
    if missing:
        has_cartesian = any(key.lower().startswith("_atom_site_cartn_") for key in data)
        extra = " (Cartesian _atom_site_Cartn_* columns are not supported)" if has_cartesian else ""
        raise StructureError(
            "degenerate_cell", path, f"missing coordinate column(s) {missing}{extra}"
        )
    columns = [data[key] for key in _FRACT]
    if not all(isinstance(col, list) for col in columns):
        raise StructureError(
            "not_cif", path, "atom coordinates are not in a loop (broken CIF layout)"
        )
    n_rows = len(columns[0])
    if n_rows == 0 or any(len(col) != n_rows for col in columns):
        raise StructureError("not_cif", path, "atom-site loop has no rows or uneven columns")
    for key, col in zip(_FRACT, columns, strict=True):
        for row, value in enumerate(col):
            number = _cif_number(value)
            if number is None:
                raise StructureError(
                    "not_cif",
                    path,
                    f"{key} of atom row {row + 1} is {value!r}, not a number (misaligned columns?)",
                )
            if not math.isfinite(number):
                raise StructureError(
                    "degenerate_cell",
                    path,
                    f"{key} of atom row {row + 1} is {value!r} (missing or non-finite)",
                )
    # --- size, before pymatgen's O(N^2) site expansion; each row gives at least one site
    if n_rows > max_atoms:
        raise StructureError("too_many_atoms", path, f"{n_rows} atom-site rows > limit {max_atoms}")


def atom_site_block(cif: Any) -> tuple[str, Any] | None:
    """The first data block of a parsed CifFile that holds ``_atom_site_`` items."""
    for name, block in cif.data.items():
        if any(key.lower().startswith("_atom_site_") for key in block.data):
            return name, block
    return None


def _check_leading_text(text: str, path: Path) -> None:
    """Only blank lines and ``#`` comments may precede the first ``data_`` header (pymatgen drops
    them)."""
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped[:5].lower() == "data_":
            return
        raise StructureError(
            "not_cif", path, f"line {number} comes before any data_ block header: {stripped[:60]!r}"
        )
    raise StructureError("not_cif", path, "no data_ block header")


def _parse_p1(text: str, path: Path, max_atoms: int) -> Structure | None:
    """The ordered structure of a one-block P1 CIF of distinct, fully occupied atoms, built from
    pymatgen's tokens without its parser (:mod:`mofbalora.data.p1_cif`: the same structure, about
    ten times sooner), or None for any file outside that case, which then takes the whole pymatgen
    way and meets its checks there."""
    from pymatgen.io.cif import CifFile

    from mofbalora.data.p1_cif import ordered_p1_structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            raw = CifFile.from_str(text)
        except Exception:
            return None
    found = atom_site_block(raw) if len(raw.data) == 1 else None
    if found is None:
        return None
    block = found[1]
    try:
        _precheck_block(block, path, max_atoms)
    except StructureError:
        return None  # the pymatgen way raises it again, after its own syntax checks
    structure = ordered_p1_structure(block)
    if structure is not None and text.lstrip().startswith(_PYMATGEN_HEADER):
        _check_formula_sum(block, structure, path)
    return structure


def _parse(text: str, path: Path, max_atoms: int) -> Structure:
    """CIF text → one pymatgen Structure, exactly as the file gives it (no occupancy repair).
    The caller has checked the text before the first ``data_`` header (:func:`read_structure`)."""
    from pymatgen.io.cif import CifFile, CifParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parser = CifParser.from_str(text)
        # tokenizer or pymatgen's clean-up raised (ValueError, IndexError, ...)
        except Exception as exc:
            # Classify on the raw tokens when they can be had (e.g. a '?' coordinate is
            # degenerate_cell).
            try:
                raw = CifFile.from_str(text)
            except Exception:
                raw = None
            found = atom_site_block(raw) if raw is not None else None
            if found is not None:
                _precheck_block(found[1], path, max_atoms)
            # pymatgen divides by the loop's column or row count
            if isinstance(exc, ZeroDivisionError):
                raise StructureError(
                    "not_cif", path, "CIF syntax: a loop_ without column tags or values"
                ) from None
            raise StructureError("not_cif", path, f"CIF syntax: {_short(exc)}") from None
        found = atom_site_block(parser._cif)  # noqa: SLF001  (the parsed blocks; no public accessor)
        if found is None:
            raise StructureError("not_cif", path, "no data block with _atom_site_ items")
        name, block = found
        _precheck_block(block, path, max_atoms)
        _check_symbols(parser, block, path)
        try:
            if len(parser._cif.data) > 1:  # noqa: SLF001
                # Parse the chosen block alone, so a broken sibling block cannot interfere.
                parser = CifParser.from_str(str(CifFile({name: block})))
            structures = parser.parse_structures(
                primitive=False, check_occu=False, on_error="raise"
            )
        except Exception as exc:
            raise StructureError("not_cif", path, f"pymatgen: {_short(exc)}") from None
    if not structures or len(structures[0]) == 0:
        raise StructureError("not_cif", path, "pymatgen found no atoms")
    structure = structures[0]
    if text.lstrip().startswith(_PYMATGEN_HEADER):
        _check_formula_sum(block, structure, path)
    return structure


def _check_symbols(parser: Any, block: Any, path: Path) -> None:
    """Every atom row must name an element: pymatgen silently drops rows whose symbol it cannot
    read."""
    symbols = block.data.get("_atom_site_type_symbol", block.data.get("_atom_site_label"))
    parse_symbol = getattr(parser, "_parse_symbol", None)
    if not isinstance(symbols, list) or parse_symbol is None:
        return  # pymatgen reports these cases itself
    for row, symbol in enumerate(symbols, start=1):
        try:
            ok = bool(parse_symbol(symbol))
        except Exception:
            ok = False
        if not ok:
            raise StructureError(
                "not_cif", path, f"atom row {row}: {symbol!r} does not name an element"
            )


def _check_formula_sum(block: Any, structure: Structure, path: Path) -> None:
    """A pymatgen-written CIF states the whole cell in ``_chemical_formula_sum``: a shortfall
    means a cut file."""
    from pymatgen.core import Composition

    stated = block.data.get("_chemical_formula_sum")
    if not isinstance(stated, str) or not stated.strip():
        return
    try:
        expected = Composition(stated)
    except Exception:
        return  # an unreadable formula is not evidence of truncation
    if not structure.composition.element_composition.almost_equals(
        expected.element_composition, rtol=0.0, atol=1e-3
    ):
        raise StructureError(
            "not_cif",
            path,
            f"atoms give {structure.composition.formula} but _chemical_formula_sum says {stated} "
            "(file cut between atom rows?)",
        )


def _ordered_copy(structure: Structure, path: Path) -> Structure:
    """Check occupancies; return a clean ordered Structure of plain elements."""
    from pymatgen.core import Element, Structure

    partial: list[str] = []
    mixed: list[str] = []
    duplicates: list[str] = []
    species = []
    for i, site in enumerate(structure):
        comp = site.species
        total = comp.num_atoms
        label = site.label or str(i)
        if len(comp) > 1:
            mixed.append(f"{label}={comp.formula}")
            continue
        element = getattr(comp.elements[0], "element", comp.elements[0])  # Species -> Element
        if not isinstance(element, Element):
            raise StructureError(
                "not_cif", path, f"site {label}: {comp.elements[0]} is not an element"
            )
        if total < 1.0 - OCCUPANCY_TOLERANCE:
            partial.append(f"{label}:{total:.3g}")
            continue
        if total > 1.0 + OCCUPANCY_TOLERANCE:
            if abs(total - round(total)) <= OCCUPANCY_TOLERANCE:
                duplicates.append(f"{label} x{round(total)}")
            else:
                partial.append(f"{label}:{total:.3g}")
            continue
        species.append(element)
    if partial or mixed:
        parts = []
        if partial:
            parts.append(
                f"{len(partial)} site(s) with occupancy != 1 (e.g. {', '.join(partial[:3])})"
            )
        if mixed:
            parts.append(f"{len(mixed)} site(s) with mixed species (e.g. {', '.join(mixed[:3])})")
        raise StructureError("disordered", path, "; ".join(parts))
    if duplicates:
        raise StructureError(
            "overlapping_atoms",
            path,
            f"{len(duplicates)} duplicated atom(s) at the same position, distance 0 Å "
            f"(e.g. {', '.join(duplicates[:3])})",
        )
    return Structure(
        structure.lattice,
        species,
        structure.frac_coords,
        labels=[site.label for site in structure],
    )


def _check_geometry(structure: Structure, path: Path, max_atoms: int) -> None:
    """Finite cell and coordinates, then the atom-count limit (again, after symmetry expansion)."""
    import numpy as np

    matrix = structure.lattice.matrix
    if not np.all(np.isfinite(matrix)):
        raise StructureError("degenerate_cell", path, "non-finite lattice vectors")
    volume = float(abs(np.linalg.det(matrix)))
    if not volume > MIN_CELL_VOLUME_A3:
        raise StructureError(
            "degenerate_cell", path, f"cell volume {volume:.3g} Å^3 <= {MIN_CELL_VOLUME_A3} Å^3"
        )
    if not np.all(np.isfinite(structure.frac_coords)):
        raise StructureError("degenerate_cell", path, "non-finite atom coordinates")
    if len(structure) > max_atoms:
        raise StructureError(
            "too_many_atoms",
            path,
            f"{len(structure)} atoms after symmetry expansion > limit {max_atoms}",
        )


def _check_overlaps(structure: Structure, path: Path, min_distance_a: float) -> None:
    """Raise ``overlapping_atoms`` when any pair (periodic images included) is closer than the
    limit."""
    import numpy as np

    if min_distance_a <= 0:
        return
    centers, neighbors, images, distances = structure.get_neighbor_list(
        r=float(min_distance_a), numerical_tol=0.0, exclude_self=False
    )
    if len(distances) == 0:
        return
    self_pair = (centers == neighbors) & np.all(images == 0, axis=1)
    close = ~self_pair & (distances < min_distance_a)
    if not np.any(close):
        return
    idx = np.flatnonzero(close)
    k = idx[np.argmin(distances[idx])]
    i, j = int(centers[k]), int(neighbors[k])
    n_pairs = int(np.count_nonzero(close & (centers <= neighbors)))  # each pair appears twice
    what = (
        "its own periodic image" if i == j else f"{structure[j].label or j} ({structure[j].specie})"
    )
    raise StructureError(
        "overlapping_atoms",
        path,
        f"{structure[i].label or i} ({structure[i].specie}) is {float(distances[k]):.3f} Å from "
        f"{what}; {max(n_pairs, 1)} pair(s) under {min_distance_a} Å",
    )


def read_structure(
    path: str | Path,
    *,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    min_distance_a: float = DEFAULT_MIN_DISTANCE_A,
) -> Structure:
    """Read one CIF into an ordered pymatgen ``Structure``, or raise :class:`StructureError`.

    Args:
        path: the CIF file.
        max_atoms: largest accepted number of atoms in the cell (checked before expensive work).
        min_distance_a: smallest accepted interatomic distance in Å under periodic boundary
            conditions; 0 disables the check.

    Returns:
        The structure: plain elements, full occupancies, site labels from the CIF.

    Raises:
        StructureError: with ``reason`` from :data:`REASONS`; see the module docstring for the order
            of checks and what each reason covers.
        ValueError: for a nonsensical ``max_atoms`` or ``min_distance_a``.
    """
    _check_limits(max_atoms, min_distance_a)
    path = Path(path)
    text = read_cif_text(path)
    _check_leading_text(text, path)
    structure = _parse_p1(text, path, max_atoms)
    if structure is None:
        structure = _parse(text, path, max_atoms)
        _check_geometry(structure, path, max_atoms)
        structure = _ordered_copy(structure, path)
    else:
        _check_geometry(structure, path, max_atoms)
    _check_overlaps(structure, path, min_distance_a)
    return structure


def read_structures(
    paths: Iterable[str | Path],
    *,
    on_error: OnError = "skip",
    **limits: Any,
) -> tuple[list[tuple[Path, Structure]], list[StructureError]]:
    """Read many CIFs with :func:`read_structure`.

    Args:
        paths: CIF files, read in order.
        on_error: ``"skip"`` collects each bad file's :class:`StructureError` and goes on;
            ``"raise"`` raises the first one.
        **limits: ``max_atoms`` and/or ``min_distance_a``, passed to :func:`read_structure`.

    Returns:
        ``(good, errors)``: ``good`` holds ``(path, structure)`` for each usable file in input
        order, ``errors`` one :class:`StructureError` per bad file, in input order.
    """
    if on_error not in _ON_ERROR_CHOICES:
        raise ValueError(f"unknown on_error {on_error!r}; choose from {list(_ON_ERROR_CHOICES)}")
    unknown = sorted(set(limits) - {"max_atoms", "min_distance_a"})
    if unknown:
        raise TypeError(f"unknown limit(s) {unknown}; choose from ['max_atoms', 'min_distance_a']")
    good: list[tuple[Path, Structure]] = []
    errors: list[StructureError] = []
    for raw in paths:
        path = Path(raw)
        try:
            good.append((path, read_structure(path, **limits)))
        except StructureError as exc:
            if on_error == "raise":
                raise
            errors.append(exc)
    return good, errors


def structure_to_atoms(structure: Structure) -> Atoms:
    """An ordered pymatgen ``Structure`` as periodic ASE ``Atoms`` (via pymatgen's AseAtomsAdaptor).

    Raises:
        ValueError: if the structure is disordered (ASE holds one species per site).
    """
    from pymatgen.io.ase import AseAtomsAdaptor

    if not structure.is_ordered:
        raise ValueError(
            f"cannot convert a disordered structure ({structure.composition.formula}) to ASE "
            "Atoms; read it with read_structure(), which rejects disorder"
        )
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.pbc = True
    return atoms
