"""A markdown summary of a ranked screen table (for large screens such as all of CoRE MOF): rows,
errors by reason, chemistry checks by name, out-of-domain share, physical flags, throughput, and the
top rows with everything that argues against them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from mofbalora.io import atomic_write_bytes
from mofbalora.screen import row_flags


def _tally(values) -> Counter:
    out: Counter = Counter()
    for v in values:
        out.update(x for x in str(v).split(";") if x and x != "nan")
    return out


def _table(counter: Counter, what: str, total: int) -> list[str]:
    if not counter:
        return [f"(no {what})", ""]
    lines = [f"| {what} | rows | share |", "|---|---|---|"]
    lines += [f"| `{k}` | {v} | {v / max(total, 1):.1%} |" for k, v in counter.most_common()]
    return lines + [""]


def screen_summary(
    table: pd.DataFrame,
    *,
    seconds: float | None = None,
    top: int = 50,
    title: str = "Screen",
    command: str = "",
    acquisition: str = "std",
    computed: int | None = None,
    sittings: int = 1,
) -> str:
    """The summary of a ranked ``table`` (from :func:`mofbalora.screen.screen`) as markdown.

    ``seconds``: the wall time of the last sitting, in which ``computed`` rows were computed
    (default: all of them). A resumed screen's throughput is that sitting's rows over its time, not
    the whole table's.
    """
    n = len(table)
    ok = table[table["status"] == "ok"]
    err = table[table["status"] == "error"]
    lines = [f"# {title}", ""]
    if command:
        lines += ["```bash", command, "```", ""]
    lines += [f"- rows: **{n}** (one per input file); ranked: {len(ok)}; error rows: {len(err)}"]
    if seconds:
        done = n if computed is None else computed
        where = (
            ""
            if done == n
            else (
                f" (the last of {sittings} sittings of a resumed run: {done} of the {n} rows "
                "computed in it)"
            )
        )
        lines.append(f"- wall time {seconds:.0f} s{where}: **{done / seconds:.2f} files/s**")
    checked = table[table["checks"].isin(["ok", "failed", "error"])]
    status = Counter(table["checks"].replace("", "not_run").fillna("not_run"))
    lines.append("- chemistry checks: " + ", ".join(f"{k}: {v}" for k, v in status.most_common()))
    known = table["in_domain"].dropna()
    if len(known):
        out = int((~known.astype(bool)).sum())
        lines.append(
            f"- out of domain: **{out} of {len(known)} ({out / len(known):.1%})**, of which "
            f"{int((table['unseen_elements'].astype(str).str.len() > 0).sum())} with elements "
            "unseen in training"
        )
    else:
        lines.append("- out of domain: not assessed (the model carries no training domain)")
    lines += ["", "## Errors by reason", ""] + _table(Counter(err["error"]), "errors", n)
    lines += [
        "## Failed chemistry checks by name",
        "",
        f"Among {len(checked)} checked structures.",
        "",
    ]
    lines += _table(_tally(checked["failed_checks"]), "failed checks", len(checked))
    lines += ["## Unseen elements", ""] + _table(
        _tally(table["unseen_elements"]), "unseen elements", len(known)
    )
    lines += ["## Physical flags", ""] + _table(
        _tally(ok["physical_flag"]), "physical flags", len(ok)
    )
    head = ok.sort_values("rank").head(top)
    if acquisition == "std":
        lines += policy_shift(ok, head)
        lines += epistemic_view(ok, head)
    lines += [
        f"## Top {len(head)} by `{acquisition}`",
        "",
        *_refcode_families(head),
        *_repeat_count(head, ok),
        "| rank | structure | formula | atoms | median ± "
        "spread (eV) | mean ± std (eV) | score | flags |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in head.to_dict("records"):
        lines.append(
            f"| {int(r['rank'])} | {r['structure_id']} | {r['formula']} | {int(r['n_atoms'])} | "
            f"{r['bandgap_median_ev']:.2f} ± {r['bandgap_spread_ev']:.2f} | "
            f"{r['bandgap_mean_ev']:.2f} ± {r['bandgap_std_ev']:.2f} | {r['score']:.3f} | "
            f"{row_flags(r) or '–'} |"
        )
    return "\n".join(lines) + "\n"


CSD_REFCODE = r"^([A-Z]{6})(\d{2})?(?:_|$)"


def _refcode_families(head: pd.DataFrame) -> list[str]:
    """For CSD-named structures (CoRE MOF: ``DUNXUH01_clean``): how many distinct compounds the rows
    are, since a refcode's numbered suffixes are redeterminations of one compound (a DFT list
    wants each once)."""
    stems = head["structure_id"].astype(str).str.extract(CSD_REFCODE)[0]
    if len(head) == 0 or stems.notna().mean() < 0.8:
        return []
    counts = Counter(stems.dropna())
    repeated = ", ".join(f"{k} ×{v}" for k, v in counts.most_common() if v > 1)
    return [
        f"{len(counts)} distinct CSD refcodes (redeterminations share the first six letters)"
        + (f"; repeated: {repeated}" if repeated else "")
        + ".",
        "",
    ]


def _repeat_count(head: pd.DataFrame, ok: pd.DataFrame) -> list[str]:
    """How many of the top rows repeat a better-ranked structure (``repeat_of``), whatever the files
    are called, and where a list of as many rows without the repeats would end (what a DFT list
    of that length takes)."""
    if "repeat_of" not in head:
        return []
    # one test for the count and the list
    is_repeat = ok["repeat_of"].fillna("").astype(str).str.len() > 0
    n = int(is_repeat.loc[head.index].sum())
    line = (
        f"{n} rows repeat a better-ranked structure (`repeat_of`: the same structure by pymatgen's "
        f"StructureMatcher): {len(head) - n} distinct structures."
    )
    distinct = ok.loc[~is_repeat].sort_values("rank")
    if n and len(distinct) >= len(head):
        line += (
            f" Skipping them, the best {len(head)} rows not flagged as repeats end at rank "
            f"{int(distinct['rank'].iloc[len(head) - 1])}."
        )
    return [line, ""]


def policy_shift(ok: pd.DataFrame, now: pd.DataFrame) -> list[str]:
    """How the top of a ``std`` screen (``now``: the top rows of the screened rows ``ok``, by rank)
    changed with the robust spread, the domain rule and the checks: the earlier ranking (raw std
    over T draws, every screened row alike) against the table's own, with what argues against each
    of the earlier picks; and what ``--checks exclude`` would remove from the top."""
    if ok.empty:
        return []
    top = len(now)
    before = ok.sort_values(["bandgap_std_ev", "structure_id"], ascending=[False, True]).head(top)
    kept = set(before["structure_id"]) & set(now["structure_id"])
    out_of_domain = (before["in_domain"] == False).fillna(False)  # noqa: E712 (NA = unknown)
    failed = before["failed_checks"].astype(str).str.len() > 0
    flagged = before["physical_flag"].astype(str).str.len() > 0
    lines = [
        f"## How the top {top} changed",
        "",
        f"Before the checks, the domain rule and the robust spread, a `std` screen ranked by the "
        f"raw std of the T draws. Of that top {len(before)}: **{int(out_of_domain.sum())} out of "
        f"domain**, **{int(failed.sum())} failing a chemistry check**, {int(flagged.sum())} with a "
        f"physical flag (runaway draws or a capped spread), "
        f"{int((~(out_of_domain | failed | flagged)).sum())} with none of these; {len(kept)} are "
        f"still in the top {len(now)} now.",
        "",
        "| raw-std rank | structure | formula | atoms | mean ± std (eV) | median ± spread (eV) | "
        "rank now | flags |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, r in enumerate(before.head(min(top, 15)).to_dict("records"), start=1):
        lines.append(
            f"| {k} | {r['structure_id']} | {r['formula']} | {int(r['n_atoms'])} | "
            f"{r['bandgap_mean_ev']:.2f} ± {r['bandgap_std_ev']:.2f} | "
            f"{r['bandgap_median_ev']:.2f} ± {r['bandgap_spread_ev']:.2f} | {int(r['rank'])} | "
            f"{row_flags(r) or '–'} |"
        )
    dropped = int((now["failed_checks"].astype(str).str.len() > 0).sum())
    lines += [
        "",
        f"With `--checks exclude`, {dropped} of the top {len(now)} would become error rows "
        "(`failed_checks`) and the next ones would move up.",
        "",
    ]
    return lines


def epistemic_view(ok: pd.DataFrame, now: pd.DataFrame, show: int = 15) -> list[str]:
    """The in-domain rows a ranking by the BaLoRA spread alone would put first
    (``epistemic_std_ev``, the draws' std; ``--acquisition epistemic`` ranks by its robust form),
    against the ``std`` top ``now``: the structures a DFT label would teach the model most about,
    next to those whose prediction is least reliable."""
    if "epistemic_std_ev" not in ok or ok["epistemic_std_ev"].isna().all():
        return []
    pool = ok[(ok["in_domain"] != False).fillna(True)]  # noqa: E712 (NA = unknown: kept)
    first = pool.sort_values(["epistemic_std_ev", "structure_id"], ascending=[False, True])
    shared = len(set(first.head(len(now))["structure_id"]) & set(now["structure_id"]))
    lines = [
        "## By the BaLoRA spread alone (`--acquisition epistemic`)",
        "",
        f"In-domain rows by `epistemic_std_ev` (the draws' std, without the aleatoric part): "
        f"{shared} of its top {len(now)} are in the `std` top {len(now)}.",
        "",
        "| # | structure | formula | atoms | median (eV) | epistemic std (eV) | aleatoric std (eV) "
        "| rank by std | flags |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k, r in enumerate(first.head(show).to_dict("records"), start=1):
        lines.append(
            f"| {k} | {r['structure_id']} | {r['formula']} | {int(r['n_atoms'])} | "
            f"{r['bandgap_median_ev']:.2f} | {r['epistemic_std_ev']:.3f} | "
            f"{r.get('aleatoric_std_ev', float('nan')):.2f} "
            f"| {int(r['rank'])} | {row_flags(r) or '–'} |"
        )
    return lines + [""]


def write_screen_summary(table: pd.DataFrame, path: str | Path, **kwargs) -> Path:
    """Write :func:`screen_summary` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, screen_summary(table, **kwargs).encode())
    return path
