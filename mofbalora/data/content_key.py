"""A structure's content key: a canonical hash of what it is, not of the file it came from.

Files are keyed by the sha256 of their bytes (:func:`mofbalora.data.cache.file_digest`). A structure
built in Python (``model.backbone.featurize([structure])``) has no file, so it gets
:func:`structure_content_digest`: sha256 over its lattice parameters (a, b, c in Å; α, β, γ in
degrees) and the sorted (species, fractional coordinates) of its sites, each rounded to a grid. It
is invariant to

* the order of the atoms (the sites are sorted);
* a rotation of the structure (lattice parameters and fractional coordinates do not change);
* a translation, and the periodic image a site is written at: coordinates are taken relative to one
  site of the rarest species, wrapped into [0, 1), and of the candidate origins the one giving the
  smallest representation is used.

It is not invariant to another choice of cell (a supercell, a shifted or reduced basis), and a
coordinate within float round-off of a rounding boundary may round differently (``decimals`` = 4:
10⁻⁴ of a cell vector, about 10⁻³ Å in a 10 Å cell; 10⁻⁴ Å and 10⁻⁴ degree for the lattice).

BaLoRA's draws are keyed by this digest's first 64 bits (:mod:`mofbalora.adapters.noise`), so a
structure draws the same numbers whatever its position in the list it is predicted with, its atom
order, orientation or origin.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

#: grid of the rounding: 10^-DECIMALS (fractional coordinates, Å, degrees)
DECIMALS = 4
_TAG = b"mofbalora-structure-content-v1"


def structure_content_digest(structure: Any, decimals: int = DECIMALS) -> str:
    """sha256 (hex) of a pymatgen ``Structure``'s lattice parameters, species and fractional
    coordinates relative to a canonical origin site, rounded to ``10**-decimals``: independent of
    the order of its sites, a rotation and a translation (module docstring).

    Raises:
        TypeError: ``structure`` has no ``lattice`` / ``frac_coords`` (not a periodic pymatgen
            structure).
    """
    if not (hasattr(structure, "lattice") and hasattr(structure, "frac_coords")):
        raise TypeError(
            f"a content key needs a periodic pymatgen Structure, got {type(structure).__name__}"
        )
    grid = 10 ** int(decimals)
    lattice = np.rint(np.asarray(structure.lattice.parameters, dtype=np.float64) * grid).astype(
        np.int64
    )
    species = [site.species_string for site in structure]
    names, code, counts = np.unique(species, return_inverse=True, return_counts=True)
    frac = np.asarray(structure.frac_coords, dtype=np.float64).reshape(len(species), 3)
    rarest = int(np.argmin(counts))  # ties: the first name in sorted order
    best = None
    for origin in np.flatnonzero(code == rarest):
        # 0.99999 → 0
        cells = np.mod(np.rint(np.mod(frac - frac[origin], 1.0) * grid).astype(np.int64), grid)
        rows = np.column_stack([code.astype(np.int64), cells])
        rep = rows[np.lexsort(rows.T[::-1])].tobytes()
        if best is None or rep < best:
            best = rep
    h = hashlib.sha256(_TAG)
    h.update(f"decimals={int(decimals)};species={','.join(names)};".encode())
    h.update(lattice.tobytes())
    h.update(best or b"")
    return h.hexdigest()


def attach_content_digests(structures: list, inputs: list) -> list:
    """``inputs`` (featurized, aligned with ``structures``), each dict without a ``digest`` given
    its structure's :func:`structure_content_digest`; inputs that are not dicts, and structures that
    are not periodic pymatgen structures, are left as they are."""
    for structure, x in zip(structures, inputs, strict=False):
        if isinstance(x, dict) and not x.get("digest") and hasattr(structure, "frac_coords"):
            x["digest"] = structure_content_digest(structure)
    return inputs
