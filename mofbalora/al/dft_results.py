"""Reading a DFT results CSV for a real campaign (``mofbalora al ingest``), every row checked first.

The file has a ``bandgap_ev`` column (PBE band gap in eV) and ``structure_id`` and/or ``path``. Only
an empty ``bandgap_ev`` cell means a failed calculation. Anything else that is not a finite,
non-negative decimal number (``1,23``, ``n/a``, ``-0.5``, ``inf``, ``nan``), a gap above
:data:`MAX_PLAUSIBLE_GAP_EV` (10 eV: a gap written in meV, 1230 for 1.23 eV, would otherwise pass),
a row with more or fewer fields than the header, an id the campaign does not know without a CIF, a
CIF that does not exist, or an id given twice is an error. All such rows are reported together, each
with the file, its line, its id and the bad value, in one :class:`DFTResultsError`, raised before
the campaign is touched: a file is ingested whole or not at all.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mofbalora.al.campaign import Campaign

GAP_COLUMN = "bandgap_ev"
ID_COLUMNS = ("structure_id", "path")
#: a plain decimal number: digits with an optional '.' fraction and exponent (no decimal comma, no
#: digit separators, no nan/inf spelled out)
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
#: rows listed in one error message (the rest are counted)
MAX_LISTED = 20
#: the largest band gap (eV) taken as a PBE gap of a MOF: QMOF's largest is 6.45 eV, and PBE gaps of
#: even wide-gap insulators stay below it; a larger number is almost always a gap in meV (or another
#: unit)
MAX_PLAUSIBLE_GAP_EV = 10.0


class DFTResultsError(ValueError):
    """A results file with unreadable or unphysical rows; ``problems`` lists one line per bad
    row."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path, self.problems = path, problems
        listed = "\n  ".join(problems[:MAX_LISTED])
        more = (
            f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        )
        super().__init__(f"{path}: {len(problems)} bad row(s), nothing ingested:\n  {listed}{more}")


def check_gap_ev(gap: float) -> float:
    """``gap`` (eV) if it is a plausible PBE band gap, NaN (a failed calculation) included; the one
    check of ingestion (:func:`parse_gap_ev`) and
    :meth:`~mofbalora.al.campaign.Campaign.add_labels`.

    Raises ValueError saying why (the caller names the row or id) for an infinite or negative gap,
    or one above :data:`MAX_PLAUSIBLE_GAP_EV` eV, with a hint about units.
    """
    if math.isnan(gap):
        return gap
    if math.isinf(gap):
        raise ValueError(f"{gap} is not a finite number")
    if gap < 0:
        raise ValueError(f"{gap:g} eV is negative; a band gap is >= 0 eV")
    if gap > MAX_PLAUSIBLE_GAP_EV:
        raise ValueError(
            f"{gap:g} eV is above {MAX_PLAUSIBLE_GAP_EV:g} eV, not a plausible PBE band gap "
            "(QMOF's largest is 6.45 eV): is it in meV? "
            f"({gap:g} meV = {gap / 1000:g} eV; write gaps in eV)"
        )
    return gap


def parse_gap_ev(raw: str) -> float:
    """A ``bandgap_ev`` cell → gap in eV; NaN for an empty cell (a failed calculation).

    Raises ValueError saying why for anything that is not a finite, non-negative decimal number, or
    that is above :data:`MAX_PLAUSIBLE_GAP_EV` (:func:`check_gap_ev`).
    """
    text = raw.strip()
    if not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None and not math.isfinite(value):  # inf, nan, 1e999
        raise ValueError(f"{raw!r} is not a finite number")
    if value is None or not _DECIMAL.fullmatch(text):  # float() alone would take '1_000'
        raise ValueError(
            f"{raw!r} is not a number (write the gap in eV with '.' as the decimal mark; "
            "leave the cell empty for a failed calculation)"
        )
    if value < 0:
        raise ValueError(f"{raw!r} is negative; a band gap is >= 0 eV")
    return check_gap_ev(value)


