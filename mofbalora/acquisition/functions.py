"""Acquisition scores: which candidate MOFs to send to DFT next.

Every acquisition maps a model's predictive distribution for each candidate structure to one
score, and **a higher score means "send to DFT first"**. Band gaps, means, standard deviations,
samples, ``best_ev``, ``xi`` and the window ``target_ev`` are all in eV.

Inputs
------
``mean_ev`` (n,)
    Predictive mean band gap per candidate, eV.
``std_ev`` (n,)
    Predictive standard deviation per candidate, eV (>= 0; 0 means a point prediction).
``samples_ev`` (n, T), optional
    Band gaps from T stochastic forward passes (e.g. BaLoRA adapter samples), eV. ``thompson``
    and ``epistemic`` use them.

Goal
----
Screening usually hunts for *small* band gaps (semiconducting / photocatalytic MOFs), so the
goal-dependent acquisitions default to ``goal="min"``. ``goal="max"`` flips them to hunt for
large gaps. When ``target_ev=(lo, hi)`` is given, the goal-dependent acquisitions instead hunt
for gaps inside the window ``[lo, hi]`` eV and ``goal`` is ignored by them.

=============  ==========================================================================
name           score (higher = label first)
=============  ==========================================================================
``std``        ``std`` -- pure uncertainty sampling.
``epistemic``  the 16-84 % half-width of the T draws, ``(q84 - q16) / 2`` -- uncertainty sampling on
               the model's own (reducible) uncertainty only: with an aleatoric head ``std`` also
               counts the predicted noise, which a DFT label does not teach the model away. Needs
               ``samples_ev`` with T >= 2.
``ucb``        ``mean + kappa*std`` -- optimistic for *large* gaps (ignores ``goal``).
``lcb``        ``-(mean - kappa*std) = kappa*std - mean`` -- optimistic for *small* gaps;
               the sign is flipped so that higher is still better (ignores ``goal``).
``lcb_epistemic``  ``kappa*e - mean`` with ``e`` the ``epistemic`` score of the draws: ``lcb`` on
the
               model's own uncertainty only (needs ``samples_ev`` with T >= 2; ignores ``goal``).
``target``     ``P(lo <= Y <= hi)`` with ``Y ~ N(mean, std^2)``; needs ``target_ev``.
``ei``         Expected improvement, closed form for a Gaussian ``Y ~ N(mean, std^2)``:

               * ``goal="min"``: ``E[max(best_ev - xi - Y, 0)]`` where ``best_ev`` is the
                 smallest gap already labelled.
               * ``goal="max"``: ``E[max(Y - best_ev - xi, 0)]`` where ``best_ev`` is the
                 largest gap already labelled.
               * with ``target_ev``: improvement in *closeness to the window*. Let
                 ``d(y) = max(lo - y, 0, y - hi)`` be the distance (eV) of a gap ``y`` from
                 the window (0 inside). With ``best_ev`` = the labelled gap closest to the
                 window, the incumbent distance is ``d* = d(best_ev)`` and the score is
                 ``E[max(d* - xi - d(Y), 0)]`` (>= 0; zero for everyone once a labelled gap
                 lies inside the window and ``xi >= 0``). Without ``best_ev`` (nothing
                 labelled yet) the score is ``-E[d(Y)]``, the expected distance to the
                 window with the sign flipped; this is the ``d* -> infinity`` limit of the
                 score above up to an additive constant, so it ranks candidates the same
                 way but is <= 0.
``thompson``   One posterior draw ``y`` per structure: a random column of ``samples_ev`` if
               given, else ``y ~ N(mean, std^2)``. Score ``-y`` (``goal="min"``), ``y``
               (``goal="max"``) or ``-d(y)`` (with ``target_ev``).
``mean``       Greedy exploitation: ``-mean`` (min), ``mean`` (max) or ``-d(mean)`` (window).
``random``     Uniform on [0, 1): random sampling baseline.
=============  ==========================================================================

``thompson`` and ``random`` use ``rng``; the same integer seed gives the same scores.

Costs
-----
:func:`dft_cost` gives a relative DFT cost per structure (``~ N^3``, median 1) and
:func:`cost_aware` turns scores into score per unit cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from scipy.special import ndtr

Goal = Literal["min", "max"]
AcquisitionName = Literal[
    "std", "epistemic", "ucb", "lcb", "lcb_epistemic", "target", "ei", "thompson", "mean", "random"
]
RngLike = np.random.Generator | int | None

GOALS: tuple[str, ...] = ("min", "max")

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def make_rng(rng: RngLike) -> np.random.Generator:
    """Return a numpy ``Generator`` from a Generator (used as is), an integer seed or ``None``."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"rng seed must be a non-negative integer, got {rng!r}")
        return np.random.default_rng(int(rng))
    raise ValueError(
        "rng must be a numpy Generator, a non-negative "
        f"integer seed or None, got {type(rng).__name__}"
    )


