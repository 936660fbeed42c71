"""The scoring core: one path from candidate files to ranked rows, shared by the screen, Dask and
the campaign.

Below the model implementations (which implement its contract and call :func:`predict_structures`)
and above everything they are made of; the screen, ``parallel.dask_screen`` and ``al`` use it:

* :class:`Predictor`: the model contract. :class:`~mofbalora.model.BandGapModel` and the
  gradient-boosting baseline (:class:`~mofbalora.gbm.GBMBandGapModel`) both implement it: predict
  featurized inputs, the recalibrated std, a fingerprint of the weights, the training domain;
* :class:`ScoredRow`: the one typed row. The screen's table, the campaign's batch file and the DFT
  manifest are views of it (:data:`COLUMNS`, :data:`BATCH_COLUMNS`,
  :data:`MANIFEST_PREDICTION_COLUMNS`), and :func:`explain_columns` documents every column from the
  same schema;
* :class:`ScoringConfig`: the one home of the screening and acquisition settings and their defaults
  (the CLI, :func:`mofbalora.screen.screen` and the campaign's ``al`` section read them from here),
  checked when built, before any model loads;
* :func:`score_chunk` turns files into records (featurize through the cache, T passes, calibrated
  std, domain, chemistry checks); :func:`score_files` maps it over chunks on an executor: in this
  process, in N local worker processes (:class:`LocalExecutor`, each loads the model once and does
  everything: parse, graph, trunk, passes, checks) or on Dask
  (:class:`mofbalora.parallel.dask_screen.DaskExecutor`; :func:`mofbalora.screen.make_executor`
  picks one);
* :func:`rank` turns records into the ranked table (robust median and capped spread, checks and
  domain policies, in-domain rows first), and :func:`select_rows` picks a campaign batch from it.

A record does not depend on the chunk, process or machine it was computed in: BaLoRA's draws are
keyed by (seed, content digest, pass), and an MC-dropout model's passes use one generator per
structure seeded by (seed, content digest).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from mofbalora.acquisition import ACQUISITIONS, GOALS, acquisition_scores, cost_aware, select_batch
from mofbalora.checks import (
    CHECK_POLICIES,
    DEFAULT_CHARGES,
    FAILED_CHECKS_REASON,
    check_cache,
    checker_available,
    checks_of_file,
    not_run,
)
from mofbalora.data.structures import DEFAULT_MAX_ATOMS, read_structure
from mofbalora.domain import DOMAIN_POLICIES, OUT_OF_DOMAIN_REASON, elements_of_formula
from mofbalora.featurize import featurize_files
from mofbalora.physical import robust_summary
from mofbalora.prediction import Prediction, floor_std
from mofbalora.repeats import DEFAULT_REPEATS_TOP

log = logging.getLogger(__name__)


# -- the model contract ----------------------------------------------------------------------------
@runtime_checkable
class Predictor(Protocol):
    """What the scoring core needs of a model (``BandGapModel`` and ``GBMBandGapModel`` implement
    it)."""

    regime: str
    backbone: Any
    #: validation-fitted recalibration of the std, or None
    calibration: dict | None
    #: what the model was trained on (:class:`~mofbalora.domain.ApplicabilityDomain`), or None
    training_domain: Any

    def predict_inputs(
        self, inputs: list, *, n_samples: int = 32, seed: int | None = 0
    ) -> Prediction:
        """Band gaps (eV) with their spread for featurized inputs."""

    def calibrated_std(self, std_ev: np.ndarray) -> np.ndarray | None:
        """The recalibrated std (eV), or None without a fitted calibration."""

    def fingerprint(self) -> str:
        """A short hash of everything that changes a prediction (weights, calibration)."""

    def save(self, directory: str | Path, metadata: dict | None = None) -> Path:
        """Write the model to a folder :func:`~mofbalora.model.load_model` reads."""


# -- the typed row ---------------------------------------------------------------------------------
#: how the interval columns' distribution is chosen (:func:`interval_columns`)
_FAMILY_NOTE = (
    "family = the one the model's calibration was fitted in (finetune fits it in the family of the "
    "training likelihood: Laplace, scale b = σ/√2, for the shipped default's laplace_nll, so ±0.81 "
    "σ at 68 % and ±2.12 σ at 95 % of bandgap_std_calibrated_ev; Gaussian for the "
    "gradient-boosting baseline, whose quantile half-width is a ±1σ; Gaussian for a model without "
    "a calibration, then of the raw std); centred on bandgap_mean_ev; lower ends clipped at 0 eV"
)


def _col(doc: str, *, unit: str = "", default: Any = None, kind: str = "str"):
    return field(default=default, metadata={"doc": doc, "unit": unit, "kind": kind})


@dataclass
class ScoredRow:
    """One screened file. Every output table is a view of these fields (``kind``: how a table
    stores it)."""

    rank: int | None = _col(
        "1 = send to DFT first; empty for error rows (in-domain rows rank before "
        "out-of-domain ones under --domain rank-separately)",
        kind="int",
    )
    path: str = _col("the input file", default="")
    structure_id: str = _col(
        "the file's stem, made distinct (stem~8 hex digits of its content digest) when "
        "two inputs share a stem",
        default="",
    )
    formula: str = _col("reduced formula of the parsed structure", default="")
    n_atoms: int | None = _col("atoms in the cell", kind="int")
    bandgap_mean_ev: float = _col(
        "mean of the T predicted band gaps", unit="eV", default=np.nan, kind="float"
    )
    bandgap_std_ev: float = _col(
        "total predictive std: sqrt(epistemic² + aleatoric²)",
        unit="eV",
        default=np.nan,
        kind="float",
    )
    epistemic_std_ev: float = _col(
        "std of the T draws (BaLoRA / MC dropout / ensemble members): what a DFT "
        "label can teach the model",
        unit="eV",
        default=np.nan,
        kind="float",
    )
    aleatoric_std_ev: float = _col(
        "the aleatoric head's predicted noise, averaged over the draws (empty without such a head)",
        unit="eV",
        default=np.nan,
        kind="float",
    )
    bandgap_std_calibrated_ev: float = _col(
        "bandgap_std_ev recalibrated on the validation split (sqrt((a·σ)² + b²))",
        unit="eV",
        default=np.nan,
        kind="float",
    )
    bandgap_lo68_ev: float = _col(
        f"lower end of the central 68.27 % interval (a Gaussian's ±1σ) of the model's "
        f"calibrated predictive distribution, in its family; {_FAMILY_NOTE}",
        unit="eV",
        default=np.nan,
        kind="float",
    )
    bandgap_hi68_ev: float = _col(
        "upper end of that central 68.27 % interval", unit="eV", default=np.nan, kind="float"
    )
    bandgap_lo95_ev: float = _col(
        "lower end of the central 95 % interval of the same distribution (clipped at 0)",
        unit="eV",
        default=np.nan,
        kind="float",
    )
    bandgap_hi95_ev: float = _col(
        "upper end of that central 95 % interval", unit="eV", default=np.nan, kind="float"
    )
    bandgap_median_ev: float = _col(
        "median of the T draws: what the acquisitions rank by",
        unit="eV",
        default=np.nan,
        kind="float",
    )
    bandgap_spread_ev: float = _col(
        "half the 16-84 % range of the draws, divided by its Gaussian consistency "
        "factor (an unbiased σ of normal draws at any T), with the aleatoric std "
        "in quadrature, capped at 3.5 eV: what the acquisitions rank by",
        unit="eV",
        default=np.nan,
        kind="float",
    )
    physical_flag: str = _col(
        "runaway_draws | spread_capped | gap_above_range (';'-joined)", default=""
    )
    score: float = _col(
        "the acquisition's score (higher = earlier); its meaning depends on --acquisition",
        default=np.nan,
        kind="float",
    )
    checks: str = _col("MOF chemistry checks: ok | failed | error | not_run", default="")
    failed_checks: str = _col("names of the failed checks (';'-joined)", default="")
    checks_detail: str = _col("the checker's notes", default="")
    unseen_elements: str = _col("elements no training structure had (';'-joined)", default="")
    domain_distance: float = _col(
        "mean distance of the standardized embedding to its 5 nearest training embeddings",
        default=np.nan,
        kind="float",
    )
    in_domain: bool | None = _col(
        "no unseen element and domain_distance within the model's threshold", kind="bool"
    )
    repeat_of: str = _col(
        "the better-ranked row this one repeats (same structure), among the best "
        "--repeats-top rows",
        default="",
    )
    status: str = _col("ok | error", default="")
    error: str = _col(
        "why an error row has no rank (unreadable, empty, not_cif, disordered, "
        "overlapping_atoms, degenerate_cell, too_many_atoms, featurization_failed, "
        "failed_checks, out_of_domain)",
        default="",
    )
    detail: str = _col("the error's message", default="")
    digest: str = _col("sha256 of the file's bytes", default="")


#: the screen's table, in order
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ScoredRow))
#: the calibrated predictive's central intervals (:func:`interval_columns`), in every table's order
INTERVAL_COLUMNS: tuple[str, ...] = (
    "bandgap_lo68_ev",
    "bandgap_hi68_ev",
    "bandgap_lo95_ev",
    "bandgap_hi95_ev",
)
#: the campaign's batch file: the row's prediction and score, plus the round's own columns
BATCH_COLUMNS: tuple[str, ...] = (
    "path",
    "structure_id",
    "formula",
    "n_atoms",
    "bandgap_mean_ev",
    "bandgap_std_ev",
    "epistemic_std_ev",
    *INTERVAL_COLUMNS,
    "bandgap_median_ev",
    "bandgap_spread_ev",
    "physical_flag",
    "score",
    "rank",
    "checks",
    "failed_checks",
    "in_domain",
    "domain_distance",
    "status",
    "error",
    "round",
    "acquisition",
    "relative_dft_cost",
)
#: the per-structure columns of the DFT manifest: why each structure was chosen
MANIFEST_PREDICTION_COLUMNS: tuple[str, ...] = (
    "structure_id",
    "formula",
    "n_atoms",
    "bandgap_mean_ev",
    "bandgap_std_ev",
    "bandgap_std_calibrated_ev",
    *INTERVAL_COLUMNS,
    "bandgap_median_ev",
    "bandgap_spread_ev",
    "score",
    "physical_flag",
    "checks",
    "failed_checks",
    "in_domain",
    "domain_distance",
    "unseen_elements",
    "repeat_of",
)
_KIND = {f.name: f.metadata["kind"] for f in fields(ScoredRow)}


def explain_columns(columns: Sequence[str] = COLUMNS) -> str:
    """One line per column (name, unit, meaning), generated from :class:`ScoredRow`."""
    meta = {f.name: f.metadata for f in fields(ScoredRow)}
    width = max(len(c) for c in columns)
    lines = []
    for c in columns:
        m = meta[c]
        unit = f" [{m['unit']}]" if m["unit"] else ""
        lines.append(f"{c:<{width}}  {m['doc']}{unit}")
    return "\n".join(lines)


def typed_table(df: pd.DataFrame) -> pd.DataFrame:
    """The columns of :class:`ScoredRow` in their kinds: counts and ranks as nullable integers,
    flags as nullable booleans, text without NaN (a table written from it shows ``228``, not
    ``228.0``)."""
    df = df.copy()
    for col in df.columns:
        kind = _KIND.get(col)
        if kind == "int":
            df[col] = pd.array(pd.to_numeric(df[col], errors="coerce").round(), dtype="Int64")
        elif kind == "bool":
            df[col] = df[col].astype("boolean")
        elif kind == "str":
            df[col] = df[col].astype(object).where(df[col].notna(), "")
    return df


# -- the configuration -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoringConfig:
    """How candidates are scored and ranked; checked when built (ValueError naming the field and the
    choices).

    The defaults are the CLI's, :func:`mofbalora.screen.screen`'s and the campaign's ``al``
    section's.
    """

    #: stochastic passes T per structure
    n_samples: int = 32
    #: one of :data:`mofbalora.acquisition.ACQUISITIONS`
    acquisition: str = "std"
    #: exploration weight of ucb / lcb, in units of the spread
    kappa: float = 2.0
    #: band-gap window (lo, hi) in eV for ``target`` (and ei / thompson / mean towards a window)
    target_ev: tuple[float, float] | None = None
    #: seek small (min) or large (max) gaps
    goal: str = "min"
    #: the run seed (BaLoRA's draws are keyed by it and each structure's content)
    seed: int = 0
    #: structures with more atoms get an error row
    max_atoms: int = DEFAULT_MAX_ATOMS
    #: chemistry checks: off | flag | exclude
    checks: str = "flag"
    #: out-of-domain rows: rank-separately | exclude | ignore
    domain: str = "rank-separately"
    #: rows checked for repeated structures when a screen completes (0 = off)
    repeats_top: int = DEFAULT_REPEATS_TOP
    #: files per task (and per progress checkpoint)
    chunk_size: int = 16
    #: also run EQeq's ``high_charges`` check (opt-in: most of the checks' cost, 0.4 % of findings;
    #: reports/checks_speed.md)
    check_charges: bool = DEFAULT_CHARGES

    def __post_init__(self) -> None:
        def integer(name: str, lo: int, what: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo} ({what}), got {value!r}")

        integer("n_samples", 1, "stochastic passes T")
        integer("max_atoms", 1, "largest structure screened")
        integer("repeats_top", 0, "rows checked for repeats; 0 = off")
        integer("chunk_size", 1, "files per task")
        if self.acquisition not in ACQUISITIONS:
            raise ValueError(
                f"unknown acquisition {self.acquisition!r}; choose from {sorted(ACQUISITIONS)}"
            )
        if (
            not isinstance(self.kappa, (int, float))
            or not np.isfinite(self.kappa)
            or self.kappa < 0
        ):
            raise ValueError(f"kappa must be a finite number >= 0, got {self.kappa!r}")
        if self.goal not in GOALS:
            raise ValueError(f"unknown goal {self.goal!r}; choose from {list(GOALS)}")
        if self.checks not in CHECK_POLICIES:
            raise ValueError(
                f"unknown checks policy {self.checks!r}; choose from {list(CHECK_POLICIES)}"
            )
        if self.domain not in DOMAIN_POLICIES:
            raise ValueError(
                f"unknown domain policy {self.domain!r}; choose from {list(DOMAIN_POLICIES)}"
            )
        if self.target_ev is not None:
            try:
                lo, hi = (float(v) for v in self.target_ev)
            except (TypeError, ValueError):
                raise ValueError(
                    f"target_ev must be two numbers (lo, hi) in eV, got {self.target_ev!r}"
                ) from None
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(f"target_ev must be a window lo < hi in eV, got ({lo}, {hi})")
            object.__setattr__(self, "target_ev", (lo, hi))
        if not isinstance(self.check_charges, bool):
            raise ValueError(f"check_charges must be true or false, got {self.check_charges!r}")
        if self.acquisition == "target" and self.target_ev is None:
            raise ValueError(
                "acquisition 'target' needs a band-gap window: "
                "target_ev=(lo, hi) (--target LO HI, eV)"
            )

    @classmethod
    def from_dict(cls, values: dict) -> ScoringConfig:
        """From a mapping of field names (unknown names refused, naming the valid ones)."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown scoring setting(s) {unknown}; choose from {names}")
        return cls(**values)

    @classmethod
    def defaults(cls) -> dict:
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def run_checks(self) -> bool:
        return self.checks != "off"


