"""Phase III: fitting h(N, D) = A * N^B * D^C + E over tuned cells and predicting a new cell."""
import pytest

from sweeps.protocols.scaling import TunedCell, fit_hparam, nearest_cell, predict_config

pytestmark = pytest.mark.unit

SCALES = [1e5, 3e5, 1e6]
RATIOS = [1, 2, 4, 8]


def law(n, d):
    """A learning-rate-like law: falls with model size and data, with a floor."""
    return 0.5 * n ** -0.3 * d ** -0.1 + 1e-3


def test_the_fit_recovers_a_known_law_and_extrapolates_to_a_larger_model():
    n = [s for s in SCALES for _ in RATIOS]
    d = [20 * s * r for s in SCALES for r in RATIOS]
    y = [law(a, b) for a, b in zip(n, d)]
    n0, d0 = 3e5, 20 * 3e5 * 2.8  # the fit works on normalised units; any scale must do
    predict = fit_hparam([a / n0 for a in n], [b / d0 for b in d], y)
    target_n, target_d = 4e6, 20 * 4e6 * 8
    assert predict(target_n / n0, target_d / d0) == pytest.approx(law(target_n, target_d), rel=1e-3)


def test_three_points_fit_a_power_law_without_the_offset():
    y = [2.0 * n ** -0.5 for n in (1.0, 2.0, 4.0)]
    predict = fit_hparam([1.0, 2.0, 4.0], [1.0, 2.0, 1.0], y)
    assert predict(16.0, 1.0) == pytest.approx(0.5)


def test_a_constant_hyperparameter_stays_constant_and_two_points_do_not_fit():
    assert fit_hparam([1, 2, 4, 8], [1, 1, 2, 2], [0.9] * 4)(100, 100) == 0.9
    assert fit_hparam([1, 2], [1, 1], [0.1, 0.2]) is None


def test_predicted_config_snaps_integers_and_copies_words_from_the_nearest_cell():
    grid = {"learning_rate": [0.004, 0.008, 0.016], "train_batch_size": [16, 32, 64],
            "lr_schedule": ["cosine", "linear"]}
    tuned = [TunedCell(n, 20 * n * r, {"learning_rate": law(n, 20 * n * r),
                                       "train_batch_size": 32 if n < 1e6 else 64,
                                       "lr_schedule": "cosine" if n < 1e6 else "linear"})
             for n in SCALES for r in RATIOS]
    config = predict_config(tuned, grid, 4e6, 20 * 4e6)
    assert config["learning_rate"] == pytest.approx(law(4e6, 20 * 4e6), rel=1e-3)
    assert config["train_batch_size"] in grid["train_batch_size"]
    assert config["lr_schedule"] == "linear"  # the largest tuned scale's choice
    assert nearest_cell(tuned, 4e6, 20 * 4e6).params == 1e6
