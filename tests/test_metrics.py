"""Tests for mofbalora.uq: metrics (hand-computed and against uncertainty_toolbox),
recalibration, plots."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mofbalora.uq import metrics as M
from mofbalora.uq import plots as P
from mofbalora.uq.recalibration import (
    IsotonicStdRecalibrator,
    fit_std_scale,
    recalibrated_metrics,
)

# --------------------------------------------------------------------------------------------
# A 4-point example worked out by hand (band gaps in eV)
#
#   y_true = [1.0, 2.0, 3.0, 4.0]
#   y_pred = [1.5, 2.0, 2.0, 5.0]     error = pred - true = [0.5, 0.0, -1.0, 1.0]
#   y_std  = [0.5, 0.1, 2.0, 1.0]     |z| = |error|/std    = [1.0, 0.0, 0.5, 1.0]
# --------------------------------------------------------------------------------------------
Y_TRUE = np.array([1.0, 2.0, 3.0, 4.0])
Y_PRED = np.array([1.5, 2.0, 2.0, 5.0])
Y_STD = np.array([0.5, 0.1, 2.0, 1.0])


def test_accuracy_by_hand() -> None:
    # MAE = (0.5 + 0 + 1 + 1)/4 = 0.625
    assert M.mae(Y_PRED, Y_STD, Y_TRUE) == pytest.approx(0.625)
    # RMSE = sqrt((0.25 + 0 + 1 + 1)/4) = sqrt(0.5625) = 0.75
    assert M.rmse(Y_PRED, Y_STD, Y_TRUE) == pytest.approx(0.75)
    # mean(true) = 2.5; SS_tot = 2.25 + 0.25 + 0.25 + 2.25 = 5; SS_res = 2.25; R2 = 1 - 0.45
    assert M.r2(Y_PRED, Y_STD, Y_TRUE) == pytest.approx(0.55)
    # constant y_true: R2 undefined
    assert math.isnan(M.r2([1.0, 2.0], [1.0, 1.0], [3.0, 3.0]))


def test_nll_by_hand() -> None:
    # per point 0.5*log(2pi) + log(std) + z^2/2; mean(z^2) = (1 + 0 + 0.25 + 1)/4 = 0.5625,
    # mean(log std) = log(0.5*0.1*2*1)/4 = log(0.1)/4
    expected = 0.5 * math.log(2 * math.pi) + math.log(0.1) / 4 + 0.5625 / 2
    assert M.gaussian_nll(Y_PRED, Y_STD, Y_TRUE) == pytest.approx(expected)
    assert expected == pytest.approx(0.624543, abs=1e-6)


def test_crps_by_hand() -> None:
    # z = 0, std = 1: CRPS = 2*phi(0) - 1/sqrt(pi) = (sqrt(2) - 1)/sqrt(pi) = 0.2336950
    assert M.crps_gaussian([0.0], [1.0], [0.0]) == pytest.approx(
        (math.sqrt(2) - 1) / math.sqrt(math.pi)
    )
    # z = 1, std = 2 (error 2 eV): 2*(1*(2*Phi(1) - 1) + 2*phi(1) - 1/sqrt(pi))
    #   = 2*(0.6826895 + 0.4839414 - 0.5641896) = 2*0.6024413 = 1.2048826
    assert M.crps_gaussian([0.0], [2.0], [2.0]) == pytest.approx(1.2048826, abs=1e-6)
    # mean over points, and symmetric in the sign of the error
    assert M.crps_gaussian([0.0, 4.0], [2.0, 2.0], [2.0, 2.0]) == pytest.approx(1.2048826, abs=1e-6)
    # tends to |error| as std -> 0
    assert M.crps_gaussian([0.0], [1e-9], [0.7]) == pytest.approx(0.7, abs=1e-6)


def test_coverage_by_hand() -> None:
    # |z| = [1, 0, 0.5, 1]
    # level 0.2  -> z = 0.2533: only |z| = 0 inside           -> 1/4
    # level 0.5  -> z = 0.6745: |z| = 0 and 0.5 inside         -> 2/4
    # level 0.95 -> z = 1.9600: all inside                     -> 4/4
    assert M.coverage(Y_PRED, Y_STD, Y_TRUE, 0.2) == pytest.approx(0.25)
    assert M.coverage(Y_PRED, Y_STD, Y_TRUE, 0.5) == pytest.approx(0.5)
    assert M.coverage(Y_PRED, Y_STD, Y_TRUE, 0.95) == pytest.approx(1.0)
    assert M.central_interval_z(0.95) == pytest.approx(1.959964, abs=1e-6)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="level"):
            M.coverage(Y_PRED, Y_STD, Y_TRUE, bad)


def test_ence_by_hand() -> None:
    # sorted by std: (std 0.1, err 0), (0.5, 0.5) | (1.0, 1.0), (2.0, -1.0)
    # bin 1: RMV = sqrt((0.01 + 0.25)/2) = sqrt(0.13), RMSE = sqrt(0.25/2) = sqrt(0.125)
    # bin 2: RMV = sqrt((1 + 4)/2) = sqrt(2.5),        RMSE = sqrt((1 + 1)/2) = 1
    b1 = abs(math.sqrt(0.13) - math.sqrt(0.125)) / math.sqrt(0.13)
    b2 = abs(math.sqrt(2.5) - 1.0) / math.sqrt(2.5)
    assert M.ence(Y_PRED, Y_STD, Y_TRUE, n_bins=2) == pytest.approx((b1 + b2) / 2)
    assert (b1 + b2) / 2 == pytest.approx(0.193482, abs=1e-6)
    # more bins than points: one point per bin, |std - |err|| / std
    #   = [|0.5-0.5|/0.5, |0.1-0|/0.1, |2-1|/2, |1-1|/1] = [0, 1, 0.5, 0] -> mean 0.375
    assert M.ence(Y_PRED, Y_STD, Y_TRUE, n_bins=10) == pytest.approx(0.375)


def test_rejection_curve_by_hand() -> None:
    # a std that ranks imperfectly: std = [2.0, 0.1, 0.5, 1.0] with |err| = [0.5, 0, 1, 1]
    std = np.array([2.0, 0.1, 0.5, 1.0])
    curve = M.rejection_curve(Y_PRED, std, Y_TRUE, n_points=4)
    np.testing.assert_allclose(curve["fraction_rejected"], [0.0, 0.25, 0.5, 0.75])
    np.testing.assert_array_equal(curve["n_retained"], [4, 3, 2, 1])
    # model, by std ascending |err| = [0, 1, 1, 0.5]: keep 4 -> 0.625, 3 -> 2/3, 2 -> 0.5, 1 -> 0
    np.testing.assert_allclose(curve["mae_model"], [0.625, 2 / 3, 0.5, 0.0])
    # oracle, |err| ascending [0, 0.5, 1, 1]: 0.625, 0.5, 0.25, 0
    np.testing.assert_allclose(curve["mae_oracle"], [0.625, 0.5, 0.25, 0.0])
    np.testing.assert_allclose(curve["mae_random"], [0.625] * 4)
    # trapezoid with step 0.25:
    #   model  0.25*((0.625+2/3)/2 + (2/3+0.5)/2 + (0.5+0)/2) = 0.3697917
    #   oracle 0.25*((0.625+0.5)/2 + (0.5+0.25)/2 + 0.25/2)    = 0.265625
    #   random 0.625 * 0.75                                    = 0.46875
    areas = M.rejection_areas(curve)
    assert areas["auc_rejection"] == pytest.approx(
        0.25 * ((0.625 + 2 / 3) / 2 + (2 / 3 + 0.5) / 2 + 0.25)
    )
    assert areas["auc_rejection_oracle"] == pytest.approx(0.265625)
    assert areas["auc_rejection_random"] == pytest.approx(0.46875)
    assert M.auc_rejection(Y_PRED, std, Y_TRUE, n_points=4) == pytest.approx(areas["auc_rejection"])
    assert M.auc_rejection_oracle(Y_PRED, std, Y_TRUE, n_points=4) == pytest.approx(0.265625)
    assert M.auc_rejection_random(Y_PRED, std, Y_TRUE, n_points=4) == pytest.approx(0.46875)


def test_rejection_constant_std_equals_random() -> None:
    # ties are counted in expectation, so an uninformative std gives exactly the random curve
    rng = np.random.default_rng(3)
    y_true = rng.normal(size=37)
    y_pred = y_true + rng.normal(size=37)
    curve = M.rejection_curve(y_pred, np.full(37, 0.4), y_true, n_points=20)
    np.testing.assert_allclose(curve["mae_model"], curve["mae_random"])
    assert np.all(curve["mae_oracle"] <= curve["mae_model"] + 1e-12)


def test_correlations() -> None:
    # std = [0.5, 0.1, 2, 1] vs |err| = [0.5, 0, 1, 1]: ranks [2, 1, 4, 3] vs [2, 1, 3.5, 3.5]
    # Spearman = Pearson of ranks = 4.5 / sqrt(5 * 4.5) = 0.9486833
    assert M.spearman_std_abs_error(Y_PRED, Y_STD, Y_TRUE) == pytest.approx(4.5 / math.sqrt(22.5))
    assert M.pearson_std_abs_error(Y_PRED, Y_STD, Y_TRUE) == pytest.approx(
        float(np.corrcoef(Y_STD, np.abs(Y_PRED - Y_TRUE))[0, 1])
    )
    const = np.full(4, 0.3)
    assert math.isnan(M.spearman_std_abs_error(Y_PRED, const, Y_TRUE))
    assert math.isnan(M.pearson_std_abs_error(Y_PRED, const, Y_TRUE))


def test_calibration_curve_by_hand() -> None:
    expected, observed = M.calibration_curve(Y_PRED, Y_STD, Y_TRUE, n_levels=5)
    # levels [0, .25, .5, .75, 1] -> z = [0, 0.319, 0.674, 1.150, inf]; |z| = [1, 0, 0.5, 1]
    np.testing.assert_allclose(expected, [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(observed, [0.25, 0.25, 0.5, 1.0, 1.0])
    # area between piecewise-linear curve and diagonal, step 0.25, diffs d = [.25, 0, 0, .25, 0]:
    # 0.25*(0.25/2 + 0 + 0.25/2 + 0.25/2) = 0.09375
    assert M.miscalibration_area_from_curve(expected, observed) == pytest.approx(0.09375)
    assert M.miscalibration_area(Y_PRED, Y_STD, Y_TRUE, n_levels=5) == pytest.approx(0.09375)
    # RMS = sqrt((0.0625 + 0 + 0 + 0.0625 + 0)/5) = sqrt(0.025)
    assert M.rms_calibration_error(Y_PRED, Y_STD, Y_TRUE, n_levels=5) == pytest.approx(
        math.sqrt(0.025)
    )
    # a segment crossing the diagonal: d goes +0.1 -> -0.1 over dx = 1 -> two triangles, 0.05
    assert M.miscalibration_area_from_curve([0.0, 1.0], [0.1, 0.9]) == pytest.approx(0.05)


# --------------------------------------------------------------------------------------------
# against uncertainty_toolbox (uct 0.1.1) on random arrays
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 400
    y_true = rng.normal(2.0, 1.0, n)
    y_std = rng.uniform(0.1, 1.0, n)
    y_pred = y_true + 1.5 * y_std * rng.normal(size=n)  # overconfident by 1.5x
    return y_pred, y_std, y_true


def test_matches_uncertainty_toolbox(random_arrays) -> None:
    uct_cal = pytest.importorskip("uncertainty_toolbox.metrics_calibration")
    uct_score = pytest.importorskip("uncertainty_toolbox.metrics_scoring_rule")
    p, s, t = random_arrays
    # uct.miscalibration_area: num_bins=100 expected proportions linspace(0, 1, 100), observed =
    # mean(|err|/std <= Phi^-1(0.5 + p/2)), area between curves with crossing segments split into
    # triangles: the same definition as ours (n_levels=100).
    assert M.miscalibration_area(p, s, t) == pytest.approx(
        uct_cal.miscalibration_area(p, s, t), abs=1e-12
    )
    # uct RMSCE: sqrt(mean((exp - obs)^2)) over the same 100 levels (its interval check is
    # lower <= z <= upper with lower = Phi^-1(0.5 - p/2); identical to |z| <= upper barring ties).
    assert M.rms_calibration_error(p, s, t) == pytest.approx(
        uct_cal.root_mean_squared_calibration_error(p, s, t), abs=1e-12
    )
    # uct nll_gaussian(scaled=True) = -mean(norm.logpdf(err, scale=std)): a mean, including
    # the 0.5*log(2*pi) constant, as ours.
    assert M.gaussian_nll(p, s, t) == pytest.approx(uct_score.nll_gaussian(p, s, t), rel=1e-12)
    # uct crps_gaussian(scaled=True) is the mean of the same closed form.
    assert M.crps_gaussian(p, s, t) == pytest.approx(uct_score.crps_gaussian(p, s, t), rel=1e-12)
    exp_ours, obs_ours = M.calibration_curve(p, s, t)
    exp_uct, obs_uct = uct_cal.get_proportion_lists_vectorized(p, s, t)
    np.testing.assert_allclose(exp_ours, exp_uct)
    np.testing.assert_allclose(obs_ours, obs_uct)


def test_all_metrics_keys_and_json(random_arrays) -> None:
    p, s, t = random_arrays
    out = M.all_metrics(p, s, t)
    assert tuple(out) == M.ALL_METRICS_KEYS
    assert isinstance(out["n"], int) and out["n"] == p.size
    assert all(type(v) is float for k, v in out.items() if k != "n")
    json.dumps(out)
    assert out["mae_ev"] == pytest.approx(M.mae(p, s, t))
    assert out["auc_rejection_oracle"] <= out["auc_rejection"] <= out["auc_rejection_random"]
    assert out["coverage_68"] < 0.6827  # overconfident by construction
    # with a decomposition; a zero aleatoric part gives a nan correlation, still serialisable
    out2 = M.all_metrics(p, s, t, epistemic_std=0.8 * s, aleatoric_std=np.zeros_like(s))
    assert tuple(out2) == M.ALL_METRICS_KEYS + M.DECOMPOSITION_KEYS
    assert out2["spearman_epistemic_std_abs_error"] == pytest.approx(out["spearman_std_abs_error"])
    assert math.isnan(out2["spearman_aleatoric_std_abs_error"])
    assert out2["mean_epistemic_std_ev"] == pytest.approx(0.8 * s.mean())
    assert out2["mean_aleatoric_std_ev"] == 0.0
    json.dumps(out2)
    with pytest.raises(ValueError, match="epistemic_std"):
        M.all_metrics(p, s, t, epistemic_std=s[:-1])


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match="same length"):
        M.mae([1.0, 2.0], [0.1, 0.1, 0.1], [1.0, 2.0])
    with pytest.raises(ValueError, match="strictly positive"):
        M.gaussian_nll([1.0, 2.0], [0.1, -0.2], [1.0, 2.0])
    with pytest.raises(ValueError, match="strictly positive"):
        M.coverage([1.0, 2.0], [0.0, 0.2], [1.0, 2.0], 0.5)
    with pytest.raises(ValueError, match="non-finite"):
        M.rmse([1.0, np.nan], [0.1, 0.1], [1.0, 2.0])
    with pytest.raises(ValueError, match="1-D"):
        M.mae(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="empty"):
        M.mae([], [], [])
    with pytest.raises(TypeError, match="y_true"):
        M.mae([1.0], [1.0], "abc")
    with pytest.raises(ValueError, match="n_points"):
        M.rejection_curve(Y_PRED, Y_STD, Y_TRUE, n_points=1)


# --------------------------------------------------------------------------------------------
# recalibration
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def overconfident() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Heteroscedastic Gaussian errors whose reported std is half the true std."""
    rng = np.random.default_rng(42)
    n = 4000
    sigma = rng.uniform(0.2, 1.0, n)
    y_true = rng.normal(2.0, 1.0, n)
    y_pred = y_true + sigma * rng.normal(size=n)
    y_std = sigma / 2.0
    half = n // 2
    return {
        "val": (y_pred[:half], y_std[:half], y_true[:half]),
        "test": (y_pred[half:], y_std[half:], y_true[half:]),
    }


