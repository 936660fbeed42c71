"""Batch selection: turn acquisition scores into a batch of structures for DFT.

:func:`select_batch` returns candidate indices in pick order. It never returns an index twice
nor an excluded index (e.g. structures already labelled or already queued for DFT).

Diversity rules
---------------
``"none"``
    The ``batch_size`` highest scores; equal scores are taken in index order (or in a random
    order drawn from ``rng`` when one is given).
``"kcenter"``
    Greedy score/coverage trade-off. The first pick is the top score; every later pick maximises
    ``score_norm + kcenter_weight * dist_norm`` where ``score_norm`` is the score min-max scaled
    to [0, 1] over the available candidates and ``dist_norm`` is the candidate's distance to its
    nearest already-picked structure divided by the largest such distance among the remaining
    candidates (so also in [0, 1]). ``kcenter_weight=0`` reduces to ``"none"``; a very large
    weight approaches pure k-center-greedy (farthest-point) selection.
``"penalty"``
    Local penalisation. Start from ``score_norm``; after each pick subtract
    ``penalty_strength * exp(-d**2 / (2 * penalty_radius**2))`` from every candidate at distance
    ``d`` from the pick, then pick the best adjusted score. Near-duplicates of a picked structure
    (``d << penalty_radius``) lose up to ``penalty_strength`` -- with the default 1.0, the whole
    score range.

Distances
---------
Embeddings (n, d) from a neural backbone are centred and scaled isotropically (one factor for
all dimensions, so the geometry is not distorted) such that distances are in units of the
root-mean-square distance between two random pool members, ``sqrt(2 * sum_k Var_k)``; see
:func:`standardize_embeddings`. A typical pair is thus ~1 apart and ``penalty_radius`` is given
in these units (default :data:`DEFAULT_PENALTY_RADIUS`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mofbalora.acquisition.functions import RngLike, as_vector, make_rng

DiversityRule = Literal["none", "kcenter", "penalty"]
DIVERSITY_RULES: tuple[str, ...] = ("none", "kcenter", "penalty")

DEFAULT_PENALTY_RADIUS = 0.2
"""Default ``penalty_radius`` in units of the RMS pairwise embedding distance of the pool."""


def standardize_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """Centre (n, d) embeddings and scale them by ``sqrt(2 * sum_k Var_k)``.

    Euclidean distances between rows of the result are in units of the root-mean-square
    distance between two random rows of the input (dimensionless). A pool whose rows are all
    identical is only centred.
    """
    x = _check_embeddings(embeddings, None)
    centred = x - x.mean(axis=0, keepdims=True)
    scale = float(np.sqrt(2.0 * centred.var(axis=0).sum()))
    if not scale > 0:
        return centred
    return centred / scale


def _check_embeddings(embeddings: object, n: int | None) -> np.ndarray:
    try:
        x = np.asarray(embeddings, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"embeddings must be a numeric (n, d) array, got {type(embeddings).__name__}"
        ) from exc
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"embeddings must have shape (n, d) with d >= 1, got {x.shape}")
    if n is not None and x.shape[0] != n:
        raise ValueError(f"embeddings have {x.shape[0]} rows but scores has length {n}")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain non-finite values (NaN or inf)")
    return x


def _available_mask(exclude: object, n: int) -> np.ndarray:
    free = np.ones(n, dtype=bool)
    if exclude is None:
        return free
    ex = np.asarray(exclude)
    if ex.size == 0:
        return free
    if ex.dtype == bool:
        if ex.shape != (n,):
            raise ValueError(f"boolean exclude mask must have shape ({n},), got {ex.shape}")
        return ~ex
    if not np.issubdtype(ex.dtype, np.integer):
        raise ValueError(f"exclude must be a boolean mask or integer indices, got dtype {ex.dtype}")
    ex = ex.ravel()
    bad = ex[(ex < 0) | (ex >= n)]
    if bad.size:
        raise ValueError(f"exclude indices must lie in [0, {n}), got {bad[:5].tolist()}")
    free[ex] = False
    return free


def _normalised(scores: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Scores min-max scaled to [0, 1] over the available candidates (all 0 if they are equal)."""
    lo = float(scores[free].min())
    hi = float(scores[free].max())
    if hi > lo:
        return (scores - lo) / (hi - lo)
    return np.zeros_like(scores)


def _argmax_ranked(objective: np.ndarray, free: np.ndarray, rank: np.ndarray) -> int:
    """Index of the best available objective; ties go to the lowest ``rank``."""
    obj = np.where(free, objective, -np.inf)
    best = obj.max()
    ties = np.flatnonzero(free & (obj == best))
    return int(ties[np.argmin(rank[ties])])


