"""MOF chemistry checks for screening: MOFChecker's diagnostics (through ``mofchecker-next``) and pymatgen's
CIF consistency check, one verdict per structure.

``mofchecker-next`` (a maintained, faster re-implementation of MOFChecker 2.0; GPL-2.0) is an optional extra
(``pip install "mofbalora[checks]"``, or ``bash scripts/install_checks.sh .venv/bin/python``), imported only
when checks run. Each failure has a short name (the MOFChecker descriptor without ``has_``):

==================================  ===========================================================================
name                                what it usually means
==================================  ===========================================================================
``no_metal``                        no metal atom: not a MOF (or metal atoms lost)
``atomic_overlaps``                 atoms closer than their covalent radii allow (disorder, duplicated atoms)
``overcoordinated_c`` / ``_n`` /    an atom with more bonds than it can have (disorder, wrong bonds)
``_h``
``undercoordinated_c`` / ``_n``     C or N with too few bonds: typically **missing hydrogen atoms**
``undercoordinated_rare_earth`` /   a rare-earth / alkali or alkaline-earth metal with too few neighbours
``undercoordinated_alkali_alkaline``
``lone_molecule``                   a finite molecule not bonded to the framework (solvent, counter-ion)
``suspicious_terminal_oxo``         a terminal oxo on a metal that does not form them (missing H on O)
``high_charges``                    EQeq partial charges out of the plausible range
``geometrically_exposed_metal``     a metal with an implausibly open coordination sphere (missing ligand)
``cif_composition``                 pymatgen's ``CifParser.check``: the atoms do not match the CIF's formula
==================================  ===========================================================================

Open metal sites, 2-D connectivity and linker charges are chemistry, not errors, and are not failures.
A diagnostic that raises on a structure is recorded in ``checks_detail`` and the others still count; a
checker that fails on the whole structure gives ``checks="error"`` for that structure only.

The verdicts depend on the file and the checker, not on any model, and they dominate a checked screen's cost
(EQeq's Ewald sum grows with the square of the atom count): :func:`checks_of_file` keeps them in the content
cache (:mod:`mofbalora.data.cache`, keyed by the file's sha256 under a namespace naming the checker), so
screening the same candidates again with another model does not run them again.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
import warnings
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

CheckPolicy = Literal["off", "flag", "exclude"]
CHECK_POLICIES: tuple[str, ...] = ("off", "flag", "exclude")
#: flag: every structure is ranked and its failed checks are shown; nothing is removed on a heuristic's word
DEFAULT_CHECK_POLICY: CheckPolicy = "flag"
#: the ``error`` reason of a row excluded by ``checks="exclude"`` (failed check names in ``detail``)
FAILED_CHECKS_REASON = "failed_checks"
INSTALL_HINT = ('MOF chemistry checks need the optional extra mofchecker-next (GPL-2.0): '
                'pip install "mofbalora[checks]" (Python 3.10) or bash scripts/install_checks.sh .venv/bin/python')
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
#: the one diagnostic that needs libconeangle (no wheels for Python > 3.10; its source build needs Fortran
#: and a git download), not run where libconeangle is missing
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
    """structuregraph-helpers 0.0.9 (the latest; mofchecker-next builds its bond graph with it) uses two
    pymatgen names that pymatgen has since renamed; add the old names as aliases of the same objects."""
    from pymatgen.analysis import local_env
    from pymatgen.analysis.graphs import StructureGraph

    if not hasattr(local_env, "BrunnerNN_relative") and hasattr(local_env, "BrunnerNNRelative"):
        local_env.BrunnerNN_relative = local_env.BrunnerNNRelative
    if not hasattr(StructureGraph, "with_local_env_strategy") and hasattr(StructureGraph, "from_local_env_strategy"):
        StructureGraph.with_local_env_strategy = StructureGraph.from_local_env_strategy


def _missing_cone_angle(*args, **kwargs):
    raise RuntimeError("libconeangle is not installed: geometrically_exposed_metal cannot be checked")


def has_cone_angle() -> bool:
    module = sys.modules.get("libconeangle")
    if module is not None:
        return getattr(module, "cone_angle", None) is not _missing_cone_angle
    return importlib.util.find_spec("libconeangle") is not None


def import_checker():
    """``mofchecker_next.batch.check_structure``, or ImportError with the install command."""
    if not checker_available():
        raise ImportError(INSTALL_HINT)
    _pymatgen_compat()
    if not has_cone_angle():
        # mofchecker-next imports libconeangle at module level but only one diagnostic calls it: stand in
        # with a module that refuses, and do not request that diagnostic (see diagnostics())
        stub = types.ModuleType("libconeangle")
        stub.cone_angle = _missing_cone_angle
        sys.modules["libconeangle"] = stub
    from mofchecker_next.batch import check_structure

    return check_structure


def diagnostics() -> dict[str, tuple[str, bool]]:
    """The failures this installation can check (all of :data:`FAILURES` when libconeangle is present)."""
    return {k: v for k, v in FAILURES.items() if k != CONE_ANGLE_FAILURE or has_cone_angle()}


def cif_consistency(path: str | Path, structure) -> str | None:
    """pymatgen's ``CifParser(path).check(structure)``: None if the structure's atoms match the CIF's stated
    composition, else pymatgen's reason (e.g. "Missing elements H from PMG structure composition")."""
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CifParser(str(path)).check(structure)