def test_fit_std_scale_recovers_factor(overconfident) -> None:
    p, s, t = overconfident["val"]
    scale = fit_std_scale(p, s, t)
    assert scale == pytest.approx(2.0, rel=0.05)
    # it is the NLL minimiser: nudging it either way does not help
    nll = M.gaussian_nll(p, s * scale, t)
    assert nll < M.gaussian_nll(p, s, t)
    assert nll <= M.gaussian_nll(p, s * scale * 1.05, t)
    assert nll <= M.gaussian_nll(p, s * scale / 1.05, t)
    with pytest.raises(ValueError, match="zero"):
        fit_std_scale([1.0, 2.0], [0.1, 0.1], [1.0, 2.0])


def test_isotonic_recalibrator(overconfident) -> None:
    p, s, t = overconfident["val"]
    recal = IsotonicStdRecalibrator().fit(p, s, t)
    assert recal.scale_ == pytest.approx(2.0, rel=0.1)
    for level in (0.5, 0.9):
        assert recal.std_factor(level) == pytest.approx(2.0, rel=0.1)
    # R(q) = P(|Z| <= z(q)/2): at q = 0.95 about 2*Phi(0.98) - 1 = 0.673
    assert recal.observed_proportion(0.95) == pytest.approx(0.673, abs=0.03)
    assert recal.nominal_level(0.0) == 0.0
    np.testing.assert_allclose(recal.transform(s[:3]), s[:3] * recal.scale_)
    lower, upper = recal.interval(p, s, 0.9)
    assert np.mean((t >= lower) & (t <= upper)) == pytest.approx(0.9, abs=0.02)
    with pytest.raises(ValueError, match="not fitted"):
        IsotonicStdRecalibrator().transform(s)


