"""Evaluation: predictions with T stochastic passes, all uncertainty metrics, a per-structure table.

Uncertainty is scored in the model's own family (:mod:`mofbalora.uq.distribution`): the family its
calibration was fitted in (``laplace`` for a model trained with the Laplace NLL), else Gaussian. The
JSON says which (``family``); ``nll_gaussian`` keeps the Gaussian NLL of the same mean and std
for comparison."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mofbalora.data.qmof import load_dataset
from mofbalora.data.splits import load_split
from mofbalora.featurize import announce_featurization, load_inputs
from mofbalora.io import atomic_write_bytes, write_table
from mofbalora.model import BandGapModel, load_model
from mofbalora.prediction import Prediction, calibrated_std
from mofbalora.uq import distribution as D
from mofbalora.uq.metrics import all_metrics

# metrics that need a positive std: NaN for a prediction without one (a deterministic model, one
# draw)
STD_METRICS = (
    "spearman_std_abs_error",
    "pearson_std_abs_error",
    "nll",
    "crps_ev",
    "miscalibration_area",
    "rms_calibration_error",
    "ence",
    "coverage_68",
    "coverage_95",
    "auc_rejection",
)


def metrics_from_prediction(
    pred: Prediction, y_true: np.ndarray, n_samples: int, family: str = "gaussian"
) -> dict:
    """All metrics of :func:`mofbalora.uq.distribution.all_metrics` with the prediction's
    distribution in ``family`` (:meth:`~mofbalora.prediction.Prediction.predictive`), plus
    ``samples`` (T) and ``family``.

    A prediction whose std is 0 everywhere (a deterministic model, a single draw) has no uncertainty
    to score: its accuracy metrics are computed (with a stand-in std that they ignore) and the
    std-dependent ones are NaN. Where only some stds are 0 (every draw saturated at a 0 eV gap),
    they are floored at :data:`MIN_STD_EV` so that one such structure does not void the model's
    uncertainty metrics.
    """
    y_true = np.asarray(y_true, dtype=float)
    if np.any(pred.std_ev > 0):
        alea = pred.aleatoric_std_ev
        out = D.all_metrics(
            pred.predictive(family=family),
            y_true,
            epistemic_std=np.maximum(pred.epistemic_std_ev, D.MIN_STD_EV)
            if alea is not None
            else None,
            aleatoric_std=alea,
        )
    else:
        out = all_metrics(pred.mean_ev, np.ones_like(pred.mean_ev), y_true)
        out.update({k: float("nan") for k in (*STD_METRICS, "nll_gaussian")})
    out["samples"] = int(pred.samples_ev.shape[1]) if n_samples else 0
    out["family"] = family
    return out


#: the calibrated scores :func:`evaluate_inputs` reports under ``calibrated``
CALIBRATED_METRICS = (
    "nll",
    "crps_ev",
    "miscalibration_area",
    "ence",
    "coverage_68",
    "coverage_95",
    "nll_gaussian",
)


def select_split_ids(
    ds, split: str = "test", split_name: str = "qmof_v1", limit: int | None = None
) -> list[str]:
    """Ids of a dataset in one part of a split (``test``, ``val``, ``train``) or ``all`` of them."""
    parts = ("test", "val", "train", "all")
    if split not in parts:
        raise ValueError(f"unknown split {split!r}; choose from {list(parts)}")
    if split == "all":
        ids = list(ds.ids)
    else:
        known = set(ds.ids)
        ids = [i for i in load_split(split_name)[split] if i in known]
        if not ids:
            raise ValueError(
                f"no structure of split {split_name}:{split} is in {ds.source}; use --split all"
            )
    return ids[:limit] if limit else ids


def evaluate_inputs(
    model: BandGapModel,
    ids: list[str],
    inputs: list,
    y_true: np.ndarray,
    *,
    n_samples: int = 32,
    seed: int = 0,
) -> tuple[dict, pd.DataFrame]:
    """Metrics (in the model's family, see the module docstring) and the per-structure table of
    ``inputs``; with a fitted calibration also ``calibrated`` (:data:`CALIBRATED_METRICS` of the
    calibrated predictive) and the table's ``bandgap_std_calibrated_ev`` and interval columns
    (``bandgap_lo68_ev`` ... ``bandgap_hi95_ev``)."""
    calibration = getattr(model, "calibration", None)
    family = D.family_of_calibration(calibration)
    pred = model.predict_inputs(inputs, n_samples=n_samples, seed=seed)
    metrics = metrics_from_prediction(pred, np.asarray(y_true, dtype=float), n_samples, family)
    table = pred.table(ids, y_true)
    calibrated = calibrated_std(model, pred.std_ev)
    if calibrated is not None:
        table["bandgap_std_calibrated_ev"] = calibrated
        for column, values in pred.intervals(calibration).items():
            table[column] = values
        metrics["calibrated"] = calibrated_metrics(pred, calibration, y_true)
    return metrics, table


def calibrated_metrics(
    pred: Prediction, calibration: dict | None, y_true: np.ndarray
) -> dict | None:
    """:data:`CALIBRATED_METRICS` of the calibrated predictive (``pred`` in ``calibration``'s
    family, its recalibration applied); None without a calibration."""
    if not calibration:
        return None
    after = D.all_metrics(pred.predictive(calibration), np.asarray(y_true, dtype=float))
    return {k: after[k] for k in CALIBRATED_METRICS}


def evaluate(
    model: str | Path = "default",
    *,
    data: str | Path | None = None,
    split: str = "test",
    split_name: str = "qmof_v1",
    n_samples: int = 32,
    limit: int | None = None,
    out: str | Path | None = None,
    labels: str | None = None,
    id_column: str = "id",
    target_column: str = "bandgap",
    seed: int = 0,
    device: str = "cpu",
    trust_checkpoint: bool = False,
) -> dict:
    """Evaluate a saved model on a dataset split (``test``, ``val``, ``train`` or ``all``); writes
    JSON + CSV. ``trust_checkpoint``: see :func:`mofbalora.model.load_model` (never read from the
    model folder)."""
    m = load_model(model, device=device, trust_checkpoint=trust_checkpoint)
    ds = load_dataset(data, labels_csv=labels, id_column=id_column, target_column=target_column)
    ids = select_split_ids(ds, split, split_name, limit)
    announce_featurization(m, ds, {split: ids})
    t0 = time.perf_counter()
    kept, inputs, y = load_inputs(m, ds, ids, f"{split} set")
    metrics, table = evaluate_inputs(m, kept, inputs, y.numpy(), n_samples=n_samples, seed=seed)
    metrics["seconds"] = time.perf_counter() - t0
    metrics["n_failed"] = len(ids) - len(kept)
    metrics["model"] = str(model)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, json.dumps(metrics, indent=2, default=float).encode())
        write_table(table, out.with_suffix(".csv"))
    return metrics
