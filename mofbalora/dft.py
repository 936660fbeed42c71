"""Hand the top-ranked candidate MOFs to DFT with QMOF-compatible settings.

:func:`write_dft_inputs` reads the ranked CSV written by the screening step, keeps the rows with
``status == "ok"`` in rank order and writes one folder per structure::

    out_dir/
        manifest.csv            one row per folder: rank, id, formula, predicted gap, folder, ...
        run_quacc.py            runs quacc's QMOF relaxation recipe on every folder (needs quacc)
        0001_<structure_id>/
            INCAR               PBE-D3(BJ) full relaxation with QMOF's settings (QMOF_INCAR)
            INCAR.static        the single point on the relaxed cell that gives the band gap
            KPOINTS             QMOF's k-point density (QMOF_KPPA k-points per reciprocal atom)
            POSCAR              the structure, species grouped so POTCAR order matches
            POTCAR.spec         the PAW potentials to concatenate, one per line, POSCAR order
            POTCAR              only when a pymatgen POTCAR directory is configured
            README.txt          what to supply and how to run

With ``code="ase"`` each folder instead holds ``structure.extxyz`` (with initial magnetic
moments) and ``calculator.json`` (the same settings as ASE ``Vasp`` keyword arguments plus a
code-neutral description), for users of other DFT codes.

Where the settings come from
----------------------------
QMOF (Rosen et al., Matter 4, 1578 (2021); Materials Project MOF methodology pages, "DFT
Parameters") used VASP with PBE + D3(BJ), a 520 eV plane-wave cutoff (1.3 x the highest ENMAX of
its PAW set), Gaussian smearing of 0.01 eV, symmetry off, a k-point mesh of 1000 k-points per
reciprocal atom from pymatgen's ``Kpoints.automatic_density``, forces converged to 0.03 eV/A and
a high-spin initial guess (5 mu_B on d-block metals other than Zn/Cd/Hg, 7 mu_B on f-block
metals other than Lu/Lr, zero elsewhere). The remaining electronic settings (ALGO, PREC, EDIFF,
NELM, LREAL, LORBIT, LASPH, SYMPREC) follow the ``QMOFSet`` preset of quacc, whose
``qmof_relax_job`` recipe reproduces the QMOF workflow. The PAW choices are VASP's recommended
PBE.54 set with the three substitutions QMOF made (Li instead of Li_sv, Eu_3, Yb_3).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mofbalora.scoring import MANIFEST_PREDICTION_COLUMNS

if TYPE_CHECKING:
    import pandas as pd
    from pymatgen.core import Structure
    from pymatgen.io.vasp.inputs import Kpoints

LOGGER = logging.getLogger(__name__)
#: the runner written next to manifest.csv (package data; it imports quacc only when it runs)
RUN_QUACC_FILE = "dft_files/run_quacc.py"


def run_quacc_script() -> str:
    """The text of ``run_quacc.py``, the runner of a DFT hand-off (package data of
    ``mofbalora``)."""
    from importlib.resources import files

    return files("mofbalora").joinpath(RUN_QUACC_FILE).read_text()


Code = Literal["vasp", "ase"]
CODES: tuple[str, ...] = ("vasp", "ase")

#: Per-structure prediction columns shared by the ranked CSV and the manifest.
_PREDICTION_COLUMNS: tuple[str, ...] = (
    "structure_id",
    "formula",
    "n_atoms",
    "bandgap_mean_ev",
    "bandgap_std_ev",
    "score",
)

#: Columns the ranked CSV must have (extra columns are ignored).
REQUIRED_COLUMNS: tuple[str, ...] = ("path", *_PREDICTION_COLUMNS, "rank", "status")

#: Columns of ``manifest.csv``, in order: the rank, the ranked table's columns that explain the
#: choice (:data:`mofbalora.scoring.MANIFEST_PREDICTION_COLUMNS`: prediction, calibrated std, robust
#: spread, score, checks, domain, repeats; empty where the ranked CSV lacks them), then the
#: hand-off's own columns.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "rank",
    *dict.fromkeys((*_PREDICTION_COLUMNS, *MANIFEST_PREDICTION_COLUMNS)),
    "folder",
    "kpoints",
    "source_path",
)

#: INCAR of the production PBE-D3(BJ) relaxation (cell and positions), QMOF's settings.
#: The static single point that yields the band gap applies :data:`QMOF_STATIC_UPDATES` on top.
#: ``MAGMOM`` is per structure (see :func:`qmof_magmoms`), so it is not in this dict.
QMOF_INCAR: dict[str, Any] = {
    # --- level of theory -------------------------------------------------------------
    "GGA": "PE",  # PBE exchange-correlation: QMOF's band gaps are PBE gaps
    # Grimme D3 with Becke-Johnson damping: MOF cells are held together partly by dispersion
    "IVDW": 12,
    # eV; 1.3 x the largest ENMAX of the PAW set, so cell relaxations avoid Pulay stress
    "ENCUT": 520,
    "PREC": "Accurate",  # FFT grids fine enough for accurate forces and stresses
    "LASPH": False,  # QMOF kept VASP's default (no aspherical gradient corrections) for consistency
    # --- smearing: MOFs are mostly insulators ------------------------------------------
    "ISMEAR": 0,  # Gaussian smearing; safe for any gap and any k-mesh (unlike tetrahedra)
    "SIGMA": 0.01,  # eV; small width so the occupations, and hence the gap, are barely blurred
    # --- electronic minimisation ------------------------------------------------------
    "ALGO": "All",  # all-band conjugate gradient: robust for large, magnetic, low-symmetry cells
    "EDIFF": 1e-6,  # eV; tight SCF so forces/stresses of the final relaxation are clean
    "NELM": 150,  # generous SCF step limit for hard-to-converge (magnetic) frameworks
    "NELMIN": 3,
    "LREAL": False,  # reciprocal-space projectors: exact, as in QMOF's final relaxation and static
    # --- symmetry: off, so relaxations can break a (possibly wrong) CIF symmetry --------
    "ISYM": 0,
    "SYMPREC": 1e-8,
    # --- spin --------------------------------------------------------------------------
    # Spin-polarised with QMOF's high-spin initial moments. Written as ISPIN = 1 (and no
    # MAGMOM) when no atom carries an initial moment (no open-shell-capable d/f metal): that is
    # what QMOF's ASE-driven workflow wrote, and it halves the cost for closed-shell frameworks.
    "ISPIN": 2,
    "LORBIT": 11,  # write site- and lm-projected moments/DOS, to check the final spin state
    # --- ionic relaxation: QMOF's production-quality full relaxation ---------------------
    "IBRION": 2,  # conjugate-gradient ionic steps
    "ISIF": 3,  # relax positions and cell shape and volume
    "NSW": 500,
    "EDIFFG": -0.03,  # eV/A; forces below 0.03 eV/A on every atom, QMOF's convergence criterion
    # --- output ------------------------------------------------------------------------
    "LWAVE": True,  # keep WAVECAR to restart / start the static run from the converged orbitals
    "LCHARG": False,  # charge density is only needed from the static run
}

#: Changes to :data:`QMOF_INCAR` for the static single point on the relaxed structure (the step
#: whose band gap QMOF reports). ``None`` removes a tag.
QMOF_STATIC_UPDATES: dict[str, Any] = {
    "NSW": 0,
    "IBRION": None,
    "ISIF": None,
    "EDIFFG": None,
    "LCHARG": True,  # CHGCAR, e.g. for DDEC/Bader charges as in QMOF
    "LAECHG": True,  # core + valence densities (AECCAR0/2) needed by Bader/DDEC
}

#: k-points per reciprocal atom, turned into a mesh by pymatgen's ``Kpoints.automatic_density``
#: exactly as QMOF's workflow and quacc's ``QMOFSet`` do. See :func:`qmof_kpoints` for the rule.
QMOF_KPPA: int = 1000

#: pymatgen name of the PAW PBE set QMOF used (VASP's "potpaw_PBE.54").
QMOF_POTCAR_FUNCTIONAL: str = "PBE_54"

#: Initial magnetic moments (mu_B) of QMOF's high-spin guess.
D_BLOCK_MAGMOM: float = 5.0
F_BLOCK_MAGMOM: float = 7.0

# d-block metals of groups 3-11 (Lu and Lr counted in group 3; group 12 Zn/Cd/Hg/Cn is closed-shell
# d10 and starts non-magnetic) and f-block metals La-Yb, Ac-No, as atomic-number ranges.
_D_BLOCK_Z: tuple[range, ...] = (range(21, 30), range(39, 48), range(71, 80), range(103, 112))
_F_BLOCK_Z: tuple[range, ...] = (range(57, 71), range(89, 103))

# PAW PBE.54 potentials QMOF used: VASP's recommended set except Li (not Li_sv), Eu_3 and Yb_3.
# Elements listed under "" use the plain element symbol.
_QMOF_POTCAR_BY_SUFFIX: dict[str, str] = {
    "": (
        "H He Li Be B C N O F Ne Mg Al Si P S Cl Ar Fe Co Ni Cu Zn As Se Br Kr Pd Ag Cd Sb Te I Xe "
        "La Ce Re Os Ir Pt Au Hg At Rn Ac Th Pa U Np Pu Am Cm Cf"
    ),
    "_sv": "K Ca Sc Ti V Rb Sr Y Zr Nb Mo Cs Ba W Fr Ra",
    "_pv": "Na Cr Mn Tc Ru Rh Hf Ta",
    "_d": "Ga Ge In Sn Tl Pb Bi Po",
    "_3": "Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu",
}

#: Element symbol -> PAW potential symbol (QMOF's choices, PBE.54 set).
QMOF_POTCARS: dict[str, str] = {
    element: element + suffix
    for suffix, elements in _QMOF_POTCAR_BY_SUFFIX.items()
    for element in elements.split()
}

_FOLDER_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


# ---------------------------------------------------------------------------------------------
# per-structure settings
# ---------------------------------------------------------------------------------------------


def qmof_magmom(element: str) -> float:
    """Initial magnetic moment (mu_B) QMOF's high-spin guess gives an atom of ``element``.

    5 for d-block metals of groups 3-11, 7 for f-block metals La-Yb and Ac-No, 0 otherwise.
    """
    from pymatgen.core import Element

    try:
        z = Element(element).Z
    except ValueError:
        raise ValueError(f"unknown element {element!r}") from None
    if any(z in r for r in _D_BLOCK_Z):
        return D_BLOCK_MAGMOM
    if any(z in r for r in _F_BLOCK_Z):
        return F_BLOCK_MAGMOM
    return 0.0


def qmof_magmoms(structure: Structure) -> list[float]:
    """QMOF's initial magnetic moments, one per site of ``structure`` in site order."""
    return [qmof_magmom(site.specie.symbol) for site in structure]