@pytest.mark.parametrize("method", ["scale", "isotonic"])
def test_recalibrated_metrics(overconfident, method: str) -> None:
    out = recalibrated_metrics(overconfident["val"], overconfident["test"], method=method)
    json.dumps(out)
    assert out["method"] == method
    assert out["std_scale"] == pytest.approx(2.0, rel=0.1)
    before, after = out["before"], out["after"]
    assert after["nll"] < before["nll"]
    assert after["miscalibration_area"] < before["miscalibration_area"] / 3
    assert after["coverage_95"] == pytest.approx(0.95, abs=0.03)
    assert after["mae_ev"] == before["mae_ev"]  # means are untouched
    assert out["after_interval"]["miscalibration_area"] < 0.05


def test_recalibrated_metrics_bad_method(overconfident) -> None:
    with pytest.raises(ValueError, match=r"'temperature'.*\['scale', 'scale_floor', 'isotonic'\]"):
        recalibrated_metrics(overconfident["val"], overconfident["test"], method="temperature")
    with pytest.raises(TypeError, match="val_arrays"):
        recalibrated_metrics(overconfident["val"][:2], overconfident["test"])


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_write_png(tmp_path, random_arrays) -> None:
    p, s, t = random_arrays
    out = P.parity_plot(t, p, s, tmp_path / "a" / "parity.png")
    assert out == tmp_path / "a" / "parity.png" and _is_png(out)
    assert _is_png(P.error_vs_std_plot(t, p, s, tmp_path / "err_std.png", title="model"))
    curves = {"model": M.calibration_curve(p, s, t), "scaled": M.calibration_curve(p, 1.5 * s, t)}
    assert _is_png(P.calibration_plot(curves, tmp_path / "cal.png"))
    rej = {"model": M.rejection_curve(p, s, t), "noisy": M.rejection_curve(p, s[::-1].copy(), t)}
    assert _is_png(P.rejection_plot(rej, tmp_path / "rej.png"))
    out = P.metric_vs_samples_plot(
        [1, 2, 4, 8, 16],
        {"BaLoRA": [0.5, 0.45, 0.42, 0.41, 0.40]},
        tmp_path / "deep" / "er" / "t.png",
        ylabel="MAE (eV)",
        reference={"ensemble": 0.39},
        logx=True,
    )
    assert _is_png(out)
    with pytest.raises(ValueError, match="one value per T"):
        P.metric_vs_samples_plot([1, 2], {"x": [1.0]}, tmp_path / "bad.png", ylabel="NLL")
    with pytest.raises(ValueError, match="non-empty"):
        P.calibration_plot({}, tmp_path / "empty.png")


