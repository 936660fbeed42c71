"""Tests for mofbalora.acquisition.functions: the math of each acquisition on hand-made inputs
(eV)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from mofbalora.acquisition.functions import (
    ACQUISITIONS,
    acquisition_scores,
    cost_aware,
    dft_cost,
    expected_window_distance,
    expected_window_improvement,
    window_distance,
)


def _phi(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _Phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _gauss_expectation(f, mu: float, sd: float) -> float:
    """E[f(Y)] for Y ~ N(mu, sd^2) by quadrature (independent of the closed forms under test)."""
    val, _ = integrate.quad(
        lambda y: f(y) * _phi((y - mu) / sd) / sd, mu - 12 * sd, mu + 12 * sd, limit=200
    )
    return val


MEAN = np.array([1.0, 2.0, 3.0, 2.0])
STD = np.array([0.5, 0.1, 0.2, 1.0])


def test_registry_names() -> None:
    assert set(ACQUISITIONS) == {
        "std",
        "epistemic",
        "ucb",
        "lcb",
        "lcb_epistemic",
        "target",
        "ei",
        "thompson",
        "mean",
        "random",
    }


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError) as err:
        acquisition_scores("bald", MEAN, STD)
    msg = str(err.value)
    assert "'bald'" in msg
    for name in ACQUISITIONS:
        assert name in msg


def test_std_ucb_lcb() -> None:
    np.testing.assert_allclose(acquisition_scores("std", MEAN, STD), STD)
    ucb = acquisition_scores("ucb", MEAN, STD, kappa=2.0)
    lcb = acquisition_scores("lcb", MEAN, STD, kappa=2.0)
    np.testing.assert_allclose(ucb, [2.0, 2.2, 3.4, 4.0])
    np.testing.assert_allclose(lcb, [0.0, -1.8, -2.6, 0.0])
    # ucb favours the large, uncertain gap; lcb the small ones (optimistically small)
    assert int(np.argmax(ucb)) == 3
    assert lcb[0] > lcb[1] > lcb[2]
    # at equal mean, more uncertainty raises both
    assert ucb[3] > ucb[1] and lcb[3] > lcb[1]


def test_target_probability_by_hand() -> None:
    # mean at the window centre, half-width 0.5 eV, std 0.5 eV -> P(|Z| <= 1) = erf(1/sqrt 2)
    p = acquisition_scores("target", [2.0], [0.5], target_ev=(1.5, 2.5))
    assert p[0] == pytest.approx(math.erf(1.0 / math.sqrt(2.0)), abs=1e-12)
    # off-centre value against Phi differences
    p2 = acquisition_scores("target", [1.0], [0.4], target_ev=(1.5, 2.5))
    assert p2[0] == pytest.approx(_Phi(1.5 / 0.4) - _Phi(0.5 / 0.4), abs=1e-12)
    # zero std: indicator
    p0 = acquisition_scores("target", [2.0, 3.0], [0.0, 0.0], target_ev=(1.5, 2.5))
    np.testing.assert_array_equal(p0, [1.0, 0.0])


def test_target_needs_window_and_valid_window() -> None:
    with pytest.raises(ValueError, match="target_ev"):
        acquisition_scores("target", MEAN, STD)
    with pytest.raises(ValueError, match="lo < hi"):
        acquisition_scores("target", MEAN, STD, target_ev=(2.0, 1.0))


def test_ei_closed_form_by_hand() -> None:
    mu, sd, best = 1.2, 0.3, 1.0
    z = (best - mu) / sd
    expected = (best - mu) * _Phi(z) + sd * _phi(z)
    ei = acquisition_scores("ei", [mu], [sd], best_ev=best)
    assert ei[0] == pytest.approx(expected, rel=1e-12)
    assert ei[0] == pytest.approx(
        _gauss_expectation(lambda y: max(best - y, 0.0), mu, sd), rel=1e-6
    )
    # xi shifts the incumbent
    ei_xi = acquisition_scores("ei", [mu], [sd], best_ev=best, xi=0.1)
    z2 = (best - 0.1 - mu) / sd
    assert ei_xi[0] == pytest.approx((best - 0.1 - mu) * _Phi(z2) + sd * _phi(z2), rel=1e-12)
    # goal max mirrors it
    ei_max = acquisition_scores("ei", [mu], [sd], best_ev=1.5, goal="max")
    zm = (mu - 1.5) / sd
    assert ei_max[0] == pytest.approx((mu - 1.5) * _Phi(zm) + sd * _phi(zm), rel=1e-12)


def test_ei_nonnegative_and_increasing_in_std() -> None:
    stds = np.linspace(0.0, 2.0, 21)
    ei = acquisition_scores("ei", np.full(21, 1.5), stds, best_ev=1.0)
    assert np.all(ei >= 0)
    assert ei[0] == 0.0  # certain and worse than the incumbent
    assert np.all(np.diff(ei) > 0)
    rng = np.random.default_rng(0)
    ei_rand = acquisition_scores("ei", rng.normal(2, 1, 200), rng.uniform(0, 1, 200), best_ev=0.5)
    assert np.all(ei_rand >= 0)


def test_ei_needs_incumbent_or_window() -> None:
    with pytest.raises(ValueError, match="best_ev"):
        acquisition_scores("ei", MEAN, STD)


@pytest.mark.parametrize("mu,sd", [(1.0, 0.4), (2.0, 0.3), (3.1, 0.5), (2.6, 0.05)])
def test_window_ei_matches_quadrature(mu: float, sd: float) -> None:
    lo, hi, best = 1.5, 2.5, 3.0  # incumbent 0.5 eV above the window
    c = window_distance(best, lo, hi) - 0.1
    ei = acquisition_scores("ei", [mu], [sd], target_ev=(lo, hi), best_ev=best, xi=0.1)
    ref = _gauss_expectation(lambda y: max(c - float(window_distance(y, lo, hi)), 0.0), mu, sd)
    assert ei[0] == pytest.approx(ref, abs=1e-7)
    assert ei[0] >= 0


def test_window_ei_special_cases() -> None:
    # incumbent inside the window: nothing left to improve
    np.testing.assert_array_equal(expected_window_improvement(MEAN, STD, 1.5, 2.5, 2.0), 0.0)
    # zero std: deterministic improvement
    val = expected_window_improvement(np.array([2.8, 2.0]), np.zeros(2), 1.5, 2.5, 3.5)
    np.testing.assert_allclose(val, [0.7, 1.0])
    # no incumbent: -E[distance]; quadrature check
    s = acquisition_scores("ei", [3.0], [0.4], target_ev=(1.5, 2.5))
    ref = _gauss_expectation(lambda y: float(window_distance(y, 1.5, 2.5)), 3.0, 0.4)
    assert s[0] == pytest.approx(-ref, abs=1e-7)
    assert expected_window_distance(np.array([2.0]), np.array([0.0]), 1.5, 2.5)[0] == 0.0


def test_thompson_reproducible_and_gaussian() -> None:
    a = acquisition_scores("thompson", MEAN, STD, rng=7)
    b = acquisition_scores("thompson", MEAN, STD, rng=7)
    c = acquisition_scores("thompson", MEAN, STD, rng=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # goal min: score is minus the draw, draw = mean + std * N(0, 1)
    z = np.random.default_rng(7).standard_normal(4)
    np.testing.assert_allclose(a, -(MEAN + STD * z))
    np.testing.assert_allclose(
        acquisition_scores("thompson", MEAN, STD, rng=7, goal="max"), MEAN + STD * z
    )


def test_thompson_with_samples_picks_a_column_value() -> None:
    samples = np.arange(20, dtype=float).reshape(4, 5)
    s = acquisition_scores("thompson", MEAN, STD, samples, rng=3, goal="max")
    for i in range(4):
        assert s[i] in samples[i]
    np.testing.assert_array_equal(
        s, acquisition_scores("thompson", MEAN, STD, samples, rng=3, goal="max")
    )
    # window goal: minus the distance of the drawn value
    sw = acquisition_scores("thompson", MEAN, STD, samples, rng=3, target_ev=(5.0, 6.0))
    np.testing.assert_allclose(sw, -window_distance(s, 5.0, 6.0))
    with pytest.raises(ValueError, match="samples_ev"):
        acquisition_scores("thompson", MEAN, STD, samples[:, :0], rng=3)


def test_mean_and_random() -> None:
    np.testing.assert_allclose(acquisition_scores("mean", MEAN, STD), -MEAN)
    np.testing.assert_allclose(acquisition_scores("mean", MEAN, STD, goal="max"), MEAN)
    np.testing.assert_allclose(
        acquisition_scores("mean", MEAN, STD, target_ev=(1.5, 2.5)), [-0.5, 0, -0.5, 0]
    )
    r1 = acquisition_scores("random", MEAN, STD, rng=11)
    r2 = acquisition_scores("random", MEAN, STD, rng=np.random.default_rng(11))
    np.testing.assert_array_equal(r1, r2)
    assert np.all((r1 >= 0) & (r1 < 1))


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="std_ev"):
        acquisition_scores("std", MEAN, -STD)
    with pytest.raises(ValueError, match="length"):
        acquisition_scores("std", MEAN, STD[:2])
    with pytest.raises(ValueError, match="goal"):
        acquisition_scores("mean", MEAN, STD, goal="smallest")
    with pytest.raises(ValueError, match="kappa"):
        acquisition_scores("ucb", MEAN, STD, kappa=-1)
    with pytest.raises(ValueError, match="rng"):
        acquisition_scores("random", MEAN, STD, rng="seed")


def test_dft_cost_cubic() -> None:
    cost = dft_cost(n_atoms=[50, 100, 200])
    assert cost[1] == pytest.approx(1.0)  # median normalised to 1
    assert cost[2] / cost[1] == pytest.approx(8.0)
    assert cost[0] / cost[1] == pytest.approx(1 / 8.0)
    sq = dft_cost(n_electrons=[10, 20, 30, 40], exponent=2.0)
    assert np.median(sq) == pytest.approx(1.0)
    assert sq[3] / sq[0] == pytest.approx(16.0)
    with pytest.raises(ValueError, match="exactly one"):
        dft_cost()
    with pytest.raises(ValueError, match="exactly one"):
        dft_cost(n_atoms=[1], n_electrons=[2])
    with pytest.raises(ValueError, match="n_atoms"):
        dft_cost(n_atoms=[10, 0])


def test_cost_aware() -> None:
    cost = np.array([1.0, 2.0, 1.0])
    np.testing.assert_allclose(cost_aware(np.array([1.0, 4.0, 2.0]), cost), [1.0, 2.0, 2.0])
    # negative scores: shifted positive, order kept at equal cost, all values > 0
    neg = cost_aware(np.array([-3.0, -1.0, -2.0]), np.ones(3))
    assert np.all(neg > 0)
    assert list(np.argsort(-neg)) == [1, 2, 0]
    # a cheap slightly-worse candidate can beat an expensive better one
    mixed = cost_aware(np.array([-1.0, -1.1, -5.0]), np.array([10.0, 1.0, 1.0]))
    assert int(np.argmax(mixed)) == 1
    # equal scores: cheapest first
    assert int(np.argmax(cost_aware(np.zeros(3), np.array([3.0, 1.0, 2.0])))) == 1
    with pytest.raises(ValueError, match="cost"):
        cost_aware(np.ones(2), np.array([1.0, 0.0]))


def test_epistemic_ranks_by_the_draws_spread_not_the_predicted_noise():
    from mofbalora.acquisition import acquisition_scores

    rng = np.random.default_rng(0)
    # candidate 0: wide draws, little predicted noise; candidate 1: narrow draws, large predicted
    # noise
    samples = np.stack([rng.normal(1.0, 0.5, 4000), rng.normal(1.0, 0.05, 4000)])
    aleatoric = np.array([0.1, 2.0])
    std = np.sqrt(samples.std(1, ddof=1) ** 2 + aleatoric**2)
    mean = samples.mean(1)
    by_std = acquisition_scores("std", mean, std, samples)
    by_epistemic = acquisition_scores("epistemic", mean, std, samples)
    assert by_std.argmax() == 1 and by_epistemic.argmax() == 0
    # the 16-84 % half-width of a normal is its sd
    np.testing.assert_allclose(by_epistemic, [0.5, 0.05], rtol=0.06)
    with pytest.raises(ValueError, match="T >= 2 stochastic passes, got none"):
        acquisition_scores("epistemic", mean, std)
    with pytest.raises(ValueError, match="got T = 1"):
        acquisition_scores("epistemic", mean, std, samples[:, :1])
