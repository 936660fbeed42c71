"""Uncertainty metrics for Gaussian predictive distributions of MOF band gaps.

Every public function takes 1-D arrays ``(y_pred, y_std, y_true)`` of the same length: the
predicted mean band gap (eV), the predicted standard deviation (eV, strictly positive) and the
reference (DFT) band gap (eV). Errors are ``y_pred - y_true`` (eV). Results are in eV where they
carry a unit (MAE, RMSE, CRPS, areas under rejection curves); correlations, proportions,
calibration errors, ENCE and the NLL (in nats) are unitless.

Families:

* accuracy: :func:`mae`, :func:`rmse`, :func:`r2`
* ranking: :func:`spearman_std_abs_error`, :func:`pearson_std_abs_error`,
  :func:`rejection_curve`, :func:`auc_rejection`, :func:`auc_rejection_oracle`,
  :func:`auc_rejection_random`
* calibration: :func:`calibration_curve`, :func:`miscalibration_area`,
  :func:`rms_calibration_error`, :func:`ence`, :func:`coverage`
* proper scoring rules: :func:`gaussian_nll`, :func:`crps_gaussian`
* everything at once: :func:`all_metrics`
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "validate_arrays",
    "mae",
    "rmse",
    "r2",
    "spearman_std_abs_error",
    "pearson_std_abs_error",
    "rejection_curve",
    "rejection_areas",
    "auc_rejection",
    "auc_rejection_oracle",
    "auc_rejection_random",
    "central_interval_z",
    "calibration_curve",
    "miscalibration_area_from_curve",
    "miscalibration_area",
    "rms_calibration_error",
    "ence",
    "coverage",
    "gaussian_nll",
    "crps_gaussian",
    "all_metrics",
    "ALL_METRICS_KEYS",
    "DECOMPOSITION_KEYS",
]

DEFAULT_N_LEVELS = 100
"""Number of expected proportions, evenly spaced on [0, 1], in calibration curves."""

DEFAULT_N_POINTS = 100
"""Number of rejected fractions, evenly spaced on [0, 1), in rejection curves."""

DEFAULT_ENCE_BINS = 10
"""Number of equal-count std bins for :func:`ence`."""

ALL_METRICS_KEYS: tuple[str, ...] = (
    "n",
    "mae_ev",
    "rmse_ev",
    "r2",
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
    "auc_rejection_oracle",
    "auc_rejection_random",
)
"""Keys of :func:`all_metrics` without an epistemic/aleatoric decomposition, in order."""

DECOMPOSITION_KEYS: tuple[str, ...] = (
    "spearman_epistemic_std_abs_error",
    "spearman_aleatoric_std_abs_error",
    "mean_epistemic_std_ev",
    "mean_aleatoric_std_ev",
)
"""Extra keys of :func:`all_metrics` when epistemic and aleatoric stds are given."""

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _as_1d_float(name: str, values: Any) -> np.ndarray:
    """Convert ``values`` to a finite 1-D float64 array, or raise TypeError / ValueError."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a 1-D array of numbers, got a {type(values).__name__}")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} must be a 1-D array of numbers, got {type(values).__name__} ({exc})"
        ) from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; at least one point is needed")
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite value(s) (nan/inf); first at index {idx}: "
            f"{arr[idx]!r}"
        )
    return arr


def _check_std(name: str, std: np.ndarray, *, allow_zero: bool = False) -> None:
    """Raise ValueError unless ``std`` is strictly positive (or non-negative if ``allow_zero``)."""
    bad = std < 0 if allow_zero else std <= 0
    if bad.any():
        idx = int(np.flatnonzero(bad)[0])
        need = "non-negative" if allow_zero else "strictly positive"
        raise ValueError(
            f"{name} must be {need} (eV); {int(bad.sum())} value(s) are not, first at index "
            f"{idx}: {std[idx]!r}"
        )


