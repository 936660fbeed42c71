"""The common case of a CIF, a P1 cell of fully occupied atoms, built straight from its tokens.

pymatgen's ``CifParser`` spends most of a screen's parse time (about 0.13 s of 0.18 s per CoRE MOF
file) on work a P1 file of distinct, fully occupied atoms does not need: it compares every site with
every site already placed (to merge symmetry copies and shared positions) and sorts sites by
``Composition`` objects. :func:`ordered_p1_structure` gives the structure that
``CifParser.parse_structures(primitive=False, check_occu=False)`` followed by
:func:`mofbalora.data.structures._ordered_copy` gives (the same lattice matrix, species, site
order, fractional coordinates and labels, bit for bit; ``tests/test_p1_cif.py`` compares the two on
real files) in about a tenth of the time, from the block pymatgen's own tokenizer read.

It answers ``None``, and the caller goes the whole pymatgen way, for any file outside the narrow
case it reproduces exactly:

* symmetry operations other than the identity alone (or none stated: pymatgen would read the space
  group's name);
* a missing ``_atom_site_type_symbol`` (pymatgen would guess the element from the label, with
  heuristics) or a symbol that is not exactly an element's (charges, water, ``D``);
* oxidation states (``_atom_type_`` items), magnetic CIF items, an occupancy that is not exactly
  one;
* a number pymatgen would read differently than ``float`` does (uncertainties such as
  ``0.123(4)``, ``?``, ``.``);
* two atoms within 2e-4 fractional units of each other in every axis (pymatgen merges those within
  1e-4 into one site, which the caller then reports);
* a cell thinner than pymatgen's 0.01 Å threshold.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymatgen.core import Structure

_SYMMETRY_KEYS = (  # in pymatgen's order of preference
    "_symmetry_equiv_pos_as_xyz",
    "_symmetry_equiv_pos_as_xyz_",
    "_space_group_symop_operation_xyz",
    "_space_group_symop_operation_xyz_",
)
_MAGNETIC_PREFIXES = ("_space_group_magn", "_atom_site_moment", "_space_group_symop_magn")
# pymatgen merges sites closer than its site tolerance (1e-4 fractional, per axis); anything within
# twice that goes the slow way, so a merge is never missed.
_MERGE_GUARD_FRAC = 2e-4
_MIN_THICKNESS_A = 0.01  # pymatgen's min_thickness
# pymatgen's _sanitize_data snaps coordinates within this relative distance of 1/3 and 2/3
_FRAC_TOLERANCE = 1e-4

_element_symbols: frozenset[str] | None = None


def _symbols() -> frozenset[str]:
    """Symbols of the real elements (H to Og): no D, T or dummy species."""
    global _element_symbols
    if _element_symbols is None:
        from pymatgen.core import Element

        _element_symbols = frozenset(Element.from_Z(z).symbol for z in range(1, 119))
    return _element_symbols


def _floats(values: Any) -> list[float] | None:
    """The items as floats, or None if any needs pymatgen's reading (uncertainty, ``?``...)."""
    if not isinstance(values, list):
        return None
    if any("(" in v for v in values):
        return None
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


def _identity_only(block: Any) -> bool:
    """True if the first symmetry item pymatgen would read holds the identity alone."""
    for key in _SYMMETRY_KEYS:
        ops = block.data.get(key)
        if ops:
            ops = [ops] if isinstance(ops, str) else ops
            return len(ops) == 1 and ops[0].replace(" ", "").lower() == "x,y,z"
    return False


def _snap_thirds(coords: Any) -> None:
    """pymatgen's snapping of coordinates within 1e-4 (relative) of 1/3 or 2/3, in place."""
    import numpy as np

    for third in (1 / 3, 2 / 3):  # pymatgen checks both in this order; the last match wins
        close = np.abs(coords / third - 1.0) <= _FRAC_TOLERANCE
        coords[close] = float(str(third))


def _has_near_pair(frac: Any) -> bool:
    """Any two rows within the merge guard in every axis, periodic images included."""
    import numpy as np

    n = len(frac)
    for start in range(0, n, 256):  # blocks of rows keep the pairwise arrays small
        d = frac[start : start + 256, None, :] - frac[None, :, :]
        d -= np.round(d)
        near = np.all(np.abs(d) < _MERGE_GUARD_FRAC, axis=2)
        rows = np.arange(start, min(start + 256, n))
        near[np.arange(len(rows)), rows] = False  # a row and itself
        if near.any():
            return True
    return False


def ordered_p1_structure(block: Any) -> Structure | None:
    """The ordered structure of a P1 block of distinct, fully occupied atoms, or None.

    Args:
        block: a pymatgen ``CifBlock`` (as ``CifFile.from_str`` read it) holding ``_atom_site_``
            items.

    Returns:
        A ``Structure`` of plain elements with the CIF's labels, equal to what pymatgen's parser and
        the ordered copy give; None when the file is outside the case this reproduces (see the
        module docstring).
    """
    import numpy as np
    from pymatgen.core import Composition, Element, Lattice, Structure

    data = block.data
    if any(p in key for key in data for p in _MAGNETIC_PREFIXES):
        return None
    if any(key.startswith("_atom_type_") for key in data) or not _identity_only(block):
        return None
    if "_atom_site_attached_hydrogens" in data:  # pymatgen's clean-up reads (and may reject) it
        return None
    labels = data.get("_atom_site_label")
    symbols = data.get("_atom_site_type_symbol")
    if not isinstance(labels, list) or not isinstance(symbols, list) or not labels:
        return None
    known = _symbols()
    if len(symbols) != len(labels) or not all(s in known for s in symbols):
        return None
    occupancy = data.get("_atom_site_occupancy")
    if occupancy is not None:
        occ = _floats(occupancy)
        if occ is None or len(occ) != len(labels) or any(o != 1.0 for o in occ):
            return None
    columns = [_floats(data.get(f"_atom_site_fract_{axis}")) for axis in "xyz"]
    if any(c is None or len(c) != len(labels) for c in columns):
        return None
    cell = []
    for key in ("a", "b", "c", "alpha", "beta", "gamma"):
        name = f"_cell_length_{key}" if len(key) == 1 else f"_cell_angle_{key}"
        value = data.get(name)
        parsed = _floats([value]) if isinstance(value, str) else None
        if parsed is None:
            return None
        cell.append(parsed[0])
    if not all(math.isfinite(v) for v in cell):
        return None

    coords = np.array(columns, dtype=np.float64).T
    if not np.all(np.isfinite(coords)):
        return None
    _snap_thirds(coords)
    if _has_near_pair(coords):
        return None
    lattice = Lattice.from_parameters(*cell)
    thickness = (lattice.d_hkl((1, 0, 0)), lattice.d_hkl((0, 1, 0)), lattice.d_hkl((0, 0, 1)))
    if not all(t >= _MIN_THICKNESS_A for t in thickness):
        return None

    # pymatgen orders sites by their Composition (a stable sort; for one element each, descending
    # element order) and wraps each coordinate with x - floor(x).
    distinct = sorted(
        ((s, Composition({Element(s): 1.0})) for s in set(symbols)), key=lambda item: item[1]
    )
    rank = {symbol: i for i, (symbol, _) in enumerate(distinct)}
    order = sorted(range(len(symbols)), key=lambda i: rank[symbols[i]])
    frac = coords[order]
    frac = frac - np.floor(frac)
    return Structure(
        lattice,
        [Element(symbols[i]) for i in order],
        frac,
        labels=[labels[i] for i in order],
    )