# -- files -> records ------------------------------------------------------------------------------
def structure_seed(seed: int, digest: str | None) -> int:
    """A per-structure seed from the run seed and the file's content digest (independent of batch
    order)."""
    h = hashlib.sha256(f"{seed}:{digest}".encode()).hexdigest()
    return int(h[:15], 16)


def score_chunk(
    predictor: Predictor,
    paths: Sequence,
    keys: Sequence[str],
    ids: Sequence[str] | None,
    cfg: ScoringConfig,
    *,
    with_embedding: bool = False,
    batched: bool = True,
) -> list[dict]:
    """One record per file: featurize (through the cache) and predict with ``cfg.n_samples`` passes,
    then the calibrated std, the applicability domain and (``cfg.checks`` not off) the chemistry
    checks.

    ``keys``: the files' content digests (``path:...`` for a file that cannot be read); ``ids``:
    their structure ids (default: the stem). ``with_embedding`` keeps the pooled structure embedding
    (for a diversity-aware batch). The files are predicted together (``batched``); a record still
    does not depend on which files share its chunk, process or machine (module docstring).
    """
    paths = [str(p) for p in paths]
    ids = [Path(p).stem for p in paths] if ids is None else list(ids)
    # parsed once, for the checks too
    parsed: dict[int, Any] | None = {} if cfg.run_checks else None
    feats, errors = featurize_files(
        predictor.backbone,
        paths,
        max_atoms=cfg.max_atoms,
        progress=False,
        digests=[None if key.startswith("path:") else key for key in keys],
        parsed=parsed,
    )
    ok = [k for k, f in enumerate(feats) if f is not None]
    preds: dict[int, tuple] = {}
    if batched and predictor.regime != "mc_dropout":
        pred = (
            predictor.predict_inputs([feats[k] for k in ok], n_samples=cfg.n_samples, seed=cfg.seed)
            if ok
            else None
        )
        preds = {k: (pred, j) for j, k in enumerate(ok)}
    else:
        for k in ok:
            preds[k] = (
                predictor.predict_inputs(
                    [feats[k]],
                    n_samples=cfg.n_samples,
                    seed=structure_seed(cfg.seed, feats[k]["digest"]),
                ),
                0,
            )
    records = []
    for k, (path, key, sid, feat, err) in enumerate(
        zip(paths, keys, ids, feats, errors, strict=True)
    ):
        rec = {"key": key, "path": path, "structure_id": sid}
        if err is not None:
            rec.update(status="error", error=err.reason, detail=err.message[:300])
        else:
            pred, j = preds[k]
            rec.update(
                prediction_record(
                    predictor,
                    pred,
                    j,
                    formula=feat.get("formula"),
                    n_atoms=feat["n_atoms"],
                    digest=feat["digest"],
                )
            )
        records.append(rec)
    annotate(
        predictor,
        records,
        cfg,
        keep_embedding=with_embedding,
        structures={paths[k]: s for k, s in (parsed or {}).items()},
    )
    return records


