"""The scaling-law fit L(D) = alpha * D^(-B) + beta and its inversion into a speedup."""
import numpy as np
import pytest

from analysis.fit import FitError, _polish, _rss, effective_budget, fit_power_law, power_law, profile_fit

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("alpha, b, beta, ratios", [
    (0.42, 0.50, 3.10, [1, 2, 4, 8]),  # like the study's 0.1B AdamW fit
    (0.24, 0.48, 2.66, [1, 2, 4, 8, 16]),  # like its 1.2B fit, with a 16x point
    (1.10, 0.90, 1.90, [0.25, 0.5, 1, 2, 4]),  # a steep CPU-ladder-like law
])
def test_fit_recovers_known_parameters_within_one_percent(alpha, b, beta, ratios):
    d = np.array(ratios, dtype=float)
    fit = fit_power_law(d, power_law(d, alpha, b, beta))
    assert fit.alpha == pytest.approx(alpha, rel=0.01)
    assert fit.b == pytest.approx(b, rel=0.01)
    assert fit.beta == pytest.approx(beta, rel=0.01)
    assert fit.rmse < 1e-6 and fit.dof == len(ratios) - 3


def test_fit_recovers_parameters_from_slightly_noisy_losses():
    d = np.array([1, 2, 4, 8, 16, 32], dtype=float)
    noise = np.array([1, -1, 1, -1, 1, -1]) * 1e-6
    fit = fit_power_law(d, power_law(d, 0.42, 0.5, 3.1) + noise)
    assert (fit.alpha, fit.b, fit.beta) == pytest.approx((0.42, 0.5, 3.1), rel=0.01)


def test_an_adamw_cell_on_the_fit_has_speedup_one():
    d = np.array([1, 2, 4, 8], dtype=float)
    fit = fit_power_law(d, power_law(d, 0.42, 0.5, 3.1))
    for ratio in [1.0, 2.0, 3.0, 8.0]:
        assert fit.speedup(fit.predict(ratio), ratio) == pytest.approx(1.0, abs=1e-9)


def test_reaching_adamws_loss_at_twice_the_data_is_a_speedup_of_two():
    d = np.array([1, 2, 4, 8], dtype=float)
    fit = fit_power_law(d, power_law(d, 0.42, 0.5, 3.1))
    assert fit.speedup(power_law(8.0, 0.42, 0.5, 3.1), 4.0) == pytest.approx(2.0, rel=1e-6)


def test_a_loss_at_or_below_the_asymptote_is_an_unbounded_speedup_not_an_error():
    assert effective_budget(3.0, 0.42, 0.5, 3.1) == np.inf
    assert effective_budget(3.1, 0.42, 0.5, 3.1) == np.inf
    out = effective_budget(np.array([3.0, 3.52, np.nan]), 0.42, 0.5, 3.1)
    assert out[0] == np.inf and out[1] == pytest.approx(1.0, rel=1e-3) and np.isnan(out[2])


@pytest.mark.parametrize("ratios, losses, message", [
    ([1, 2], [3.5, 3.4], "3 or more data budgets"),
    ([1, 1, 2, 2], [3.5, 3.5, 3.4, 3.4], "3 or more data budgets"),
    ([1, 2, 4, 8], [3.2, 3.3, 3.4, 3.5], "do not decrease"),
    ([1, 2, 4, 8], [3.5, np.nan, 3.3, 3.2], "non-finite"),
    ([0, 2, 4, 8], [3.5, 3.4, 3.3, 3.2], "positive"),
])
def test_a_fit_that_cannot_be_made_fails_with_a_reason_in_words(ratios, losses, message):
    with pytest.raises(FitError, match=message):
        fit_power_law(ratios, losses)


def test_the_vectorised_solver_matches_curve_fit_on_noisy_replicates():
    rng = np.random.default_rng(3)
    d = np.array([1, 2, 4, 8], dtype=float)
    ys = power_law(d, 0.42, 0.5, 3.1) + rng.normal(0, 2e-3, size=(40, 4))
    params = profile_fit(d, ys)
    for y, p in zip(ys, params):
        polished = _polish(d, y, p)
        assert polished is not None
        # the profile solution is already the bounded least-squares optimum
        assert _rss(d, y, p) <= _rss(d, y, polished) * (1 + 1e-6) + 1e-15


def test_the_fit_respects_beta_nonnegative_and_flags_the_bound():
    d = np.array([1, 2, 4, 8], dtype=float)
    fit = fit_power_law(d, power_law(d, 2.0, 0.3, 0.0) - 0.05)  # the best free fit has beta < 0
    assert fit.beta >= 0 and fit.alpha > 0 and 0 < fit.b
    assert "beta at 0" in fit.at_bound
