import pytest

from bench.run.schedules import lr_multiplier

pytestmark = pytest.mark.unit


def test_linear_warmup_reaches_peak_then_cosine_decays_to_min_ratio():
    total = 100
    lrs = [lr_multiplier(s, total, 0.1, "cosine", None, 0.1) for s in range(total)]
    assert lrs[0] == pytest.approx(0.1)  # (step + 1) / warmup steps
    assert lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def test_warmup_in_steps_when_at_least_one():
    assert lr_multiplier(4, 100, 10, "linear") == pytest.approx(0.5)


def test_wsd_holds_the_peak_until_the_decay_fraction():
    total = 100
    lrs = [lr_multiplier(s, total, 0, "linear", 0.2, 0.0) for s in range(total)]
    assert all(v == 1.0 for v in lrs[:80])
    assert lrs[-1] == pytest.approx(0.0)
    assert lrs[90] == pytest.approx(1 - 11 / 20)


def test_constant_schedule_stays_at_peak_after_warmup():
    assert lr_multiplier(99, 100, 0.1, "constant") == 1.0