def prediction_record(
    predictor: Predictor,
    pred: Prediction,
    j: int,
    *,
    formula: str | None,
    n_atoms: int,
    digest: str,
) -> dict:
    """The prediction part of one ``ok`` record: moments, draws, calibrated std and the
    embedding."""
    rec = {
        "status": "ok",
        "error": "",
        "detail": "",
        "digest": digest,
        "formula": formula,
        "n_atoms": int(n_atoms),
        **pred.to_record(j),
        "embedding": pred.embedding[j].tolist(),
    }
    calibrated = predictor.calibrated_std(
        floor_std(np.asarray(pred.std_ev[j : j + 1], dtype=float))
    )
    if calibrated is not None:
        rec["bandgap_std_calibrated_ev"] = float(calibrated[0])
    rec.update(
        {name: float(v[0]) for name, v in interval_columns(predictor, pred.take([j])).items()}
    )
    return rec


def interval_columns(predictor: Predictor, pred: Prediction) -> dict[str, np.ndarray]:
    """:data:`INTERVAL_COLUMNS` (eV) of ``pred``: the central 68.27 % and 95 % intervals of the
    predictor's calibrated predictive distribution in its family
    (:meth:`mofbalora.prediction.Prediction.intervals`, i.e.
    :func:`mofbalora.uq.distribution.predictive_intervals`, the one function that ``evaluate`` uses
    too). The family is the one the predictor's calibration was fitted in: finetune fits it in the
    family of the training likelihood (:func:`~mofbalora.uq.distribution.family_of_likelihood`:
    Laplace for the shipped default), Gaussian for the gradient-boosting baseline (its 16-84 %
    quantile half-width is a ±1σ); a predictor without a calibration gets the Gaussian intervals
    of its raw std. Lower ends are clipped at 0."""
    return pred.intervals(predictor.calibration)


