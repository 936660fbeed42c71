"""Physical outputs: robust median / spread from the draws, flags, and ranking that runaway draws
cannot buy."""

from __future__ import annotations

import numpy as np
import pytest

from mofbalora.physical import (
    MAX_GAP_EV,
    QUANTILES,
    SPREAD_CAP_EV,
    gaussian_consistency,
    robust_summary,
)
from mofbalora.screen import rank_rows


def _record(name, draws, **extra):
    draws = np.asarray(draws, dtype=float)
    return {
        "key": name,
        "path": f"{name}.cif",
        "structure_id": name,
        "formula": "ZnO",
        "n_atoms": 10,
        "status": "ok",
        "error": "",
        "detail": "",
        "bandgap_mean_ev": float(draws.mean()),
        "bandgap_std_ev": float(draws.std(ddof=1)),
        "samples_ev": draws.tolist(),
        **extra,
    }


def test_well_behaved_draws_keep_their_spread_and_runaway_draws_are_flagged():
    rng = np.random.default_rng(0)
    normal = 2.0 + 0.3 * rng.standard_normal(64)
    runaway = normal.copy()
    runaway[:4] = [40.0, 55.0, 30.0, 46.0]  # 4 of 64 softplus draws ran away
    wide = 3.0 + 6.0 * rng.standard_normal(64)
    high = 9.0 + 0.1 * rng.standard_normal(64)
    samples = np.stack([normal, runaway, wide, high])
    out = robust_summary(samples, samples.std(1, ddof=1))
    assert abs(out["bandgap_spread_ev"][0] - 0.3) < 0.08 and out["physical_flag"][0] == ""
    assert samples[1].std(ddof=1) > 10  # the sample std is dominated by the outliers ...
    # ... not these
    assert abs(out["bandgap_median_ev"][1] - 2.0) < 0.2 and out["bandgap_spread_ev"][1] < 0.6
    assert out["physical_flag"][1] == "runaway_draws"
    assert (
        out["bandgap_spread_ev"][2] == SPREAD_CAP_EV and "spread_capped" in out["physical_flag"][2]
    )
    assert out["bandgap_median_ev"][3] > MAX_GAP_EV and out["physical_flag"][3] == "gap_above_range"


def test_runaway_draws_do_not_win_std_or_ucb():
    rng = np.random.default_rng(1)
    records = [
        _record(f"s{k}", 1.5 + s * rng.standard_normal(32)) for k, s in enumerate([0.2, 0.5, 0.8])
    ]
    wild = 1.5 + 0.3 * rng.standard_normal(32)
    wild[:3] = [46.0, 38.0, 52.0]
    records.append(_record("runaway", wild))
    for acquisition in ("std", "ucb"):
        table = rank_rows(records, acquisition).set_index("structure_id")
        assert table.loc["runaway", "bandgap_std_ev"] > 10
        assert table.loc["runaway", "physical_flag"] == "runaway_draws"
        assert table.loc["s2", "rank"] == 1  # the honestly uncertain structure is first
        assert table.loc["runaway", "rank"] > 1
    # with the raw moments the runaway structure would have been first
    table = rank_rows(records, "std").set_index("structure_id")
    assert table["bandgap_std_ev"].idxmax() == "runaway"


def test_exclude_and_rank_separately_policies_on_fabricated_rows():
    rng = np.random.default_rng(2)
    rows = [
        _record("ok_a", 2 + 0.2 * rng.standard_normal(8), checks="ok", in_domain=True),
        _record(
            "bad_checks",
            2 + 0.9 * rng.standard_normal(8),
            checks="failed",
            failed_checks="undercoordinated_c;lone_molecule",
            in_domain=True,
        ),
        _record(
            "far",
            2 + 1.5 * rng.standard_normal(8),
            checks="ok",
            in_domain=False,
            unseen_elements="U",
        ),
        _record("ok_b", 2 + 0.5 * rng.standard_normal(8), checks="ok", in_domain=True),
        {
            "key": "broken",
            "path": "broken.cif",
            "structure_id": "broken",
            "status": "error",
            "error": "empty",
            "detail": "",
        },
    ]
    t = rank_rows(rows, "std", checks="exclude", domain="rank-separately").set_index("structure_id")
    assert (
        t.loc["bad_checks", "status"] == "error" and t.loc["bad_checks", "error"] == "failed_checks"
    )
    assert t.loc["bad_checks", "detail"] == "undercoordinated_c;lone_molecule"
    assert t.loc["broken", "error"] == "empty"
    # the out-of-domain row has the largest spread but is ranked after both in-domain rows
    assert [t.loc[n, "rank"] for n in ("ok_b", "ok_a", "far")] == [1, 2, 3]
    t = rank_rows(rows, "std", checks="flag", domain="ignore").set_index("structure_id")
    assert t.loc["far", "rank"] == 1 and t.loc["bad_checks", "status"] == "ok"
    t = rank_rows(rows, "std", checks="off", domain="exclude").set_index("structure_id")
    assert t.loc["far", "error"] == "out_of_domain" and "U" in t.loc["far", "detail"]
    assert sorted(t["rank"].dropna().astype(int)) == [1, 2, 3]