def test_scale_floor_recovers_factor_and_floor_from_explicit_samples():
    from mofbalora.uq.recalibration import apply_std_scale_floor, fit_std_scale_floor

    rng = np.random.default_rng(3)
    n, a0, b0 = 40_000, 2.5, 0.3
    std = rng.uniform(0.05, 1.0, n)
    # a tenth of the structures with (almost) no spread, as saturated 0 eV gaps
    std[: n // 10] = 1e-6
    pred = rng.normal(2.0, 1.0, n)
    true = pred + rng.normal(0.0, np.sqrt((a0 * std) ** 2 + b0**2))
    a, b = fit_std_scale_floor(pred, std, true)
    assert a == pytest.approx(a0, rel=0.03) and b == pytest.approx(b0, rel=0.03)
    # the one-factor fit is pulled far off by the zero-spread points; the floor model is not
    from mofbalora.uq.recalibration import fit_std_scale, recalibrated_metrics

    assert fit_std_scale(pred, std, true) > 100
    report = recalibrated_metrics((pred, std, true), (pred, std, true), "scale_floor")
    assert report["std_floor_ev"] == pytest.approx(b0, rel=0.03)
    assert report["after"]["coverage_95"] == pytest.approx(0.95, abs=0.01)
    np.testing.assert_allclose(apply_std_scale_floor(std, a, b) ** 2, (a * std) ** 2 + b**2)
