"""The predictive distribution (mofbalora.uq.distribution) against scipy.stats, exact quadrature and
Monte Carlo; Gaussian scores equal to mofbalora.uq.metrics and uncertainty-toolbox; recalibration
in the family."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from mofbalora.uq import distribution as D
from mofbalora.uq import metrics as M
from mofbalora.uq.recalibration import (
    LevelRecalibrator,
    calibrated_predictive,
    compare_recalibrations,
    fit_calibration,
    fit_scale_floor,
)


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    n, t = 6, 5
    mean = rng.normal(2.0, 1.0, n)
    std = rng.uniform(0.1, 1.0, n)
    y = mean + rng.normal(0.0, 1.0, n)
    centers = mean[:, None] + rng.normal(0.0, 0.3, (n, t))
    return mean, std, y, centers


def _crps_by_quadrature(cdf, y: float, lo: float, hi: float, kinks=()) -> float:
    """∫ (F(x) − 1{x ≥ y})² dx, split at y (where the integrand jumps) and at the kernels' centres
    (a Laplace density's kink)."""
    f = lambda x: (cdf(x) - (x >= y)) ** 2  # noqa: E731
    edges = sorted({lo, hi, y, *(float(k) for k in kinks if lo < k < hi)})
    return sum(
        integrate.quad(f, a, b, limit=400, epsabs=1e-13, epsrel=1e-11)[0]
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    )


# -- against scipy.stats ---------------------------------------------------------------------------
def test_gaussian_and_laplace_equal_scipy(small):
    mean, std, y, _ = small
    g, lap = D.GaussianPredictive(mean, std), D.LaplacePredictive(mean, std)
    b = std / math.sqrt(2)
    np.testing.assert_allclose(g.cdf(y), stats.norm.cdf(y, mean, std), rtol=1e-12)
    np.testing.assert_allclose(g.logpdf(y), stats.norm.logpdf(y, mean, std), rtol=1e-12)
    np.testing.assert_allclose(lap.cdf(y), stats.laplace.cdf(y, mean, b), rtol=1e-12)
    np.testing.assert_allclose(lap.logpdf(y), stats.laplace.logpdf(y, mean, b), rtol=1e-12)
    np.testing.assert_allclose(lap.std_ev, stats.laplace.std(mean, b), rtol=1e-12)
    for q in (0.025, 0.3, 0.5, 0.9):
        np.testing.assert_allclose(lap.ppf(q), stats.laplace.ppf(q, mean, b), rtol=1e-12)
        np.testing.assert_allclose(g.ppf(q), stats.norm.ppf(q, mean, std), rtol=1e-12)
    for level in (D.ONE_SIGMA_LEVEL, 0.95):
        np.testing.assert_allclose(
            np.stack(lap.interval(level)), np.stack(stats.laplace.interval(level, mean, b))
        )
        np.testing.assert_allclose(
            np.stack(g.interval(level)), np.stack(stats.norm.interval(level, mean, std))
        )
    # the Laplace's 68.27 % and 95 % half-widths in stds: 0.81 and 2.12 (module docstring)
    lo, hi = D.LaplacePredictive([0.0], [1.0]).interval(D.ONE_SIGMA_LEVEL)
    assert hi[0] == pytest.approx(0.8117, abs=1e-4)
    assert D.LaplacePredictive([0.0], [1.0]).interval(0.95)[1][0] == pytest.approx(2.1183, abs=1e-4)


def test_mixture_equals_the_average_of_its_kernels(small):
    mean, std, y, centers = small
    for kernel, dist in (
        ("gaussian", stats.norm(0.0, 1.0)),
        ("laplace", stats.laplace(0.0, 1 / math.sqrt(2))),
    ):
        mix = D.MixturePredictive(centers, std, kernel)
        comps_cdf = dist.cdf((y[:, None] - centers) / std[:, None]).mean(1)
        comps_pdf = (dist.pdf((y[:, None] - centers) / std[:, None]) / std[:, None]).mean(1)
        np.testing.assert_allclose(mix.cdf(y), comps_cdf, rtol=1e-12)
        np.testing.assert_allclose(mix.logpdf(y), np.log(comps_pdf), rtol=1e-10)
        np.testing.assert_allclose(mix.mean_ev, centers.mean(1))
        np.testing.assert_allclose(mix.std_ev, np.sqrt(centers.var(1) + std**2))
        for q in (0.02, 0.5, 0.84):
            np.testing.assert_allclose(mix.cdf(mix.ppf(q)), q, atol=1e-10)


def test_a_mixture_of_one_draw_is_its_kernel(small):
    mean, std, y, _ = small
    one = D.MixturePredictive(mean[:, None], std, "laplace")
    lap = D.LaplacePredictive(mean, std)
    for name in ("cdf", "logpdf", "crps"):
        np.testing.assert_allclose(
            getattr(one, name)(y), getattr(lap, name)(y), rtol=1e-10, atol=1e-12
        )
    np.testing.assert_allclose(np.stack(one.interval(0.9)), np.stack(lap.interval(0.9)), atol=1e-10)


# -- CRPS: closed forms against exact quadrature and Monte Carlo -----------------------------------
@pytest.mark.parametrize("family", ["gaussian", "laplace", "mixture-gaussian", "mixture-laplace"])
def test_crps_closed_forms_equal_quadrature(small, family):
    mean, std, y, centers = small
    if family.startswith("mixture"):
        dist = D.MixturePredictive(centers, std, family.split("-")[1])
    else:
        dist = D.make_predictive(family, mean, std)
    closed = dist.crps(y)
    for i in range(len(y)):
        one = dist.subset([i])
        lo, hi = float(one.ppf(1e-12)[0]) - 1.0, float(one.ppf(1 - 1e-12)[0]) + 1.0
        kinks = centers[i] if family.startswith("mixture") else [mean[i]]
        exact = _crps_by_quadrature(
            lambda x, one=one: float(one.cdf(np.array([x]))[0]), float(y[i]), lo, hi, kinks
        )
        assert closed[i] == pytest.approx(exact, rel=1e-7, abs=1e-9), (family, i)


@pytest.mark.parametrize("family", ["laplace", "mixture-laplace"])
def test_crps_equals_monte_carlo(small, family):
    mean, std, y, centers = small
    dist = (
        D.LaplacePredictive(mean, std)
        if family == "laplace"
        else D.MixturePredictive(centers, std, "laplace")
    )
    rng = np.random.default_rng(1)
    x, x2 = dist.sample(400_000, rng), dist.sample(400_000, rng)
    mc = np.abs(x - y[:, None]).mean(1) - 0.5 * np.abs(x - x2).mean(1)
    np.testing.assert_allclose(dist.crps(y), mc, rtol=0.01)
    np.testing.assert_allclose(x.std(1), dist.std_ev, rtol=0.01)


# -- Gaussian: the same numbers as before, and as uncertainty-toolbox ------------------------------
@pytest.fixture(scope="module")
def overconfident():
    rng = np.random.default_rng(0)
    n = 400
    y_true = rng.normal(2.0, 1.0, n)
    y_std = rng.uniform(0.1, 1.0, n)
    return y_true + 1.5 * y_std * rng.normal(size=n), y_std, y_true


def test_gaussian_scores_equal_the_metrics_module_and_uncertainty_toolbox(overconfident):
    p, s, t = overconfident
    g = D.GaussianPredictive(p, s)
    before = M.all_metrics(p, s, t)
    now = D.all_metrics(g, t)
    assert {k: now[k] for k in before} == before and now["nll_gaussian"] == before["nll"]
    assert D.coverage(g, t, 0.95) == pytest.approx(M.coverage(p, s, t, 0.95), abs=1e-12)
    uct_cal = pytest.importorskip("uncertainty_toolbox.metrics_calibration")
    uct_score = pytest.importorskip("uncertainty_toolbox.metrics_scoring_rule")
    assert D.miscalibration_area(g, t) == pytest.approx(
        uct_cal.miscalibration_area(p, s, t), abs=1e-12
    )
    assert D.rms_calibration_error(g, t) == pytest.approx(
        uct_cal.root_mean_squared_calibration_error(p, s, t), abs=1e-12
    )
    assert D.nll(g, t) == pytest.approx(uct_score.nll_gaussian(p, s, t), rel=1e-12)
    assert D.crps(g, t) == pytest.approx(uct_score.crps_gaussian(p, s, t), rel=1e-12)
    # the family-generic calibration curve (central levels) gives the same curve for a Gaussian
    expected, observed = M.calibration_curve(p, s, t)
    levels = np.sort(g.central_level(t))
    np.testing.assert_allclose(
        np.searchsorted(levels, expected, side="right") / levels.size, observed
    )


# -- the case: a perfectly specified Laplace model, scored in each family ------------------
def test_a_well_specified_laplace_model_is_calibrated_only_in_its_family():
    rng = np.random.default_rng(3)
    n = 200_000
    mean, std = rng.uniform(0.5, 4.0, n), rng.uniform(0.05, 0.6, n)
    y = mean + rng.laplace(0.0, 1.0, n) * std / math.sqrt(2)
    lap, gauss = (
        D.all_metrics(D.LaplacePredictive(mean, std), y),
        D.all_metrics(D.GaussianPredictive(mean, std), y),
    )
    assert lap["coverage_68"] == pytest.approx(D.ONE_SIGMA_LEVEL, abs=0.005)
    assert lap["coverage_95"] == pytest.approx(0.95, abs=0.003)
    assert lap["miscalibration_area"] < 0.005
    # scored as a Gaussian: P(|X| <= std) = 1 - e^-√2 = 0.757, P(|X| <= 1.96 std) = 1 - e^(-1.96·√2)
    # = 0.938
    assert gauss["coverage_68"] == pytest.approx(1 - math.exp(-math.sqrt(2)), abs=0.005)
    assert gauss["coverage_95"] == pytest.approx(1 - math.exp(-1.96 * math.sqrt(2)), abs=0.003)
    assert gauss["miscalibration_area"] > 0.06
    # its own NLL is the lower (the true density), and the Gaussian NLL is reported beside it
    assert lap["nll"] < gauss["nll"] and lap["nll_gaussian"] == pytest.approx(gauss["nll"])
    expected_nll = np.mean(np.log(2 * std / math.sqrt(2))) + 1.0  # E[log 2b + |X|/b] = E log 2b + 1
    assert lap["nll"] == pytest.approx(expected_nll, abs=0.01)


# -- recalibration in the family -------------------------------------------------------------------
def _laplace_data(rng, n, a, b):
    mean, std = rng.uniform(0.5, 4.0, n), rng.uniform(0.05, 0.6, n)
    true_std = np.sqrt((a * std) ** 2 + b**2)
    return mean, std, mean + rng.laplace(0.0, 1.0, n) * true_std / math.sqrt(2)


def test_fit_scale_floor_recovers_a_laplace_factor_and_floor():
    rng = np.random.default_rng(4)
    mean, std, y = _laplace_data(rng, 40_000, 1.4, 0.15)
    a, b = fit_scale_floor(D.LaplacePredictive(mean, std), y)
    assert a == pytest.approx(1.4, rel=0.03) and b == pytest.approx(0.15, rel=0.08)
    # a Gaussian fit on the same data (the old recalibration) reaches neither the shape nor the
    # coverage
    g = D.GaussianPredictive(mean, std)
    ga, gb = fit_scale_floor(g, y)
    mean2, std2, y2 = _laplace_data(rng, 40_000, 1.4, 0.15)
    lap_test = D.LaplacePredictive(mean2, std2).rescaled(a, b)
    gauss_test = D.GaussianPredictive(mean2, std2).rescaled(ga, gb)
    assert D.miscalibration_area(lap_test, y2) < 0.01 < D.miscalibration_area(gauss_test, y2)
    assert abs(D.coverage(lap_test, y2, 0.95) - 0.95) < 0.005


def test_fit_calibration_records_the_family_and_applies_only_to_it():
    rng = np.random.default_rng(5)
    mean, std, y = _laplace_data(rng, 5000, 1.2, 0.1)
    lap = D.LaplacePredictive(mean, std)
    cal = fit_calibration(lap, y, n_samples=32, fitted_on="validation")
    assert cal["family"] == "laplace" and cal["method"] == "scale_floor" and cal["n_samples"] == 32
    fitted = calibrated_predictive(lap, cal)
    assert isinstance(fitted, D.LaplacePredictive)
    np.testing.assert_allclose(
        fitted.std_ev, np.sqrt((cal["std_factor"] * std) ** 2 + cal["std_floor_ev"] ** 2)
    )
    with pytest.raises(ValueError, match="fitted for the 'laplace' family"):
        calibrated_predictive(D.GaussianPredictive(mean, std), cal)
    # a calibration written before families is a Gaussian one
    legacy = {"method": "scale_floor", "std_factor": 1.1, "std_floor_ev": 0.2}
    assert D.family_of_calibration(legacy) == "gaussian"
    assert isinstance(
        calibrated_predictive(D.GaussianPredictive(mean, std), legacy), D.GaussianPredictive
    )
    mix = D.MixturePredictive(mean[:, None] + rng.normal(0, 0.01, (len(mean), 4)), std, "laplace")
    cal_mix = fit_calibration(mix, y)
    assert cal_mix["family"] == "mixture" and cal_mix["kernel"] == "laplace"
    rescaled = mix.rescaled(cal_mix["std_factor"], cal_mix["std_floor_ev"])
    np.testing.assert_allclose(
        rescaled.std_ev,
        np.sqrt((cal_mix["std_factor"] * mix.std_ev) ** 2 + cal_mix["std_floor_ev"] ** 2),
    )


@pytest.mark.parametrize("method", ["isotonic", "conformal"])
def test_level_recalibration_in_the_family_covers_what_it_says(method):
    rng = np.random.default_rng(6)
    mean, std, y = _laplace_data(rng, 4000, 1.5, 0.2)  # overconfident as given
    mean2, std2, y2 = _laplace_data(rng, 20_000, 1.5, 0.2)
    val, test = D.LaplacePredictive(mean, std), D.LaplacePredictive(mean2, std2)
    recal = LevelRecalibrator(method).fit(val, y)
    for level in (D.ONE_SIGMA_LEVEL, 0.9, 0.95):
        assert recal.coverage(test, y2, level) == pytest.approx(level, abs=0.015)
        lo, hi = recal.interval(test, level)
        assert np.mean((y2 >= lo) & (y2 <= hi)) == pytest.approx(
            recal.coverage(test, y2, level), abs=1e-12
        )
    expected, observed = recal.calibration_curve(test, y2)
    assert M.miscalibration_area_from_curve(expected, observed) < 0.01
    with pytest.raises(ValueError, match="unknown level recalibration"):
        LevelRecalibrator("quantile")


def test_compare_recalibrations_reports_each_method():
    rng = np.random.default_rng(7)
    mean, std, y = _laplace_data(rng, 3000, 1.3, 0.1)
    mean2, std2, y2 = _laplace_data(rng, 3000, 1.3, 0.1)
    out = compare_recalibrations(
        D.LaplacePredictive(mean, std), y, D.LaplacePredictive(mean2, std2), y2
    )
    assert list(out) == ["none", "scale_floor", "isotonic", "conformal"]
    assert out["scale_floor"]["miscalibration_area"] < out["none"]["miscalibration_area"]
    assert out["scale_floor"]["nll"] < out["none"]["nll"]
    assert all(
        abs(out[m]["coverage_95"] - 0.95) < 0.02 for m in ("scale_floor", "isotonic", "conformal")
    )


# -- interval columns ------------------------------------------------------------------------------
def test_predictive_intervals_for_a_table():
    mean, std = np.array([0.05, 2.0, 3.5]), np.array([0.2, 0.3, 0.1])
    cal = {"method": "scale_floor", "family": "laplace", "std_factor": 1.2, "std_floor_ev": 0.1}
    cols = D.predictive_intervals(mean, std, cal)
    assert list(cols) == [
        "bandgap_lo68_ev",
        "bandgap_hi68_ev",
        "bandgap_lo95_ev",
        "bandgap_hi95_ev",
    ]
    b = np.sqrt((1.2 * std) ** 2 + 0.01) / math.sqrt(2)
    lo95, hi95 = stats.laplace.interval(0.95, mean, b)
    np.testing.assert_allclose(cols["bandgap_hi95_ev"], hi95)
    np.testing.assert_allclose(cols["bandgap_lo95_ev"], np.maximum(lo95, 0.0))
    # a gap is >= 0 eV
    assert cols["bandgap_lo95_ev"][0] == 0.0 and cols["bandgap_lo68_ev"][0] == 0.0
    assert np.all(cols["bandgap_lo95_ev"] <= cols["bandgap_lo68_ev"]) and np.all(
        cols["bandgap_hi68_ev"] <= hi95
    )
    # one row at a time gives the same numbers; a legacy calibration is Gaussian (mean ± 1.96 σ')
    one = D.predictive_intervals(2.0, 0.3, cal)
    assert one["bandgap_hi95_ev"][0] == pytest.approx(cols["bandgap_hi95_ev"][1])
    legacy = D.predictive_intervals(
        2.0, 0.3, {"std_factor": 1.0, "std_floor_ev": 0.0}, clip_at_zero=False
    )
    assert legacy["bandgap_hi68_ev"][0] == pytest.approx(2.3) and legacy["bandgap_lo95_ev"][
        0
    ] == pytest.approx(2.0 - 1.959964 * 0.3, abs=1e-6)
    assert list(D.predictive_intervals(2.0, 0.3, None, levels=[0.5])) == [
        "bandgap_lo50_ev",
        "bandgap_hi50_ev",
    ]
    with pytest.raises(ValueError, match="fitted for the 'laplace' family, not 'gaussian'"):
        D.predictive_intervals(2.0, 0.3, cal, family="gaussian")


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="unknown predictive family 'student'"):
        D.make_predictive("student", [1.0], [0.1])
    with pytest.raises(ValueError, match="needs the draws"):
        D.make_predictive("mixture", [1.0], [0.1])
    with pytest.raises(ValueError, match="unknown mixture kernel"):
        D.MixturePredictive([[1.0, 1.1]], [0.1], "cauchy")
    with pytest.raises(ValueError, match="std_ev must be >= 0"):
        D.LaplacePredictive([1.0, 2.0], [0.1, -0.1])
    with pytest.raises(ValueError, match="3 values for a predictive of 2"):
        D.nll(D.LaplacePredictive([1.0, 2.0], [0.1, 0.1]), [1.0, 2.0, 3.0])


