"""The predictive distribution of band gaps (eV) as an object, in the family the model states.

A model's uncertainty is a distribution, not a std: the same std means a different interval,
likelihood and CRPS for a Gaussian and for a Laplace. Each :class:`Predictive` holds one
distribution per structure and computes, in its own family:

* :meth:`~Predictive.cdf`, :meth:`~Predictive.logpdf`, :meth:`~Predictive.ppf` and central
  :meth:`~Predictive.interval`;
* :meth:`~Predictive.crps`: the continuous ranked probability score, in closed form for every
  family;
* :meth:`~Predictive.rescaled`: the recalibration ``std → sqrt((a·std)² + b²)`` kept inside the
  family.

Families (:data:`FAMILIES`):

* ``"gaussian"`` (:class:`GaussianPredictive`): N(mean, std²). Its scores equal
  :mod:`mofbalora.uq.metrics` (and uncertainty-toolbox) exactly.
* ``"laplace"`` (:class:`LaplacePredictive`): Laplace(mean, b) with b = std/√2, so ``std`` stays the
  standard deviation (the ``laplace_nll`` likelihood's variance is 2b²). Its central interval of
  probability p is mean ± b·ln(1/(1−p)): ±0.81 std at 68.27 % (a Gaussian's ±1 std), ±2.12 std at 95
  %.
* ``"mixture"`` (:class:`MixturePredictive`): the exact predictive of T stochastic passes with an
  aleatoric head, (1/T) Σ_t K((y − c_t)/s)/s: one kernel (Gaussian or Laplace, the head's
  likelihood) per draw c_t, all of the draw-averaged aleatoric std s (a
  :class:`~mofbalora.prediction.Prediction` keeps the mean of the draws' variances, not each one).
  Its CRPS is closed form too (pairs of draws).

Which family a model is: :func:`family_of_likelihood` maps the training likelihood (``laplace_nll``
→ ``laplace``, ``gaussian_nll`` and the rest → ``gaussian``); a model's fitted calibration records
it (``calibration["family"]``; a calibration without one was fitted as a Gaussian, the only family
before).

Scores of a whole set (pure functions of a :class:`Predictive` and the reference gaps ``y_true``,
eV): :func:`nll` (nats, a density per eV), :func:`crps` (eV), :func:`coverage`,
:func:`calibration_curve`, :func:`miscalibration_area`, :func:`rms_calibration_error`, and
:func:`all_metrics`, which is :func:`mofbalora.uq.metrics.all_metrics` with those keys scored in the
family. :func:`predictive_intervals` gives a table's interval columns.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from scipy import special, stats

from mofbalora.uq import metrics as M

__all__ = [
    "FAMILIES",
    "KERNELS",
    "ONE_SIGMA_LEVEL",
    "INTERVAL_LEVELS",
    "MIN_STD_EV",
    "Family",
    "Predictive",
    "GaussianPredictive",
    "LaplacePredictive",
    "MixturePredictive",
    "make_predictive",
    "family_of_likelihood",
    "family_of_calibration",
    "nll",
    "crps",
    "coverage",
    "central_levels",
    "calibration_curve",
    "miscalibration_area",
    "rms_calibration_error",
    "all_metrics",
    "predictive_intervals",
]

Family = Literal["gaussian", "laplace", "mixture"]
FAMILIES: tuple[str, ...] = ("gaussian", "laplace", "mixture")
#: kernels of a mixture (the aleatoric head's likelihood)
KERNELS: tuple[str, ...] = ("gaussian", "laplace")
#: the probability of a Gaussian's ±1 std, 0.6827: the level called "68" in metrics and columns
ONE_SIGMA_LEVEL = float(2.0 * stats.norm.cdf(1.0) - 1.0)
#: the central intervals a table reports: column suffix → probability
INTERVAL_LEVELS: dict[str, float] = {"68": ONE_SIGMA_LEVEL, "95": 0.95}
#: smallest std (eV) a distribution is built with (a structure whose every draw saturated at 0 eV
#: has std 0)
MIN_STD_EV = 1e-6

_SQRT2 = math.sqrt(2.0)
_LOG2 = math.log(2.0)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _std_array(name: str, values: Any, n: int) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(values, dtype=np.float64), (n,)).copy()
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (eV)")
    if np.any(arr < 0):
        idx = int(np.flatnonzero(arr < 0)[0])
        raise ValueError(f"{name} must be >= 0 (eV); index {idx} is {arr[idx]!r}")
    return np.maximum(arr, MIN_STD_EV)


def _levels_array(level: Any) -> np.ndarray:
    lv = np.asarray(level, dtype=np.float64)
    if np.any(~np.isfinite(lv)) or np.any(lv < 0) or np.any(lv > 1):
        raise ValueError(f"level(s) must lie in [0, 1], got {level!r}")
    return lv


def _y_array(dist: Predictive, y_true: Any) -> np.ndarray:
    y = M._as_1d_float("y_true", y_true)
    if y.size != len(dist):
        raise ValueError(f"y_true has {y.size} values for a predictive of {len(dist)} structures")
    return y


def _laplace_cdf(d: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CDF of Laplace(0, b) at d."""
    e = 0.5 * np.exp(-np.abs(d) / b)
    return np.where(d < 0, e, 1.0 - e)


