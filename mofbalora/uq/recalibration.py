"""Post-hoc recalibration of predicted band-gap standard deviations (eV) on a validation split.

Three methods, all fitted on validation ``(y_pred, y_std, y_true)`` and applied to test stds:

* ``"scale"``: :func:`fit_std_scale`, one factor ``s`` for all stds, the maximum-likelihood
  value for Gaussian predictions ``N(y_pred, (s*y_std)^2)``.
* ``"scale_floor"``: :func:`fit_std_scale_floor`, ``sqrt((a*y_std)^2 + b^2)`` with a factor ``a``
  and a floor ``b`` (eV), maximum likelihood. A model whose spread vanishes on some structures (a
  band gap saturating at 0 eV in every draw) drives the one-factor ``s`` to absurd values; the floor
  absorbs them.
* ``"isotonic"``: :class:`IsotonicStdRecalibrator`, an isotonic map from the expected to the
  observed proportion in central Gaussian intervals (Kuleshov et al., 2018, applied to central
  intervals). It gives exactly recalibrated intervals at any level, and a single std factor
  that best matches those intervals over levels 0.05..0.95 for metrics that need a Gaussian std.

:func:`recalibrated_metrics` reports :func:`~mofbalora.uq.metrics.all_metrics` on the test split
before and after.

**In the model's family** (:mod:`mofbalora.uq.distribution`): a Gaussian recalibration cannot fix a
Laplace shape, so the same forms are fitted to a :class:`~mofbalora.uq.distribution.Predictive`, on
validation only:

* :func:`fit_scale_floor`: ``std → sqrt((a·std)² + b²)`` by maximum likelihood *in the family*
  (:meth:`~mofbalora.uq.distribution.Predictive.rescaled`); :func:`fit_calibration` stores it as a
  model's ``calibration`` dict (with its ``family``) and :func:`calibrated_predictive` applies it;
* :class:`LevelRecalibrator`: intervals only, the family's central interval at a nominal level
  mapped from the wanted one, by an isotonic fit (``"isotonic"``) or split-conformal quantiles of
  the validation levels (``"conformal"``: coverage >= the wanted level for exchangeable structures);
* :func:`compare_recalibrations`: the test metrics of each, for a report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats

from mofbalora.uq import distribution as D
from mofbalora.uq.metrics import (
    _as_1d_float,
    _check_int,
    _check_level,
    _check_std,
    all_metrics,
    central_interval_z,
    miscalibration_area_from_curve,
    validate_arrays,
)

__all__ = [
    "RECALIBRATION_METHODS",
    "LEVEL_METHODS",
    "fit_std_scale",
    "fit_std_scale_floor",
    "apply_std_scale_floor",
    "IsotonicStdRecalibrator",
    "recalibrated_metrics",
    "fit_scale_floor",
    "fit_calibration",
    "calibrated_predictive",
    "LevelRecalibrator",
    "compare_recalibrations",
]

RECALIBRATION_METHODS: tuple[str, ...] = ("scale", "scale_floor", "isotonic")
"""Valid values of ``method`` in :func:`recalibrated_metrics`."""

LEVEL_METHODS: tuple[str, ...] = ("isotonic", "conformal")
"""Valid values of ``method`` of :class:`LevelRecalibrator`."""

_MAX_NOMINAL_LEVEL = 1.0 - 1e-9  # caps z at about 6.1 std when a level can only be reached at 1
_MATCH_LEVELS = np.round(np.arange(0.05, 0.951, 0.05), 10)  # levels used to fit scale_


def fit_std_scale(y_pred: Any, y_std: Any, y_true: Any) -> float:
    """Scalar ``s`` that minimises the mean Gaussian NLL of ``N(y_pred, (s * y_std)^2)``.

    Closed form ``s = sqrt(mean(((y_pred - y_true) / y_std)^2))`` (unitless); ``s > 1`` means the
    stds were too small (overconfident).

    Raises:
        ValueError: invalid arrays (see :func:`~mofbalora.uq.metrics.validate_arrays`), or every
            error is exactly zero, so no finite positive scale exists.
    """
    pred, std, true = validate_arrays(y_pred, y_std, y_true)
    s = math.sqrt(float(np.mean(((pred - true) / std) ** 2)))
    if s == 0.0:
        raise ValueError("all errors y_pred - y_true are zero; the std scale would be 0")
    return s


def fit_std_scale_floor(y_pred: Any, y_std: Any, y_true: Any) -> tuple[float, float]:
    """``(a, b)`` minimising the mean Gaussian NLL of ``N(y_pred, (a*y_std)^2 + b^2)``; ``b`` in eV.

    Two positive parameters, fitted in log space (L-BFGS from the one-factor solution and a floor of
    a tenth of the RMS error). Apply as :func:`apply_std_scale_floor`.

    Raises:
        ValueError: invalid arrays, or every error is exactly zero.
    """
    from scipy.optimize import minimize

    pred, std, true = validate_arrays(y_pred, y_std, y_true)
    err2 = (pred - true) ** 2
    rms = math.sqrt(float(np.mean(err2)))
    if rms == 0.0:
        raise ValueError("all errors y_pred - y_true are zero; no std recalibration can be fitted")
    s2 = std**2

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a2, b2 = np.exp(2.0 * theta)
        var = a2 * s2 + b2
        r = err2 / var
        value = 0.5 * float(np.mean(np.log(var) + r))
        dvar = 0.5 * (1.0 - r) / var  # d(nll_i)/d(var_i)
        grad = np.array([np.mean(dvar * 2.0 * a2 * s2), np.mean(dvar * 2.0 * b2)])
        return value, grad

    starts = [np.log([min(fit_std_scale(pred, std, true), 1e6), 0.1 * rms]), np.log([1.0, rms])]
    best = min(
        (
            minimize(nll, x0, jac=True, method="L-BFGS-B", bounds=[(-30, 30), (-30, 30)])
            for x0 in starts
        ),
        key=lambda r: r.fun,
    )
    a, b = np.exp(best.x)
    return float(a), float(b)


def apply_std_scale_floor(y_std: Any, a: float, b: float) -> np.ndarray:
    """Recalibrated stds ``sqrt((a*y_std)^2 + b^2)`` (eV)."""
    std = np.asarray(y_std, dtype=np.float64)
    return np.sqrt((a * std) ** 2 + b**2)


class IsotonicStdRecalibrator:
    """Isotonic recalibration of central Gaussian intervals, fitted on a validation split.

    ``fit`` computes, for each validation point, the expected proportion
    ``p_i = 2*Phi(|error_i|/std_i) - 1`` of the smallest central Gaussian interval that contains
    it, and the observed proportion of validation points inside that interval (the empirical CDF
    of ``p_i``); this is the validation calibration curve of
    :func:`~mofbalora.uq.metrics.calibration_curve` evaluated at the data rather than on a fixed
    grid, so it keeps resolution near level 1. The increasing map ``observed = R(expected)`` is
    fitted to these pairs (plus (0, 0) and (1, 1)) with
    :class:`sklearn.isotonic.IsotonicRegression`.

    To get a recalibrated interval of probability ``level`` one uses the nominal level
    ``q = R^-1(level)`` (:meth:`nominal_level`), i.e. the half-width ``z(q) * std``. So a
    Gaussian with std ``std * z(q)/z(level)`` (:meth:`std_factor`) has the recalibrated interval at
    that level. Because one std cannot match every level, :meth:`transform` without a level uses
    ``scale_``: the factor ``c`` minimising ``sum_p (c*z(p) - z(R^-1(p)))^2`` over
    p = 0.05, 0.10, ..., 0.95. Nominal levels are capped at ``1 - 1e-9`` (about 6.1 std).

    Attributes (after ``fit``):
        isotonic_: the fitted ``IsotonicRegression`` (expected -> observed proportion).
        fit_expected_, fit_observed_: the (expected, observed) pairs it was fitted on.
        scale_: the single std factor described above (unitless).
    """

    # -- fitting -----------------------------------------------------------------------------

    def fit(self, y_pred: Any, y_std: Any, y_true: Any) -> IsotonicStdRecalibrator:
        """Fit on validation arrays (eV); returns ``self``."""
        pred, std, true = validate_arrays(y_pred, y_std, y_true)
        # level of the smallest central interval containing each point
        _fit_isotonic_levels(self, 2.0 * stats.norm.cdf(np.abs(pred - true) / std) - 1.0)
        z_target = central_interval_z(_MATCH_LEVELS)
        z_recal = central_interval_z(self.nominal_level(_MATCH_LEVELS))
        self.scale_ = float(np.dot(z_target, z_recal) / np.dot(z_target, z_target))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "isotonic_"):
            raise ValueError(
                "IsotonicStdRecalibrator is not fitted; call fit(y_pred, y_std, y_true) first"
            )

    # -- maps --------------------------------------------------------------------------------

    def observed_proportion(self, level: Any) -> np.ndarray | float:
        """``R(level)``: proportion the uncalibrated model actually covers at nominal ``level``."""
        self._check_fitted()
        lv = np.asarray(level, dtype=np.float64)
        out = self.isotonic_.predict(np.atleast_1d(lv)).reshape(lv.shape)
        return float(out) if out.ndim == 0 else out

    def nominal_level(self, level: Any) -> np.ndarray | float:
        """``R^-1(level)``: smallest nominal level whose interval covers ``level`` on validation.

        Inverts the piecewise-linear isotonic fit exactly; capped at ``1 - 1e-9``.
        """
        self._check_fitted()
        return _invert_isotonic(self._x_knots, self._r_knots, level)

    def std_factor(self, level: float) -> float:
        """Std factor whose Gaussian central interval at ``level`` equals the recalibrated one."""
        lv = _check_level(level)
        return float(central_interval_z(self.nominal_level(lv)) / central_interval_z(lv))

    # -- applying ----------------------------------------------------------------------------

    def transform(self, y_std: Any, level: float | None = None) -> np.ndarray:
        """Recalibrated stds (eV): ``y_std * scale_``, or ``y_std * std_factor(level)`` if given."""
        self._check_fitted()
        std = _as_1d_float("y_std", y_std)
        _check_std("y_std", std)
        factor = self.scale_ if level is None else self.std_factor(level)
        return std * factor

    def interval(self, y_pred: Any, y_std: Any, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Recalibrated central interval ``(lower, upper)`` (eV) of probability ``level``."""
        self._check_fitted()
        lv = _check_level(level)
        pred = _as_1d_float("y_pred", y_pred)
        std = _as_1d_float("y_std", y_std)
        if pred.size != std.size:
            raise ValueError(
                f"y_pred and y_std must have the same length, got {pred.size} and {std.size}"
            )
        _check_std("y_std", std)
        half = central_interval_z(self.nominal_level(lv)) * std
        return pred - half, pred + half

    def calibration_curve(
        self, y_pred: Any, y_std: Any, y_true: Any, n_levels: int = 100
    ) -> tuple[np.ndarray, np.ndarray]:
        """Calibration curve of the exactly recalibrated intervals on new data.

        Like :func:`~mofbalora.uq.metrics.calibration_curve`, but the interval for expected
        proportion p has half-width ``z(R^-1(p)) * std``. Returns ``(expected, observed)``.
        """
        self._check_fitted()
        pred, std, true = validate_arrays(y_pred, y_std, y_true)
        n_levels = _check_int("n_levels", n_levels, 2)
        expected = np.linspace(0.0, 1.0, n_levels)
        nominal = np.asarray(self.nominal_level(expected), dtype=np.float64)
        nominal[-1] = 1.0  # the full interval covers everything, as in the uncalibrated curve
        z_abs = np.sort(np.abs(pred - true) / std)
        observed = np.searchsorted(z_abs, central_interval_z(nominal), side="right") / z_abs.size
        return expected, observed.astype(np.float64)


