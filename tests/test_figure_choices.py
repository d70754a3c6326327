"""How the figures choose what to show: the headline ratio and the legend's order."""
import pandas as pd
import pytest

from analysis.pipeline import AnalysisOptions, pick_headline_ratio
from analysis.plots import value_order

pytestmark = pytest.mark.unit


def _speedups(points):
    return pd.DataFrame([{"optimizer": o, "scale": s, "ratio": r, "speedup": v, "params": 1.0}
                         for o, s, r, v in points])


def test_the_headline_ratio_is_where_most_optimizers_have_a_point():
    # one scale (analyze on a CPU sweep): 1x has four optimizers, 2x only one
    speedups = _speedups([("adamw", "cpu-xs", r, 1.0) for r in (1, 2)]
                         + [(o, "cpu-xs", 1.0, 1.1) for o in ("muon", "lion", "soap", "kron")]
                         + [("muon", "cpu-xs", 2.0, 1.2)])
    assert pick_headline_ratio(speedups, AnalysisOptions()) == 1.0


def test_value_order_ranks_at_the_scale_most_optimizers_share():
    speedups = _speedups([("muon", "s", 8.0, 1.3), ("lion", "s", 8.0, 1.1), ("soap", "s", 8.0, 1.4),
                          ("soap", "m", 8.0, 1.0), ("adamw", "s", 8.0, 1.0)])
    order = value_order(speedups, 8.0)
    assert order.names == ["soap", "muon", "lion", "adamw"]
    assert order.labels["soap"] == "soap 1.40x" and order.title == "speedup at s, 8x"