def qmof_kpoints(structure: Structure) -> Kpoints:
    """QMOF's k-point mesh for ``structure``: pymatgen ``Kpoints.automatic_density(s, 1000)``.

    The rule, for N atoms in a cell with lattice lengths a, b, c (in A):

    * density = 1000 k-points per reciprocal atom; pymatgen nudges a density that is a perfect
      cube up by 1 %, so 1000 becomes 1010;
    * m = (density / N * a * b * c) ** (1/3) and n_i = max(1, floor(m / L_i)) for L_i in (a, b, c),
      i.e. divisions inversely proportional to the lattice lengths;
    * Gamma-centred when any n_i is odd, the lattice is hexagonal or the cell face-centred,
      Monkhorst-Pack otherwise.
    """
    from pymatgen.io.vasp.inputs import Kpoints

    with warnings.catch_warnings():
        # spglib (via the space-group lookup) emits a DeprecationWarning about its error handling
        warnings.simplefilter("ignore", DeprecationWarning)
        return Kpoints.automatic_density(structure, QMOF_KPPA)


def potcar_symbols(elements: list[str]) -> list[str]:
    """PAW potential symbols (QMOF's PBE.54 choices) for ``elements``, in the same order."""
    missing = [e for e in elements if e not in QMOF_POTCARS]
    if missing:
        raise ValueError(
            f"no QMOF PAW potential for element(s) {missing}; supported: {sorted(QMOF_POTCARS)}"
        )
    return [QMOF_POTCARS[e] for e in elements]


