"""Screening: rank candidate CIFs for DFT follow-up by a model's predicted band gap and its uncertainty.

Every input gets exactly one row, whatever it holds: bad files get ``status="error"`` and a specific
``error`` (the reason) and no rank. Progress is appended to ``<out>.partial.jsonl`` after every chunk and the
output table is replaced atomically, so a crash never leaves a half-written table; rerunning skips the
structures already done (keyed by the sha256 of the file content) and ends with the same table as an
uninterrupted run: each structure's stochastic passes use a generator seeded by (seed, file digest), and
the acquisition scores are computed once, over the whole table, at the end.

Beyond the prediction, each screened row says whether to trust it (``docs/screening.md``):

* **chemistry checks** (``checks``, ``failed_checks``, ``checks_detail``; :mod:`mofbalora.checks`): MOFChecker's
  diagnostics and pymatgen's CIF consistency check; policy ``checks`` = off | flag (default) | exclude;
* **applicability domain** (``unseen_elements``, ``domain_distance``, ``in_domain``; :mod:`mofbalora.domain`);
  policy ``domain`` = rank-separately (default) | exclude | ignore;
* **physical outputs** (``bandgap_median_ev``, ``bandgap_spread_ev``, ``physical_flag``;
  :mod:`mofbalora.physical`): the acquisitions rank by the median and the capped robust spread of the draws.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mofbalora.acquisition import ACQUISITIONS, acquisition_scores
from mofbalora.checks import (
    FAILED_CHECKS_REASON,
    INSTALL_HINT,
    check_cache,
    check_policy,
    checker_available,
    checks_of_file,
    not_run,
    remember_checks,
)
from mofbalora.data.cache import file_digest
from mofbalora.data.candidates import distinct_file_ids, expand_candidates
from mofbalora.data.structures import DEFAULT_MAX_ATOMS, read_structure
from mofbalora.domain import OUT_OF_DOMAIN_REASON, domain_policy, elements_of_formula
from mofbalora.featurize import featurize_files
from mofbalora.io import TABLE_FORMATS, atomic_write_json, write_table
from mofbalora.model import BandGapModel, load_model
from mofbalora.physical import robust_summary
from mofbalora.prediction import calibrated_std
from mofbalora.repeats import DEFAULT_REPEATS_TOP, mark_repeats

log = logging.getLogger(__name__)

COLUMNS = ["rank", "path", "structure_id", "formula", "n_atoms", "bandgap_mean_ev", "bandgap_std_ev",
           "epistemic_std_ev", "aleatoric_std_ev", "bandgap_std_calibrated_ev", "bandgap_median_ev",
           "bandgap_spread_ev", "physical_flag", "score", "checks", "failed_checks", "checks_detail", "unseen_elements", "domain_distance", "in_domain",
           "repeat_of", "status", "error", "detail", "digest"]


def structure_seed(seed: int, digest: str | None) -> int:
    """A per-structure seed from the run seed and the file's content digest (independent of batch order)."""
    h = hashlib.sha256(f"{seed}:{digest}".encode()).hexdigest()
    return int(h[:15], 16)


def _partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def _signature_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.signature.json")