def _gauss_abs_mean(delta: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """E|N(delta, tau²)| (folded normal mean)."""
    u = delta / tau
    return tau * (u * (2.0 * stats.norm.cdf(u) - 1.0) + 2.0 * stats.norm.pdf(u))


def _laplace_abs_mean(delta: np.ndarray, b: np.ndarray) -> np.ndarray:
    """E|Laplace(delta, b)| = b (z + e^-z), z = |delta|/b."""
    z = np.abs(delta) / b
    return b * (z + np.exp(-z))


# --------------------------------------------------------------------------------------------------
# the distributions
# --------------------------------------------------------------------------------------------------


class Predictive(ABC):
    """One predictive distribution of the band gap (eV) per structure (n of them)."""

    family: str = ""

    @property
    @abstractmethod
    def mean_ev(self) -> np.ndarray:
        """(n,) predictive means (eV)."""

    @property
    @abstractmethod
    def std_ev(self) -> np.ndarray:
        """(n,) predictive standard deviations (eV)."""

    def __len__(self) -> int:
        return int(self.mean_ev.shape[0])

    @abstractmethod
    def cdf(self, y: Any) -> np.ndarray:
        """(n,) P(Y_i <= y_i) for per-structure values ``y`` (eV; a scalar broadcasts)."""

    @abstractmethod
    def logpdf(self, y: Any) -> np.ndarray:
        """(n,) log density at ``y`` (log per eV)."""

    @abstractmethod
    def crps(self, y: Any) -> np.ndarray:
        """(n,) continuous ranked probability score at ``y`` (eV), closed form."""

    @abstractmethod
    def ppf(self, q: Any) -> np.ndarray:
        """(n,) quantiles of probability ``q`` in (0, 1) (a scalar or one per structure), eV."""

    @abstractmethod
    def rescaled(self, factor: float, floor_ev: float = 0.0) -> Predictive:
        """The same family with std ``sqrt((factor·std)² + floor_ev²)`` and the same mean (the
        recalibration of :mod:`mofbalora.uq.recalibration`; a mixture scales its draws' spread by
        ``factor`` and its kernel to ``sqrt((factor·s)² + floor_ev²)``, which gives the same
        std)."""

    @abstractmethod
    def subset(self, index: Any) -> Predictive:
        """The distributions of the structures ``index`` (an index array or a boolean mask)."""

    @abstractmethod
    def sample(self, n_draws: int, rng: np.random.Generator) -> np.ndarray:
        """(n, n_draws) independent draws (eV), for Monte Carlo checks."""

    def interval(self, level: Any) -> tuple[np.ndarray, np.ndarray]:
        """Central interval ``(lower, upper)`` (eV, (n,) each) of probability ``level`` (a scalar or
        one per structure, in [0, 1]): the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles."""
        lv = _levels_array(level)
        return self.ppf(0.5 - lv / 2.0), self.ppf(0.5 + lv / 2.0)

    def central_level(self, y: Any) -> np.ndarray:
        """(n,) probability of the smallest central interval holding ``y``: ``|2 F(y) - 1|``. ``y``
        lies in the central interval of probability p exactly when this is <= p (the calibration
        curve's statistic)."""
        return np.abs(2.0 * self.cdf(y) - 1.0)

    def nll(self, y: Any) -> np.ndarray:
        """(n,) negative log density at ``y`` (nats, a density per eV)."""
        return -self.logpdf(y)


class _LocationScale(Predictive):
    """A symmetric location-scale family given by mean and std (eV)."""

    def __init__(self, mean_ev: Any, std_ev: Any) -> None:
        self._mean = M._as_1d_float("mean_ev", mean_ev)
        self._std = _std_array("std_ev", std_ev, self._mean.size)

    @property
    def mean_ev(self) -> np.ndarray:
        return self._mean

    @property
    def std_ev(self) -> np.ndarray:
        return self._std

    def rescaled(self, factor: float, floor_ev: float = 0.0) -> Predictive:
        return type(self)(
            self._mean, np.sqrt((float(factor) * self._std) ** 2 + float(floor_ev) ** 2)
        )

    def subset(self, index: Any) -> Predictive:
        return type(self)(self._mean[index], self._std[index])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)})"


