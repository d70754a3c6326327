"""Speedup intervals: coverage on synthetic noise with a known truth, and their edge cases."""
import numpy as np
import pytest

from analysis.bootstrap import Observed, percentile_interval, perturbations, speedup_intervals
from analysis.fit import fit_power_law, power_law

pytestmark = pytest.mark.unit

ALPHA, B, BETA = 0.42, 0.5, 3.1
RATIOS = [1.0, 2.0, 4.0, 8.0]
TRUE_SPEEDUP, CELL_RATIO, NOISE = 1.3, 4.0, 0.01


def _covers(rng, seeds: int, sigma_from_truth: bool) -> bool:
    """One synthetic study: noisy AdamW points and one cell whose true speedup is 1.3."""
    def draw(ratio):
        return tuple(power_law(ratio, ALPHA, B, BETA) + rng.normal(0, NOISE, seeds))

    points = [Observed(r, draw(r)) for r in RATIOS]
    cell = Observed(CELL_RATIO, draw(TRUE_SPEEDUP * CELL_RATIO))
    fit = fit_power_law(RATIOS, [p.loss for p in points])
    sigma = NOISE if sigma_from_truth else fit.residual_sd
    low, high = speedup_intervals(fit, points, [cell], [None], sigma, n_boot=200, level=0.9,
                                  rng=rng).bounds[0]
    return low <= TRUE_SPEEDUP <= high


def test_a_90_percent_interval_from_seeds_covers_the_truth_about_90_percent_of_the_time():
    rng = np.random.default_rng(7)
    coverage = np.mean([_covers(rng, seeds=6, sigma_from_truth=False) for _ in range(200)])
    assert 0.80 <= coverage <= 0.97


def test_a_90_percent_interval_from_single_seeds_at_the_noise_scale_covers_the_truth():
    rng = np.random.default_rng(8)
    coverage = np.mean([_covers(rng, seeds=1, sigma_from_truth=True) for _ in range(200)])
    assert 0.80 <= coverage <= 0.97


def test_resampled_seed_means_vary_as_much_as_the_mean_itself():
    seeds = (3.0, 3.1, 3.05, 2.95, 3.02)
    deltas = perturbations(Observed(1.0, seeds), np.nan, 40_000, np.random.default_rng(0))
    expected = np.var(seeds, ddof=1) / len(seeds)
    assert np.var(deltas) == pytest.approx(expected, rel=0.05)
    assert abs(np.mean(deltas)) < 3e-3


def test_an_interval_can_be_unbounded_above_but_never_nan():
    low, high = percentile_interval(np.array([1.1, 1.2, 1.3, np.inf, np.inf, np.nan]), 0.5)
    assert low == pytest.approx(1.2) and high == np.inf


def test_single_seed_cells_without_any_residual_scale_get_no_interval_and_a_reason():
    points = [Observed(r, (power_law(r, ALPHA, B, BETA),)) for r in [1.0, 2.0, 4.0]]
    fit = fit_power_law([1, 2, 4], [p.loss for p in points])  # 3 points: no spare dof
    out = speedup_intervals(fit, points, [Observed(2.0, (3.3,))], [None], fit.residual_sd,
                            n_boot=200)
    assert np.isnan(out.bounds).all() and "no residual scale" in out.reason


def test_an_adamw_cell_shares_its_fit_points_perturbation_and_stays_near_one():
    points = [Observed(r, tuple(power_law(r, ALPHA, B, BETA) + np.array([-0.01, 0.0, 0.01])))
              for r in RATIOS]
    fit = fit_power_law(RATIOS, [p.loss for p in points])
    out = speedup_intervals(fit, points, points, [0, 1, 2, 3], np.nan, n_boot=500,
                            rng=np.random.default_rng(1))
    assert np.all(out.bounds[:, 0] <= 1.0) and np.all(out.bounds[:, 1] >= 1.0)
