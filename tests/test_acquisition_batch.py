"""Tests for mofbalora.acquisition.batch.select_batch."""

from __future__ import annotations

import numpy as np
import pytest

from mofbalora.acquisition.batch import DIVERSITY_RULES, select_batch, standardize_embeddings


def _two_clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cluster A (indices 0-4) scores highest, cluster B (5-9) slightly lower, background (10-29)
    low."""
    rng = np.random.default_rng(seed)
    a = np.array([5.0, 0.0]) + 0.01 * rng.standard_normal((5, 2))
    b = np.array([-5.0, 0.0]) + 0.01 * rng.standard_normal((5, 2))
    bg = rng.uniform(-3, 3, size=(20, 2)) + np.array([0.0, 8.0])
    emb = np.vstack([a, b, bg])
    scores = np.concatenate(
        [1.0 - 0.01 * np.arange(5), 0.9 - 0.01 * np.arange(5), 0.1 * rng.random(20)]
    )
    return emb, scores, np.arange(5), np.arange(5, 10)


def test_none_takes_top_scores_with_stable_ties() -> None:
    scores = np.array([0.5, 0.9, 0.9, 0.1, 0.9])
    np.testing.assert_array_equal(select_batch(scores, 4), [1, 2, 4, 0])
    # seeded random tie-breaking is reproducible and still respects the score order
    a = select_batch(scores, 3, rng=5)
    np.testing.assert_array_equal(a, select_batch(scores, 3, rng=5))
    assert set(a.tolist()) == {1, 2, 4}


@pytest.mark.parametrize("diversity", DIVERSITY_RULES)
def test_no_duplicates_and_excludes(diversity: str) -> None:
    emb, scores, a, _ = _two_clusters()
    mask = np.zeros(len(scores), dtype=bool)
    mask[[0, 5, 12]] = True
    for exclude in (mask, np.array([0, 5, 12])):
        picks = select_batch(scores, 27, embeddings=emb, diversity=diversity, exclude=exclude)
        assert len(picks) == 27
        assert len(set(picks.tolist())) == 27
        assert not set(picks.tolist()) & {0, 5, 12}
    # every available candidate when the batch is the whole pool
    picks = select_batch(scores, 30, embeddings=emb, diversity=diversity)
    assert sorted(picks.tolist()) == list(range(30))


def test_diversity_spreads_over_clusters() -> None:
    emb, scores, a, b = _two_clusters()
    top = select_batch(scores, 2)
    assert set(top.tolist()) <= set(a.tolist())
    for diversity in ("kcenter", "penalty"):
        picks = select_batch(scores, 2, embeddings=emb, diversity=diversity)
        assert picks[0] == 0  # first pick is the top score
        assert picks[1] in b, diversity
        picks4 = select_batch(scores, 4, embeddings=emb, diversity=diversity)
        assert set(picks4.tolist()) & set(a.tolist()) and set(picks4.tolist()) & set(b.tolist())


def test_kcenter_weight_zero_is_greedy() -> None:
    emb, scores, _, _ = _two_clusters()
    np.testing.assert_array_equal(
        select_batch(scores, 6, embeddings=emb, diversity="kcenter", kcenter_weight=0.0),
        select_batch(scores, 6),
    )


def test_errors() -> None:
    emb, scores, _, _ = _two_clusters()
    with pytest.raises(ValueError, match="exceeds"):
        select_batch(scores, 31)
    with pytest.raises(ValueError, match="exceeds"):
        select_batch(scores, 29, exclude=np.array([1, 2]))
    with pytest.raises(ValueError, match="embeddings"):
        select_batch(scores, 2, diversity="kcenter")
    with pytest.raises(ValueError, match="embeddings"):
        select_batch(scores, 2, embeddings=emb[:5], diversity="penalty")
    with pytest.raises(ValueError) as err:
        select_batch(scores, 2, diversity="dpp")
    assert "'dpp'" in str(err.value) and "kcenter" in str(err.value)
    with pytest.raises(ValueError, match="exclude"):
        select_batch(scores, 2, exclude=np.array([30]))
    with pytest.raises(ValueError, match="penalty_radius"):
        select_batch(scores, 2, embeddings=emb, diversity="penalty", penalty_radius=0.0)
    with pytest.raises(ValueError, match="scores"):
        select_batch(np.array([1.0, np.nan]), 1)
    assert select_batch(scores, 0).shape == (0,)


def test_standardize_embeddings_rms_distance_is_one() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 3)) * np.array([10.0, 1.0, 0.1]) + 7.0
    z = standardize_embeddings(x)
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    assert np.sqrt(d2.mean()) == pytest.approx(1.0, rel=1e-9)
    # isotropic: distance ratios are kept
    dx = np.linalg.norm(x[0] - x[1]) / np.linalg.norm(x[0] - x[2])
    dz = np.linalg.norm(z[0] - z[1]) / np.linalg.norm(z[0] - z[2])
    assert dz == pytest.approx(dx)