class GaussianPredictive(_LocationScale):
    """N(mean, std²) per structure."""

    family = "gaussian"

    def cdf(self, y: Any) -> np.ndarray:
        return stats.norm.cdf((np.asarray(y, dtype=np.float64) - self._mean) / self._std)

    def logpdf(self, y: Any) -> np.ndarray:
        return stats.norm.logpdf(np.asarray(y, dtype=np.float64), self._mean, self._std)

    def crps(self, y: Any) -> np.ndarray:
        z = (np.asarray(y, dtype=np.float64) - self._mean) / self._std
        return self._std * (
            z * (2.0 * stats.norm.cdf(z) - 1.0) + 2.0 * stats.norm.pdf(z) - 1.0 / math.sqrt(math.pi)
        )

    def ppf(self, q: Any) -> np.ndarray:
        return self._mean + self._std * stats.norm.ppf(np.asarray(q, dtype=np.float64))

    def sample(self, n_draws: int, rng: np.random.Generator) -> np.ndarray:
        return self._mean[:, None] + self._std[:, None] * rng.standard_normal((len(self), n_draws))


class LaplacePredictive(_LocationScale):
    """Laplace(mean, b) per structure, b = std/√2 (eV)."""

    family = "laplace"

    @property
    def scale_ev(self) -> np.ndarray:
        """(n,) the Laplace scale b = std/√2 (eV): the expected absolute deviation from the mean."""
        return self._std / _SQRT2

    def cdf(self, y: Any) -> np.ndarray:
        return _laplace_cdf(np.asarray(y, dtype=np.float64) - self._mean, self.scale_ev)

    def logpdf(self, y: Any) -> np.ndarray:
        b = self.scale_ev
        return -np.log(2.0 * b) - np.abs(np.asarray(y, dtype=np.float64) - self._mean) / b

    def crps(self, y: Any) -> np.ndarray:
        # E|X - y| - E|X - X'|/2 = b (z + e^-z) - 3b/4, z = |y - mean|/b
        b = self.scale_ev
        return _laplace_abs_mean(np.asarray(y, dtype=np.float64) - self._mean, b) - 0.75 * b

    def ppf(self, q: Any) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        b = self.scale_ev
        return self._mean - b * np.sign(q - 0.5) * np.log1p(-np.abs(2.0 * q - 1.0))

    def interval(self, level: Any) -> tuple[np.ndarray, np.ndarray]:
        half = -self.scale_ev * np.log1p(-_levels_array(level))  # b ln(1/(1-p)), inf at p = 1
        return self._mean - half, self._mean + half

    def sample(self, n_draws: int, rng: np.random.Generator) -> np.ndarray:
        return (
            self._mean[:, None]
            + rng.laplace(0.0, 1.0, (len(self), n_draws)) * self.scale_ev[:, None]
        )