def incar_for(structure: Structure, *, static: bool = False) -> dict[str, Any]:
    """The INCAR tags for ``structure`` (site order as written to POSCAR).

    :data:`QMOF_INCAR` plus ``MAGMOM`` from :func:`qmof_magmoms`; ``ISPIN = 1`` and no ``MAGMOM``
    when every initial moment is zero. ``static=True`` applies :data:`QMOF_STATIC_UPDATES`.
    """
    tags = dict(QMOF_INCAR)
    if static:
        for key, value in QMOF_STATIC_UPDATES.items():
            if value is None:
                tags.pop(key, None)
            else:
                tags[key] = value
    magmoms = qmof_magmoms(structure)
    if any(m != 0 for m in magmoms):
        tags["ISPIN"] = 2
        tags["MAGMOM"] = magmoms
    else:
        tags["ISPIN"] = 1
    return tags


# ---------------------------------------------------------------------------------------------
# the hand-off
# ---------------------------------------------------------------------------------------------


def write_dft_inputs(
    ranked_csv: str | Path,
    out_dir: str | Path,
    *,
    top: int | None = None,
    code: Code = "vasp",
    potcar_dir: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write DFT inputs for the best-ranked ``ok`` structures of ``ranked_csv``; return the
    manifest.

    Args:
        ranked_csv: CSV from the screening step with at least :data:`REQUIRED_COLUMNS`. Rows with
            ``status == "ok"`` are taken in ascending ``rank``; relative ``path`` values are
            resolved against the working directory, then against the CSV's folder.
        out_dir: Folder to create. It is built in a temporary sibling folder and renamed into
            place at the end, so a failure leaves no half-written hand-off.
        top: Number of structures to write (the ``top`` best ranks); ``None`` writes all ok rows.
        code: ``"vasp"`` for VASP input folders, ``"ase"`` for an extxyz structure plus a JSON of
            calculator settings per folder.
        potcar_dir: A pymatgen POTCAR directory (the ``PMG_VASP_PSP_DIR`` layout, holding
            ``POT_GGA_PAW_PBE_54/POTCAR.<symbol>``). When given, or when ``PMG_VASP_PSP_DIR`` is
            configured for pymatgen, a POTCAR is written to each VASP folder; otherwise only
            ``POTCAR.spec``. Ignored for ``code="ase"``.
        overwrite: Replace ``out_dir`` if it holds a previous hand-off (has ``manifest.csv``).

    Returns:
        Path of ``out_dir/manifest.csv``.

    Raises:
        ValueError: bad ``code``/``top``, missing columns, no ``ok`` rows, an unreadable CIF, an
            element without a QMOF potential.
        FileNotFoundError: ``ranked_csv``, a CIF, ``potcar_dir`` or a POTCAR file is missing.
        FileExistsError: ``out_dir`` exists, is not empty and ``overwrite`` is not set.
    """
    if code not in CODES:
        raise ValueError(f"unknown code {code!r}; choose from {list(CODES)}")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ValueError(f"top must be a positive integer or None, got {top!r}")
    ranked_csv = Path(ranked_csv)
    out_dir = Path(out_dir)
    psp_dir = _resolve_potcar_dir(potcar_dir) if code == "vasp" else None

    rows = _select_rows(ranked_csv, top)
    _check_out_dir(out_dir, overwrite)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        # mkdtemp makes it private; give it normal folder rights
        tmp.chmod(0o777 & ~_current_umask())
        manifest_rows = []
        for row in rows:
            manifest_rows.append(_write_one(row, ranked_csv, tmp, code=code, psp_dir=psp_dir))
        _write_manifest(tmp / "manifest.csv", manifest_rows)
        script = tmp / "run_quacc.py"
        script.write_text(run_quacc_script())
        script.chmod(0o755)
        _move_into_place(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # the CLI prints it
    LOGGER.debug("wrote %d %s input folder(s) to %s", len(manifest_rows), code, out_dir)
    return out_dir / "manifest.csv"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _select_rows(ranked_csv: Path, top: int | None) -> list[dict[str, Any]]:
    """The ``ok`` rows of the ranked CSV, best rank first, at most ``top`` of them."""
    import pandas as pd

    if not ranked_csv.is_file():
        raise FileNotFoundError(f"ranked CSV not found: {ranked_csv}")
    df = pd.read_csv(ranked_csv, dtype={"structure_id": str, "path": str, "status": str})
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{ranked_csv}: missing column(s) {missing}; "
            f"a ranked CSV needs {list(REQUIRED_COLUMNS)}"
        )
    ok = df[df["status"].fillna("").astype(str).str.strip().str.lower() == "ok"].copy()
    if ok.empty:
        statuses = sorted(df["status"].fillna("<empty>").astype(str).unique())
        raise ValueError(
            f"{ranked_csv}: no rows with status 'ok' to hand to DFT "
            f"({len(df)} row(s), statuses found: {statuses})"
        )
    ranks = pd.to_numeric(ok["rank"], errors="coerce")
    bad = ok.loc[ranks.isna() | (ranks % 1 != 0), "structure_id"].tolist()
    if bad:
        raise ValueError(f"{ranked_csv}: ok row(s) {bad} have a missing or non-integer rank")
    ok["rank"] = ranks.astype(int)
    ok = ok.sort_values("rank", kind="stable")
    if top is not None:
        ok = ok.head(top)
    return _records(ok)


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [dict(zip(df.columns, values, strict=True)) for values in df.itertuples(index=False)]


def _resolve_potcar_dir(potcar_dir: str | Path | None) -> Path | None:
    """The POTCAR root to use, or None for ``POTCAR.spec`` only.

    An explicit ``potcar_dir`` must exist and hold the PBE.54 set (else FileNotFoundError). Without
    one, pymatgen's ``PMG_VASP_PSP_DIR`` (settings file or environment) is used when it holds the
    PBE.54 set; if it is configured but lacks that set, a warning is logged and no POTCAR written.
    """
    from pymatgen.core import SETTINGS
    from pymatgen.io.vasp.inputs import PotcarSingle

    sub = PotcarSingle.functional_dir[QMOF_POTCAR_FUNCTIONAL]
    if potcar_dir is None:
        configured = SETTINGS.get("PMG_VASP_PSP_DIR") or os.environ.get("PMG_VASP_PSP_DIR")
        if not configured:
            return None
        path = Path(configured).expanduser()
        if not (path / sub).is_dir():
            LOGGER.warning(
                "PMG_VASP_PSP_DIR=%s has no %s/ folder (the "
                "PBE.54 set QMOF used): writing POTCAR.spec only",
                path,
                sub,
            )
            return None
        return path
    path = Path(potcar_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"POTCAR directory not found: {path}")
    if not (path / sub).is_dir():
        raise FileNotFoundError(
            f"POTCAR directory {path} has no {sub}/ subfolder; expected pymatgen's layout "
            f"{path}/{sub}/POTCAR.<symbol> (pymatgen's `pmg config -p <folder holding "
            f"potpaw_PBE.54> {path}` builds it)"
        )
    return path


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"output path exists and is not a folder: {out_dir}")
    if not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(
            f"output folder {out_dir} is not empty; choose another folder, or pass "
            "overwrite=True to replace its earlier hand-off"
        )
    if not (out_dir / "manifest.csv").is_file():
        raise FileExistsError(
            f"refusing to overwrite {out_dir}: it is not empty and holds no manifest.csv "
            "from a previous DFT hand-off"
        )


def _move_into_place(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        tmp.rename(out_dir)
        return
    if not any(out_dir.iterdir()):
        out_dir.rmdir()
        tmp.rename(out_dir)
        return
    _check_out_dir(out_dir, overwrite)  # may have changed while we were writing
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    out_dir.rename(old)
    try:
        tmp.rename(out_dir)
    except BaseException:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _folder_name(rank: int, structure_id: str) -> str:
    safe = _FOLDER_SAFE.sub("_", str(structure_id)).strip("._") or "structure"
    return f"{rank:04d}_{safe}"


def _cif_path(raw: Any, ranked_csv: Path) -> Path:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{ranked_csv}: an ok row has an empty path: {raw!r}")
    path = Path(raw.strip()).expanduser()
    if not path.is_absolute() and not path.exists():
        beside = ranked_csv.parent / path
        if beside.exists():
            path = beside
    if not path.is_file():
        raise FileNotFoundError(f"CIF listed in {ranked_csv} not found: {raw}")
    return path


def _read_sorted_structure(path: Path) -> Structure:
    """Read a CIF (project policy) and group sites by species so POSCAR/POTCAR orders agree."""
    from mofbalora.data.structures import read_structure

    structure = read_structure(path, max_atoms=sys.maxsize)
    return structure.get_sorted_structure()


def _kpoints_label(kpoints: Kpoints) -> str:
    return "x".join(str(int(n)) for n in kpoints.kpts[0])


def _write_one(
    row: dict[str, Any], ranked_csv: Path, root: Path, *, code: Code, psp_dir: Path | None
) -> dict[str, Any]:
    """Write one structure's folder under ``root``; return its manifest row."""
    rank = int(row["rank"])
    structure_id = str(row["structure_id"])
    cif = _cif_path(row["path"], ranked_csv)
    structure = _read_sorted_structure(cif)
    if _is_number(row.get("n_atoms")) and int(row["n_atoms"]) != len(structure):
        LOGGER.warning(
            "%s: ranked CSV says %s atoms but %s has %d",
            structure_id,
            row["n_atoms"],
            cif,
            len(structure),
        )
    folder = root / _folder_name(rank, structure_id)
    if folder.exists():
        raise ValueError(
            f"two ok rows map to the same folder {folder.name!r} (rank {rank}, id {structure_id!r})"
        )
    folder.mkdir()
    kpoints = qmof_kpoints(structure)
    if code == "vasp":
        _write_vasp_folder(folder, structure, kpoints, structure_id, psp_dir)
    else:
        _write_ase_folder(folder, structure, kpoints, structure_id)
    explained = {
        c: row.get(c, "")
        for c in MANIFEST_COLUMNS
        if c not in ("rank", "folder", "kpoints", "source_path")
    }
    return {
        **explained,
        "rank": rank,
        "structure_id": structure_id,
        "folder": folder.name,
        "kpoints": _kpoints_label(kpoints),
        "source_path": str(cif),
    }


def _is_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _write_vasp_folder(
    folder: Path, structure: Structure, kpoints: Kpoints, structure_id: str, psp_dir: Path | None
) -> None:
    from pymatgen.io.vasp.inputs import Poscar

    poscar = Poscar(structure, comment=f"{structure_id} (mofbalora DFT hand-off)")
    elements = list(poscar.site_symbols)
    symbols = potcar_symbols(elements)
    poscar.write_file(folder / "POSCAR")
    kpoints.write_file(folder / "KPOINTS")
    _write_incar(incar_for(structure), folder / "INCAR")
    _write_incar(incar_for(structure, static=True), folder / "INCAR.static")
    (folder / "POTCAR.spec").write_text("\n".join(symbols) + "\n")
    if psp_dir is not None:
        _write_potcar(folder / "POTCAR", symbols, psp_dir)
    (folder / "README.txt").write_text(
        _vasp_readme(structure_id, symbols, potcar_written=psp_dir is not None)
    )


@contextmanager
def _pmg_psp_dir(psp_dir: Path) -> Iterator[None]:
    """Point pymatgen's POTCAR lookup at ``psp_dir`` for the duration of the block."""
    from pymatgen.core import SETTINGS

    sentinel = object()
    previous = SETTINGS.get("PMG_VASP_PSP_DIR", sentinel)
    SETTINGS["PMG_VASP_PSP_DIR"] = str(psp_dir)
    try:
        yield
    finally:
        if previous is sentinel:
            SETTINGS.pop("PMG_VASP_PSP_DIR", None)
        else:
            SETTINGS["PMG_VASP_PSP_DIR"] = previous


def _write_potcar(path: Path, symbols: list[str], psp_dir: Path) -> None:
    from pymatgen.io.vasp.inputs import Potcar

    with _pmg_psp_dir(psp_dir), warnings.catch_warnings():
        # pymatgen warns about POTCAR hashes it does not know (e.g. site-patched files).
        warnings.simplefilter("ignore")
        potcar = Potcar(symbols, functional=QMOF_POTCAR_FUNCTIONAL)
    potcar.write_file(path)


def _vasp_readme(structure_id: str, symbols: list[str], *, potcar_written: bool) -> str:
    if potcar_written:
        potcar_line = (
            f"POTCAR: written by pymatgen from the configured PAW PBE.54 set ({' '.join(symbols)})."
        )
    else:
        potcar_line = (
            "POTCAR: NOT included (VASP licence). Supply it yourself: concatenate the PAW PBE.54 "
            f"potentials listed in POTCAR.spec, in that order ({' '.join(symbols)}), e.g. "
            "`for s in $(cat POTCAR.spec); do cat "
            "$VASP_PSP/potpaw_PBE.54/$s/POTCAR; done > POTCAR`."
        )
    return (
        f"{structure_id}: VASP inputs for a PBE-D3(BJ) relaxation with QMOF's settings "
        f"(mofbalora).\n{potcar_line}\n"
        "Run: 1) VASP here with INCAR (full relaxation, ISIF=3); 2) cp CONTCAR POSCAR; "
        "cp INCAR.static INCAR; run VASP again: the static run's band gap is the QMOF-comparable "
        "PBE gap.\nSet NCORE/KPAR for your machine. See docs/dft_handoff.md.\n"
    )


def _write_ase_folder(
    folder: Path, structure: Structure, kpoints: Kpoints, structure_id: str
) -> None:
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    magmoms = qmof_magmoms(structure)
    atoms.set_initial_magnetic_moments(magmoms)
    atoms.info["structure_id"] = structure_id
    write(folder / "structure.extxyz", atoms, format="extxyz")
    elements = sorted({site.specie.symbol for site in structure})
    symbols = potcar_symbols(elements)
    settings = _ase_settings(structure, kpoints, elements, symbols)
    (folder / "calculator.json").write_text(json.dumps(settings, indent=2) + "\n")


def _ase_settings(
    structure: Structure, kpoints: Kpoints, elements: list[str], symbols: list[str]
) -> dict[str, Any]:
    """Calculator settings for ``code="ase"``: ASE ``Vasp`` kwargs plus a code-neutral summary."""
    relax = incar_for(structure)
    static = incar_for(structure, static=True)
    relax.pop("MAGMOM", None)
    static.pop("MAGMOM", None)
    relax.pop("GGA")
    static.pop("GGA")
    kpts = [int(n) for n in kpoints.kpts[0]]
    gamma = kpoints.style.name.lower() == "gamma"
    vasp_kwargs: dict[str, Any] = {"xc": "pbe", "pp": "pbe", "kpts": kpts, "gamma": gamma}
    vasp_kwargs["setups"] = {e: s[len(e) :] for e, s in zip(elements, symbols, strict=True)}
    vasp_kwargs.update({k.lower(): v for k, v in relax.items()})
    static_updates = {k.lower(): v for k, v in QMOF_STATIC_UPDATES.items()}
    return {
        "description": (
            "QMOF-compatible periodic PBE-D3(BJ) settings written by mofbalora. 'ase_vasp_kwargs' "
            "are keyword arguments for ase.calculators.vasp.Vasp (full relaxation); apply "
            "'static_updates' (null removes a key) for the single point that gives the band gap. "
            "Initial magnetic moments are stored per atom in structure.extxyz. Users of other "
            "codes: reproduce 'settings'."
        ),
        "settings": {
            "functional": "PBE",
            "dispersion": "DFT-D3 with Becke-Johnson damping (VASP IVDW=12)",
            "plane_wave_cutoff_ev": QMOF_INCAR["ENCUT"],
            "smearing": {"type": "gaussian", "width_ev": QMOF_INCAR["SIGMA"]},
            "kpoints": {"kppa": QMOF_KPPA, "mesh": kpts, "gamma_centered": gamma},
            "spin_polarized": static["ISPIN"] == 2,
            "scf_energy_tolerance_ev": QMOF_INCAR["EDIFF"],
            "force_tolerance_ev_per_a": abs(QMOF_INCAR["EDIFFG"]),
            "relax_cell": True,
            "symmetry": False,
            "paw_potentials": {
                "set": "VASP PAW PBE.54",
                "symbols": dict(zip(elements, symbols, strict=True)),
            },
        },
        "ase_vasp_kwargs": vasp_kwargs,
        "static_updates": static_updates,
        "initial_magmoms": qmof_magmoms(structure),
    }


#: INCAR tags whose value is written as given: pymatgen's ``Incar`` capitalizes string values (``GGA
#: = Pe``); VASP's documentation and QMOF write ``GGA = PE`` (VASP compares the first two letters,
#: either case works)
_VERBATIM_TAGS: tuple[str, ...] = ("GGA",)


def _write_incar(params: dict[str, Any], path: Path) -> None:
    """Write an INCAR with pymatgen, keeping :data:`_VERBATIM_TAGS` as given (``GGA = PE``)."""
    from pymatgen.io.vasp.inputs import Incar

    lines = []
    for line in Incar(params).get_str().splitlines():
        tag = line.split("=", 1)[0].strip()
        if tag in _VERBATIM_TAGS and tag in params:
            line = f"{tag} = {params[tag]}"
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")


def _write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_csv(path, index=False)