def model_fingerprint(model: BandGapModel) -> str:
    """sha256 (hex, first 16) of a model's weights and calibration: two screens of the same files agree row
    for row only if this, the number of passes, the seed, the atom cap and the checks setting agree."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(model.calibration, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _check_signature(out: Path, signature: dict, resume: bool) -> dict | None:
    """Refuse to resume rows computed under another model or other settings (they would mix silently); write
    ``signature`` and return the one it replaces (None if there was none or it does not parse)."""
    path = _signature_path(out)
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = None
    if resume and _partial_path(out).exists():
        if old is None:
            log.warning("%s has no signature (written by an older mofbalora): resuming without checking that the "
                        "model and settings are the same", _partial_path(out))
        else:
            diff = {k: (old.get(k), v) for k, v in signature.items() if old.get(k) != v}
            if diff:
                what = ", ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in diff.items())
                raise ValueError(f"{_partial_path(out)} holds rows of another screen ({what}); rerun with "
                                 "resume=False (`--no-resume`) to start over (the chemistry checks already run are "
                                 "kept: they do not depend on the model), or keep the earlier settings")
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


def rank_rows(records: list[dict], acquisition: str, *, kappa: float = 2.0, target_ev=None, goal: str = "min",
              seed: int = 0, checks: str = "flag", domain: str = "rank-separately") -> pd.DataFrame:
    """The ranked table from per-file records (one per input, in input order).

    Scores come from the robust summary of each row's draws (:func:`mofbalora.physical.robust_summary`: the
    median and the capped 16-84 % half-width stand in for the mean and std). ``checks="exclude"`` turns rows
    whose checks failed into error rows (reason ``failed_checks``, the names in ``detail``); ``domain="exclude"``
    does the same for out-of-domain rows (reason ``out_of_domain``); ``domain="rank-separately"`` ranks every
    in-domain row (or row of unknown domain) before every out-of-domain row, each group by its score.
    Excluded rows keep their predictions for reference but get no rank.
    """

    checks, domain = check_policy(checks), domain_policy(domain)
    df = pd.DataFrame(records)
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    df["in_domain"] = df["in_domain"].astype("boolean")
    ok = (df["status"] == "ok").to_numpy().copy()
    if ok.any():
        samples_ok = [np.asarray(r["samples_ev"], dtype=float) for r, k in zip(records, ok, strict=True) if k]
        aleatoric = (df.loc[ok, "aleatoric_std_ev"].to_numpy(float)
                     if "aleatoric_std_ev" in df and df.loc[ok, "aleatoric_std_ev"].notna().all() else None)
        robust = robust_summary(np.array(samples_ok), df.loc[ok, "bandgap_std_ev"].to_numpy(float), aleatoric)
        for col, values in robust.items():
            df[col] = df[col].astype(object) if col == "physical_flag" else df[col]
            df.loc[ok, col] = values
    if checks == "exclude":
        bad = ok & (df["checks"] == "failed").to_numpy()
        df.loc[bad, "status"], df.loc[bad, "error"] = "error", FAILED_CHECKS_REASON
        df.loc[bad, "detail"] = df.loc[bad, "failed_checks"]
        ok = ok & ~bad
    out_of_domain = (df["in_domain"] == False).fillna(False).to_numpy(bool)  # noqa: E712 (NA = unknown)
    if domain == "exclude":
        bad = ok & out_of_domain
        df.loc[bad, "status"], df.loc[bad, "error"] = "error", OUT_OF_DOMAIN_REASON
        df.loc[bad, "detail"] = [_domain_detail(r) for r in df.loc[bad].to_dict("records")]
        ok = ok & ~bad
    df["score"] = np.nan
    df["rank"] = pd.array([pd.NA] * len(df), dtype="Int64")
    if ok.any():
        mean = df.loc[ok, "bandgap_median_ev"].to_numpy(float)
        std = df.loc[ok, "bandgap_spread_ev"].to_numpy(float)
        samples = np.array([r["samples_ev"] for r, k in zip(records, ok, strict=True) if k], dtype=float)
        scores = acquisition_scores(acquisition, mean, std, samples, kappa=kappa, target_ev=target_ev, goal=goal,
                                    rng=np.random.default_rng(seed))
        df.loc[ok, "score"] = scores
        group = out_of_domain[ok].astype(int) if domain == "rank-separately" else np.zeros(len(scores), int)
        # in-domain group first (rank-separately), higher score first, ties by input order
        order = np.lexsort((np.arange(len(scores)), -scores, group))
        ranks = np.empty(len(scores), dtype=np.int64)
        ranks[order] = np.arange(1, len(scores) + 1)
        df.loc[ok, "rank"] = ranks
    for col in ("error", "detail", "physical_flag", "failed_checks", "checks_detail", "unseen_elements", "repeat_of"):
        df[col] = df[col].astype(object).fillna("")
    return df[COLUMNS]


def _domain_detail(row: dict) -> str:
    parts = []
    if row.get("unseen_elements"):
        parts.append(f"elements not in training: {row['unseen_elements']}")
    if np.isfinite(row.get("domain_distance", np.nan)):
        parts.append(f"embedding distance {row['domain_distance']:.3g}")
    return "; ".join(parts)


def row_flags(row: dict) -> str:
    """One short string of everything that argues against trusting a screened row (for summaries)."""
    flags = []
    if row.get("failed_checks"):
        flags.append(f"checks:{row['failed_checks']}")
    in_domain = row.get("in_domain")
    if in_domain is not None and not pd.isna(in_domain) and not bool(in_domain):
        flags.append("out_of_domain" + (f"({row['unseen_elements']})" if row.get("unseen_elements") else ""))
    if row.get("physical_flag"):
        flags.append(str(row["physical_flag"]))
    if row.get("repeat_of") and not pd.isna(row["repeat_of"]):
        flags.append(f"repeat_of:{row['repeat_of']}")
    return " ".join(flags)


def predict_files(m, paths: list, keys: list[str], *, n_samples: int, seed: int, max_atoms: int = DEFAULT_MAX_ATOMS,
                  with_embedding: bool = False, batched: bool = True, checks: bool = False) -> list[dict]:
    """One record per file: featurize (through the cache) and predict with ``n_samples`` passes.

    The files' structures are predicted together (``batched``). A record still does not depend on which
    files share its chunk, process or machine (what makes sharded screening exact): BaLoRA's draws are
    keyed by (``seed``, content digest, pass), and the passes of an MC-dropout model, whose masks come
    from a generator, use one generator per structure seeded by (``seed``, content digest).
    ``with_embedding`` adds the pooled structure embedding (for diversity-aware batch selection).
    Every record gets the applicability-domain columns, and the chemistry-check columns (run when ``checks``).
    """

    feats, errors = featurize_files(m.backbone, paths, max_atoms=max_atoms, progress=False,
                                    digests=[None if key.startswith("path:") else key for key in keys])
    ok = [k for k, f in enumerate(feats) if f is not None]
    preds: dict[int, tuple] = {}
    if batched and m.regime != "mc_dropout":
        pred = m.predict_inputs([feats[k] for k in ok], n_samples=n_samples, seed=seed) if ok else None
        preds = {k: (pred, j) for j, k in enumerate(ok)}
    else:
        for k in ok:
            preds[k] = (m.predict_inputs([feats[k]], n_samples=n_samples, seed=structure_seed(seed, feats[k]["digest"])), 0)
    records = []
    for k, (path, key, feat, err) in enumerate(zip(paths, keys, feats, errors, strict=True)):
        rec = {"key": key, "path": str(path), "structure_id": Path(path).stem}
        if err is not None:
            rec.update(status="error", error=err.reason, detail=err.message[:300])
        else:
            pred, j = preds[k]
            rec.update(status="ok", error="", detail="", digest=feat["digest"], formula=feat.get("formula"),
                       n_atoms=int(feat["n_atoms"]), **pred.to_record(j))
            calibrated = calibrated_std(m, pred.std_ev[j:j + 1])
            if calibrated is not None:
                rec["bandgap_std_calibrated_ev"] = float(calibrated[0])
            if with_embedding or _needs_embedding(m):
                rec["embedding"] = pred.embedding[j].tolist()
        records.append(rec)
    _annotate(m, records, max_atoms=max_atoms, checks=checks, keep_embedding=with_embedding)
    return records


def _needs_embedding(m) -> bool:
    domain = getattr(m, "training_domain", None)
    return domain is not None and domain.has_embedding


def _annotate(m, records: list[dict], *, max_atoms: int, checks: bool, keep_embedding: bool) -> None:
    """Add the domain and check columns to the screened records (in place); a failure stays per structure."""

    ok = [r for r in records if r["status"] == "ok"]
    domain = getattr(m, "training_domain", None)
    if domain is not None and ok:
        embeddings = np.array([r["embedding"] for r in ok]) if domain.has_embedding else None
        for rec, cols in zip(ok, domain.assess([elements_of_formula(r["formula"]) for r in ok], embeddings),
                             strict=True):
            rec.update(cols)
    if not keep_embedding:
        for rec in ok:
            rec.pop("embedding", None)
    run = checks and checker_available()
    cache = check_cache() if run else None
    for rec in ok:
        if not run:
            rec.update(not_run("" if not checks else "mofchecker-next is not installed"))
            continue
        try:
            rec.update(checks_of_file(rec["path"], None if rec["key"].startswith("path:") else rec["key"],
                                      lambda p: read_structure(p, max_atoms=max_atoms), cache))
        except Exception as exc:  # one structure's checker crash never stops the batch
            rec.update(checks="error", failed_checks="", checks_detail=f"{type(exc).__name__}: {exc}"[:200])


def screen(inputs: list[str], *, model="default", n_samples: int = 32, acquisition: str = "std", kappa: float = 2.0,
           target_ev: tuple[float, float] | None = None, goal: str = "min", out: str | Path = "ranked.csv",
           seed: int = 0, chunk_size: int = 16, max_atoms: int = DEFAULT_MAX_ATOMS, resume: bool = True,
           progress: bool = True, checkpoint_seconds: float = 20.0, dask=None, device: str = "cpu",
           checks: str = "flag", domain: str = "rank-separately", workers: int = 1,
           repeats_top: int = DEFAULT_REPEATS_TOP) -> pd.DataFrame:
    """Screen candidate files (paths, folders or globs) with a saved model; returns the ranked table.

    ``model`` is ``"default"``, a run folder, or an already loaded :class:`~mofbalora.model.BandGapModel`.
    ``dask``: run the chunks on a Dask cluster: ``"local:N"`` (N local worker processes), a scheduler
    address (``tcp://host:8786``), ``"jobqueue:CONFIG.yaml"`` (SLURM / PBS workers through dask-jobqueue)
    or a ``distributed.Client``. The table is the same as a one-process run (see :mod:`mofbalora.parallel`).
    ``device``: where a one-process screen runs the model (cpu | cuda | auto); Dask workers use their CPU.
    ``workers``: without Dask, run the frozen trunk over the candidates first in this many one-thread local
    processes (backbones that cache it: CHGNet's readout placement on a CPU); the screen then reads the cache.
    The pre-pass is resumable (what is cached stays cached).

    ``checks`` (off | flag | exclude, default flag): run MOF chemistry checks (:mod:`mofbalora.checks`, extra
    ``checks``); flag ranks every structure and names its failed checks, exclude turns a failing structure into
    an error row (reason ``failed_checks``). The default is flag because the checks are heuristics with false
    positives (an unusual but correct bond, an intentional guest molecule): a screen should show them, not
    silently drop candidates; ask for exclude to drop them. Without mofchecker-next installed, flag screens on
    and reports ``checks="not_run"`` (a warning names the install command); exclude refuses to start.
    ``domain`` (rank-separately | exclude | ignore, default rank-separately): how out-of-domain structures
    (:mod:`mofbalora.domain`) are ranked: after every in-domain one, not at all (error row, reason
    ``out_of_domain``), or like the others.
    ``repeats_top``: when the screen completes, name in ``repeat_of`` the better-ranked row that each of the
    best ``repeats_top`` rows repeats (the same structure given twice, e.g. a redetermination;
    :mod:`mofbalora.repeats`); flagged, not re-ranked. 0: not checked.
    """

    if acquisition not in ACQUISITIONS:
        raise ValueError(f"unknown acquisition {acquisition!r}; choose from {sorted(ACQUISITIONS)}")
    if int(repeats_top) != repeats_top or repeats_top < 0:  # checked now, not after hours of screening
        raise ValueError(f"repeats_top must be an integer >= 0 (rows checked for repeats; 0 = off), got {repeats_top!r}")
    if acquisition == "target" and target_ev is None:
        raise ValueError("acquisition 'target' needs a band-gap window: --target LO HI (eV)")
    checks, domain = check_policy(checks), domain_policy(domain)
    if checks == "exclude" and not checker_available():
        raise ImportError(f"--checks exclude: {INSTALL_HINT}")
    if checks == "flag" and not checker_available():
        log.warning("chemistry checks not run (checks column: not_run): %s", INSTALL_HINT)
    run_checks = checks != "off"
    policies = {"checks": checks, "domain": domain}
    out = Path(out)
    if out.suffix.lower() not in TABLE_FORMATS:
        raise ValueError(f"unknown output format {out.suffix!r}; choose from {sorted(TABLE_FORMATS)}")
    paths = expand_candidates(inputs)
    if not paths:
        raise ValueError(f"no candidate files found in {inputs}")
    m = model if isinstance(model, BandGapModel) else load_model(model, device=device)
    partial = _partial_path(out)
    before = _check_signature(out, {"model": model_fingerprint(m), "n_samples": int(n_samples), "seed": int(seed),
                           "max_atoms": int(max_atoms), "checks": bool(run_checks)}, resume)
    done = _load_partial(partial) if resume else {}
    if not resume and partial.exists():
        if run_checks and (before or {}).get("checks"):  # starting over (e.g. another model): keep the verdicts
            kept = remember_checks(_load_partial(partial).values())
            log.info("kept the chemistry checks of %d rows of the discarded partial screen", kept)
        partial.unlink()

    keys = [_key(p) for p in paths]
    todo = [k for k, key in enumerate(keys) if key not in done]
    bar = tqdm(total=len(paths), initial=len(paths) - len(todo), desc="screen", unit="cif", disable=not progress)
    last_flush = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    chunks = [todo[start:start + chunk_size] for start in range(0, len(todo), chunk_size)]
    if dask is None and workers > 1 and todo:
        m.backbone.prefill_cache([paths[k] for k in todo], workers=workers, max_atoms=max_atoms, progress=progress)
    if dask is None:
        results = ((chunk, predict_files(m, [paths[k] for k in chunk], [keys[k] for k in chunk], n_samples=n_samples,
                                         seed=seed, max_atoms=max_atoms, checks=run_checks)) for chunk in chunks)
        stats = None
    else:
        from mofbalora.parallel.dask_screen import DaskPredictor

        predictor = DaskPredictor(dask, model, scratch=out.parent / f".{out.name}.model")
        stats = predictor.stats
        results = predictor.map_chunks(chunks, paths, keys, n_samples=n_samples, seed=seed, max_atoms=max_atoms,
                                       checks=run_checks)
    try:
        with open(partial, "a") as log_fh:
            for chunk, records in results:  # in completion order: rows are keyed, the table is in input order
                for rec in records:
                    if rec["key"] in done:  # a chunk computed twice (a lost worker's retried task): keep one row
                        continue
                    done[rec["key"]] = rec
                    log_fh.write(json.dumps(rec) + "\n")
                log_fh.flush()
                os.fsync(log_fh.fileno())
                bar.update(len(chunk))
                if time.monotonic() - last_flush > checkpoint_seconds:
                    _write_ranked(done, keys, paths, acquisition, kappa, target_ev, goal, seed, out, complete=False,
                                  **policies)
                    last_flush = time.monotonic()
    finally:
        if dask is not None:
            predictor.close()
    bar.close()
    table = _write_ranked(done, keys, paths, acquisition, kappa, target_ev, goal, seed, out, complete=True,
                          repeats_top=repeats_top, max_atoms=max_atoms, **policies)
    if stats is not None:
        table.attrs["dask"] = stats
    table.attrs["computed_files"] = len(todo)  # the rest were resumed from an earlier sitting's partial rows
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
    """One distinct id per input file (:func:`mofbalora.data.candidates.distinct_file_ids`): its stem, or, when
    several inputs share a stem (CoRE MOF's ASR and FSR sets name the same refcodes), ``stem~`` and 8 hex
    digits of the file's content digest (``keys``; a hash of the path for an unreadable file)."""

    def digest_of(i: int) -> str:
        key = keys[i]
        return hashlib.sha256(key.encode()).hexdigest() if key.startswith("path:") else key

    return distinct_file_ids(paths, digest_of)


def _write_ranked(done, keys, paths, acquisition, kappa, target_ev, goal, seed, out, *, complete: bool,
                  checks: str = "flag", domain: str = "rank-separately", repeats_top: int = 0,
                  max_atoms: int = DEFAULT_MAX_ATOMS) -> pd.DataFrame:
    records = []
    for key, path, sid in zip(keys, paths, structure_ids(paths, keys), strict=True):
        rec = done.get(key)
        if rec is None:
            continue
        # the same content given twice gets one prediction but a row per path, each naming its own file
        records.append({**rec, "path": str(path), "structure_id": sid})
    table = rank_rows(records, acquisition, kappa=kappa, target_ev=target_ev, goal=goal, seed=seed, checks=checks,
                      domain=domain)
    if complete and repeats_top:  # reads the top files once, at the end (not at every checkpoint)
        table["repeat_of"] = mark_repeats(table, top=repeats_top,
                                          read=lambda path: read_structure(path, max_atoms=max_atoms))
    write_table(table, out)
    return table


def summarize(table: pd.DataFrame, top: int = 10) -> str:
    """Terminal summary: the top-K table (median ± robust spread of the draws, as ranked; the sample mean ± std
    where those are absent), score and flags, then failures by reason."""
    ok = table[table["status"] == "ok"].sort_values("rank")
    lines = [f"screened {len(ok)} of {len(table)} file(s)"]
    if len(ok):
        robust = {"bandgap_median_ev", "bandgap_spread_ev"} <= set(ok) and ok["bandgap_median_ev"].notna().all()
        center, spread = ("bandgap_median_ev", "bandgap_spread_ev") if robust else ("bandgap_mean_ev", "bandgap_std_ev")
        calibrated = ok["bandgap_std_calibrated_ev"].notna().all()
        extra = f"  {'calibrated ±':>12}" if calibrated else ""
        lines.append(f"{'rank':>4}  {'structure':<28} {'formula':<18} {'atoms':>5}  {'gap (eV)':>13}{extra}  {'score':>8}"
                     "  flags")
        for _, r in ok.head(top).iterrows():
            cal = f"  {r['bandgap_std_calibrated_ev']:12.2f}" if calibrated else ""
            lines.append(f"{int(r['rank']):>4}  {str(r['structure_id'])[:28]:<28} {str(r['formula'])[:18]:<18} "
                         f"{int(r['n_atoms']):>5}  {r[center]:6.2f} ± {r[spread]:4.2f}{cal}  "
                         f"{r['score']:8.3f}  {row_flags(r.to_dict())}".rstrip())
    failures = Counter(table.loc[table["status"] == "error", "error"])
    if failures:
        lines.append("failures by reason: " + ", ".join(f"{k}: {v}" for k, v in failures.most_common()))
    return "\n".join(lines)


def plot_screen(table: pd.DataFrame, path: str | Path, top: int = 10) -> Path:
    """Predicted gap distribution and std against mean, the top-K highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = table[table["status"] == "ok"]
    sel = ok[ok["rank"] <= top]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.hist(ok["bandgap_mean_ev"], bins=30, color="0.6")
    a.hist(sel["bandgap_mean_ev"], bins=30, color="C3", label=f"top {top}")
    a.set_xlabel("predicted PBE band gap (eV)")
    a.set_ylabel("structures")
    a.legend()
    b.scatter(ok["bandgap_mean_ev"], ok["bandgap_std_ev"], s=8, color="0.5", label="screened")
    b.scatter(sel["bandgap_mean_ev"], sel["bandgap_std_ev"], s=24, color="C3", label=f"top {top}")
    b.set_xlabel("predicted band gap (eV)")
    b.set_ylabel("predictive std (eV)")
    b.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