class MixturePredictive(Predictive):
    """(1/T) Σ_t K((y − c_t)/s)/s per structure: one ``kernel`` (``"gaussian"`` or ``"laplace"``,
    std ``s``) per draw c_t.

    Args:
        centers_ev: (n, T) the T draws of each structure (eV).
        kernel_std_ev: (n,) the kernels' std s (eV, > 0; floored at :data:`MIN_STD_EV`): the
            aleatoric std.
        kernel: the aleatoric likelihood's family.
    """

    family = "mixture"

    def __init__(self, centers_ev: Any, kernel_std_ev: Any, kernel: str = "laplace") -> None:
        c = np.asarray(centers_ev, dtype=np.float64)
        if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0:
            raise ValueError(f"centers_ev must be (n, T) with n, T >= 1, got shape {c.shape}")
        if not np.all(np.isfinite(c)):
            raise ValueError("centers_ev must be finite (eV)")
        if kernel not in KERNELS:
            raise ValueError(f"unknown mixture kernel {kernel!r}; choose from {list(KERNELS)}")
        self.centers_ev, self.kernel = c, kernel
        self.kernel_std_ev = _std_array("kernel_std_ev", kernel_std_ev, c.shape[0])

    def __repr__(self) -> str:
        return (
            f"MixturePredictive(n={len(self)}, "
            f"T={self.centers_ev.shape[1]}, kernel={self.kernel!r})"
        )

    @property
    def mean_ev(self) -> np.ndarray:
        return self.centers_ev.mean(1)

    @property
    def std_ev(self) -> np.ndarray:
        return np.sqrt(self.centers_ev.var(1) + self.kernel_std_ev**2)

    def _scale(self) -> np.ndarray:
        """(n, 1) the kernel's own scale: std for a Gaussian, b = std/√2 for a Laplace."""
        s = self.kernel_std_ev if self.kernel == "gaussian" else self.kernel_std_ev / _SQRT2
        return s[:, None]

    def _kernel_cdf(self, d: np.ndarray) -> np.ndarray:
        s = self._scale()
        return stats.norm.cdf(d / s) if self.kernel == "gaussian" else _laplace_cdf(d, s)

    def cdf(self, y: Any) -> np.ndarray:
        y = np.broadcast_to(np.asarray(y, dtype=np.float64), (len(self),))
        return self._kernel_cdf(y[:, None] - self.centers_ev).mean(1)

    def logpdf(self, y: Any) -> np.ndarray:
        y = np.broadcast_to(np.asarray(y, dtype=np.float64), (len(self),))
        d, s = y[:, None] - self.centers_ev, self._scale()
        if self.kernel == "gaussian":
            log_k = stats.norm.logpdf(d / s) - np.log(s)
        else:
            log_k = -np.log(2.0 * s) - np.abs(d) / s
        return special.logsumexp(log_k, axis=1) - math.log(self.centers_ev.shape[1])

    def crps(self, y: Any) -> np.ndarray:
        # E|X - y| - E|X - X'|/2 over the T kernels and the T² pairs of kernels, each closed form:
        # the difference of two kernels is N(δ, 2s²) for Gaussians and has E|·| = b[δ' + (3 +
        # δ')e^-δ'/2] (δ' = |δ|/b) for two Laplaces of scale b
        y = np.broadcast_to(np.asarray(y, dtype=np.float64), (len(self),))
        s = self._scale()
        n, t = self.centers_ev.shape
        out = np.empty(n)
        step = max(1, 2_000_000 // max(t * t, 1))
        for a in range(0, n, step):
            c, sa = self.centers_ev[a : a + step], s[a : a + step]
            d = y[a : a + step, None] - c
            pair = c[:, :, None] - c[:, None, :]
            if self.kernel == "gaussian":
                e_abs = _gauss_abs_mean(d, sa).mean(1)
                e_pair = _gauss_abs_mean(pair, _SQRT2 * sa[:, :, None]).mean((1, 2))
            else:
                e_abs = _laplace_abs_mean(d, sa).mean(1)
                z = np.abs(pair) / sa[:, :, None]
                e_pair = (sa[:, :, None] * (z + (3.0 + z) * np.exp(-z) / 2.0)).mean((1, 2))
            out[a : a + step] = e_abs - 0.5 * e_pair
        return out

    def ppf(self, q: Any) -> np.ndarray:
        """Quantiles by bisection on the CDF (to 1e-12 eV): the q-quantile lies between the lowest
        and the highest draw's own q-quantile."""
        q = np.broadcast_to(np.asarray(q, dtype=np.float64), (len(self),))
        k = (
            stats.norm.ppf(q)
            if self.kernel == "gaussian"
            else -np.sign(q - 0.5) * np.log1p(-np.abs(2.0 * q - 1.0))
        )
        s = self._scale()[:, 0]
        lo = self.centers_ev.min(1) + s * k
        hi = self.centers_ev.max(1) + s * k
        lo, hi = np.where(np.isfinite(lo), lo, -np.inf), np.where(np.isfinite(hi), hi, np.inf)
        finite = np.isfinite(lo) & np.isfinite(hi)
        a, b = np.where(finite, lo, 0.0), np.where(finite, hi, 0.0)
        for _ in range(200):
            if np.all(b - a <= 1e-12):
                break
            mid = 0.5 * (a + b)
            below = self.cdf(mid) < q
            a, b = np.where(below, mid, a), np.where(below, b, mid)
        return np.where(finite, 0.5 * (a + b), np.where(q <= 0, -np.inf, np.inf))

    def rescaled(self, factor: float, floor_ev: float = 0.0) -> Predictive:
        mean = self.mean_ev[:, None]
        kernel = np.sqrt((float(factor) * self.kernel_std_ev) ** 2 + float(floor_ev) ** 2)
        return MixturePredictive(
            mean + float(factor) * (self.centers_ev - mean), kernel, self.kernel
        )

    def subset(self, index: Any) -> Predictive:
        return MixturePredictive(self.centers_ev[index], self.kernel_std_ev[index], self.kernel)

    def sample(self, n_draws: int, rng: np.random.Generator) -> np.ndarray:
        n, t = self.centers_ev.shape
        pick = self.centers_ev[np.arange(n)[:, None], rng.integers(0, t, (n, n_draws))]
        s = self._scale()
        noise = (
            rng.standard_normal((n, n_draws))
            if self.kernel == "gaussian"
            else rng.laplace(0.0, 1.0, (n, n_draws))
        )
        return pick + s * noise


def make_predictive(
    family: str,
    mean_ev: Any,
    std_ev: Any,
    *,
    samples_ev: Any = None,
    aleatoric_std_ev: Any = None,
    kernel: str = "laplace",
) -> Predictive:
    """A :class:`Predictive` of ``family`` from a prediction's arrays (eV).

    ``gaussian`` / ``laplace`` use ``mean_ev`` and the total ``std_ev``; ``mixture`` uses the draws
    ``samples_ev`` (n, T) and the aleatoric std ``aleatoric_std_ev`` (n,) with ``kernel``.

    Raises:
        ValueError: unknown family, or a mixture without draws or without an aleatoric std (a model
            with no aleatoric head has no density over its draws: use ``gaussian``).
    """
    if family == "gaussian":
        return GaussianPredictive(mean_ev, std_ev)
    if family == "laplace":
        return LaplacePredictive(mean_ev, std_ev)
    if family == "mixture":
        if samples_ev is None or aleatoric_std_ev is None:
            raise ValueError(
                "a mixture predictive needs the draws (samples_ev) and the aleatoric std of a "
                "model with an aleatoric head; use family 'gaussian' or 'laplace' otherwise"
            )
        return MixturePredictive(np.atleast_2d(samples_ev), aleatoric_std_ev, kernel)
    raise ValueError(f"unknown predictive family {family!r}; choose from {list(FAMILIES)}")


def family_of_likelihood(likelihood: str) -> str:
    """The predictive family of a model trained with ``likelihood``: ``laplace_nll`` →
    ``"laplace"``; the Gaussian NLL, MSE, L1 and Huber (no stated aleatoric shape; the spread of
    the draws) → ``"gaussian"``."""
    return "laplace" if likelihood == "laplace_nll" else "gaussian"


def family_of_calibration(calibration: Mapping | None, default: str = "gaussian") -> str:
    """The family a fitted calibration was fitted in (``calibration["family"]``); a calibration
    written before it recorded one was fitted as a Gaussian; no calibration: ``default``."""
    if not calibration:
        return default
    family = calibration.get("family", "gaussian")
    if family not in FAMILIES:
        raise ValueError(
            f"calibration names an unknown family {family!r}; choose from {list(FAMILIES)}"
        )
    return family


# --------------------------------------------------------------------------------------------------
# scores of a set of structures
# --------------------------------------------------------------------------------------------------


def nll(dist: Predictive, y_true: Any) -> float:
    """Mean negative log-likelihood (nats; a density per eV) of ``y_true`` under ``dist``."""
    return float(np.mean(dist.nll(_y_array(dist, y_true))))


def crps(dist: Predictive, y_true: Any) -> float:
    """Mean CRPS (eV); lower is better. Equals the absolute error as the spread goes to 0."""
    return float(np.mean(dist.crps(_y_array(dist, y_true))))


def coverage(dist: Predictive, y_true: Any, level: float) -> float:
    """Fraction of ``y_true`` inside the central interval of probability ``level`` (strictly in
    (0, 1))."""
    y = _y_array(dist, y_true)
    lower, upper = dist.interval(M._check_level(level))
    return float(np.mean((y >= lower) & (y <= upper)))


def central_levels(dist: Predictive, y_true: Any) -> np.ndarray:
    """(n,) :meth:`Predictive.central_level` of each reference gap."""
    return dist.central_level(_y_array(dist, y_true))


def calibration_curve(
    dist: Predictive, y_true: Any, n_levels: int = M.DEFAULT_N_LEVELS
) -> tuple[np.ndarray, np.ndarray]:
    """Expected vs observed proportion of ``y_true`` inside the family's central intervals, at
    expected proportions ``linspace(0, 1, n_levels)``. A Gaussian gives
    :func:`mofbalora.uq.metrics.calibration_curve` exactly (uncertainty-toolbox's definition)."""
    y = _y_array(dist, y_true)
    if isinstance(dist, GaussianPredictive):
        return M.calibration_curve(dist.mean_ev, dist.std_ev, y, n_levels)
    n_levels = M._check_int("n_levels", n_levels, 2)
    expected = np.linspace(0.0, 1.0, n_levels)
    levels = np.sort(dist.central_level(y))
    observed = np.searchsorted(levels, expected, side="right") / levels.size
    return expected, observed.astype(np.float64)


def miscalibration_area(dist: Predictive, y_true: Any, n_levels: int = M.DEFAULT_N_LEVELS) -> float:
    """Area between :func:`calibration_curve` and the diagonal (unitless; 0 is calibrated)."""
    return M.miscalibration_area_from_curve(*calibration_curve(dist, y_true, n_levels))


def rms_calibration_error(
    dist: Predictive, y_true: Any, n_levels: int = M.DEFAULT_N_LEVELS
) -> float:
    """Root-mean-square gap between expected and observed proportions of
    :func:`calibration_curve`."""
    expected, observed = calibration_curve(dist, y_true, n_levels)
    return float(np.sqrt(np.mean((expected - observed) ** 2)))


#: keys :func:`all_metrics` scores in the distribution's family (the rest need only mean and std)
FAMILY_KEYS: tuple[str, ...] = (
    "nll",
    "crps_ev",
    "miscalibration_area",
    "rms_calibration_error",
    "coverage_68",
    "coverage_95",
)


def all_metrics(
    dist: Predictive,
    y_true: Any,
    *,
    epistemic_std: Any | None = None,
    aleatoric_std: Any | None = None,
) -> dict[str, float]:
    """:func:`mofbalora.uq.metrics.all_metrics` of the distribution's mean and std, with
    :data:`FAMILY_KEYS` (NLL, CRPS, the calibration curve's area and RMS, coverage of the central
    68.27 % and 95 % intervals) scored in its family, plus ``nll_gaussian``: the Gaussian NLL of the
    same mean and std, for comparison with figures scored before families. Same keys and order
    otherwise; plain floats (``n`` an int)."""
    y = _y_array(dist, y_true)
    out = M.all_metrics(
        dist.mean_ev, dist.std_ev, y, epistemic_std=epistemic_std, aleatoric_std=aleatoric_std
    )
    if isinstance(dist, GaussianPredictive):
        out["nll_gaussian"] = out["nll"]
        return out
    expected, observed = calibration_curve(dist, y)
    out.update(
        {
            "nll": nll(dist, y),
            "crps_ev": crps(dist, y),
            "miscalibration_area": M.miscalibration_area_from_curve(expected, observed),
            "rms_calibration_error": float(np.sqrt(np.mean((expected - observed) ** 2))),
            "coverage_68": coverage(dist, y, ONE_SIGMA_LEVEL),
            "coverage_95": coverage(dist, y, 0.95),
            "nll_gaussian": M.gaussian_nll(dist.mean_ev, dist.std_ev, y),
        }
    )
    return out


# --------------------------------------------------------------------------------------------------
# interval columns of a table
# --------------------------------------------------------------------------------------------------


def predictive_intervals(
    mean_ev: Any,
    std_ev: Any,
    calibration: Mapping | None = None,
    *,
    samples_ev: Any = None,
    aleatoric_std_ev: Any = None,
    family: str | None = None,
    levels: Mapping[str, float] | Sequence[float] | None = None,
    clip_at_zero: bool = True,
) -> dict[str, np.ndarray]:
    """Interval columns of a table from the calibrated predictive: ``bandgap_lo68_ev``,
    ``bandgap_hi68_ev``, ``bandgap_lo95_ev``, ``bandgap_hi95_ev`` (eV, one value per structure).

    Args:
        mean_ev, std_ev: (n,) or scalars: the prediction's mean and total std (eV; the raw std,
            before any calibration).
        calibration: the model's fitted calibration (``model.calibration``) or None. Its ``family``,
            factor and floor are applied; a calibration without a family was fitted as a Gaussian.
        samples_ev, aleatoric_std_ev: the draws (n, T) and the aleatoric std (n,), needed for the
            ``mixture`` family only.
        family: the family when ``calibration`` is None (default ``"gaussian"``); with a calibration
            it must be the calibration's (ValueError otherwise).
        levels: column suffix → central probability (default :data:`INTERVAL_LEVELS`: "68" is the
            68.27 % of a Gaussian's ±1 std, "95" is 95 %); a sequence of probabilities names them by
            percent.
        clip_at_zero: raise lower bounds below 0 eV to 0 (a band gap is >= 0; the coverage of true
            gaps does not change).

    Returns:
        ``{"bandgap_lo<k>_ev": lower, "bandgap_hi<k>_ev": upper, ...}`` in the order of ``levels``,
        float64 arrays of length n.
    """
    mean = np.atleast_1d(np.asarray(mean_ev, dtype=np.float64))
    std = np.broadcast_to(np.asarray(std_ev, dtype=np.float64), mean.shape)
    fam = family or family_of_calibration(calibration)
    samples = (
        None if samples_ev is None else np.atleast_2d(np.asarray(samples_ev, dtype=np.float64))
    )
    dist = make_predictive(
        fam,
        mean,
        std,
        samples_ev=samples,
        aleatoric_std_ev=aleatoric_std_ev,
        kernel=(calibration or {}).get("kernel", "laplace"),
    )
    if calibration:
        if family_of_calibration(calibration) != fam:
            raise ValueError(
                f"the calibration was fitted for the {family_of_calibration(calibration)!r} "
                f"family, not {fam!r}"
            )
        dist = dist.rescaled(calibration["std_factor"], calibration.get("std_floor_ev", 0.0))
    if levels is None:
        levels = INTERVAL_LEVELS
    elif not isinstance(levels, Mapping):
        levels = {f"{100 * p:g}": float(p) for p in levels}
    out: dict[str, np.ndarray] = {}
    for name, p in levels.items():
        lower, upper = dist.interval(M._check_level(p))
        out[f"bandgap_lo{name}_ev"] = np.maximum(lower, 0.0) if clip_at_zero else lower
        out[f"bandgap_hi{name}_ev"] = upper
    return out
