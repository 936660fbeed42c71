"""Screening: rank candidate CIFs for DFT follow-up by a model's predicted band gap and its
uncertainty.

Every input gets exactly one row, whatever it holds: bad files get ``status="error"`` and a specific
``error`` (the reason) and no rank. Progress is appended to ``<out>.partial.jsonl`` after every
chunk and the output table is replaced atomically, so a crash never leaves a half-written table;
rerunning skips the structures already done (keyed by the sha256 of the file content) and ends with
the same table as an uninterrupted run: each structure's stochastic passes are keyed by (seed, file
digest), and the acquisition scores are computed once, over the whole table, at the end.

The scoring itself (files -> records -> ranked rows, locally, in worker processes or on Dask) is
:mod:`mofbalora.scoring`; this module is the resume, I/O and reporting around it.

Beyond the prediction, each screened row says whether to trust it (``docs/screening.md``):

* **chemistry checks** (``checks``, ``failed_checks``, ``checks_detail``; :mod:`mofbalora.checks`):
  MOFChecker's diagnostics and pymatgen's CIF consistency check; policy ``checks`` = off | flag
  (default) | exclude;
* **applicability domain** (``unseen_elements``, ``domain_distance``, ``in_domain``;
  :mod:`mofbalora.domain`); policy ``domain`` = rank-separately (default) | exclude | ignore;
* **physical outputs** (``bandgap_median_ev``, ``bandgap_spread_ev``, ``physical_flag``;
  :mod:`mofbalora.physical`): the acquisitions rank by the median and the capped robust spread of
  the draws.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from functools import partial
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from mofbalora.checks import INSTALL_HINT, check_namespace, checker_available, remember_checks
from mofbalora.data.cache import file_digest
from mofbalora.data.candidates import distinct_file_ids, expand_candidates
from mofbalora.data.structures import read_structure
from mofbalora.io import TABLE_FORMATS, atomic_write_json, write_table
from mofbalora.model import load_model, resolve_model_dir
from mofbalora.repeats import mark_repeats
from mofbalora.scoring import (
    COLUMNS,
    InProcessExecutor,
    LocalExecutor,
    Predictor,
    ScoringConfig,
    add_intervals,
    rank,
    row_flags,
    score_files,
    structure_seed,
    typed_table,
)

log = logging.getLogger(__name__)

__all__ = [
    "COLUMNS",
    "model_fingerprint",
    "rank_rows",
    "row_flags",
    "screen",
    "structure_seed",
    "summarize",
    "plot_screen",
    "structure_ids",
]


def _partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def _signature_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.signature.json")


def model_fingerprint(model: Predictor) -> str:
    """sha256 (hex, first 16) of a model's weights and calibration (:meth:`Predictor.fingerprint`):
    two screens of the same files agree row for row only if this, the number of passes, the seed,
    the atom cap and the checks setting agree."""
    return model.fingerprint()


def _check_signature(out: Path, signature: dict, resume: bool) -> dict | None:
    """Refuse to resume rows computed under another model or other settings (they would mix
    silently); write ``signature`` and return the one it replaces (None if there was none or it
    does not parse)."""
    path = _signature_path(out)
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = None
    if resume and _partial_path(out).exists():
        if old is None:
            log.warning(
                "%s has no signature (written by an older mofbalora): resuming without checking "
                "that the model and settings are the same",
                _partial_path(out),
            )
        else:
            diff = {k: (old.get(k), v) for k, v in signature.items() if old.get(k) != v}
            if diff:
                what = ", ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in diff.items())
                raise ValueError(
                    f"{_partial_path(out)} holds rows of another screen ({what}); rerun with "
                    "--no-resume (resume=False) to start over (the chemistry checks already run "
                    "are kept: they do not depend on the model), or keep the earlier settings"
                )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, signature, indent=1)
    return old


def _load_partial(path: Path) -> dict[str, dict]:
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        done[rec["key"]] = rec
    return done


def rank_rows(records: list[dict], acquisition: str, **settings) -> pd.DataFrame:
    """:func:`mofbalora.scoring.rank` with the settings as keywords (``kappa``, ``target_ev``,
    ``goal``, ``seed``, ``checks``, ``domain``: see :class:`~mofbalora.scoring.ScoringConfig`)."""
    return rank(records, ScoringConfig(acquisition=acquisition, **settings))


def as_predictor(model, *, device: str = "cpu", trust_checkpoint: bool = False) -> Predictor:
    """``model`` if it already is a :class:`Predictor`; else ``"default"`` or a run folder,
    loaded."""
    if isinstance(model, Predictor):
        return model
    return load_model(model, device=device, trust_checkpoint=trust_checkpoint)


def make_executor(
    predictor: Predictor,
    *,
    workers: int = 1,
    dask=None,
    model_source=None,
    scratch: str | Path | None = None,
    trust_checkpoint: bool = False,
):
    """The executor for a run: Dask when ``dask`` is given (:mod:`mofbalora.parallel.dask_screen`),
    local worker processes when ``workers`` > 1 on a CPU, else this process. ``model_source``: the
    folder (or ``"default"``) the predictor was loaded from, so workers load it rather than a saved
    copy. ``trust_checkpoint``: the caller's trust decision, carried to every worker that loads the
    model (Dask workers; spawned local workers); a forked worker inherits the model already
    loaded here."""
    if dask is not None:
        from mofbalora.parallel.dask_screen import DaskExecutor

        return DaskExecutor(
            dask,
            predictor if model_source is None else model_source,
            scratch=scratch,
            trust_checkpoint=trust_checkpoint,
        )
    on_cpu = str(getattr(predictor, "device", "cpu")) == "cpu"
    if workers > 1 and on_cpu:
        model_dir = None
        if model_source is not None:
            model_dir = resolve_model_dir(model_source)
        return LocalExecutor(
            predictor,
            workers,
            model_dir=model_dir,
            loader=partial(load_model, trust_checkpoint=trust_checkpoint),
        )
    if workers > 1:
        log.warning(
            "workers=%d ignored: the model runs on %s (one process)", workers, predictor.device
        )
    return InProcessExecutor(predictor)


def screen(
    inputs: list[str],
    *,
    model="default",
    config: ScoringConfig | None = None,
    out: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    checkpoint_seconds: float = 20.0,
    dask=None,
    device: str = "cpu",
    workers: int = 1,
    trust_checkpoint: bool = False,
    **settings,
) -> pd.DataFrame:
    """Screen candidate files (paths, folders or globs) with a saved model; returns the ranked
    table.

    ``model`` is ``"default"``, a run folder, or an already loaded model (any
    :class:`~mofbalora.scoring.Predictor`: a BandGapModel or the gradient-boosting baseline).
    ``config`` (a :class:`~mofbalora.scoring.ScoringConfig`) or its fields as keywords
    (``n_samples``, ``acquisition``, ``kappa``, ``target_ev``, ``goal``, ``seed``, ``max_atoms``,
    ``checks``, ``domain``, ``repeats_top``, ``chunk_size``): how structures are scored and ranked;
    every setting is checked before the model loads or a file is written.
    ``out``: the table (.csv, .parquet or .json), written atomically and resumed from
    ``<out>.partial.jsonl`` after an interruption; None: nothing is written (and nothing resumed).
    ``dask``: run the chunks on a Dask cluster: ``"local:N"`` (N local worker processes), a
    scheduler address (``tcp://host:8786``), ``"jobqueue:CONFIG.yaml"`` (SLURM / PBS workers through
    dask-jobqueue) or a ``distributed.Client``. ``workers``: without Dask, score the chunks in this
    many local one-thread worker processes (each loads the model once and parses, featurizes,
    predicts and checks its files; CPU only). The table is the same in every case (see
    :mod:`mofbalora.scoring`). ``device``: where a one-process screen runs the model (cpu | cuda |
    auto). ``trust_checkpoint``: allow full unpickling of a third-party backbone checkpoint the
    model names (never read from the model folder; only for files from a source you trust).

    ``checks`` (off | flag | exclude, default flag): MOF chemistry checks (:mod:`mofbalora.checks`,
    extra ``checks``); flag ranks every structure and names its failed checks, exclude turns a
    failing structure into an error row (reason ``failed_checks``). The default is flag because the
    checks are heuristics with false positives (an unusual but correct bond, an intentional guest
    molecule): a screen should show them, not silently drop candidates. Without mofchecker-next
    installed, flag screens on and reports ``checks="not_run"`` (a warning names the install
    command); exclude refuses to start. ``domain`` (rank-separately | exclude | ignore, default
    rank-separately): how out-of-domain structures (:mod:`mofbalora.domain`) are ranked: after every
    in-domain one, not at all (error row, reason ``out_of_domain``), or like the others.
    ``repeats_top``: when the screen completes, name in ``repeat_of`` the better-ranked row that
    each of the best ``repeats_top`` rows repeats (the same structure given twice, e.g. a
    redetermination; :mod:`mofbalora.repeats`); flagged, not re-ranked. 0: not checked.
    """

    if config is None:
        config = ScoringConfig.from_dict(settings)
    elif settings:
        raise TypeError(
            "give the scoring settings either as config= "
            f"or as keywords, not both: {sorted(settings)}"
        )
    cfg = config
    if int(workers) != workers or workers < 1:
        raise ValueError(
            f"workers must be an integer >= 1 (local worker processes), got {workers!r}"
        )
    if cfg.checks == "exclude" and not checker_available():
        raise ImportError(f"--checks exclude: {INSTALL_HINT}")
    if cfg.checks == "flag" and not checker_available():
        log.warning("chemistry checks not run (checks column: not_run): %s", INSTALL_HINT)
    if out is not None:
        out = Path(out)
        if out.suffix.lower() not in TABLE_FORMATS:
            raise ValueError(
                f"unknown output format {out.suffix!r} of "
                f"{out}; choose from {sorted(TABLE_FORMATS)}"
            )
    paths = expand_candidates(inputs)
    if not paths:
        raise ValueError(f"no candidate files found in {inputs}")
    m = as_predictor(model, device=device, trust_checkpoint=trust_checkpoint)
    keys = [_key(p) for p in paths]
    ids = structure_ids(paths, keys)
    done: dict[str, dict] = {}
    partial = None
    if out is not None:
        partial = _partial_path(out)
        before = _check_signature(
            out,
            {
                "model": m.fingerprint(),
                "n_samples": cfg.n_samples,
                "seed": cfg.seed,
                "max_atoms": cfg.max_atoms,
                "checks": check_namespace(cfg.check_charges) if cfg.run_checks else False,
            },
            resume,
        )
        done = _load_partial(partial) if resume else {}
        # rows resumed from before the intervals were columns
        if add_intervals(m, list(done.values())):
            log.info("added the interval columns to resumed rows written without them")
        if not resume and partial.exists():
            # starting over (another model): keep the verdicts
            if cfg.run_checks and (before or {}).get("checks"):
                # a namespace, or True from before check sets had names (those screens ran the
                # charge check)
                then = (before or {}).get("checks")
                kept = remember_checks(
                    _load_partial(partial).values(),
                    charges=cfg.check_charges,
                    records_charges=then is True or then == check_namespace(True),
                )
                log.info(
                    "kept the chemistry checks of %d rows of the discarded partial screen", kept
                )
            partial.unlink()
        out.parent.mkdir(parents=True, exist_ok=True)

    todo = [k for k, key in enumerate(keys) if key not in done]
    bar = tqdm(
        total=len(paths),
        initial=len(paths) - len(todo),
        desc="screen",
        unit="cif",
        disable=not progress,
    )
    last_flush = time.monotonic()
    executor = make_executor(
        m,
        workers=workers if todo else 1,
        dask=dask,
        model_source=None if isinstance(model, Predictor) else model,
        scratch=None if out is None else out.parent / f".{out.name}.model",
        trust_checkpoint=trust_checkpoint,
    )
    stats = getattr(executor, "stats", None)
    log_fh = open(partial, "a") if partial is not None else None  # noqa: SIM115 (closed in finally)
    try:
        results = score_files(
            m,
            [paths[k] for k in todo],
            [keys[k] for k in todo],
            [ids[k] for k in todo],
            cfg,
            executor,
        )
        # in completion order: rows are keyed, the table is in input order
        for chunk, records in results:
            for rec in records:
                # a chunk computed twice (a lost worker's retried task): keep one row
                if rec["key"] in done:
                    continue
                done[rec["key"]] = rec
                if log_fh is not None:
                    log_fh.write(json.dumps(rec) + "\n")
            if log_fh is not None:
                log_fh.flush()
                os.fsync(log_fh.fileno())
            bar.update(len(chunk))
            if out is not None and time.monotonic() - last_flush > checkpoint_seconds:
                _write_ranked(done, keys, paths, ids, cfg, out, complete=False)
                last_flush = time.monotonic()
    finally:
        if log_fh is not None:
            log_fh.close()
        executor.close()
    bar.close()
    table = _write_ranked(done, keys, paths, ids, cfg, out, complete=True)
    if stats is not None and dask is not None:
        table.attrs["dask"] = stats
    # the rest were resumed from an earlier sitting's partial rows
    table.attrs["computed_files"] = len(todo)
    if partial is not None:
        partial.unlink(missing_ok=True)
        _signature_path(out).unlink(missing_ok=True)
    return table


def _key(path: Path) -> str:
    """Content digest for readable files; the path for anything that cannot be read."""

    try:
        return file_digest(path)
    except OSError:
        return f"path:{path}"


def structure_ids(paths: list, keys: list[str]) -> list[str]:
    """One distinct id per input file (:func:`mofbalora.data.candidates.distinct_file_ids`): its
    stem, or, when several inputs share a stem (CoRE MOF's ASR and FSR sets name the same refcodes),
    ``stem~`` and 8 hex digits of the file's content digest (``keys``; a hash of the path for an
    unreadable file)."""

    def digest_of(i: int) -> str:
        key = keys[i]
        return hashlib.sha256(key.encode()).hexdigest() if key.startswith("path:") else key

    return distinct_file_ids(paths, digest_of)


def _write_ranked(
    done: dict,
    keys: list[str],
    paths: list,
    ids: list[str],
    cfg: ScoringConfig,
    out: Path | None,
    *,
    complete: bool,
) -> pd.DataFrame:
    """The ranked table of the rows done so far, in rank order (error rows last, in input order),
    written atomically to ``out``; the repeats are marked once, when the screen is ``complete``."""
    records = []
    for key, path, sid in zip(keys, paths, ids, strict=True):
        rec = done.get(key)
        if rec is None:
            continue
        # the same content given twice gets one prediction but a row per path, each naming its own
        # file
        records.append({**rec, "path": str(path), "structure_id": sid})
    table = rank(records, cfg)
    # reads the top files once, at the end (not at every checkpoint)
    if complete and cfg.repeats_top:
        table["repeat_of"] = mark_repeats(
            table,
            top=cfg.repeats_top,
            read=lambda path: read_structure(path, max_atoms=cfg.max_atoms),
        )
    table = typed_table(in_rank_order(table))
    if out is not None:
        write_table(table, out)
    return table


def in_rank_order(table: pd.DataFrame) -> pd.DataFrame:
    """Ranked rows first by rank, then the unranked (error) rows in input order; a fresh index."""
    position = pd.Series(range(len(table)), index=table.index)
    key = table["rank"].astype("Float64").fillna(float("inf"))
    order = sorted(table.index, key=lambda i: (key[i], position[i]))
    return table.loc[order].reset_index(drop=True)


def summarize(table: pd.DataFrame, top: int = 10, acquisition: str | None = None) -> str:
    """Terminal summary: what the rows were ranked by, the top-K table (median ± the spread the
    acquisition read: the epistemic std under ``epistemic``, the robust spread of the draws
    otherwise; the sample mean ± std where those are absent), the score under its acquisition's
    name, the flags, then failures by reason. Identifiers and formulas are shown whole (the
    columns widen to the longest shown)."""
    from mofbalora.scoring import ranked_by

    acquisition = acquisition or table.attrs.get("acquisition")
    score_name, spread_col = ranked_by(acquisition)
    ok = table[table["status"] == "ok"].sort_values("rank")
    lines = [f"screened {len(ok)} of {len(table)} file(s)"]
    if len(ok):
        head = ok.head(top)
        robust = {"bandgap_median_ev", "bandgap_spread_ev"} <= set(ok) and ok[
            "bandgap_median_ev"
        ].notna().all()
        center = "bandgap_median_ev" if robust else "bandgap_mean_ev"
        if spread_col not in ok or not ok[spread_col].notna().all():
            spread_col = "bandgap_spread_ev" if robust else "bandgap_std_ev"
        gap_name = f"{'median' if robust else 'mean'} ± {spread_col.removesuffix('_ev')} (eV)"
        calibrated = (
            "bandgap_std_calibrated_ev" in ok and ok["bandgap_std_calibrated_ev"].notna().all()
        )
        sid_w = max([len("structure"), *(len(str(v)) for v in head["structure_id"])])
        f_w = max([len("formula"), *(len(str(v)) for v in head["formula"])])
        gap_w = max(len(gap_name), 15)
        score_w = max(len(score_name), 8)
        extra = f"  {'calibrated ±':>12}" if calibrated else ""
        lines.append(
            f"ranked by: {acquisition or 'std'} (score = {score_name.removesuffix(' (eV)')}; "
            "higher = send to DFT first)"
        )
        lines.append(
            f"{'rank':>4}  {'structure':<{sid_w}}  {'formula':<{f_w}}  {'atoms':>5}  "
            f"{gap_name:>{gap_w}}{extra}  {score_name:>{score_w}}  flags"
        )
        for _, r in head.iterrows():
            cal = f"  {r['bandgap_std_calibrated_ev']:12.2f}" if calibrated else ""
            gap = f"{r[center]:6.2f} ± {r[spread_col]:5.3f}"
            lines.append(
                f"{int(r['rank']):>4}  {str(r['structure_id']):<{sid_w}}  "
                f"{str(r['formula']):<{f_w}}  {int(r['n_atoms']):>5}  {gap:>{gap_w}}{cal}  "
                f"{r['score']:{score_w}.3f}  {row_flags(r.to_dict())}".rstrip()
            )
    failures = Counter(table.loc[table["status"] == "error", "error"])
    if failures:
        lines.append(
            "failures by reason: " + ", ".join(f"{k}: {v}" for k, v in failures.most_common())
        )
    return "\n".join(lines)


def plot_screen(
    table: pd.DataFrame, path: str | Path, top: int = 10, acquisition: str | None = None
) -> Path:
    """Predicted gap distribution, and the quantity the acquisition ranked by (the spread it read,
    or its score, named on the axis) against the predicted gap; the top-K highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mofbalora.scoring import ranked_by

    acquisition = acquisition or table.attrs.get("acquisition") or "std"
    score_name, _ = ranked_by(acquisition)
    ok = table[table["status"] == "ok"]
    sel = ok[ok["rank"] <= top]
    center = (
        "bandgap_median_ev"
        if "bandgap_median_ev" in ok and ok["bandgap_median_ev"].notna().all()
        else "bandgap_mean_ev"
    )
    y, ylabel = "score", f"score = {score_name}: what --acquisition {acquisition} ranks by"
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.hist(ok[center], bins=30, color="0.6")
    a.hist(sel[center], bins=30, color="C3", label=f"top {top}")
    a.set_xlabel(f"predicted PBE band gap, {center} (eV)")
    a.set_ylabel("structures")
    a.legend()
    b.scatter(ok[center], ok[y], s=8, color="0.5", label="screened")
    b.scatter(sel[center], sel[y], s=24, color="C3", label=f"top {top}")
    b.set_xlabel(f"predicted band gap, {center} (eV)")
    b.set_ylabel(ylabel)
    b.set_title(f"ranked by {acquisition}")
    b.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