def add_intervals(predictor: Predictor, records: list[dict]) -> int:
    """Give the ``ok`` records that lack them (rows written before the intervals were columns: a
    resumed screen's partial rows) their :func:`interval_columns`, in place; returns how many
    were filled."""
    todo = [
        r for r in records if r.get("status") == "ok" and any(c not in r for c in INTERVAL_COLUMNS)
    ]
    if todo:
        pred = Prediction.from_records([{**r, "embedding": []} for r in todo])
        for name, values in interval_columns(predictor, pred).items():
            for rec, v in zip(todo, values, strict=True):
                rec[name] = float(v)
    return len(todo)


def annotate(
    predictor: Predictor,
    records: list[dict],
    cfg: ScoringConfig,
    *,
    keep_embedding: bool,
    structures: dict[str, Any] | None = None,
) -> None:
    """Add the domain and check columns to ``ok`` records (in place); a failure stays per structure.
    ``structures``: path → the structure already parsed from it (featurization's), so the checks do
    not read the file again; a path missing there (its features came from the cache) is read only on
    a check-cache miss."""
    structures = structures or {}

    def read(path: str):
        got = structures.get(path)
        return got if got is not None else read_structure(path, max_atoms=cfg.max_atoms)

    ok = [r for r in records if r["status"] == "ok"]
    domain = getattr(predictor, "training_domain", None)
    if domain is not None and ok:
        embeddings = np.array([r["embedding"] for r in ok]) if domain.has_embedding else None
        for rec, cols in zip(
            ok,
            domain.assess([elements_of_formula(r["formula"]) for r in ok], embeddings),
            strict=True,
        ):
            rec.update(cols)
    if not keep_embedding:
        for rec in ok:
            rec.pop("embedding", None)
    run = cfg.run_checks and checker_available()
    cache = check_cache(charges=cfg.check_charges) if run else None
    for rec in ok:
        if not run:
            rec.update(not_run("" if not cfg.run_checks else "mofchecker-next is not installed"))
            continue
        key = rec.get("key") or ""
        try:
            rec.update(
                checks_of_file(
                    rec["path"],
                    None if not key or key.startswith("path:") else key,
                    read,
                    cache,
                    charges=cfg.check_charges,
                )
            )
        except Exception as exc:  # one structure's checker crash never stops the batch
            rec.update(
                checks="error", failed_checks="", checks_detail=f"{type(exc).__name__}: {exc}"[:200]
            )


