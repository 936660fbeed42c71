"""Side-by-side comparison of fine-tuned models' test-time uncertainty on one dataset split.

:func:`compare_models` loads several run folders (BaLoRA, LoRA ensemble, MC dropout, plain
LoRA, ...), predicts the same held-out structures with each, and writes a report into ``out_dir``:

* ``comparison.md``: one table row per model (accuracy, ranking, calibration, cost), the
  Spearman-vs-T and NLL-vs-T tables of the stochastic models, and a verdict paragraph computed from
  the numbers;
* ``comparison.json``: every number (NaN written as ``null``);
* figures: ``parity_<label>.png``, ``error_vs_std_<label>.png``, ``calibration.png``,
  ``rejection.png``, ``spearman_vs_T.png``, ``nll_vs_T.png``; and ``predictions_<label>.csv`` per
  model.

**The T-curve is nested.** A stochastic model is run once with ``T_max = max(samples)`` passes; the
result for T passes is derived from the first T columns of that prediction's ``samples_ev`` (mean
and spread of those T draws; the aleatoric std, when the model has one, is the T_max-draw average).
Each column is an independent posterior draw for every structure, so the first T columns are a valid
T-sample estimate, the curve costs one prediction, and T and 2T share their first T draws (so the
curve shows how one growing set of draws behaves, not independent reruns). At T = 1 the mean is the
single draw and the epistemic spread is 0: uncertainty metrics are undefined (NaN) unless the model
has an aleatoric head. This differs from ``predict_inputs(n_samples=1)``, whose mean is the
noise-free (posterior-mean) pass. At T = T_max the metrics are those of the prediction itself.
Ensembles (T = their K members) and deterministic models (T = 1) get one row each.

Inputs are featurized once per backbone featurization namespace and shared by every model with that
namespace. Structures that fail featurization in any namespace are left out for all models, so every
model is scored on the same structures.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mofbalora.data.qmof import load_dataset
from mofbalora.evaluate import calibrated_metrics, metrics_from_prediction, select_split_ids
from mofbalora.featurize import load_inputs
from mofbalora.io import atomic_write_text, write_table
from mofbalora.model import BandGapModel, load_model
from mofbalora.prediction import Prediction
from mofbalora.uq import distribution as D
from mofbalora.uq.metrics import rejection_curve

log = logging.getLogger(__name__)

DEFAULT_SAMPLES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
REPORT_MD = "comparison.md"
REPORT_JSON = "comparison.json"
SMALL_N = 100  # below this many structures the verdict warns that correlations are noisy


@dataclass
class _Entry:
    """One model under comparison."""

    label: str
    run_dir: str
    model: BandGapModel
    run_metrics: dict


# -- inputs ----------------------------------------------------------------------------------------
def parse_samples(samples: str | Sequence[int]) -> tuple[int, ...]:
    """Numbers of posterior samples T: ``"1,2,4"`` or a sequence of ints → sorted unique positive
    ints.

    Raises ValueError naming the first value that is not a positive integer.
    """
    items = [s.strip() for s in samples.split(",")] if isinstance(samples, str) else list(samples)
    if not items:
        raise ValueError("samples is empty; give positive integers such as 1,2,4,8")
    out = []
    for item in items:
        if isinstance(item, str):
            value = int(item) if re.fullmatch(r"[+]?\d+", item) else None
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            value = int(item)
        else:
            value = None
        if value is None or value < 1:
            raise ValueError(f"samples must be positive integers; got {item!r}")
        out.append(value)
    return tuple(sorted(set(out)))


def subsample_prediction(pred: Prediction, n_samples: int) -> Prediction:
    """The prediction of the first ``n_samples`` columns of ``pred.samples_ev`` (see the module
    docstring and :meth:`mofbalora.prediction.Prediction.subsample`); all of them returns
    ``pred`` itself."""
    return pred.subsample(n_samples)


def _run_root(run_dir: str | Path) -> Path | None:
    """The run folder holding metrics.json (a run folder or its ``checkpoints/<name>``), else
    None."""
    path = Path(run_dir)
    for cand in (path, path.parent.parent if path.parent.name == "checkpoints" else None):
        if cand is not None and (cand / "metrics.json").is_file():
            return cand
    return None


def _labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """Run folder names (the run, not its ``checkpoints/best``), made unique with ``-2``,
    ``-3``, ..."""
    names = []
    for d in run_dirs:
        p = Path(d).resolve() if str(d) != "default" else Path("default")
        names.append(p.parent.parent.name if p.parent.name == "checkpoints" else p.name)
    out, seen = [], {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if names.count(name) == 1 else f"{name}-{seen[name]}")
    return out


def _file_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def _timed(
    model: BandGapModel, inputs: list, n_samples: int, seed: int
) -> tuple[Prediction, float]:
    """Prediction and wall seconds per structure."""
    t0 = time.perf_counter()
    pred = model.predict_inputs(inputs, n_samples=n_samples, seed=seed)
    return pred, (time.perf_counter() - t0) / len(inputs)


# -- the comparison --------------------------------------------------------------------------------
def compare_models(
    run_dirs: Sequence[str | Path],
    *,
    data: str | Path | None = None,
    split: str = "test",
    split_name: str = "qmof_v1",
    samples: str | Sequence[int] = DEFAULT_SAMPLES,
    limit: int | None = None,
    out_dir: str | Path,
    seed: int = 0,
    trust_checkpoint: bool = False,
) -> dict:
    """Compare saved models on one split; writes the report into ``out_dir`` and returns its
    numbers.

    Args:
        run_dirs: run folders (or ``"default"``); labels are their folder names.
        data: dataset folder (None: $MOFBALORA_QMOF or ../shared/data/qmof).
        split, split_name: part (test | val | train | all) of a shipped split name or split JSON
            path.
        samples: numbers of stochastic passes T for the T-curve; the largest is drawn once per
            model.
        limit: first N structures of the split.
        out_dir: report folder (created).
        seed: noise seed of every prediction.
        trust_checkpoint: allow full unpickling of the third-party backbone checkpoints the models
            name (see :func:`mofbalora.model.load_model`; never read from a model folder).

    Raises:
        FileNotFoundError: a run folder holds no model (load_model's message), or no dataset/split.
        ValueError: bad ``samples``, unknown split, no structures left.
    """
    t_values = parse_samples(samples)
    if not run_dirs:
        raise ValueError("no run folders to compare")
    t_max = t_values[-1]
    entries = []
    for label, run_dir in zip(_labels(run_dirs), run_dirs, strict=True):
        # every folder checked before featurizing
        model = load_model(run_dir, trust_checkpoint=trust_checkpoint)
        root = _run_root(run_dir)
        run_metrics = json.loads((root / "metrics.json").read_text()) if root else {}
        entries.append(_Entry(label, str(run_dir), model, run_metrics))

    ds = load_dataset(data)
    ids = select_split_ids(ds, split, split_name, limit)
    featurized: dict[str, dict[str, Any]] = {}  # namespace -> id -> input
    for e in entries:
        ns = e.model.backbone.featurize_namespace()
        if ns not in featurized:
            kept, inputs, _ = load_inputs(e.model, ds, ids, f"{split} set ({ns})")
            featurized[ns] = dict(zip(kept, inputs, strict=True))
    common = [i for i in ids if all(i in by_id for by_id in featurized.values())]
    if not common:
        raise ValueError(
            f"no structure of {split_name}:{split} could be featurized for every model"
        )
    y_true = np.asarray(ds.bandgaps_ev[[ds.index_of(i) for i in common]], dtype=np.float64)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models, preds = [], {}
    for e in entries:
        inputs = [featurized[e.model.backbone.featurize_namespace()][i] for i in common]
        log.info("predicting %s (%s) on %d structures", e.label, e.model.regime, len(inputs))
        result, pred = _evaluate_model(e, inputs, y_true, t_values, seed)
        preds[e.label] = pred
        write_table(pred.table(common, y_true), out_dir / f"predictions_{_file_label(e.label)}.csv")
        result["predictions_csv"] = f"predictions_{_file_label(e.label)}.csv"
        models.append(result)

    report = {
        "split": split,
        "split_name": str(split_name),
        "n_structures": len(common),
        "n_failed": len(ids) - len(common),
        "samples": list(t_values),
        "t_max": t_max,
        "seed": seed,
        "featurize_namespaces": sorted(featurized),
        "models": models,
    }
    report["verdict"] = verdict(report)
    report["figures"] = _write_figures(report, preds, y_true, out_dir)
    atomic_write_text(out_dir / REPORT_MD, markdown_report(report))
    atomic_write_text(
        out_dir / REPORT_JSON, json.dumps(_json_safe(report), indent=2, allow_nan=False)
    )
    return report


def _evaluate_model(
    e: _Entry, inputs: list, y_true: np.ndarray, t_values: tuple[int, ...], seed: int
) -> tuple[dict, Prediction]:
    """Metrics at every T (one prediction with T_max passes), timings and run facts of one model.
    Coverage, NLL, CRPS and the calibration curve are scored in the model's predictive family (the
    one its calibration was fitted in, :func:`mofbalora.uq.distribution.family_of_calibration`;
    Gaussian without one) from the predictive object, before recalibration; ``calibrated`` holds the
    recalibrated predictive's scores at T_max (as ``evaluate`` reports them)."""
    model, t_max = e.model, t_values[-1]
    family = D.family_of_calibration(model.calibration)
    # warm-up: one-off costs stay out of timings
    model.predict_inputs(inputs[:2], n_samples=2, seed=seed)
    if model.is_stochastic:
        _, sec_t1 = _timed(model, inputs, 1, seed)
        pred, sec_tmax = _timed(model, inputs, t_max, seed)
        by_samples = {
            t: metrics_from_prediction(subsample_prediction(pred, t), y_true, t, family)
            for t in t_values
        }
    else:  # an ensemble runs its K members whatever T; a deterministic model runs once
        pred, sec_t1 = _timed(model, inputs, 1, seed)
        sec_tmax = sec_t1
        by_samples = {pred.samples_ev.shape[1]: metrics_from_prediction(pred, y_true, 1, family)}
    n_draws = pred.samples_ev.shape[1]
    params = e.run_metrics.get("trainable_parameters")
    if params is None:  # no metrics.json: count what the loaded model would train
        params = sum(p.numel() for p in model.trainable_parameters())
    calibrated = (
        calibrated_metrics(pred, model.calibration, y_true) if np.any(pred.std_ev > 0) else None
    )
    return {
        "label": e.label,
        "regime": model.regime,
        "run_dir": e.run_dir,
        "stochastic": model.is_stochastic,
        "family": family,
        "calibration": model.calibration,
        "calibrated": calibrated,
        "n_members": model.n_members,
        "n_samples": n_draws,
        "metrics": by_samples[n_draws],
        "by_samples": {str(t): m for t, m in by_samples.items()},
        "trainable_parameters": int(params),
        "train_seconds": e.run_metrics.get("train_seconds"),
        "inference_seconds_per_structure_t1": sec_t1,
        "inference_seconds_per_structure_tmax": sec_tmax,
    }, pred


