"""Uncertainty quantification: the predictive distribution in its family, metrics, recalibration and
plots for band-gap predictions (eV).

Metrics and recalibration are imported eagerly; the plot functions are loaded on first use so
that importing :mod:`mofbalora.uq` does not import matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

from mofbalora.uq.distribution import (
    FAMILIES,
    INTERVAL_LEVELS,
    GaussianPredictive,
    LaplacePredictive,
    MixturePredictive,
    Predictive,
    make_predictive,
    predictive_intervals,
)
from mofbalora.uq.metrics import (
    ALL_METRICS_KEYS,
    DECOMPOSITION_KEYS,
    all_metrics,
    auc_rejection,
    auc_rejection_oracle,
    auc_rejection_random,
    calibration_curve,
    central_interval_z,
    coverage,
    crps_gaussian,
    ence,
    gaussian_nll,
    mae,
    miscalibration_area,
    miscalibration_area_from_curve,
    pearson_std_abs_error,
    r2,
    rejection_areas,
    rejection_curve,
    rms_calibration_error,
    rmse,
    spearman_std_abs_error,
    validate_arrays,
)
from mofbalora.uq.recalibration import (
    RECALIBRATION_METHODS,
    IsotonicStdRecalibrator,
    LevelRecalibrator,
    apply_std_scale_floor,
    calibrated_predictive,
    compare_recalibrations,
    fit_calibration,
    fit_scale_floor,
    fit_std_scale,
    fit_std_scale_floor,
    recalibrated_metrics,
)

_PLOTS = (
    "parity_plot",
    "error_vs_std_plot",
    "calibration_plot",
    "rejection_plot",
    "metric_vs_samples_plot",
)

__all__ = [
    "ALL_METRICS_KEYS",
    "DECOMPOSITION_KEYS",
    "all_metrics",
    "auc_rejection",
    "auc_rejection_oracle",
    "auc_rejection_random",
    "calibration_curve",
    "central_interval_z",
    "coverage",
    "crps_gaussian",
    "ence",
    "gaussian_nll",
    "mae",
    "miscalibration_area",
    "miscalibration_area_from_curve",
    "pearson_std_abs_error",
    "r2",
    "rejection_areas",
    "rejection_curve",
    "rms_calibration_error",
    "rmse",
    "spearman_std_abs_error",
    "validate_arrays",
    "RECALIBRATION_METHODS",
    "IsotonicStdRecalibrator",
    "apply_std_scale_floor",
    "fit_std_scale",
    "fit_std_scale_floor",
    "recalibrated_metrics",
    "FAMILIES",
    "INTERVAL_LEVELS",
    "Predictive",
    "GaussianPredictive",
    "LaplacePredictive",
    "MixturePredictive",
    "make_predictive",
    "predictive_intervals",
    "LevelRecalibrator",
    "calibrated_predictive",
    "compare_recalibrations",
    "fit_calibration",
    "fit_scale_floor",
    *_PLOTS,
]


def __getattr__(name: str) -> Any:
    if name in _PLOTS:
        return getattr(importlib.import_module("mofbalora.uq.plots"), name)
    raise AttributeError(f"module 'mofbalora.uq' has no attribute {name!r}")