def validate_arrays(
    y_pred: Any, y_std: Any, y_true: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check and convert ``(y_pred, y_std, y_true)`` to float64 1-D arrays.

    Args:
        y_pred: predicted mean band gaps (eV).
        y_std: predicted standard deviations (eV), all > 0.
        y_true: reference band gaps (eV).

    Returns:
        The three arrays as float64 numpy arrays.

    Raises:
        TypeError: an input is not numeric.
        ValueError: an input is not 1-D, is empty, contains nan/inf, the lengths differ, or a
            std is <= 0.
    """
    pred = _as_1d_float("y_pred", y_pred)
    std = _as_1d_float("y_std", y_std)
    true = _as_1d_float("y_true", y_true)
    if not (pred.size == std.size == true.size):
        raise ValueError(
            "y_pred, y_std and y_true must have the same length, got "
            f"{pred.size}, {std.size} and {true.size}"
        )
    _check_std("y_std", std)
    return pred, std, true


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _check_level(level: Any) -> float:
    try:
        lv = float(level)
    except (TypeError, ValueError):
        raise TypeError(f"level must be a number strictly between 0 and 1, got {level!r}") from None
    if not (0.0 < lv < 1.0):
        raise ValueError(f"level must be strictly between 0 and 1, got {level!r}")
    return lv


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoid-rule integral of ``y`` over ``x`` (own helper: np.trapz/np.trapezoid differ by
    version)."""
    if x.size < 2:
        return 0.0
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))


def _rank_corr(a: np.ndarray, b: np.ndarray, kind: str) -> float:
    """Spearman or Pearson correlation of ``a`` and ``b``; nan when either is constant."""
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    if kind == "spearman":
        a = stats.rankdata(a)
        b = stats.rankdata(b)
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    return float(np.clip(np.dot(a, b) / denom, -1.0, 1.0))


# --------------------------------------------------------------------------------------------
# accuracy
# --------------------------------------------------------------------------------------------


def mae(y_pred: Any, y_std: Any, y_true: Any) -> float:
    """Mean absolute error (eV). ``y_std`` is validated but not used."""
    pred, _, true = validate_arrays(y_pred, y_std, y_true)
    return float(np.mean(np.abs(pred - true)))


def rmse(y_pred: Any, y_std: Any, y_true: Any) -> float:
    """Root-mean-square error (eV). ``y_std`` is validated but not used."""
    pred, _, true = validate_arrays(y_pred, y_std, y_true)
    return float(np.sqrt(np.mean((pred - true) ** 2)))


def r2(y_pred: Any, y_std: Any, y_true: Any) -> float:
    """Coefficient of determination 1 - SS_res/SS_tot (unitless); nan if ``y_true`` is constant."""
    pred, _, true = validate_arrays(y_pred, y_std, y_true)
    ss_tot = float(np.sum((true - true.mean()) ** 2))
    if ss_tot == 0.0:
        return float("nan")
    return 1.0 - float(np.sum((true - pred) ** 2)) / ss_tot


# --------------------------------------------------------------------------------------------
# ranking
# --------------------------------------------------------------------------------------------


def spearman_std_abs_error(y_pred: Any, y_std: Any, y_true: Any) -> float:
    """Spearman rank correlation between ``y_std`` and ``|y_pred - y_true|``.

    Unitless in [-1, 1]; nan when the std or the absolute error is constant (or n < 2).
    """
    pred, std, true = validate_arrays(y_pred, y_std, y_true)
    return _rank_corr(std, np.abs(pred - true), "spearman")


def pearson_std_abs_error(y_pred: Any, y_std: Any, y_true: Any) -> float:
    """Pearson correlation between ``y_std`` and ``|y_pred - y_true|``.

    Unitless in [-1, 1]; nan when the std or the absolute error is constant (or n < 2).
    """
    pred, std, true = validate_arrays(y_pred, y_std, y_true)
    return _rank_corr(std, np.abs(pred - true), "pearson")


def _retained_mae(order_key: np.ndarray, abs_err: np.ndarray, n_keep: np.ndarray) -> np.ndarray:
    """MAE of the ``n_keep`` points with the smallest ``order_key``, for each entry of ``n_keep``.

    Ties in ``order_key`` are resolved in expectation: within a group of equal keys every point
    counts with the group's mean error, which equals the average over all orderings of the tie.
    """
    order = np.argsort(order_key, kind="stable")
    key_sorted = order_key[order]
    err_sorted = abs_err[order]
    # group-mean error within runs of equal keys
    _, starts, counts = np.unique(key_sorted, return_index=True, return_counts=True)
    group_sums = np.add.reduceat(err_sorted, starts)
    err_sorted = np.repeat(group_sums / counts, counts)
    cum = np.concatenate([[0.0], np.cumsum(err_sorted)])
    return cum[n_keep] / n_keep