# -- a Prediction states its distribution; evaluation scores in the model's family -----------------
def _prediction(rng, n=300, t=8):
    from mofbalora.prediction import Prediction

    samples = rng.uniform(0.5, 4.0, (n, 1)) + rng.normal(0.0, 0.02, (n, t))
    alea = rng.uniform(0.1, 0.5, n)
    epi = samples.std(1, ddof=1)
    return Prediction(
        samples.mean(1), np.sqrt(epi**2 + alea**2), samples, epi, alea, np.zeros((n, 2), np.float32)
    )


def test_prediction_predictive_and_intervals():
    rng = np.random.default_rng(8)
    pred = _prediction(rng)
    lap = pred.predictive(family="laplace")
    assert isinstance(lap, D.LaplacePredictive) and np.allclose(lap.std_ev, pred.std_ev)
    mix = pred.predictive(family="mixture")
    assert isinstance(mix, D.MixturePredictive) and np.allclose(
        mix.kernel_std_ev, pred.aleatoric_std_ev
    )
    # no calibration, no family: Gaussian
    assert isinstance(pred.predictive(), D.GaussianPredictive)
    cal = {"method": "scale_floor", "family": "laplace", "std_factor": 1.1, "std_floor_ev": 0.05}
    fitted = pred.predictive(cal)
    np.testing.assert_allclose(fitted.std_ev, np.sqrt((1.1 * pred.std_ev) ** 2 + 0.05**2))
    cols = pred.intervals(cal)
    lo, hi = fitted.interval(0.95)
    np.testing.assert_allclose(cols["bandgap_hi95_ev"], hi)
    np.testing.assert_allclose(cols["bandgap_lo95_ev"], np.maximum(lo, 0.0))
    from mofbalora.prediction import Prediction

    det = Prediction(
        pred.mean_ev, pred.std_ev, pred.samples_ev, pred.epistemic_std_ev, None, pred.embedding
    )
    with pytest.raises(ValueError, match="aleatoric head"):
        det.predictive(family="mixture")