def _fit_isotonic_levels(target: Any, levels: np.ndarray) -> None:
    """Fit ``observed = R(expected)`` on validation central ``levels`` (one per point: the
    probability of the smallest central interval holding it) and set ``isotonic_``,
    ``fit_expected_``, ``fit_observed_`` and the knots on ``target``: each point gives the pair (its
    level, the fraction of levels <= it), so the fit keeps resolution near level 1."""
    from sklearn.isotonic import IsotonicRegression

    level_i = np.sort(np.asarray(levels, dtype=np.float64))
    observed_i = np.arange(1, level_i.size + 1) / level_i.size
    target.fit_expected_ = np.concatenate([[0.0], level_i, [1.0]])
    target.fit_observed_ = np.concatenate([[0.0], observed_i, [1.0]])
    target.isotonic_ = IsotonicRegression(
        y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip"
    ).fit(target.fit_expected_, target.fit_observed_)
    target._x_knots = np.asarray(target.isotonic_.X_thresholds_, dtype=np.float64)
    target._r_knots = np.maximum.accumulate(
        np.asarray(target.isotonic_.y_thresholds_, dtype=np.float64)
    )


def _invert_isotonic(grid: np.ndarray, r: np.ndarray, level: Any) -> np.ndarray | float:
    """``R^-1(level)`` of a piecewise-linear increasing map with knots ``(grid, r)``; capped at
    ``1 - 1e-9``."""
    lv = np.asarray(level, dtype=np.float64)
    if np.any(~np.isfinite(lv)) or np.any(lv < 0) or np.any(lv > 1):
        raise ValueError(f"level(s) must lie in [0, 1], got {level!r}")
    flat = np.atleast_1d(lv).ravel()
    hi = np.clip(np.searchsorted(r, flat, side="left"), 1, grid.size - 1)
    lo = hi - 1
    dr = r[hi] - r[lo]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(dr > 0, (flat - r[lo]) / dr, 1.0)
    q = grid[lo] + np.clip(frac, 0.0, 1.0) * (grid[hi] - grid[lo])
    q = np.where(flat <= r[0], 0.0, q)
    q = np.minimum(q, _MAX_NOMINAL_LEVEL).reshape(lv.shape)
    return float(q) if q.ndim == 0 else q