def _norm_pdf(z: np.ndarray) -> np.ndarray:
    return _INV_SQRT_2PI * np.exp(-0.5 * z * z)


def as_vector(x: object, name: str, n: int | None = None, ref: str = "mean_ev") -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array, got {type(x).__name__}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D with shape (n,), got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has length {arr.shape[0]} but {ref} has length {n}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return arr


def _check_scalar(x: object, name: str) -> float:
    try:
        val = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a finite number, got {x!r}") from exc
    if not np.isfinite(val):
        raise ValueError(f"{name} must be a finite number, got {x!r}")
    return val


def _check_window(target_ev: object) -> tuple[float, float]:
    try:
        lo, hi = target_ev  # type: ignore[misc]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"target_ev must be a pair (lo, hi) in eV, got {target_ev!r}") from exc
    lo = _check_scalar(lo, "target_ev lower bound")
    hi = _check_scalar(hi, "target_ev upper bound")
    if not lo < hi:
        raise ValueError(f"target_ev must satisfy lo < hi (eV), got {target_ev!r}")
    return lo, hi


def _check_goal(goal: object) -> Goal:
    if goal not in GOALS:
        raise ValueError(f"unknown goal {goal!r}; choose from {sorted(GOALS)}")
    return goal  # type: ignore[return-value]


def window_distance(gap_ev: np.ndarray | float, lo: float, hi: float) -> np.ndarray:
    """Distance (eV) of band gaps from the window ``[lo, hi]`` eV: ``max(lo - y, 0, y - hi)``."""
    y = np.asarray(gap_ev, dtype=float)
    return np.maximum(np.maximum(lo - y, y - hi), 0.0)


# --------------------------------------------------------------------------------------------
# closed forms for a Gaussian predictive distribution Y ~ N(mu, sigma^2)
# --------------------------------------------------------------------------------------------