def test_evaluate_scores_in_the_family_of_the_models_calibration():
    from mofbalora.evaluate import evaluate_inputs, metrics_from_prediction
    from mofbalora.prediction import recalibrate

    rng = np.random.default_rng(9)
    pred = _prediction(rng)
    y = pred.mean_ev + rng.laplace(0.0, 1.0, len(pred)) * pred.std_ev / math.sqrt(2)
    gauss, lap = metrics_from_prediction(pred, y, 8), metrics_from_prediction(pred, y, 8, "laplace")
    assert gauss["family"] == "gaussian" and lap["family"] == "laplace"
    assert gauss["nll"] == pytest.approx(M.gaussian_nll(pred.mean_ev, pred.std_ev, y))
    assert lap["nll"] == pytest.approx(D.nll(D.LaplacePredictive(pred.mean_ev, pred.std_ev), y))
    assert lap["nll_gaussian"] == pytest.approx(gauss["nll"]) and lap["mae_ev"] == gauss["mae_ev"]

    class Stub:
        calibration = {
            "method": "scale_floor",
            "family": "laplace",
            "std_factor": 1.0,
            "std_floor_ev": 0.01,
        }

        def predict_inputs(self, inputs, n_samples, seed):
            return pred

        def calibrated_std(self, std):
            return recalibrate(self.calibration, std)

    metrics, table = evaluate_inputs(
        Stub(), [f"s{i}" for i in range(len(y))], [None] * len(y), y, n_samples=8
    )
    assert metrics["family"] == "laplace" and metrics["nll"] == pytest.approx(lap["nll"])
    assert metrics["calibrated"]["coverage_95"] == pytest.approx(
        D.coverage(pred.predictive(Stub.calibration), y, 0.95)
    )
    assert {"bandgap_lo68_ev", "bandgap_hi68_ev", "bandgap_lo95_ev", "bandgap_hi95_ev"} <= set(
        table.columns
    )