def _cif_of(cell: str, results: Path) -> Path:
    cif = Path(cell.strip()).expanduser()
    if not cif.is_absolute() and not cif.exists() and (results.parent / cif).exists():
        cif = results.parent / cif  # relative to the results file
    return cif


def read_dft_results(
    path: str | Path, campaign: Campaign
) -> tuple[dict[str, float], dict[str, str]]:
    """PBE gaps of a results CSV for ``campaign`` (see the module docstring); reads, never changes
    it.

    Rows are matched by ``structure_id``, else by ``path``, else join as new structures (id: the
    given ``structure_id``, or one made from the CIF's name by
    :meth:`~mofbalora.al.candidates.CandidatePool.new_keys`: its stem, with a suffix from its
    content digest when another structure or another new CIF of the file has that stem). Returns
    ({id: gap in eV, NaN = failed}, {id: CIF path} of new structures). Raises
    :class:`DFTResultsError` listing every bad row.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:  # utf-8-sig: spreadsheets write a BOM
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        if GAP_COLUMN not in columns or not set(ID_COLUMNS) & set(columns):
            raise ValueError(
                f"{path}: a results CSV needs {GAP_COLUMN!r} and 'structure_id' or 'path'; "
                f"columns are {columns}"
            )
        rows = [(reader.line_num, row) for row in reader]
    known, index = campaign.known_keys(), campaign.path_index()
    # line, where, id ('' = to be made from the CIF), new CIF
    parsed: list[tuple[int, str, str, str, float]] = []
    problems: list[tuple[int, str]] = []
    for line, row in rows:
        sid = (row.get("structure_id") or "").strip()
        cell = row.get("path") or ""
        where = f"line {line} ({sid or cell.strip() or 'no id'})"
        if None in row:  # more fields than the header: an unquoted decimal comma, a stray separator
            problems.append(
                (
                    line,
                    f"{where}: {len(columns) + len(row[None])} fields for {len(columns)} columns "
                    f"(extra {row[None]!r}; a decimal comma?)",
                )
            )
            continue
        if any(v is None for v in row.values()):
            problems.append(
                (line, f"{where}: fewer fields than the {len(columns)} columns {columns}")
            )
            continue
        raw = row[GAP_COLUMN]
        try:
            gap = parse_gap_ev(raw)
        except ValueError as exc:
            problems.append((line, f"{where}: {GAP_COLUMN} {exc}"))
            continue
        key, new_cif = (sid if sid in known else None), ""
        if key is None and cell.strip():
            cif = _cif_of(cell, path)
            key = index.get(str(cif.resolve()))
            if key is None:
                if not cif.is_file():
                    problems.append((line, f"{where}: CIF {cell!r} of a new structure not found"))
                    continue
                key, new_cif = sid, str(cif)  # sid '' : an id is made below
        if key is None:
            problems.append((line, f"{where}: not in the campaign and no CIF path given"))
            continue
        parsed.append((line, where, key, new_cif, gap))

    # ids of the new CIFs given without one, made all together (candidates.py: files with the same
    # name in two folders get two ids, whatever their order); the same file on two rows gets one id
    unnamed = {str(Path(c).resolve()): c for _, _, key, c, _ in parsed if not key}
    made = dict(
        zip(
            unnamed,
            campaign.new_keys(list(unnamed.values()), taken={key for _, _, key, _, _ in parsed}),
            strict=True,
        )
    )
    labels: dict[str, float] = {}
    new_paths: dict[str, str] = {}
    lines: dict[str, int] = {}
    for line, where, key, new_cif, gap in parsed:
        key = key or made[str(Path(new_cif).resolve())]
        if key in labels:
            problems.append(
                (line, f"{where}: structure {key!r} appears twice (first on line {lines[key]})")
            )
            continue
        labels[key], lines[key] = gap, line
        if new_cif:
            new_paths[key] = new_cif
    if problems:
        raise DFTResultsError(path, [why for _, why in sorted(problems, key=lambda p: p[0])])
    return labels, new_paths