def rejection_curve(
    y_pred: Any, y_std: Any, y_true: Any, n_points: int = DEFAULT_N_POINTS
) -> dict[str, np.ndarray]:
    """MAE of the retained points as a growing fraction of points is rejected.

    The fractions are ``i / n_points`` for ``i = 0 .. n_points-1`` (so in [0, 1)); at fraction f
    the ``floor(f * n)`` points ranked worst are dropped and the MAE of the rest is reported.

    Args:
        y_pred, y_std, y_true: see :func:`validate_arrays` (eV).
        n_points: number of rejected fractions (>= 2).

    Returns:
        A dict of 1-D numpy arrays of length ``n_points``:

        * ``fraction_rejected``: the fractions (unitless).
        * ``n_retained``: number of points kept at each fraction.
        * ``mae_model`` (eV): highest ``y_std`` rejected first; ties in ``y_std`` are counted
          in expectation over their order, so a constant std gives the random curve.
        * ``mae_oracle`` (eV): highest ``|error|`` rejected first (the best possible curve).
        * ``mae_random`` (eV): expected MAE under random rejection, i.e. the overall MAE.
    """
    pred, std, true = validate_arrays(y_pred, y_std, y_true)
    n_points = _check_int("n_points", n_points, 2)
    n = pred.size
    abs_err = np.abs(pred - true)
    i = np.arange(n_points)
    fraction = i / n_points
    n_keep = n - (i * n) // n_points  # integer arithmetic: exact floor(f * n); always >= 1
    return {
        "fraction_rejected": fraction,
        "n_retained": n_keep,
        "mae_model": _retained_mae(std, abs_err, n_keep),
        "mae_oracle": _retained_mae(abs_err, abs_err, n_keep),
        "mae_random": np.full(n_points, float(abs_err.mean())),
    }


def rejection_areas(curve: dict[str, np.ndarray]) -> dict[str, float]:
    """Trapezoid areas (eV) under the curves of a :func:`rejection_curve` result.

    Integrated over its ``fraction_rejected`` grid, which covers [0, 1 - 1/n_points]. Lower is
    better; a model's area lies between ``auc_rejection_oracle`` and ``auc_rejection_random``
    when its std ranks errors better than chance.

    Returns:
        ``{"auc_rejection", "auc_rejection_oracle", "auc_rejection_random"}`` as floats.
    """
    missing = [
        k for k in ("fraction_rejected", "mae_model", "mae_oracle", "mae_random") if k not in curve
    ]
    if missing:
        raise ValueError(
            f"curve is missing key(s) {missing}; expected the dict returned by rejection_curve"
        )
    x = np.asarray(curve["fraction_rejected"], dtype=np.float64)
    return {
        "auc_rejection": _trapezoid(np.asarray(curve["mae_model"], dtype=np.float64), x),
        "auc_rejection_oracle": _trapezoid(np.asarray(curve["mae_oracle"], dtype=np.float64), x),
        "auc_rejection_random": _trapezoid(np.asarray(curve["mae_random"], dtype=np.float64), x),
    }


def auc_rejection(y_pred: Any, y_std: Any, y_true: Any, n_points: int = DEFAULT_N_POINTS) -> float:
    """Area (eV) under the model's rejection curve (reject highest std first); lower is better."""
    return rejection_areas(rejection_curve(y_pred, y_std, y_true, n_points))["auc_rejection"]


def auc_rejection_oracle(
    y_pred: Any, y_std: Any, y_true: Any, n_points: int = DEFAULT_N_POINTS
) -> float:
    """Area (eV) under the oracle rejection curve (reject highest |error| first)."""
    return rejection_areas(rejection_curve(y_pred, y_std, y_true, n_points))["auc_rejection_oracle"]


def auc_rejection_random(
    y_pred: Any, y_std: Any, y_true: Any, n_points: int = DEFAULT_N_POINTS
) -> float:
    """Area (eV) under the random-rejection curve: overall MAE times (1 - 1/n_points)."""
    return rejection_areas(rejection_curve(y_pred, y_std, y_true, n_points))["auc_rejection_random"]


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------


def central_interval_z(level: Any) -> np.ndarray | float:
    """Half-width, in standard deviations, of the central Gaussian interval of probability
    ``level``.

    ``z = Phi^-1(0.5 + level/2)``: 0 at level 0, about 1.0 at 0.6827, 1.96 at 0.95, inf at 1.
    Accepts a scalar or an array of levels in [0, 1].
    """
    lv = np.asarray(level, dtype=np.float64)
    if np.any(~np.isfinite(lv)) or np.any(lv < 0) or np.any(lv > 1):
        raise ValueError(f"level(s) must lie in [0, 1], got {level!r}")
    z = stats.norm.ppf(0.5 + lv / 2.0)
    return float(z) if z.ndim == 0 else z