def select_batch(
    scores: np.ndarray,
    batch_size: int,
    *,
    embeddings: np.ndarray | None = None,
    diversity: DiversityRule = "none",
    exclude: np.ndarray | None = None,
    penalty_radius: float | None = None,
    penalty_strength: float = 1.0,
    kcenter_weight: float = 1.0,
    rng: RngLike = None,
) -> np.ndarray:
    """Pick ``batch_size`` candidates for DFT, returning their indices in pick order.

    Parameters
    ----------
    scores
        Acquisition scores (n,), higher = more wanted (any units, any sign).
    batch_size
        Number of structures to pick (>= 0, at most the number not excluded).
    embeddings
        (n, d) structure embeddings; required for ``"kcenter"`` and ``"penalty"``.
    diversity
        ``"none"``, ``"kcenter"`` or ``"penalty"``; see the module docstring.
    exclude
        Boolean mask (n,) of candidates not to pick, or integer indices of them.
    penalty_radius
        Gaussian kernel width for ``"penalty"``, in units of the RMS pairwise embedding distance
        (default :data:`DEFAULT_PENALTY_RADIUS`).
    penalty_strength
        Penalty at zero distance, in units of the available score range (>= 0).
    kcenter_weight
        Weight of the normalised distance term for ``"kcenter"`` (>= 0).
    rng
        Generator, integer seed or ``None``. ``None`` breaks equal scores by lowest index; a
        generator or seed breaks them in a (reproducible) random order instead.

    Returns
    -------
    numpy.ndarray
        Integer indices (``batch_size``,), distinct and not excluded, in pick order.
    """
    if diversity not in DIVERSITY_RULES:
        raise ValueError(f"unknown diversity {diversity!r}; choose from {sorted(DIVERSITY_RULES)}")
    s = as_vector(scores, "scores")
    if not np.all(np.isfinite(s)):
        raise ValueError(
            "scores contain non-finite values (NaN or inf); use exclude to drop candidates"
        )
    n = s.shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError(f"batch_size must be an integer, got {batch_size!r}")
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    free = _available_mask(exclude, n)
    n_free = int(free.sum())
    if batch_size > n_free:
        raise ValueError(
            f"batch_size {batch_size} exceeds the {n_free} available candidates "
            f"({n} in total, {n - n_free} excluded)"
        )

    # base order: score descending, then index (or a random key when rng is given)
    key = np.arange(n) if rng is None else make_rng(rng).permutation(n)
    order = np.lexsort((key, -s))
    rank = np.empty(n, dtype=np.intp)
    rank[order] = np.arange(n)

    if diversity == "none":
        return order[free[order]][:batch_size].astype(np.intp)

    if embeddings is None:
        raise ValueError(f"diversity {diversity!r} needs embeddings of shape (n={n}, d)")
    z = standardize_embeddings(_check_embeddings(embeddings, n))
    weight = _finite_nonneg(kcenter_weight, "kcenter_weight")
    strength = _finite_nonneg(penalty_strength, "penalty_strength")
    radius = (
        DEFAULT_PENALTY_RADIUS
        if penalty_radius is None
        else _finite_nonneg(penalty_radius, "penalty_radius")
    )
    if not radius > 0:
        raise ValueError(f"penalty_radius must be > 0, got {penalty_radius!r}")
    if batch_size == 0:
        return np.empty(0, dtype=np.intp)
    score_norm = _normalised(s, free)
    picks: list[int] = []

    if diversity == "kcenter":
        first = _argmax_ranked(score_norm, free, rank)
        picks.append(first)
        free = free.copy()
        free[first] = False
        dmin = np.linalg.norm(z - z[first], axis=1)
        while len(picks) < batch_size:
            dmax = float(dmin[free].max())
            dist_norm = dmin / dmax if dmax > 0 else np.zeros_like(dmin)
            nxt = _argmax_ranked(score_norm + weight * dist_norm, free, rank)
            picks.append(nxt)
            free[nxt] = False
            dmin = np.minimum(dmin, np.linalg.norm(z - z[nxt], axis=1))
    else:  # penalty
        adjusted = score_norm.copy()
        free = free.copy()
        while len(picks) < batch_size:
            nxt = _argmax_ranked(adjusted, free, rank)
            picks.append(nxt)
            free[nxt] = False
            d2 = np.sum((z - z[nxt]) ** 2, axis=1)
            adjusted -= strength * np.exp(-d2 / (2.0 * radius * radius))

    return np.asarray(picks, dtype=np.intp)


def _finite_nonneg(x: object, name: str) -> float:
    try:
        val = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a finite number >= 0, got {x!r}") from exc
    if not np.isfinite(val) or val < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {x!r}")
    return val