# -- verdict ---------------------------------------------------------------------------------------
def _finite(x: Any) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _spearman(model: dict) -> float:
    return model["metrics"]["spearman_std_abs_error"]


def verdict(report: dict) -> dict:
    """Whether the best stochastic model's Spearman(std, |error|) at T_max beats the best
    ensemble's, and whether it rises monotonically with T; returns the facts and a plain-language
    ``text``."""
    stochastic = [m for m in report["models"] if m["stochastic"] and _finite(_spearman(m))]
    ensembles = [
        m for m in report["models"] if m["regime"] == "lora_ensemble" and _finite(_spearman(m))
    ]
    out: dict[str, Any] = {
        "best_stochastic": None,
        "best_ensemble": None,
        "beats_ensemble": None,
        "monotonic_in_t": None,
        "flat_in_t": None,
        "drops": [],
    }
    parts = []
    if not stochastic:
        out["text"] = (
            "No stochastic model (BaLoRA or MC dropout) with a defined Spearman correlation "
            "between its std and its absolute error was "
            "compared, so there is no verdict on the T-curve."
        )
        return out
    best = max(stochastic, key=_spearman)
    rho, t_max = _spearman(best), best["n_samples"]
    out["best_stochastic"] = best["label"]
    parts.append(
        f"On {report['n_structures']} {report['split']} structures, the best stochastic model is "
        f"{best['label']} ({best['regime']}), with Spearman "
        f"ρ(std, |error|) = {rho:.3f} at T = {t_max}."
    )
    if ensembles:
        ens = max(ensembles, key=_spearman)
        out["best_ensemble"] = ens["label"]
        out["beats_ensemble"] = bool(rho > _spearman(ens))
        parts.append(
            f"This {'beats' if out['beats_ensemble'] else 'does not beat'} the ensemble "
            f"{ens['label']} (K = {ens['n_members']}, ρ = {_spearman(ens):.3f})."
        )
    else:
        parts.append(
            "No LoRA ensemble with a defined Spearman correlation was compared, so there is no "
            "ensemble to beat."
        )
    curve = [
        (int(t), m["spearman_std_abs_error"])
        for t, m in best["by_samples"].items()
        if _finite(m["spearman_std_abs_error"])
    ]
    if len(curve) < 2:
        parts.append(
            "Its Spearman is defined at fewer than two values "
            "of T, so monotonicity in T is not assessed."
        )
    else:
        drops = [
            (t0, t1) for (t0, r0), (t1, r1) in zip(curve[:-1], curve[1:], strict=True) if r1 < r0
        ]
        out["monotonic_in_t"], out["drops"] = not drops, drops
        span = (
            f"from {curve[0][1]:.3f} at T = {curve[0][0]} "
            f"to {curve[-1][1]:.3f} at T = {curve[-1][0]}"
        )
        values = [round(r, 3) for _, r in curve]
        # equal as printed: "from 0.494 to 0.494" is no rise
        out["flat_in_t"] = max(values) == min(values)
        if out["flat_in_t"]:
            parts.append(
                f"Its Spearman is flat in T ({values[0]:.3f} at every T from {curve[0][0]} to "
                f"{curve[-1][0]}, to 3 decimals): more passes "
                "do not change the ranking of the spread."
            )
        elif not drops:
            parts.append(f"Its Spearman rises monotonically with T ({span}).")
        else:
            where = ", ".join(f"T = {a} → {b}" for a, b in drops)
            parts.append(
                f"Its Spearman does not rise monotonically with T ({span}; it falls at {where})."
            )
    if report["n_structures"] < SMALL_N:
        parts.append(f"With only {report['n_structures']} structures these correlations are noisy.")
    out["text"] = " ".join(parts)
    return out