# -- executors -------------------------------------------------------------------------------------
class InProcessExecutor:
    """Scores the chunks one after another in this process."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.stats: dict[str, Any] | None = None

    def map(
        self,
        chunks,
        paths,
        keys,
        ids,
        cfg: ScoringConfig,
        *,
        with_embedding: bool = False,
        batched: bool = True,
    ) -> Iterator[tuple[list[int], list[dict]]]:
        for chunk in chunks:
            yield (
                list(chunk),
                score_chunk(
                    self.predictor,
                    [paths[k] for k in chunk],
                    [keys[k] for k in chunk],
                    [ids[k] for k in chunk],
                    cfg,
                    with_embedding=with_embedding,
                    batched=batched,
                ),
            )

    def close(self) -> None:
        pass


_WORKER: dict[str, Any] = {}


def _worker_init(loader, model_dir: str | None, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    if model_dir is not None:  # spawned: load the model; forked: it came with the process
        _WORKER["predictor"] = loader(model_dir)


def _worker_score(
    paths, keys, ids, cfg_dict: dict, with_embedding: bool, batched: bool
) -> list[dict]:
    return score_chunk(
        _WORKER["predictor"],
        paths,
        keys,
        ids,
        ScoringConfig(**cfg_dict),
        with_embedding=with_embedding,
        batched=batched,
    )


#: how :class:`LocalExecutor` starts its workers by default: ``fork`` where the platform has it (the
#: workers get the loaded model with the process: no imports, no second load), else ``spawn``
DEFAULT_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


class LocalExecutor:
    """Scores chunks in ``workers`` local processes of ``threads`` torch threads each. Each worker
    does everything for its chunks: parse, graph, trunk, T passes, domain and chemistry checks.

    ``start_method``: ``fork`` (default on Linux) hands the workers the predictor already loaded in
    this process; ``spawn`` starts fresh interpreters that load it with ``loader(model_dir)`` (e.g.
    :func:`mofbalora.model.load_model`; an in-memory model is saved once to a temporary folder)."""

    def __init__(
        self,
        predictor: Predictor,
        workers: int,
        *,
        model_dir: str | Path | None = None,
        threads: int = 1,
        start_method: str | None = None,
        loader=None,
    ) -> None:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        method = start_method or DEFAULT_START_METHOD
        if method not in ("fork", "spawn", "forkserver"):
            raise ValueError(
                f"unknown start method {method!r}; choose from ['fork', 'spawn', 'forkserver']"
            )
        self._scratch = None
        if method != "fork" and loader is None:
            raise ValueError(
                f"start method {method!r} needs a loader (e.g. mofbalora.model.load_model)"
            )
        if method == "fork":
            _WORKER["predictor"] = predictor  # inherited by the forked workers
            model_dir = None
        elif model_dir is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="mofbalora-model-"))
            predictor.save(self._scratch)
            model_dir = self._scratch
        self.pool = ProcessPoolExecutor(
            workers,
            mp_context=get_context(method),
            initializer=_worker_init,
            initargs=(loader, None if model_dir is None else str(model_dir), threads),
        )
        self.stats: dict[str, Any] = {"workers": workers, "start_method": method}
        self._futures: list = []

    def map(
        self,
        chunks,
        paths,
        keys,
        ids,
        cfg: ScoringConfig,
        *,
        with_embedding: bool = False,
        batched: bool = True,
    ) -> Iterator[tuple[list[int], list[dict]]]:
        from concurrent.futures import as_completed

        futures = {}
        for chunk in chunks:
            fut = self.pool.submit(
                _worker_score,
                [str(paths[k]) for k in chunk],
                [keys[k] for k in chunk],
                [ids[k] for k in chunk],
                cfg.to_dict(),
                with_embedding,
                batched,
            )
            futures[fut] = list(chunk)
        self._futures = list(futures)
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
        self._futures = []

    def close(self) -> None:
        for fut in self._futures:
            fut.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
        _WORKER.pop("predictor", None)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def score_files(
    predictor: Predictor,
    paths: Sequence,
    keys: Sequence[str],
    ids: Sequence[str],
    cfg: ScoringConfig,
    executor=None,
    *,
    with_embedding: bool = False,
    batched: bool = True,
) -> Iterator[tuple[list[int], list[dict]]]:
    """Records of ``paths`` in chunks of ``cfg.chunk_size``, yielded as ``(indices, records)`` in
    completion order (rows are keyed: the caller puts them in input order)."""
    executor = InProcessExecutor(predictor) if executor is None else executor
    chunks = [
        list(range(s, min(s + cfg.chunk_size, len(paths))))
        for s in range(0, len(paths), cfg.chunk_size)
    ]
    yield from executor.map(
        chunks, paths, keys, ids, cfg, with_embedding=with_embedding, batched=batched
    )


def default_workers() -> int:
    """Worker processes worth starting here: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# -- records -> ranked table -----------------------------------------------------------------------