def calibration_curve(
    y_pred: Any, y_std: Any, y_true: Any, n_levels: int = DEFAULT_N_LEVELS
) -> tuple[np.ndarray, np.ndarray]:
    """Expected vs observed proportion of points inside central Gaussian intervals.

    For each expected proportion p in ``linspace(0, 1, n_levels)`` the observed proportion is the
    fraction of points with ``|y_pred - y_true| <= z(p) * y_std`` where ``z(p)`` is
    :func:`central_interval_z`. A calibrated model lies on the diagonal; below it means
    overconfident (std too small), above it underconfident.

    Returns:
        ``(expected, observed)``, two float arrays of length ``n_levels`` (unitless).
    """
    pred, std, true = validate_arrays(y_pred, y_std, y_true)
    n_levels = _check_int("n_levels", n_levels, 2)
    expected = np.linspace(0.0, 1.0, n_levels)
    z_abs = np.sort(np.abs(pred - true) / std)
    observed = np.searchsorted(z_abs, central_interval_z(expected), side="right") / z_abs.size
    return expected, observed.astype(np.float64)


def miscalibration_area_from_curve(expected: Any, observed: Any) -> float:
    """Area between a calibration curve and the diagonal (unitless, in [0, 0.5]).

    Piecewise-linear between the given levels; on a segment where the curve crosses the
    diagonal the two triangles are added, not cancelled.
    """
    exp_ = _as_1d_float("expected", expected)
    obs = _as_1d_float("observed", observed)
    if exp_.size != obs.size or exp_.size < 2:
        raise ValueError(
            f"expected and observed must have the same length >= 2, got {exp_.size} and {obs.size}"
        )
    d = obs - exp_
    dl, dr, dx = d[:-1], d[1:], np.diff(exp_)
    same_side = dl * dr >= 0
    denom = np.abs(dl) + np.abs(dr)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = dx * (dl**2 + dr**2) / (2.0 * denom)
    area = np.where(same_side, 0.5 * dx * np.abs(dl + dr), np.nan_to_num(crossing))
    return float(area.sum())


def miscalibration_area(
    y_pred: Any, y_std: Any, y_true: Any, n_levels: int = DEFAULT_N_LEVELS
) -> float:
    """Area between the :func:`calibration_curve` and the diagonal (unitless; 0 is calibrated)."""
    return miscalibration_area_from_curve(*calibration_curve(y_pred, y_std, y_true, n_levels))


def rms_calibration_error(
    y_pred: Any, y_std: Any, y_true: Any, n_levels: int = DEFAULT_N_LEVELS
) -> float:
    """Root-mean-square gap between expected and observed proportions over the curve's levels."""
    expected, observed = calibration_curve(y_pred, y_std, y_true, n_levels)
    return float(np.sqrt(np.mean((expected - observed) ** 2)))


def ence(y_pred: Any, y_std: Any, y_true: Any, n_bins: int = DEFAULT_ENCE_BINS) -> float:
    """Expected normalized calibration error (Levi et al., 2019), unitless; 0 is calibrated.

    Points are sorted by ``y_std`` and split into ``min(n_bins, n)`` bins of (nearly) equal
    count. In each bin, RMV = sqrt(mean(std^2)) and RMSE = sqrt(mean(error^2)) (both eV); the
    ENCE is the mean over bins of ``|RMV - RMSE| / RMV``.
    """
    pred, std, true = validate_arrays(y_pred, y_std, y_true)
    n_bins = min(_check_int("n_bins", n_bins, 1), pred.size)
    order = np.argsort(std, kind="stable")
    terms = []
    for idx in np.array_split(order, n_bins):
        rmv = math.sqrt(float(np.mean(std[idx] ** 2)))
        rmse_bin = math.sqrt(float(np.mean((pred[idx] - true[idx]) ** 2)))
        terms.append(abs(rmv - rmse_bin) / rmv)
    return float(np.mean(terms))


def coverage(y_pred: Any, y_std: Any, y_true: Any, level: float) -> float:
    """Fraction of points with ``|error| <= z * std`` for the central interval of probability
    ``level``.

    ``level`` must lie strictly in (0, 1); e.g. 0.6827 (about +/-1 std) or 0.95 (+/-1.96 std).
    A calibrated model gives about ``level``.
    """
    pred, std, true = validate_arrays(y_pred, y_std, y_true)
    z = central_interval_z(_check_level(level))
    return float(np.mean(np.abs(pred - true) <= z * std))


# --------------------------------------------------------------------------------------------
# proper scoring rules
# --------------------------------------------------------------------------------------------