def run_checks(structure, path: str | Path | None = None) -> dict:
    """The check columns of one ordered pymatgen structure (``path``: its CIF, for the consistency check).

    Returns ``{"checks": "ok" | "failed" | "error", "failed_checks": "a;b", "checks_detail": str}``. Never
    raises for a bad structure: a checker crash gives ``checks="error"`` with the message in ``checks_detail``.
    Raises ImportError (with the install command) when mofchecker-next is missing.
    """
    check_structure = import_checker()
    wanted = diagnostics()
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


def check_cache():
    """The content cache of check verdicts for this installation (checker version, libconeangle or not)."""
    from mofbalora.data.cache import ContentCache

    cone = "cone" if has_cone_angle() else "no-cone"
    return ContentCache(f"checks/{CHECKER.replace(' ', '-')}-{cone}-v{CHECKS_CACHE_VERSION}")


def checks_of_file(path: str | Path, digest: str | None, read, cache=None) -> dict:
    """:func:`run_checks` of the structure in ``path`` (``read(path)`` parses it) through the check cache.

    ``digest``: the file's sha256 (None: not cached). A verdict of ``checks="error"`` (the checker crashed)
    is not cached, so a transient failure is retried next time; a file that cannot be read raises as
    ``read`` does.
    """
    cache = cache if cache is not None else check_cache()
    if digest is not None:
        hit = cache.get(digest)
        if isinstance(hit, dict) and set(hit) == set(CHECK_COLUMNS):
            return hit
    cols = run_checks(read(path), path)
    if digest is not None and cols["checks"] != "error":
        cache.put(digest, cols)
    return cols


def remember_checks(records, cache=None) -> int:
    """Put the check columns of already screened rows (``key`` = content digest) into the check cache;
    returns how many were stored. Used when a screen starts over (another model): the rows are discarded,
    their verdicts are not."""
    cache = cache if cache is not None else check_cache()
    n = 0
    for rec in records:
        key = rec.get("key") or ""
        if rec.get("status") != "ok" or rec.get("checks") not in ("ok", "failed") or key.startswith("path:"):
            continue
        cache.put(key, {c: str(rec.get(c) or "") for c in CHECK_COLUMNS})
        n += 1
    return n


def not_run(reason: str = "") -> dict:
    """The check columns of a structure that was not checked."""
    return {"checks": "not_run", "failed_checks": "", "checks_detail": reason}
