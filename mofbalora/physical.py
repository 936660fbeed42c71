"""What the screen reports from a model's T draws, and what the acquisition ranks by, when draws run
away.

A band gap is >= 0 (the head's softplus guarantees it) and, for MOFs, rarely above ~7 eV (QMOF's PBE
gaps end near 6.5 eV). On structures far from the training data a few of BaLoRA's T draws can run
away (softplus of a large logit): the sample mean and std then describe the outliers (std of 10-46
eV seen on CoRE MOF), not the model's belief. So, per structure:

* ``bandgap_median_ev``: the median of the draws (robust to a minority of runaway draws);
* ``bandgap_spread_ev``: half the 16-84 % inter-quantile range of the draws (a minority of runaway
  draws barely moves it), divided by its Gaussian consistency factor :func:`gaussian_consistency`
  (T) so that it estimates the std of normal draws without bias at any T (uncorrected it reads 0.81σ
  at T = 8, 0.94σ at T = 32: numpy's interpolated quantiles of a few draws sit inside the true
  ones), combined in quadrature with the aleatoric std of a model that has an aleatoric head (the
  draws carry only the epistemic part: the shipped default's σ is mostly aleatoric), capped at
  :data:`SPREAD_CAP_EV`; a model with a single draw and no aleatoric head (deterministic regimes)
  keeps its reported std;
* ``physical_flag``: ``;``-joined notes: ``runaway_draws`` (the draws' own std, the epistemic part,
  exceeds ``RUNAWAY_RATIO`` times their robust half-width + 0.1 eV: the mean and std are dominated
  by outlying draws), ``spread_capped`` (the robust spread itself exceeds the cap),
  ``gap_above_range`` (the median is above :data:`MAX_GAP_EV`).

The acquisitions rank by ``bandgap_median_ev`` and ``bandgap_spread_ev`` in place of the mean and
std, so a runaway spread cannot buy a top rank (``std``: the capped spread; ``ucb``: median +
kappa * capped spread). ``bandgap_mean_ev`` / ``bandgap_std_ev`` stay in the table, unchanged, as
the sample moments.

The spread is a ranking quantity and a displayed "±", never a calibration input: ``evaluate``, the
fitted calibration and the interval columns use the sample std of the draws and the predictive
distribution (:mod:`mofbalora.prediction`, :mod:`mofbalora.uq.distribution`), so the consistency
factor does not move a model's calibration figures.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: the largest band gap (eV) expected for a MOF; medians above it are flagged
MAX_GAP_EV = 7.0
#: the largest spread (eV) the acquisition believes: half the physical range of MOF band gaps
SPREAD_CAP_EV = MAX_GAP_EV / 2
#: std / robust spread above which the draws are called runaway
RUNAWAY_RATIO = 2.0
QUANTILES = (0.16, 0.84)


@lru_cache(maxsize=64)
def gaussian_consistency(n_draws: int) -> float:
    """E[(q84 − q16)/2] / σ for ``n_draws`` independent normal draws, with numpy's default (linear)
    sample quantiles at :data:`QUANTILES`: the factor that makes the robust half-width an unbiased
    estimate of σ.

    Exact up to quadrature error (< 1e-6): a linear quantile is a fixed combination of two order
    statistics, and the expected order statistics of a standard normal sample are integrals of x
    against their densities (evaluated on a fine grid). 0.384 at T = 2, 0.807 at T = 8, 0.944 at T =
    32, 0.969 at T = 64; as T grows it tends to Φ⁻¹(0.84) = 0.9945 (the 16-84 % range is ±0.9945σ,
    not ±1σ). Raises ValueError for T < 2.
    """
    from scipy import special, stats

    t = int(n_draws)
    if t < 2:
        raise ValueError(f"a quantile range needs at least 2 draws, got {n_draws!r}")
    x = np.linspace(-12.0, 12.0, 48_001)
    log_cdf, log_sf, log_pdf = stats.norm.logcdf(x), stats.norm.logsf(x), stats.norm.logpdf(x)

    def order_statistic_mean(k: int) -> float:  # E[X_(k)], 1-based
        density = np.exp(
            (k - 1) * log_cdf + (t - k) * log_sf + log_pdf - special.betaln(k, t - k + 1)
        )
        return float(np.trapezoid(x * density, x))

    # numpy's linear rule: X_(⌊h⌋+1) + (h − ⌊h⌋)(X_(⌊h⌋+2) − X_(⌊h⌋+1))
    def quantile_mean(p: float) -> float:
        h = (t - 1) * p
        f = int(np.floor(h))
        lo = order_statistic_mean(f + 1)
        return lo + (h - f) * (order_statistic_mean(min(f + 2, t)) - lo)

    return (quantile_mean(QUANTILES[1]) - quantile_mean(QUANTILES[0])) / 2


def robust_summary(
    samples_ev: np.ndarray, std_ev: np.ndarray, aleatoric_std_ev: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Median, capped robust spread and flags (see the module docstring) from draws of shape (n, T),
    eV.

    ``std_ev`` (n,) is the model's reported std (its total: ``sqrt(epistemic² + aleatoric²)``);
    ``aleatoric_std_ev`` (n,) the aleatoric part when the model has an aleatoric head (None: all of
    ``std_ev`` is the spread of the draws). Returns arrays of length n: ``bandgap_median_ev``,
    ``bandgap_spread_ev`` (eV) and ``physical_flag`` (strings).
    """
    samples = np.asarray(samples_ev, dtype=float)
    std = np.asarray(std_ev, dtype=float)
    if samples.ndim != 2 or samples.shape[0] != std.shape[0] or samples.shape[1] < 1:
        raise ValueError(
            f"samples_ev must have shape (n={std.shape[0]}, T>=1), got {samples.shape}"
        )
    aleatoric = (
        np.zeros_like(std)
        if aleatoric_std_ev is None
        else np.asarray(aleatoric_std_ev, dtype=float)
    )
    if aleatoric.shape != std.shape or not np.isfinite(aleatoric).all():
        raise ValueError(
            f"aleatoric_std_ev must be {std.shape[0]} finite values, got shape {aleatoric.shape}"
        )
    epistemic = np.sqrt(np.maximum(std**2 - aleatoric**2, 0.0))  # the draws' own std
    median = np.median(samples, axis=1)
    if samples.shape[1] > 1:
        lo, hi = np.quantile(samples, QUANTILES, axis=1)
        draws_robust = (hi - lo) / 2 / gaussian_consistency(samples.shape[1])
    else:
        draws_robust = epistemic.copy()
    robust = np.sqrt(draws_robust**2 + aleatoric**2)
    flags = [[] for _ in range(len(std))]
    for i in np.flatnonzero(epistemic > RUNAWAY_RATIO * draws_robust + 0.1):
        flags[i].append("runaway_draws")
    for i in np.flatnonzero(robust > SPREAD_CAP_EV):
        flags[i].append("spread_capped")
    for i in np.flatnonzero(median > MAX_GAP_EV):
        flags[i].append("gap_above_range")
    return {
        "bandgap_median_ev": median,
        "bandgap_spread_ev": np.minimum(robust, SPREAD_CAP_EV),
        "physical_flag": np.array([";".join(f) for f in flags], dtype=object),
    }