def test_the_aleatoric_part_counts_in_the_spread_and_does_not_look_like_runaway_draws():
    """A model with an aleatoric head (the shipped default): its draws carry only the epistemic
    part, which is small; the reported std is mostly aleatoric. The spread must include it, and
    ranking by ``std`` must follow the total, not the draws alone."""
    rng = np.random.default_rng(3)
    epistemic_draws = [0.01, 0.05, 0.02]
    aleatoric = [0.9, 0.3, 0.4]
    records = []
    for k, (e, a) in enumerate(zip(epistemic_draws, aleatoric, strict=True)):
        draws = 1.5 + e * rng.standard_normal(64)
        epi = float(draws.std(ddof=1))
        records.append(
            _record(
                f"s{k}",
                draws,
                bandgap_std_ev=float(np.hypot(epi, a)),
                epistemic_std_ev=epi,
                aleatoric_std_ev=a,
            )
        )
    samples = np.array([r["samples_ev"] for r in records])
    std = np.array([r["bandgap_std_ev"] for r in records])
    out = robust_summary(samples, std, np.array(aleatoric))
    # quadrature of the draws' robust half-width and the aleatoric std, to sampling error of the
    # quantiles
    np.testing.assert_allclose(
        out["bandgap_spread_ev"], np.hypot(epistemic_draws, aleatoric), rtol=0.05, atol=0.01
    )
    assert list(out["physical_flag"]) == ["", "", ""]
    # read as if all of the std came from the draws, every row would look runaway and s1 (largest
    # draw spread) win
    naive = robust_summary(samples, std)
    assert list(naive["physical_flag"]) == ["runaway_draws"] * 3
    table = rank_rows(records, "std").set_index("structure_id")
    assert [int(table.loc[f"s{k}", "rank"]) for k in range(3)] == [1, 3, 2]
    assert np.allclose(table["aleatoric_std_ev"], aleatoric)
    # a runaway minority of draws is still flagged with an aleatoric head
    wild = samples[1].copy()
    wild[:3] = [40.0, 50.0, 45.0]
    epi = wild.std(ddof=1)
    flagged = robust_summary(wild[None], np.array([np.hypot(epi, 0.1)]), np.array([0.1]))
    assert flagged["physical_flag"][0] == "runaway_draws" and flagged["bandgap_spread_ev"][0] < 0.3


@pytest.mark.parametrize("n_draws", [2, 3, 4, 8, 32, 64])
def test_the_robust_spread_estimates_sigma_without_bias_at_any_number_of_draws(n_draws):
    """Monte Carlo: the half 16-84 % range of T normal draws (numpy's linear quantiles) reads below
    σ at small T; divided by gaussian_consistency(T) its mean is σ. 40,000 structures of σ = 0.2 eV:
    the standard error of the mean spread is < 0.4 % of σ, the tolerance 1.2 %."""
    rng = np.random.default_rng(100 + n_draws)
    sigma = 0.2
    draws = 1.5 + sigma * rng.standard_normal((40_000, n_draws))
    raw = np.subtract(*np.quantile(draws, QUANTILES[::-1], axis=1)) / 2
    # the factor is the raw half-width's mean (independent draws, 4x the structures: SE < 0.2 %)
    more = rng.standard_normal((160_000, n_draws))
    assert np.mean(np.subtract(*np.quantile(more, QUANTILES[::-1], axis=1)) / 2) == pytest.approx(
        gaussian_consistency(n_draws), rel=0.006
    )
    out = robust_summary(draws, draws.std(1, ddof=1))
    assert np.mean(out["bandgap_spread_ev"]) / sigma == pytest.approx(1.0, abs=0.012)
    assert np.array_equal(
        out["bandgap_spread_ev"], np.minimum(raw / gaussian_consistency(n_draws), SPREAD_CAP_EV)
    )


def test_the_consistency_factor_is_the_documented_bias():
    """The issue's figures (0.944σ at T = 32, 0.81σ at T = 8) and the large-T limit Φ⁻¹(0.84) =
    0.9945."""
    from scipy import stats

    assert gaussian_consistency(32) == pytest.approx(0.944, abs=0.001)
    assert gaussian_consistency(8) == pytest.approx(0.807, abs=0.001)
    # E|X1-X2|/2·0.68
    assert gaussian_consistency(2) == pytest.approx((1 - 2 * 0.16) / np.sqrt(np.pi), rel=1e-6)
    assert gaussian_consistency(20_000) == pytest.approx(stats.norm.ppf(0.84), abs=2e-4)
    factors = [gaussian_consistency(t) for t in (2, 3, 4, 8, 16, 32, 64, 128)]
    assert all(a < b for a, b in zip(factors[:-1], factors[1:], strict=True))
    with pytest.raises(ValueError, match="at least 2 draws, got 1"):
        gaussian_consistency(1)
