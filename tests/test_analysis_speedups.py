"""Speedups per cell from a store-shaped runs frame: values, intervals, flags, failures."""
import math
from dataclasses import replace

import numpy as np
import pytest

from analysis.cells import summarize_cells
from analysis.fit import power_law
from analysis.speedups import SpeedupOptions, estimate_speedups, parse_ratios
from bench.errors import UserError
from bench.store.record import StoredRun, to_frame

pytestmark = pytest.mark.unit

LAW = {"cpu-s": (0.6, 0.5, 2.0), "cpu-l": (0.5, 0.45, 1.7)}
PARAMS = {"cpu-s": 100_000, "cpu-l": 800_000}


def _runs(cells, seeds=1, noise=0.0, rng=None):
    """cells: (optimizer, scale, ratio, effective ratio); loss = AdamW's law at the effective
    ratio, so the true speedup is effective / ratio."""
    rng = rng or np.random.default_rng(0)
    runs = []
    for optimizer, scale, ratio, effective in cells:
        for seed in range(seeds):
            loss = power_law(effective, *LAW[scale]) + (rng.normal(0, noise) if noise else 0.0)
            runs.append(StoredRun(f"{optimizer}/{scale}/{ratio}/{seed}", optimizer, scale, ratio, seed,
                                  "ok", loss, 500, 1, PARAMS[scale], 1.0, {"learning_rate": 0.01}))
    return runs


def _adamw(scale, ratios=(1, 2, 4, 8)):
    return [("adamw", scale, float(r), float(r)) for r in ratios]


def _speedups(runs, **options):
    result = estimate_speedups(summarize_cells(to_frame(runs)), SpeedupOptions(n_boot=300, **options))
    return result, result.speedups.set_index(["optimizer", "scale", "ratio"])


def test_exact_data_gives_exact_speedups_and_adamw_gives_one():
    runs = _runs(_adamw("cpu-s") + [("muon", "cpu-s", 2.0, 3.0), ("muon", "cpu-s", 4.0, 5.2)])
    _, table = _speedups(runs)
    assert table.loc[("muon", "cpu-s", 2.0), "speedup"] == pytest.approx(1.5, rel=1e-4)
    assert table.loc[("muon", "cpu-s", 4.0), "speedup"] == pytest.approx(1.3, rel=1e-4)
    adamw = table.loc["adamw"]["speedup"]
    assert np.allclose(adamw, 1.0, atol=1e-4)
    assert table.loc[("muon", "cpu-s", 2.0), "adamw_fit_loss"] == pytest.approx(
        power_law(2.0, *LAW["cpu-s"]), abs=1e-6)


def test_seeded_cells_get_intervals_around_the_truth():
    cells = _adamw("cpu-s") + [("muon", "cpu-s", 4.0, 5.2)]
    runs = _runs(cells, seeds=5, noise=0.003, rng=np.random.default_rng(2))
    _, table = _speedups(runs)
    row = table.loc[("muon", "cpu-s", 4.0)]
    assert row["ci_low"] < row["speedup"] < row["ci_high"]
    assert row["ci_low"] < 1.3 < row["ci_high"]
    assert row["uncertainty"].startswith("5 seeds") and row["n_seeds"] == 5


def test_a_loss_beyond_adamws_fitted_range_is_flagged_extrapolated():
    runs = _runs(_adamw("cpu-s") + [("muon", "cpu-s", 4.0, 6.0), ("muon", "cpu-s", 8.0, 12.0)])
    _, table = _speedups(runs)
    assert not table.loc[("muon", "cpu-s", 4.0), "extrapolated"]
    assert table.loc[("muon", "cpu-s", 8.0), "extrapolated"]  # better than AdamW's 8x loss


def test_a_loss_below_the_asymptote_is_an_infinite_flagged_speedup():
    runs = _runs(_adamw("cpu-s"))
    below = replace(runs[0], optimizer="magic", final_loss=1.9, run_key="magic")
    _, table = _speedups(runs + [below])
    row = table.loc[("magic", "cpu-s", 1.0)]
    assert row["speedup"] == math.inf and row["below_asymptote"] and row["extrapolated"]
    assert "asymptote" in row["note"]


def test_a_scale_without_enough_adamw_budgets_is_noted_and_the_others_still_analysed():
    runs = _runs(_adamw("cpu-s") + _adamw("cpu-l", ratios=(1, 2))
                 + [("muon", "cpu-s", 2.0, 3.0), ("muon", "cpu-l", 2.0, 3.0)])
    result, table = _speedups(runs)
    assert any("cpu-l" in n and "3 or more data budgets" in n for n in result.notes)
    assert math.isnan(table.loc[("muon", "cpu-l", 2.0), "speedup"])
    assert table.loc[("muon", "cpu-s", 2.0), "speedup"] == pytest.approx(1.5, rel=1e-4)
    assert list(result.fits.scale) == ["cpu-s"]


def test_fit_ratios_choose_the_budgets_the_law_is_fitted_on():
    runs = _runs(_adamw("cpu-s", ratios=(1, 2, 4, 8, 16)))
    result, table = _speedups(runs, fit_ratios=(1.0, 2.0, 4.0, 8.0))
    assert result.fits.iloc[0]["fit_ratios"] == "1 2 4 8"
    assert table.loc[("adamw", "cpu-s", 16.0), "extrapolated"]
    assert not table.loc[("adamw", "cpu-s", 8.0), "extrapolated"]


def test_single_seed_noise_is_pooled_over_the_scales_fits():
    rng = np.random.default_rng(5)
    runs = _runs(_adamw("cpu-s") + _adamw("cpu-l") + [("muon", "cpu-s", 2.0, 3.0)],
                 noise=0.002, rng=rng)
    result, table = _speedups(runs)
    fits = result.fits.set_index("scale")
    pooled = math.sqrt(sum(fits["residual_sd"] ** 2 * fits["dof"]) / fits["dof"].sum())
    assert list(fits["sigma"]) == pytest.approx([pooled, pooled])
    assert fits["sigma_source"].str.contains("pooled over 2").all()
    row = table.loc[("muon", "cpu-s", 2.0)]
    assert row["ci_low"] < row["speedup"] < row["ci_high"]


def test_diverged_only_cells_have_no_speedup_and_say_why():
    runs = _runs(_adamw("cpu-s"))
    dead = replace(runs[1], optimizer="lion", status="diverged", final_loss=7.7, run_key="lion")
    _, table = _speedups(runs + [dead])
    row = table.loc[("lion", "cpu-s", 2.0)]
    assert math.isnan(row["speedup"]) and "1 diverged" in row["note"]


@pytest.mark.parametrize("text, expected", [("1,2,4,8", (1.0, 2.0, 4.0, 8.0)), ("all", None),
                                            (None, None), ("0.5, 1", (0.5, 1.0))])
def test_fit_ratio_option_parsing(text, expected):
    assert parse_ratios(text) == expected


def test_a_bad_fit_ratio_option_is_a_user_error():
    with pytest.raises(UserError, match="fit-ratios"):
        parse_ratios("1,two")