def _unpack(name: str, arrays: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accept ``(y_pred, y_std, y_true)`` or a mapping with those keys."""
    if isinstance(arrays, Mapping):
        missing = [k for k in ("y_pred", "y_std", "y_true") if k not in arrays]
        if missing:
            raise ValueError(f"{name} is missing key(s) {missing}; expected y_pred, y_std, y_true")
        items = (arrays["y_pred"], arrays["y_std"], arrays["y_true"])
    elif isinstance(arrays, (tuple, list)) and len(arrays) == 3:
        items = tuple(arrays)
    else:
        raise TypeError(
            f"{name} must be a (y_pred, y_std, y_true) tuple or a mapping with those keys, "
            f"got {type(arrays).__name__}"
        )
    try:
        return validate_arrays(*items)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name}: {exc}") from None


def recalibrated_metrics(
    val_arrays: Any, test_arrays: Any, method: str = "scale"
) -> dict[str, Any]:
    """Fit a std recalibration on validation and report test metrics before and after.

    Args:
        val_arrays: ``(y_pred, y_std, y_true)`` on the validation split (eV), or a mapping
            with keys ``y_pred``, ``y_std``, ``y_true``.
        test_arrays: the same for the test split.
        method: ``"scale"`` (:func:`fit_std_scale`), ``"scale_floor"`` (:func:`fit_std_scale_floor`:
            factor and floor) or ``"isotonic"`` (:class:`IsotonicStdRecalibrator`, its ``scale_`` is
            used as the std factor).

    Returns:
        A JSON-serialisable dict:

        * ``method``: the method name.
        * ``std_scale``: the factor applied to the test stds (unitless).
        * ``std_floor_ev``: the fitted floor ``b`` of ``"scale_floor"`` (eV), else ``None``.
        * ``before`` / ``after``: :func:`~mofbalora.uq.metrics.all_metrics` on test with the
          original / rescaled stds.
        * ``after_interval``: ``miscalibration_area``, ``rms_calibration_error``,
          ``coverage_68`` and ``coverage_95`` of the recalibrated intervals themselves; for
          ``"isotonic"`` these use the exact level-wise intervals rather than one std factor,
          for ``"scale"`` they equal the values in ``after``.

    Raises:
        ValueError: unknown ``method`` (choices: :data:`RECALIBRATION_METHODS`) or bad arrays.
    """
    if method not in RECALIBRATION_METHODS:
        raise ValueError(
            f"unknown recalibration method {method!r}; choose from {list(RECALIBRATION_METHODS)}"
        )
    val = _unpack("val_arrays", val_arrays)
    pred, std, true = _unpack("test_arrays", test_arrays)

    before = all_metrics(pred, std, true)
    floor = None
    if method in ("scale", "scale_floor"):
        if method == "scale":
            scale = fit_std_scale(*val)
            after = all_metrics(pred, std * scale, true)
        else:
            scale, floor = fit_std_scale_floor(*val)
            after = all_metrics(pred, apply_std_scale_floor(std, scale, floor), true)
        after_interval = {
            k: after[k]
            for k in ("miscalibration_area", "rms_calibration_error", "coverage_68", "coverage_95")
        }
    else:
        recal = IsotonicStdRecalibrator().fit(*val)
        scale = recal.scale_
        after = all_metrics(pred, std * scale, true)
        expected, observed = recal.calibration_curve(pred, std, true)
        after_interval = {
            "miscalibration_area": miscalibration_area_from_curve(expected, observed),
            "rms_calibration_error": float(np.sqrt(np.mean((expected - observed) ** 2))),
        }
        for key, level in (("coverage_68", 2.0 * stats.norm.cdf(1.0) - 1.0), ("coverage_95", 0.95)):
            lower, upper = recal.interval(pred, std, level)
            after_interval[key] = float(np.mean((true >= lower) & (true <= upper)))
    return {
        "method": method,
        "std_scale": float(scale),
        "std_floor_ev": None if floor is None else float(floor),
        "before": before,
        "after": after,
        "after_interval": after_interval,
    }


# --------------------------------------------------------------------------------------------------
# in the model's family
# --------------------------------------------------------------------------------------------------


def _check_dist(name: str, dist: Any, y_true: Any) -> np.ndarray:
    if not isinstance(dist, D.Predictive):
        raise TypeError(
            f"{name} must be a mofbalora.uq.distribution.Predictive, got {type(dist).__name__}"
        )
    y = _as_1d_float(f"{name} y_true", y_true)
    if y.size != len(dist):
        raise ValueError(f"{name}: {y.size} reference gaps for {len(dist)} predictions")
    return y


def fit_scale_floor(dist: D.Predictive, y_true: Any) -> tuple[float, float]:
    """``(a, b)`` minimising the mean NLL of ``dist.rescaled(a, b)`` (std → ``sqrt((a·std)² + b²)``,
    ``b`` in eV) in ``dist``'s own family, on validation ``y_true`` (eV).

    A Gaussian gives :func:`fit_std_scale_floor` exactly; other families are fitted in log space by
    L-BFGS from the Gaussian solution and from (1, a tenth of the RMS error), keeping the better.

    Raises:
        ValueError: every error is exactly zero, or the arrays do not match.
    """
    from scipy.optimize import minimize

    y = _check_dist("dist", dist, y_true)
    if isinstance(dist, D.GaussianPredictive):
        return fit_std_scale_floor(dist.mean_ev, dist.std_ev, y)
    rms = math.sqrt(float(np.mean((dist.mean_ev - y) ** 2)))
    if rms == 0.0:
        raise ValueError("all errors y_pred - y_true are zero; no std recalibration can be fitted")

    def nll(theta: np.ndarray) -> float:
        a, b = np.exp(theta)
        return float(np.mean(dist.rescaled(a, b).nll(y)))

    a0, b0 = fit_std_scale_floor(dist.mean_ev, dist.std_ev, y)
    starts = [np.log([min(max(a0, 1e-6), 1e6), max(b0, 1e-3 * rms)]), np.log([1.0, 0.1 * rms])]
    best = min(
        (minimize(nll, x0, method="L-BFGS-B", bounds=[(-30, 30), (-30, 30)]) for x0 in starts),
        key=lambda r: r.fun,
    )
    a, b = np.exp(best.x)
    return float(a), float(b)


def fit_calibration(
    dist: D.Predictive, y_true: Any, *, n_samples: int | None = None, fitted_on: str = ""
) -> dict[str, Any]:
    """A model's ``calibration`` dict, fitted on validation in ``dist``'s family
    (:func:`fit_scale_floor`): ``{"method": "scale_floor", "family", ["kernel",] "std_factor": a,
    "std_floor_ev": b, "n_samples", "fitted_on"}``. :func:`calibrated_predictive` and
    :func:`mofbalora.uq.distribution.predictive_intervals` apply it;
    :func:`apply_std_scale_floor` gives its std."""
    a, b = fit_scale_floor(dist, y_true)
    out: dict[str, Any] = {"method": "scale_floor", "family": dist.family}
    if isinstance(dist, D.MixturePredictive):
        out["kernel"] = dist.kernel
    out.update({"std_factor": a, "std_floor_ev": b})
    if n_samples is not None:
        out["n_samples"] = int(n_samples)
    if fitted_on:
        out["fitted_on"] = fitted_on
    return out


def calibrated_predictive(dist: D.Predictive, calibration: Mapping | None) -> D.Predictive:
    """``dist`` with a fitted ``calibration`` applied (itself when there is none).

    Raises:
        ValueError: the calibration was fitted in another family than ``dist``'s (a calibration
            without a ``family`` was fitted as a Gaussian).
    """
    if not calibration:
        return dist
    family = D.family_of_calibration(calibration)
    if family != dist.family:
        raise ValueError(
            f"the calibration was fitted for the {family!r} family, the predictive is "
            f"{dist.family!r}; build the predictive in the calibration's family"
        )
    return dist.rescaled(calibration["std_factor"], calibration.get("std_floor_ev", 0.0))


class LevelRecalibrator:
    """Interval recalibration in the model's family, fitted on validation: the interval of wanted
    central probability p is the family's central interval at a nominal level q(p).

    Each validation structure gives its central level (the probability of the smallest central
    interval of its predictive that holds the true gap,
    :meth:`~mofbalora.uq.distribution.Predictive.central_level`).

    * ``"isotonic"``: ``q = R⁻¹(p)`` with ``R`` the isotonic fit of the observed against the
      expected proportion (Kuleshov et al., 2018, on central intervals; as
      :class:`IsotonicStdRecalibrator`);
    * ``"conformal"``: ``q`` = the ⌈(n + 1) p⌉-th smallest validation level (split conformal
      prediction with the level as the score): coverage >= p on exchangeable new structures.

    Nominal levels are capped at ``1 - 1e-9``. It gives intervals, coverage and a calibration curve,
    not a density (no NLL or CRPS).
    """

    def __init__(self, method: str = "isotonic") -> None:
        if method not in LEVEL_METHODS:
            raise ValueError(
                f"unknown level recalibration {method!r}; choose from {list(LEVEL_METHODS)}"
            )
        self.method = method

    def fit(self, dist: D.Predictive, y_true: Any) -> LevelRecalibrator:
        """Fit on the validation predictive and gaps (eV); returns ``self``."""
        y = _check_dist("dist", dist, y_true)
        self.levels_ = np.sort(dist.central_level(y))
        if self.method == "isotonic":
            _fit_isotonic_levels(self, self.levels_)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "levels_"):
            raise ValueError("LevelRecalibrator is not fitted; call fit(dist, y_true) first")

    def nominal_level(self, level: Any) -> np.ndarray | float:
        """The nominal level whose family interval covers ``level`` on validation (scalar or
        array in [0, 1])."""
        self._check_fitted()
        if self.method == "isotonic":
            return _invert_isotonic(self._x_knots, self._r_knots, level)
        lv = np.asarray(level, dtype=np.float64)
        if np.any(~np.isfinite(lv)) or np.any(lv < 0) or np.any(lv > 1):
            raise ValueError(f"level(s) must lie in [0, 1], got {level!r}")
        n = self.levels_.size
        k = np.ceil((n + 1) * lv - 1e-12).astype(np.int64)  # 1-based rank of the conformal quantile
        q = np.where(
            k <= 0, 0.0, np.where(k > n, _MAX_NOMINAL_LEVEL, self.levels_[np.clip(k - 1, 0, n - 1)])
        )
        q = np.minimum(q, _MAX_NOMINAL_LEVEL)
        return float(q) if q.ndim == 0 else q

    def interval(self, dist: D.Predictive, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Recalibrated central interval ``(lower, upper)`` (eV) of probability ``level``."""
        return dist.interval(self.nominal_level(_check_level(level)))

    def coverage(self, dist: D.Predictive, y_true: Any, level: float) -> float:
        """Fraction of ``y_true`` inside the recalibrated interval of probability ``level``."""
        y = _check_dist("dist", dist, y_true)
        return float(np.mean(dist.central_level(y) <= self.nominal_level(_check_level(level))))

    def calibration_curve(
        self, dist: D.Predictive, y_true: Any, n_levels: int = 100
    ) -> tuple[np.ndarray, np.ndarray]:
        """Calibration curve of the recalibrated intervals on new data: ``(expected, observed)``."""
        y = _check_dist("dist", dist, y_true)
        n_levels = _check_int("n_levels", n_levels, 2)
        expected = np.linspace(0.0, 1.0, n_levels)
        nominal = np.asarray(self.nominal_level(expected), dtype=np.float64)
        nominal[-1] = 1.0  # the full interval covers everything
        levels = np.sort(dist.central_level(y))
        return expected, (np.searchsorted(levels, nominal, side="right") / levels.size).astype(
            np.float64
        )