def gaussian_nll(y_pred: Any, y_std: Any, y_true: Any) -> float:
    """Mean Gaussian negative log-likelihood (nats), including the 0.5*log(2*pi) constant.

    Per point: ``0.5*log(2*pi) + log(std) + 0.5*((y_true - y_pred)/std)^2`` with std in eV (so the
    value depends on the unit of the band gap; it is a density per eV).
    """
    pred, std, true = validate_arrays(y_pred, y_std, y_true)
    z = (true - pred) / std
    return float(np.mean(_HALF_LOG_2PI + np.log(std) + 0.5 * z**2))


def crps_gaussian(y_pred: Any, y_std: Any, y_true: Any) -> float:
    """Mean continuous ranked probability score of Gaussian predictions (eV); lower is better.

    Closed form per point (Gneiting & Raftery): ``std * (z*(2*Phi(z) - 1) + 2*phi(z) - 1/sqrt(pi))``
    with ``z = (y_true - y_pred)/std``. Reduces to the absolute error as std -> 0.
    """
    pred, std, true = validate_arrays(y_pred, y_std, y_true)
    z = (true - pred) / std
    per_point = std * (
        z * (2.0 * stats.norm.cdf(z) - 1.0) + 2.0 * stats.norm.pdf(z) - 1.0 / math.sqrt(math.pi)
    )
    return float(np.mean(per_point))


# --------------------------------------------------------------------------------------------
# all at once
# --------------------------------------------------------------------------------------------


def _component_std(name: str, values: Any, n: int) -> np.ndarray:
    arr = _as_1d_float(name, values)
    if arr.size != n:
        raise ValueError(f"{name} must have the same length as y_pred ({n}), got {arr.size}")
    _check_std(name, arr, allow_zero=True)
    return arr


def all_metrics(
    y_pred: Any,
    y_std: Any,
    y_true: Any,
    *,
    epistemic_std: Any | None = None,
    aleatoric_std: Any | None = None,
) -> dict[str, float]:
    """Every metric of this module in one JSON-serialisable dict of plain floats (``n`` is an int).

    Keys, in order, are :data:`ALL_METRICS_KEYS`: ``n``, ``mae_ev``, ``rmse_ev``, ``r2``,
    ``spearman_std_abs_error``, ``pearson_std_abs_error``, ``nll`` (nats), ``crps_ev``,
    ``miscalibration_area``, ``rms_calibration_error``, ``ence``, ``coverage_68`` (central
    interval of probability 0.6827, i.e. +/-1 std), ``coverage_95``, ``auc_rejection``,
    ``auc_rejection_oracle``, ``auc_rejection_random`` (eV). Defaults: 100 calibration levels,
    100 rejection fractions, 10 ENCE bins. Values may be nan (e.g. a correlation with a constant
    std).

    If ``epistemic_std`` and/or ``aleatoric_std`` (eV, >= 0, same length; typically the two
    parts of a total std with ``total^2 = epistemic^2 + aleatoric^2``) are given, the dict also
    has, for each one given, ``spearman_<part>_std_abs_error`` and ``mean_<part>_std_ev``; with
    both given these are the four :data:`DECOMPOSITION_KEYS`.
    """
    pred, std, true = validate_arrays(y_pred, y_std, y_true)
    n = int(pred.size)
    abs_err = np.abs(pred - true)
    expected, observed = calibration_curve(pred, std, true)
    areas = rejection_areas(rejection_curve(pred, std, true))
    out: dict[str, float] = {
        "n": n,
        "mae_ev": mae(pred, std, true),
        "rmse_ev": rmse(pred, std, true),
        "r2": r2(pred, std, true),
        "spearman_std_abs_error": _rank_corr(std, abs_err, "spearman"),
        "pearson_std_abs_error": _rank_corr(std, abs_err, "pearson"),
        "nll": gaussian_nll(pred, std, true),
        "crps_ev": crps_gaussian(pred, std, true),
        "miscalibration_area": miscalibration_area_from_curve(expected, observed),
        "rms_calibration_error": float(np.sqrt(np.mean((expected - observed) ** 2))),
        "ence": ence(pred, std, true),
        "coverage_68": coverage(pred, std, true, float(2.0 * stats.norm.cdf(1.0) - 1.0)),
        "coverage_95": coverage(pred, std, true, 0.95),
        **areas,
    }
    parts = {"epistemic": epistemic_std, "aleatoric": aleatoric_std}
    comps = {k: _component_std(f"{k}_std", v, n) for k, v in parts.items() if v is not None}
    for k, arr in comps.items():
        out[f"spearman_{k}_std_abs_error"] = _rank_corr(arr, abs_err, "spearman")
    for k, arr in comps.items():
        out[f"mean_{k}_std_ev"] = float(arr.mean())
    return {k: (int(v) if k == "n" else float(v)) for k, v in out.items()}