def window_probability(mean_ev: np.ndarray, std_ev: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``P(lo <= Y <= hi)`` for ``Y ~ N(mean_ev, std_ev^2)``; an indicator where ``std_ev == 0``."""
    mu = np.asarray(mean_ev, dtype=float)
    sd = np.asarray(std_ev, dtype=float)
    pos = sd > 0
    safe = np.where(pos, sd, 1.0)
    prob = ndtr((hi - mu) / safe) - ndtr((lo - mu) / safe)
    inside = ((mu >= lo) & (mu <= hi)).astype(float)
    return np.clip(np.where(pos, prob, inside), 0.0, 1.0)


def _upper_partial(k: np.ndarray | float, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``E[max(Y - k, 0)]`` for ``Y ~ N(mu, sd^2)`` (``sd`` may be 0)."""
    pos = sd > 0
    safe = np.where(pos, sd, 1.0)
    z = (mu - k) / safe
    val = (mu - k) * ndtr(z) + safe * _norm_pdf(z)
    return np.maximum(np.where(pos, val, np.maximum(mu - k, 0.0)), 0.0)


def expected_improvement(
    mean_ev: np.ndarray,
    std_ev: np.ndarray,
    best_ev: float,
    *,
    xi: float = 0.0,
    goal: Goal = "min",
) -> np.ndarray:
    """Expected improvement (eV) over the incumbent ``best_ev`` for ``Y ~ N(mean_ev, std_ev^2)``.

    ``goal="min"``: ``E[max(best_ev - xi - Y, 0)] = (b - mu) Phi(z) + sigma phi(z)`` with
    ``b = best_ev - xi`` and ``z = (b - mu) / sigma``. ``goal="max"`` mirrors it:
    ``E[max(Y - best_ev - xi, 0)]``. Always >= 0; equals ``max(b - mu, 0)`` where ``sigma == 0``.
    """
    goal = _check_goal(goal)
    mu = np.asarray(mean_ev, dtype=float)
    sd = np.asarray(std_ev, dtype=float)
    if goal == "min":
        # E[max(b - Y, 0)] = E[max(Y' - (-b), 0)] with Y' = -Y ~ N(-mu, sd^2)
        return _upper_partial(-(best_ev - xi), -mu, sd)
    return _upper_partial(best_ev + xi, mu, sd)


def _truncated_linear(
    mu: np.ndarray,
    sd: np.ndarray,
    u: np.ndarray | float,
    v: np.ndarray | float,
    k: np.ndarray | float,
) -> np.ndarray:
    """``E[(Y - k) 1{u < Y < v}]`` for ``Y ~ N(mu, sd^2)`` with ``sd > 0``."""
    a = (u - mu) / sd
    b = (v - mu) / sd
    return (mu - k) * (ndtr(b) - ndtr(a)) + sd * (_norm_pdf(a) - _norm_pdf(b))


def expected_window_improvement(
    mean_ev: np.ndarray,
    std_ev: np.ndarray,
    lo: float,
    hi: float,
    best_ev: float,
    *,
    xi: float = 0.0,
) -> np.ndarray:
    """Expected improvement (eV) in closeness to the window ``[lo, hi]`` eV.

    With ``d(y)`` the distance of gap ``y`` from the window (0 inside) and ``c = d(best_ev) - xi``
    the incumbent distance minus the margin, returns ``E[max(c - d(Y), 0)]`` for
    ``Y ~ N(mean_ev, std_ev^2)``. The integrand is ``c`` inside the window and falls linearly to
    0 at ``lo - c`` and ``hi + c``, which gives a closed form in ``Phi`` and ``phi``. Zero when
    ``c <= 0``; ``max(c - d(mean), 0)`` where ``std_ev == 0``.
    """
    mu = np.asarray(mean_ev, dtype=float)
    sd = np.asarray(std_ev, dtype=float)
    c = float(window_distance(best_ev, lo, hi)) - xi
    if c <= 0:
        return np.zeros_like(mu)
    pos = sd > 0
    safe = np.where(pos, sd, 1.0)
    inside = c * (ndtr((hi - mu) / safe) - ndtr((lo - mu) / safe))
    below = _truncated_linear(mu, safe, lo - c, lo, lo - c)  # E[(Y - (lo - c)) 1{lo-c < Y < lo}]
    above = -_truncated_linear(mu, safe, hi, hi + c, hi + c)  # E[((hi + c) - Y) 1{hi < Y < hi+c}]
    val = inside + below + above
    point = np.maximum(c - window_distance(mu, lo, hi), 0.0)
    return np.maximum(np.where(pos, val, point), 0.0)


def expected_window_distance(
    mean_ev: np.ndarray, std_ev: np.ndarray, lo: float, hi: float
) -> np.ndarray:
    """``E[d(Y)]`` (eV): expected distance of ``Y ~ N(mean_ev, std_ev^2)`` from ``[lo, hi]`` eV.

    ``d(Y) = max(lo - Y, 0) + max(Y - hi, 0)`` (at most one term is non-zero since lo < hi).
    """
    mu = np.asarray(mean_ev, dtype=float)
    sd = np.asarray(std_ev, dtype=float)
    return _upper_partial(-lo, -mu, sd) + _upper_partial(hi, mu, sd)


# --------------------------------------------------------------------------------------------
# acquisition functions (uniform signature so they can live in one registry)
# --------------------------------------------------------------------------------------------

AcquisitionFn = Callable[..., np.ndarray]


def _acq_std(mean, std, samples, *, kappa, target_ev, best_ev, xi, goal, rng) -> np.ndarray:
    return std.copy()


#: quantiles whose half-distance is the ``epistemic`` score (as in mofbalora.physical's robust
#: spread)
DRAW_QUANTILES = (0.16, 0.84)


def _acq_epistemic(mean, std, samples, *, kappa, target_ev, best_ev, xi, goal, rng) -> np.ndarray:
    if samples is None or samples.shape[1] < 2:
        raise ValueError(
            "acquisition 'epistemic' needs samples_ev from T >= 2 stochastic passes, got "
            + ("none" if samples is None else f"T = {samples.shape[1]}")
        )
    lo, hi = np.quantile(samples, DRAW_QUANTILES, axis=1)
    return (hi - lo) / 2


def _acq_ucb(mean, std, samples, *, kappa, target_ev, best_ev, xi, goal, rng) -> np.ndarray:
    return mean + kappa * std


def _acq_lcb(mean, std, samples, *, kappa, target_ev, best_ev, xi, goal, rng) -> np.ndarray:
    # lower confidence bound, negated so that an optimistic *small* gap scores high
    return -(mean - kappa * std)


def _acq_lcb_epistemic(
    mean, std, samples, *, kappa, target_ev, best_ev, xi, goal, rng
) -> np.ndarray:
    # lcb on the draws' own spread only (the ``epistemic`` score), blind to the aleatoric part of
    # ``std``
    spread = _acq_epistemic(
        mean,
        std,
        samples,
        kappa=kappa,
        target_ev=target_ev,
        best_ev=best_ev,
        xi=xi,
        goal=goal,
        rng=rng,
    )
    return -(mean - kappa * spread)


def _acq_target(mean, std, samples, *, kappa, target_ev, best_ev, xi, goal, rng) -> np.ndarray:
    if target_ev is None:
        raise ValueError("acquisition 'target' needs target_ev=(lo, hi) in eV")
    lo, hi = target_ev
    return window_probability(mean, std, lo, hi)


def _acq_ei(mean, std, samples, *, kappa, target_ev, best_ev, xi, goal, rng) -> np.ndarray:
    if target_ev is not None:
        lo, hi = target_ev
        if best_ev is None:
            return -expected_window_distance(mean, std, lo, hi)
        return expected_window_improvement(mean, std, lo, hi, best_ev, xi=xi)
    if best_ev is None:
        raise ValueError(
            "acquisition 'ei' needs best_ev (best labelled "
            "band gap, eV) or target_ev=(lo, hi) in eV"
        )
    return expected_improvement(mean, std, best_ev, xi=xi, goal=goal)


def _goal_score(
    values: np.ndarray, target_ev: tuple[float, float] | None, goal: Goal
) -> np.ndarray:
    if target_ev is not None:
        return -window_distance(values, *target_ev)
    return -values if goal == "min" else values.copy()


def _acq_thompson(mean, std, samples, *, kappa, target_ev, best_ev, xi, goal, rng) -> np.ndarray:
    gen = make_rng(rng)
    n = mean.shape[0]
    if samples is not None:
        cols = gen.integers(0, samples.shape[1], size=n)
        draw = samples[np.arange(n), cols]
    else:
        draw = mean + std * gen.standard_normal(n)
    return _goal_score(draw, target_ev, goal)


def _acq_mean(mean, std, samples, *, kappa, target_ev, best_ev, xi, goal, rng) -> np.ndarray:
    return _goal_score(mean, target_ev, goal)


def _acq_random(mean, std, samples, *, kappa, target_ev, best_ev, xi, goal, rng) -> np.ndarray:
    return make_rng(rng).random(mean.shape[0])


ACQUISITIONS: dict[str, AcquisitionFn] = {
    "std": _acq_std,
    "epistemic": _acq_epistemic,
    "ucb": _acq_ucb,
    "lcb": _acq_lcb,
    "lcb_epistemic": _acq_lcb_epistemic,
    "target": _acq_target,
    "ei": _acq_ei,
    "thompson": _acq_thompson,
    "mean": _acq_mean,
    "random": _acq_random,
}


def acquisition_scores(
    name: AcquisitionName | str,
    mean_ev: np.ndarray,
    std_ev: np.ndarray,
    samples_ev: np.ndarray | None = None,
    *,
    kappa: float = 2.0,
    target_ev: tuple[float, float] | None = None,
    best_ev: float | None = None,
    xi: float = 0.0,
    goal: Goal = "min",
    rng: RngLike = None,
) -> np.ndarray:
    """Acquisition score per candidate (higher = send to DFT first); see the module docstring.

    Parameters
    ----------
    name
        One of :data:`ACQUISITIONS`.
    mean_ev, std_ev
        Predictive mean and standard deviation of the band gap, eV, shape (n,).
    samples_ev
        Optional (n, T) band gaps (eV) from T stochastic forward passes; used by ``thompson``.
    kappa
        Exploration weight (>= 0) of ``ucb`` / ``lcb``, in units of ``std``.
    target_ev
        Band-gap window ``(lo, hi)`` in eV; required by ``target``, switches ``ei``,
        ``thompson`` and ``mean`` from ``goal`` to the window.
    best_ev
        Incumbent band gap (eV) already labelled, for ``ei``: the smallest (goal min), largest
        (goal max) or closest to the window (with ``target_ev``).
    xi
        Margin (eV) an improvement must exceed in ``ei``.
    goal
        ``"min"`` (hunt small gaps, default) or ``"max"`` for ``ei``, ``thompson``, ``mean``.
    rng
        Generator, integer seed or ``None``; used by ``thompson`` and ``random``.

    Returns
    -------
    numpy.ndarray
        Float scores of shape (n,).
    """
    if name not in ACQUISITIONS:
        raise ValueError(f"unknown acquisition {name!r}; choose from {sorted(ACQUISITIONS)}")
    mean = as_vector(mean_ev, "mean_ev")
    n = mean.shape[0]
    std = as_vector(std_ev, "std_ev", n)
    if np.any(std < 0):
        raise ValueError(f"std_ev must be >= 0 eV, got minimum {std.min()!r}")
    samples = None
    if samples_ev is not None:
        try:
            samples = np.asarray(samples_ev, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"samples_ev must be a numeric array, got {type(samples_ev).__name__}"
            ) from exc
        if samples.ndim != 2 or samples.shape[0] != n or samples.shape[1] < 1:
            raise ValueError(f"samples_ev must have shape (n={n}, T>=1), got {samples.shape}")
        if not np.all(np.isfinite(samples)):
            raise ValueError("samples_ev contains non-finite values (NaN or inf)")
    kappa = _check_scalar(kappa, "kappa")
    if kappa < 0:
        raise ValueError(f"kappa must be >= 0, got {kappa!r}")
    xi = _check_scalar(xi, "xi")
    window = None if target_ev is None else _check_window(target_ev)
    best = None if best_ev is None else _check_scalar(best_ev, "best_ev")
    goal = _check_goal(goal)
    fn = ACQUISITIONS[name]
    scores = fn(
        mean, std, samples, kappa=kappa, target_ev=window, best_ev=best, xi=xi, goal=goal, rng=rng
    )
    return np.asarray(scores, dtype=float)


# --------------------------------------------------------------------------------------------
# cost
# --------------------------------------------------------------------------------------------


def dft_cost(
    n_atoms: np.ndarray | None = None,
    n_electrons: np.ndarray | None = None,
    exponent: float = 3.0,
) -> np.ndarray:
    """Relative DFT cost per structure, ``N**exponent`` normalised so that the median is 1.

    Give exactly one of ``n_atoms`` (atoms per cell) or ``n_electrons`` (valence electrons per
    cell; the better proxy for plane-wave DFT). Cubic scaling (``exponent=3``) is the usual
    Kohn-Sham estimate. The result is dimensionless: 2.0 means twice the median structure.
    """
    if (n_atoms is None) == (n_electrons is None):
        raise ValueError("give exactly one of n_atoms or n_electrons")
    name = "n_atoms" if n_atoms is not None else "n_electrons"
    counts = as_vector(n_atoms if n_atoms is not None else n_electrons, name)
    if counts.size == 0:
        raise ValueError(f"{name} is empty")
    if np.any(counts <= 0):
        raise ValueError(f"{name} must be > 0, got minimum {counts.min()!r}")
    exponent = _check_scalar(exponent, "exponent")
    if exponent <= 0:
        raise ValueError(f"exponent must be > 0, got {exponent!r}")
    # scale by the largest cost first so that large cells and exponents cannot overflow
    log_cost = exponent * np.log(counts)
    rel = np.exp(log_cost - log_cost.max())
    return rel / np.median(rel)


def cost_aware(scores: np.ndarray, cost: np.ndarray, *, floor_fraction: float = 1e-3) -> np.ndarray:
    """Score per unit cost, valid for scores of any sign (higher = better value for money).

    If every score is > 0 it returns ``scores / cost`` unchanged in meaning. Otherwise the scores
    are first shifted to be positive, ``s' = s - min(s) + floor``, with
    ``floor = floor_fraction * (max(s) - min(s))`` (or 1 if all scores are equal), so that the
    worst candidate still gets a small positive value and the ranking is ``s' / cost``. The
    shift preserves the score order at equal cost; with all scores equal it ranks by cost alone.
    ``cost`` must be > 0, e.g. from :func:`dft_cost`.
    """
    s = as_vector(scores, "scores")
    c = as_vector(cost, "cost", s.shape[0], ref="scores")
    if np.any(c <= 0):
        raise ValueError(f"cost must be > 0, got minimum {c.min()!r}")
    floor_fraction = _check_scalar(floor_fraction, "floor_fraction")
    if floor_fraction <= 0:
        raise ValueError(f"floor_fraction must be > 0, got {floor_fraction!r}")
    if s.size == 0:
        return s.copy()
    lo, hi = float(s.min()), float(s.max())
    if lo <= 0:
        floor = floor_fraction * (hi - lo) if hi > lo else 1.0
        s = s - lo + floor
    return s / c
