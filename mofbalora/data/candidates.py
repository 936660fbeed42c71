"""Candidate structure files for screening: expanding user inputs, and exporting CoRE MOF CIFs.

:func:`expand_candidates` turns command-line inputs (files, folders, glob patterns) into one
ordered list of paths. :func:`export_coremof` writes CIFs from the ``core-mof`` package (CoRE MOF
2014 and 2019, experimental MOFs without band gaps) into a folder, byte for byte as the package
ships them, with a ``manifest.csv`` of their metadata.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import random
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal, get_args

from mofbalora.io import atomic_path

__all__ = [
    "distinct_file_ids",
    "COREMOF_SUBSETS",
    "MANIFEST_NAME",
    "CoreMofSubset",
    "coremof_entries",
    "expand_candidates",
    "export_coremof",
]

log = logging.getLogger(__name__)

CoreMofSubset = Literal["2019-ASR", "2019-FSR", "2014"]
COREMOF_SUBSETS: tuple[str, ...] = get_args(CoreMofSubset)
MANIFEST_NAME = "manifest.csv"

# The csv column that flags disorder, per subset (2014 has none).
_DISORDER_COLUMN = {"2019-ASR": "DISORDER", "2019-FSR": "State", "2014": None}
_GLOB_CHARS = frozenset("*?[")


def _is_cif_name(path: Path) -> bool:
    return path.suffix.lower() == ".cif"


def _cifs_under(folder: Path) -> list[Path]:
    """All ``*.cif`` entries below ``folder`` (any depth, suffix case-insensitive), sorted.

    Everything whose name ends in ``.cif`` is listed — files, broken links and folders (a folder
    named like a CIF is a user's mistake that must get its own error row, so it is listed, not
    descended into).
    """
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        found += [Path(root) / name for name in files if _is_cif_name(Path(name))]
        found += [Path(root) / name for name in dirs if _is_cif_name(Path(name))]
        dirs[:] = [d for d in dirs if not _is_cif_name(Path(d))]
    return sorted(found, key=lambda p: str(p))


def expand_candidates(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand screening inputs into an ordered, de-duplicated list of CIF paths.

    Each input is, in this order of precedence:

    * an existing folder: every ``*.cif`` entry below it, at any depth, sorted by path
      (the suffix is matched case-insensitively; a folder named ``*.cif`` is an entry, not
      descended);
    * an existing path that is not a folder: itself, whatever its suffix;
    * a glob pattern (holds ``*``, ``?`` or ``[``; ``**`` matches across folders): its matches,
      sorted, where a matched folder is expanded like a folder input;
    * anything else: kept as given.

    Nonexistent paths and patterns that match nothing are *kept* as entries (a pattern as the path
    it spells), so that a screen reports them as ``unreadable`` rows instead of silently dropping
    them. A folder holding no CIFs contributes nothing. ``~`` is expanded. Order follows the
    inputs; a path met again (compared by absolute, normalised path, links not resolved) keeps its
    first place only.

    Args:
        inputs: files, folders and glob patterns.

    Returns:
        The paths, relative or absolute as the inputs spell them.
    """
    if isinstance(inputs, (str, os.PathLike)):
        raise TypeError(
            "inputs must be a list of paths or patterns, "
            f"not a single {type(inputs).__name__} {inputs!r}"
        )
    out: list[Path] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        key = os.path.normcase(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            out.append(path)

    for raw in inputs:
        text = os.path.expanduser(os.fspath(raw))
        path = Path(text)
        if path.is_dir() and not _is_cif_name(path):
            for found in _cifs_under(path):
                add(found)
        elif os.path.lexists(path):
            add(path)
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                add(path)
            for match in matches:
                m = Path(match)
                if m.is_dir() and not _is_cif_name(m):
                    for found in _cifs_under(m):
                        add(found)
                else:
                    add(m)
        else:
            add(path)
    return out


def _coremof_data_dir() -> Path:
    """The ``data`` folder of the installed ``core-mof`` package (import name ``CoRE_MOF``)."""
    try:
        import CoRE_MOF
    except ImportError as exc:
        raise ImportError(
            "the CoRE MOF database is not installed; install it with `pip install core-mof`"
        ) from exc
    return Path(CoRE_MOF.__file__).resolve().parent / "data"


def _check_subset(subset: str) -> None:
    if subset not in COREMOF_SUBSETS:
        raise ValueError(f"unknown CoRE MOF subset {subset!r}; choose from {list(COREMOF_SUBSETS)}")


def coremof_entries(subset: CoreMofSubset) -> list[dict[str, str]]:
    """The rows of a CoRE MOF subset's csv, in file order, as dicts of stripped strings.

    Each row gains ``disordered``: ``"yes"``/``"no"`` from the subset's disorder column
    (``DISORDER`` in 2019-ASR, ``State`` in 2019-FSR), ``""`` (unknown) for 2014, which has none.
    Unnamed trailing columns of the csv are dropped.
    """
    _check_subset(subset)
    csv_path = _coremof_data_dir() / f"{subset}.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"CoRE MOF csv not found: {csv_path} (broken core-mof install?)")
    flag = _DISORDER_COLUMN[subset]
    rows: list[dict[str, str]] = []
    with open(csv_path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader)]
        if not header or header[0] != "filename":
            raise ValueError(f"{csv_path}: first column is {header[:1]}, expected 'filename'")
        for values in reader:
            if not values or not values[0].strip():
                continue
            row = {h: v.strip() for h, v in zip(header, values, strict=False) if h}
            if flag is None:
                row["disordered"] = ""
            else:
                row["disordered"] = "yes" if row.get(flag, "").upper() == "DISORDER" else "no"
            rows.append(row)
    return rows


