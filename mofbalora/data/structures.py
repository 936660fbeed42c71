"""Reading CIF files into pymatgen structures, with an explicit policy for bad structures.

Every failure is a :class:`StructureError` carrying a short machine-readable ``reason`` (see
:data:`REASONS`), so that a batch can tally failures by reason and go on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

REASONS = {
    "unreadable": "the file could not be read (missing, a directory, permission, not UTF-8 text)",
    "empty": "the file is empty",
    "not_cif": "no crystal structure could be parsed from the file",
    "disordered": "partial occupancies / disorder",
    "overlapping_atoms": "two atoms closer than the minimum distance",
    "degenerate_cell": "zero, negative or non-finite cell volume, or non-finite coordinates",
    "too_many_atoms": "more atoms than the configured limit",
}

DEFAULT_MAX_ATOMS = 1000
DEFAULT_MIN_DISTANCE_A = 0.5

OnError = Literal["skip", "raise"]


class StructureError(ValueError):
    """A structure file that cannot be used, with a reason from :data:`REASONS`."""

    def __init__(self, reason: str, path: str | Path, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}; choose from {sorted(REASONS)}")
        self.reason = reason
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {reason}: {detail or REASONS[reason]}")


def read_structure(
    path: str | Path,
    *,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    min_distance_a: float = DEFAULT_MIN_DISTANCE_A,
):
    """Read one CIF into a pymatgen ``Structure``; raise :class:`StructureError` when it is unusable."""
    import warnings

    from pymatgen.core import Structure

    path = Path(path)
    if not path.is_file():
        raise StructureError("unreadable", path, "not a regular file")
    if path.stat().st_size == 0:
        raise StructureError("empty", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_file(str(path))
    except Exception as exc:  # pymatgen raises many types here
        raise StructureError("not_cif", path, str(exc)[:200]) from None
    if not structure.is_ordered:
        raise StructureError("disordered", path)
    if len(structure) > max_atoms:
        raise StructureError("too_many_atoms", path, f"{len(structure)} atoms > limit {max_atoms}")
    return structure