def rank(
    records: list[dict],
    cfg: ScoringConfig,
    *,
    best_ev: float | None = None,
    rng=None,
    cost: np.ndarray | None = None,
) -> pd.DataFrame:
    """The ranked table (:data:`COLUMNS`, input order) from one record per input.

    Scores come from the robust summary of each row's draws
    (:func:`mofbalora.physical.robust_summary`: the median and the capped 16-84 % half-width stand
    in for the mean and std). ``checks="exclude"`` turns rows whose checks failed into error rows
    (reason ``failed_checks``, the names in ``detail``); ``domain="exclude"`` does the same for
    out-of-domain rows (reason ``out_of_domain``); ``domain="rank-separately"`` ranks every
    in-domain row (or row of unknown domain) before every out-of-domain row, each group by its
    score. Excluded rows keep their predictions for reference but get no rank. ``best_ev``: the
    incumbent for ``ei``; ``rng``: a generator for ``thompson`` / ``random`` (default: seeded by
    ``cfg.seed``); ``cost``: the relative DFT cost of each record, to rank by score per cost.
    """
    df = pd.DataFrame(records)
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    df["in_domain"] = df["in_domain"].astype("boolean")
    ok = (df["status"] == "ok").to_numpy().copy()
    if ok.any():
        samples_ok = [
            np.asarray(r["samples_ev"], dtype=float) for r, k in zip(records, ok, strict=True) if k
        ]
        aleatoric = (
            df.loc[ok, "aleatoric_std_ev"].to_numpy(float)
            if df.loc[ok, "aleatoric_std_ev"].notna().all()
            else None
        )
        robust = robust_summary(
            np.array(samples_ok), df.loc[ok, "bandgap_std_ev"].to_numpy(float), aleatoric
        )
        for col, values in robust.items():
            df[col] = df[col].astype(object) if col == "physical_flag" else df[col]
            df.loc[ok, col] = values
    if cfg.checks == "exclude":
        bad = ok & (df["checks"] == "failed").to_numpy()
        df.loc[bad, "status"], df.loc[bad, "error"] = "error", FAILED_CHECKS_REASON
        df.loc[bad, "detail"] = df.loc[bad, "failed_checks"]
        ok = ok & ~bad
    out_of_domain = (df["in_domain"] == False).fillna(False).to_numpy(bool)  # noqa: E712 (NA = unknown)
    if cfg.domain == "exclude":
        bad = ok & out_of_domain
        df.loc[bad, "status"], df.loc[bad, "error"] = "error", OUT_OF_DOMAIN_REASON
        df.loc[bad, "detail"] = [_domain_detail(r) for r in df.loc[bad].to_dict("records")]
        ok = ok & ~bad
    df["score"] = np.nan
    df["rank"] = pd.array([pd.NA] * len(df), dtype="Int64")
    if ok.any():
        mean = df.loc[ok, "bandgap_median_ev"].to_numpy(float)
        std = df.loc[ok, "bandgap_spread_ev"].to_numpy(float)
        samples = np.array(
            [r["samples_ev"] for r, k in zip(records, ok, strict=True) if k], dtype=float
        )
        scores = acquisition_scores(
            cfg.acquisition,
            mean,
            std,
            samples,
            kappa=cfg.kappa,
            target_ev=cfg.target_ev,
            goal=cfg.goal,
            best_ev=best_ev,
            rng=np.random.default_rng(cfg.seed) if rng is None else rng,
        )
        if cost is not None:
            scores = cost_aware(scores, np.asarray(cost, dtype=float)[ok])
        df.loc[ok, "score"] = scores
        group = (
            out_of_domain[ok].astype(int)
            if cfg.domain == "rank-separately"
            else np.zeros(len(scores), int)
        )
        # in-domain group first (rank-separately), higher score first, ties by input order
        order = np.lexsort((np.arange(len(scores)), -scores, group))
        ranks = np.empty(len(scores), dtype=np.int64)
        ranks[order] = np.arange(1, len(scores) + 1)
        df.loc[ok, "rank"] = ranks
    for col in (
        "error",
        "detail",
        "physical_flag",
        "failed_checks",
        "checks_detail",
        "unseen_elements",
        "repeat_of",
    ):
        df[col] = df[col].astype(object).fillna("")
    return df[list(COLUMNS)]


def select_rows(
    table: pd.DataFrame,
    k: int,
    *,
    embeddings: np.ndarray | None = None,
    diversity: str = "none",
    penalty_radius: float = 1.0,
    kcenter_weight: float = 0.5,
    rng=None,
) -> list[int]:
    """Positions (in ``table``) of a batch of ``k`` ranked rows: the best by rank, or a diverse
    batch (:func:`mofbalora.acquisition.select_batch` on the scores) taken from the in-domain
    group first."""
    ranked = table["rank"].notna().to_numpy()
    positions = np.flatnonzero(ranked)
    k = min(int(k), len(positions))
    if diversity == "none" or embeddings is None:
        order = positions[
            np.argsort(table["rank"].to_numpy()[positions].astype(int), kind="stable")
        ]
        return [int(i) for i in order[:k]]
    picks: list[int] = []
    in_domain = (table["in_domain"] != False).fillna(True).to_numpy(bool)  # noqa: E712
    for group in (positions[in_domain[positions]], positions[~in_domain[positions]]):
        want = min(k - len(picks), len(group))
        if want <= 0 or not len(group):
            continue
        chosen = select_batch(
            table["score"].to_numpy(float)[group],
            want,
            embeddings=embeddings[group],
            diversity=diversity,
            penalty_radius=penalty_radius,
            kcenter_weight=kcenter_weight,
            rng=rng,
        )
        picks.extend(int(group[i]) for i in chosen)
    return picks