_INTERVAL_KEYS = ("miscalibration_area", "rms_calibration_error", "coverage_68", "coverage_95")


def compare_recalibrations(
    val: D.Predictive, y_val: Any, test: D.Predictive, y_test: Any
) -> dict[str, dict]:
    """Test scores of each recalibration fitted on validation, all in the predictive's family.

    Returns ``{method: scores}`` for ``none`` (the raw predictive), ``scale_floor``
    (:func:`fit_scale_floor`; with ``std_factor``, ``std_floor_ev``, ``nll``, ``crps_ev``),
    ``isotonic`` and ``conformal`` (:class:`LevelRecalibrator`: intervals only). Every entry has
    ``miscalibration_area``, ``rms_calibration_error``, ``coverage_68`` and ``coverage_95``.
    """
    y_val = _check_dist("val", val, y_val)
    y_test = _check_dist("test", test, y_test)
    out: dict[str, dict] = {}
    raw = D.all_metrics(test, y_test)
    out["none"] = {k: raw[k] for k in (*_INTERVAL_KEYS, "nll", "crps_ev")}
    a, b = fit_scale_floor(val, y_val)
    fitted = D.all_metrics(test.rescaled(a, b), y_test)
    out["scale_floor"] = {
        "std_factor": a,
        "std_floor_ev": b,
        **{k: fitted[k] for k in (*_INTERVAL_KEYS, "nll", "crps_ev")},
    }
    for method in LEVEL_METHODS:
        recal = LevelRecalibrator(method).fit(val, y_val)
        expected, observed = recal.calibration_curve(test, y_test)
        out[method] = {
            "miscalibration_area": miscalibration_area_from_curve(expected, observed),
            "rms_calibration_error": float(np.sqrt(np.mean((expected - observed) ** 2))),
            "coverage_68": recal.coverage(test, y_test, D.ONE_SIGMA_LEVEL),
            "coverage_95": recal.coverage(test, y_test, 0.95),
        }
    return out