def _safe_name(name: str) -> bool:
    """A csv entry usable as a file name inside the output folder."""
    return bool(name) and Path(name).name == name and not name.startswith(".") and "\\" not in name


def export_coremof(
    subset: CoreMofSubset,
    out_dir: str | os.PathLike[str],
    limit: int | None = None,
    seed: int | None = None,
    include_disordered: bool = True,
) -> list[Path]:
    """Write CoRE MOF CIFs from the ``core-mof`` package into ``out_dir``, with a manifest.

    The CIF text is written byte for byte as archived (line ends, symmetry, labels and all): awkward
    files stay awkward, so that a screen meets them as it would in the wild.

    Which entries: those of the subset's csv, without the ones flagged ``DISORDER`` when
    ``include_disordered`` is false; then, with ``seed=None``, the first ``limit`` in name order,
    otherwise ``limit`` drawn at random with :class:`random.Random` ``(seed)`` (reproducible),
    listed in name order. ``limit=None`` takes them all (12,020 files, about 270 MB for 2019-ASR).

    ``out_dir/manifest.csv`` gets one row per written file: ``name``, ``path`` (the file name,
    relative to the manifest's folder), ``subset``, ``disordered`` (``yes``/``no``, or empty for
    2014, which has no flag), then every named column of the package's csv (pore geometry, metals,
    open metal sites, the raw disorder column, CSD references...). Existing files of the same names
    are overwritten.

    Args:
        subset: ``"2019-ASR"`` (all-solvent removed), ``"2019-FSR"`` (free solvent removed) or
            ``"2014"``.
        out_dir: folder to write into (created if needed).
        limit: at most this many files (a positive integer), or None for all.
        seed: None for the first ``limit`` by name, an integer for a reproducible random draw.
        include_disordered: keep entries the csv flags as disordered.

    Returns:
        The written CIF paths, in name order.
    """
    _check_subset(subset)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")

    rows = {}
    for row in coremof_entries(subset):
        name = row["filename"]
        if not _safe_name(name):
            log.warning("skipping CoRE MOF entry with an unusable name: %r", name)
            continue
        if include_disordered or row["disordered"] != "yes":
            rows[name] = row
    names = sorted(rows)
    if limit is not None and limit < len(names):
        names = names[:limit] if seed is None else sorted(random.Random(seed).sample(names, limit))
    wanted = {f"{name}.cif": name for name in names}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    archive = _coremof_data_dir() / f"{subset}.tar.xz"
    if wanted:
        # Stream the archive once, stopping as soon as every wanted member has been written.
        with tarfile.open(archive, mode="r|xz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                name = wanted.get(base)
                if name is None or name in written or not member.isfile():
                    continue
                fh = tar.extractfile(member)
                if fh is None:
                    continue
                target = out / base
                target.write_bytes(fh.read())
                written[name] = target
                if len(written) == len(wanted):
                    break
    missing = [name for name in names if name not in written]
    if missing:
        log.warning(
            "%d CoRE MOF %s entries are not in %s (e.g. %s)",
            len(missing),
            subset,
            archive.name,
            missing[:3],
        )

    paths = [written[name] for name in names if name in written]
    _write_manifest(
        out / MANIFEST_NAME, subset, [rows[name] for name in names if name in written], paths
    )
    return paths


def _write_manifest(
    target: Path, subset: str, rows: list[dict[str, str]], paths: list[Path]
) -> None:
    """``manifest.csv``: name, path (relative to the manifest), subset, disordered, then the
    csv's columns."""
    extra: list[str] = []
    for row in rows:
        for key in row:
            if key not in ("filename", "disordered") and key not in extra:
                extra.append(key)
    fields = ["name", "path", "subset", "disordered", *extra]
    with atomic_path(target) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row, path in zip(rows, paths, strict=True):
            record = {
                "name": row["filename"],
                "path": path.name,
                "subset": subset,
                "disordered": row["disordered"],
            }
            record.update({key: row.get(key, "") for key in extra})
            writer.writerow(record)


def distinct_file_ids(
    paths: list, digest_of: Callable[[int], str], taken: Iterable[str] = ()
) -> list[str]:
    """One distinct id per structure file: its stem, unless another of ``paths`` shares the stem or
    ``taken`` holds it (as an id, or as the start ``stem~`` of one); then ``stem~`` and the first 8
    hex digits of the file's content digest (``digest_of(i)`` for ``paths[i]``, called only on a
    collision). Byte-identical copies under one stem get ``~2``, ``~3`` by order. The same files
    and ``taken`` give the same ids."""
    taken = set(taken)
    # 'MOF-5' of 'MOF-5~3f1c09ab'
    made_from = {k[:i] for k in taken for i, ch in enumerate(k) if ch == "~"}
    stems = [Path(p).stem for p in paths]
    shared = Counter(stems)
    ids = []
    for i, stem in enumerate(stems):
        free = stem not in taken and stem not in made_from and shared[stem] == 1
        sid = stem if free else f"{stem}~{digest_of(i)[:8]}"
        base, n = sid, 1
        while sid in taken:  # the same stem and the same bytes
            n += 1
            sid = f"{base}~{n}"
        taken.add(sid)
        ids.append(sid)
    return ids