def _domain_detail(row: dict) -> str:
    parts = []
    if row.get("unseen_elements"):
        parts.append(f"elements not in training: {row['unseen_elements']}")
    if np.isfinite(row.get("domain_distance", np.nan)):
        parts.append(f"embedding distance {row['domain_distance']:.3g}")
    return "; ".join(parts)


def row_flags(row: dict) -> str:
    """One short string of everything that argues against trusting a scored row (for summaries)."""
    flags = []
    if row.get("failed_checks"):
        flags.append(f"checks:{row['failed_checks']}")
    in_domain = row.get("in_domain")
    if in_domain is not None and not pd.isna(in_domain) and not bool(in_domain):
        flags.append(
            "out_of_domain" + (f"({row['unseen_elements']})" if row.get("unseen_elements") else "")
        )
    if row.get("physical_flag"):
        flags.append(str(row["physical_flag"]))
    if row.get("repeat_of") and not pd.isna(row["repeat_of"]):
        flags.append(f"repeat_of:{row['repeat_of']}")
    return " ".join(flags)


# -- one-call prediction (model.predict) -----------------------------------------------------------
#: the columns of :func:`predict_structures`' table, in order (the intervals follow the calibrated
#: std)
PREDICT_COLUMNS: tuple[str, ...] = (
    "structure_id",
    "path",
    "formula",
    "n_atoms",
    "bandgap_mean_ev",
    "bandgap_median_ev",
    "bandgap_std_ev",
    "epistemic_std_ev",
    "aleatoric_std_ev",
    "bandgap_std_calibrated_ev",
    *INTERVAL_COLUMNS,
    "bandgap_spread_ev",
    "physical_flag",
    "checks",
    "failed_checks",
    "unseen_elements",
    "domain_distance",
    "in_domain",
    "status",
    "error",
    "detail",
    "digest",
)


def _as_pymatgen(item: Any):
    """A pymatgen ``Structure`` of a Structure or an ASE ``Atoms`` (None for anything else)."""
    if hasattr(item, "lattice") and hasattr(item, "frac_coords"):
        return item
    if hasattr(item, "get_cell") and hasattr(item, "get_chemical_symbols"):
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_structure(item)
    return None


def _structure_records(
    predictor: Predictor, items: list[tuple[int, Any]], cfg: ScoringConfig
) -> dict[int, dict]:
    """Records of in-memory structures ``(position, Structure)``: featurized by the backbone (its
    content key, :mod:`mofbalora.data.content_key`, keys BaLoRA's draws as a file's digest does in
    the screen), predicted, calibrated and placed in the domain; the chemistry checks read files,
    so they are ``not_run`` here."""
    from dataclasses import replace

    from mofbalora.backbones.base import FeaturizationError

    records: dict[int, dict] = {}
    feats: dict[int, dict] = {}
    for k, s in items:
        rec = {"key": "", "path": "", "structure_id": f"input_{k}"}
        if len(s) > cfg.max_atoms:
            rec.update(
                status="error",
                error="too_many_atoms",
                detail=f"{len(s)} atoms > max_atoms={cfg.max_atoms}",
            )
            records[k] = rec
            continue
        try:
            (f,) = predictor.backbone.featurize([s])
        except (FeaturizationError, ValueError, RuntimeError) as exc:
            rec.update(
                status="error",
                error="featurization_failed",
                detail=f"{type(exc).__name__}: {exc}"[:300],
            )
            records[k] = rec
            continue
        f["formula"] = s.composition.reduced_formula
        feats[k] = f
        records[k] = rec
    ok = list(feats)
    preds: dict[int, tuple] = {}
    if ok and predictor.regime != "mc_dropout":
        pred = predictor.predict_inputs(
            [feats[k] for k in ok], n_samples=cfg.n_samples, seed=cfg.seed
        )
        preds = {k: (pred, j) for j, k in enumerate(ok)}
    else:  # as score_chunk: one generator per structure, seeded by (seed, content key)
        for k in ok:
            preds[k] = (
                predictor.predict_inputs(
                    [feats[k]],
                    n_samples=cfg.n_samples,
                    seed=structure_seed(cfg.seed, feats[k]["digest"]),
                ),
                0,
            )
    for k in ok:
        pred, j = preds[k]
        records[k].update(
            prediction_record(
                predictor,
                pred,
                j,
                formula=feats[k]["formula"],
                n_atoms=feats[k]["n_atoms"],
                digest=feats[k]["digest"],
            )
        )
    annotate(predictor, list(records.values()), replace(cfg, checks="off"), keep_embedding=False)
    for k in ok:
        records[k].update(checks_detail="in-memory structure: the chemistry checks read CIF files")
    return records


def file_keys(paths: Sequence) -> tuple[list[str], list[str]]:
    """The screen's keys (sha256 of each file's bytes; ``path:<path>`` for a file that cannot be
    read) and distinct ids (:func:`mofbalora.data.candidates.distinct_file_ids`) of ``paths``: the
    draws of a file are keyed by its digest, so the same keys give the screen's numbers."""
    from mofbalora.data.cache import file_digest
    from mofbalora.data.candidates import distinct_file_ids

    keys = []
    for p in paths:
        try:
            keys.append(file_digest(p))
        except OSError:
            keys.append(f"path:{p}")

    def digest_of(i: int) -> str:
        key = keys[i]
        return hashlib.sha256(key.encode()).hexdigest() if key.startswith("path:") else key

    return keys, distinct_file_ids(list(paths), digest_of)