# -- report files ----------------------------------------------------------------------------------
def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if abs(x) and (abs(x) < 10**-digits or abs(x) >= 1e5):
        return f"{x:.2e}"
    return f"{x:.{digits}f}"


_TABLE = [
    ("MAE (eV)", "mae_ev"),
    ("RMSE (eV)", "rmse_ev"),
    ("Spearman ρ(std,\\|err\\|)", "spearman_std_abs_error"),
    ("Pearson r(std,\\|err\\|)", "pearson_std_abs_error"),
    ("NLL", "nll"),
    ("miscal. area", "miscalibration_area"),
    ("ENCE", "ence"),
    ("coverage 68%", "coverage_68"),
    ("coverage 95%", "coverage_95"),
    ("AUC rejection (eV)", "auc_rejection"),
]
#: the recalibrated predictive's scores shown in the report's second table
_CALIBRATED_TABLE = [
    ("NLL", "nll"),
    ("CRPS (eV)", "crps_ev"),
    ("miscal. area", "miscalibration_area"),
    ("coverage 68%", "coverage_68"),
    ("coverage 95%", "coverage_95"),
]


def markdown_report(report: dict) -> str:
    """The ``comparison.md`` text of a :func:`compare_models` result."""
    t_max = report["t_max"]
    lines = [
        f"# Model comparison: {report['split_name']}:{report['split']} "
        f"({report['n_structures']} structures)",
        "",
        f"Stochastic models: T = {t_max} passes (seed {report['seed']}); ensembles: their K "
        "members. Inference times are wall seconds per structure of one predict call; an ensemble "
        "or deterministic model runs the same way whatever T, so both columns hold its one timing. "
        "NLL, coverage and the calibration curve are scored in each model's predictive family "
        "(`family`: the one its calibration was fitted in; Gaussian without one), before "
        "recalibration; the second table scores the recalibrated predictive.",
        "",
    ]
    head = [
        "model",
        "regime",
        "family",
        "T",
        *(h for h, _ in _TABLE),
        "trainable params",
        "training time (s)",
        "inference s/structure T=1",
        f"inference s/structure T={t_max}",
    ]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in report["models"]:
        cells = [
            m["label"],
            m["regime"],
            m["family"],
            str(m["n_samples"]),
            *(_fmt(m["metrics"][k]) for _, k in _TABLE),
            _fmt(m["trainable_parameters"]),
            _fmt(m["train_seconds"], 1),
            _fmt(m["inference_seconds_per_structure_t1"], 4),
            _fmt(m["inference_seconds_per_structure_tmax"], 4),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    calibrated = [m for m in report["models"] if m.get("calibrated")]
    if calibrated:
        lines += [
            "",
            "## Recalibrated (validation-fitted, in the model's family)",
            "",
            "| model | family | " + " | ".join(h for h, _ in _CALIBRATED_TABLE) + " |",
            "|" + "---|" * (len(_CALIBRATED_TABLE) + 2),
        ]
        for m in calibrated:
            lines.append(
                f"| {m['label']} | {m['family']} | "
                + " | ".join(_fmt(m["calibrated"][k]) for _, k in _CALIBRATED_TABLE)
                + " |"
            )
    stochastic = [m for m in report["models"] if m["stochastic"]]
    if stochastic:
        ts = report["samples"]
        for title, key in (("Spearman ρ(std, |error|)", "spearman_std_abs_error"), ("NLL", "nll")):
            lines += [
                "",
                f"## {title} vs number of samples T",
                "",
                "| model | " + " | ".join(f"T={t}" for t in ts) + " |",
                "|" + "---|" * (len(ts) + 1),
            ]
            for m in stochastic:
                lines.append(
                    f"| {m['label']} | "
                    + " | ".join(_fmt(m["by_samples"][str(t)][key]) for t in ts)
                    + " |"
                )
            for m in report["models"]:
                if m["regime"] == "lora_ensemble":
                    lines.append(
                        f"| {m['label']} ({m['regime']}, K={m['n_members']}, reference) | "
                        + " | ".join(_fmt(m["metrics"][key]) for _ in ts)
                        + " |"
                    )
        lines += [
            "",
            f"T-sample values use the first T of the {t_max} draws (nested); at T = 1 a single "
            "draw has no spread, so its uncertainty metrics are "
            "undefined (–) unless the model has an aleatoric head.",
        ]
    lines += ["", "## Verdict", "", report["verdict"]["text"], ""]
    return "\n".join(lines)


def _write_figures(
    report: dict, preds: dict[str, Prediction], y_true: np.ndarray, out_dir: Path
) -> list[str]:
    """Write the PNGs; returns their file names. Models without a positive std get no std-based
    figure."""
    from mofbalora.uq.plots import (
        calibration_plot,
        error_vs_std_plot,
        metric_vs_samples_plot,
        parity_plot,
        rejection_plot,
    )

    written = []
    calib, reject = {}, {}
    for m in report["models"]:
        pred, label = preds[m["label"]], m["label"]
        if not np.all(pred.std_ev > 0):
            log.warning(
                "%s has no positive std (deterministic): no "
                "parity / error-vs-std / calibration figure",
                label,
            )
            continue
        name = _file_label(label)
        parity_plot(
            y_true,
            pred.mean_ev,
            pred.std_ev,
            out_dir / f"parity_{name}.png",
            title=f"{label} ({m['regime']}), MAE = {m['metrics']['mae_ev']:.3f} eV",
        )
        error_vs_std_plot(
            y_true, pred.mean_ev, pred.std_ev, out_dir / f"error_vs_std_{name}.png", title=label
        )
        written += [f"parity_{name}.png", f"error_vs_std_{name}.png"]
        calib[f"{label} ({m['family']})"] = D.calibration_curve(
            pred.predictive(family=m["family"]), y_true
        )
        reject[label] = rejection_curve(pred.mean_ev, pred.std_ev, y_true)
    if calib:
        calibration_plot(calib, out_dir / "calibration.png")
        rejection_plot(reject, out_dir / "rejection.png")
        written += ["calibration.png", "rejection.png"]
    stochastic = [m for m in report["models"] if m["stochastic"]]
    if stochastic:
        ts = report["samples"]
        for key, fname, ylabel in (
            ("spearman_std_abs_error", "spearman_vs_T.png", "Spearman ρ(std, |error|)"),
            ("nll", "nll_vs_T.png", "NLL in each model's family (nats)"),
        ):
            values = {m["label"]: [m["by_samples"][str(t)][key] for t in ts] for m in stochastic}
            reference = {
                f"{m['label']} (K={m['n_members']})": m["metrics"][key]
                for m in report["models"]
                if m["regime"] == "lora_ensemble" and _finite(m["metrics"][key])
            }
            metric_vs_samples_plot(
                ts, values, out_dir / fname, ylabel, reference or None, logx=len(ts) > 1
            )
            written.append(fname)
    return written


def _json_safe(x: Any) -> Any:
    """Plain JSON types; NaN and infinities become None."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x