def predict_structures(
    predictor: Predictor, structures: Sequence, cfg: ScoringConfig | None = None, **settings
) -> pd.DataFrame:
    """Band gaps of pymatgen ``Structure``s, ASE ``Atoms`` or CIF paths (mixed freely): one row per
    input, in input order (:data:`PREDICT_COLUMNS`, with the calibrated interval columns
    :data:`INTERVAL_COLUMNS` after ``bandgap_std_calibrated_ev``: :func:`interval_columns`, as in
    the screen's table).

    ``cfg`` (or its fields as keywords: ``n_samples``, ``seed``, ``max_atoms``, ``checks``, ...) is
    the screen's :class:`ScoringConfig`. A CIF path is scored exactly as ``mofbalora screen`` scores
    it (the same featurization, content digest and draws: the same numbers for the same file and
    settings); a Structure or Atoms is keyed by its canonical content key
    (:func:`~mofbalora.data.content_key.structure_content_digest`) and gets ``checks = not_run`` and
    ``structure_id`` ``input_<position>``. A bad input gets ``status = error`` and the screen's
    reason (``unreadable``, ``too_many_atoms``, ``featurization_failed``, ...), not an exception.
    The draws are in ``table.attrs["samples_ev"]`` (one list per row, empty for error rows). Raises
    ValueError for a bad setting and TypeError for an input that is neither a path, a Structure nor
    an Atoms.
    """
    if cfg is None:
        cfg = ScoringConfig.from_dict(settings)
    elif settings:
        raise TypeError(
            f"give the scoring settings either as cfg or as keywords, not both: {sorted(settings)}"
        )
    if isinstance(structures, (str, os.PathLike)) or _as_pymatgen(structures) is not None:
        structures = [structures]
    files: list[tuple[int, Path]] = []
    in_memory: list[tuple[int, Any]] = []
    for k, item in enumerate(structures):
        if isinstance(item, (str, os.PathLike)):
            files.append((k, Path(item)))
            continue
        s = _as_pymatgen(item)
        if s is None:
            raise TypeError(
                f"input {k} is a {type(item).__name__}; give a pymatgen Structure, an ASE Atoms or "
                "a CIF path"
            )
        in_memory.append((k, s))
    records: dict[int, dict] = _structure_records(predictor, in_memory, cfg) if in_memory else {}
    if files:
        paths = [p for _, p in files]
        keys, ids = file_keys(paths)
        for chunk, recs in score_files(predictor, paths, keys, ids, cfg):
            for i, rec in zip(chunk, recs, strict=True):
                records[files[i][0]] = rec
    ordered = [records[k] for k in range(len(structures))]
    table = rank(ordered, cfg) if ordered else pd.DataFrame(columns=list(COLUMNS))
    table = typed_table(table[list(PREDICT_COLUMNS)])
    table.attrs["samples_ev"] = [list(r.get("samples_ev", [])) for r in ordered]
    return table


class PredictsStructures:
    """The one-call ``predict`` that both model kinds (:class:`~mofbalora.model.BandGapModel` and
    :class:`~mofbalora.gbm.GBMBandGapModel`) inherit: one definition, one docstring."""

    def predict(
        self, structures, *, n_samples: int = 32, seed: int = 0, **settings
    ) -> pd.DataFrame:
        """Band gaps (eV) of pymatgen ``Structure``s, ASE ``Atoms`` or CIF paths in one call: a
        DataFrame, one row per input in input order, with the mean, median, total / epistemic /
        aleatoric std, the calibrated std and the calibrated 68 / 95 % intervals (in the model's
        family), the applicability domain, flags and ``status`` / ``error`` (bad inputs get an error
        row). A CIF path gives the same numbers as ``mofbalora screen`` for that file.
        ``n_samples``: stochastic passes T (a deterministic model, such as the gradient-boosting
        baseline, predicts once whatever T). ``settings``: the other :class:`ScoringConfig`
        fields (``max_atoms``, ``checks``, ...). :func:`predict_structures`."""
        return predict_structures(self, structures, n_samples=n_samples, seed=seed, **settings)


#: what each acquisition's ``score`` is, in a few words (the terminal table's and the plot's
#: heading) and which spread column it reads (the ``±`` the table shows next to the median)
RANKED_BY: dict[str, tuple[str, str]] = {
    "std": ("spread (eV)", "bandgap_spread_ev"),
    "epistemic": ("epistemic spread (eV)", "epistemic_std_ev"),
    "ucb": ("median+κ·spread", "bandgap_spread_ev"),
    "lcb": ("κ·spread−median", "bandgap_spread_ev"),
    "lcb_epistemic": ("κ·epistemic−median", "epistemic_std_ev"),
    "target": ("P(in window)", "bandgap_spread_ev"),
    "ei": ("exp. improvement", "bandgap_spread_ev"),
    "thompson": ("one draw", "bandgap_spread_ev"),
    "mean": ("median (goal)", "bandgap_spread_ev"),
    "random": ("random", "bandgap_spread_ev"),
}


def ranked_by(acquisition: str | None) -> tuple[str, str]:
    """(heading of the score, spread column shown beside the median) of ``acquisition`` (None:
    ``std``)."""
    name = acquisition or "std"
    if name not in RANKED_BY:
        raise ValueError(f"unknown acquisition {name!r}; choose from {sorted(RANKED_BY)}")
    return RANKED_BY[name]
