"""Grids: the start point snapped onto the grid, the coordinate order, centre-out candidates."""
import pytest

from analysis.cells import config_key
from sweeps.grid import centre_out, importance_order, load_grid, snap
from sweeps.plan import Cell
from sweeps.protocols.phases import make_protocol

pytestmark = pytest.mark.unit


def test_snap_takes_the_nearest_grid_value_on_a_log_scale():
    assert snap(0.04, [0.008, 0.016, 0.032, 0.064]) == 0.032  # 1.25x away beats 1.6x
    assert snap(0.05, [0.032, 0.064]) == 0.064
    assert snap(1.0, [0, 1.0, 2.0]) == 1.0
    assert snap(0.04, [0, 0.1, 0.2]) == 0  # zero on the grid: linear distance (log says 0.1)


def test_snap_keeps_booleans_apart_from_numbers_and_leaves_unknown_words():
    assert snap(True, [1, 0]) is True  # True == 1 in Python, but 1 is not a boolean choice
    assert snap(False, [True, False]) is False
    assert snap("cosine", ["linear"]) == "cosine"


def test_importance_order_puts_learning_rate_first_and_epsilons_last():
    keys = ["epsilon", "train_batch_size", "beta1", "weight_decay", "muon_to_adam_lr", "warmup",
            "learning_rate", "max_grad_norm", "muon_epsilon"]
    order = importance_order(keys)
    assert order[:3] == ["learning_rate", "muon_to_adam_lr", "weight_decay"]
    assert set(order[-2:]) == {"epsilon", "muon_epsilon"}


def test_centre_out_orders_values_by_distance_from_the_current_one():
    assert centre_out([1, 2, 3, 4, 5], 3) == [3, 2, 4, 1, 5]
    assert centre_out([1, 2, 3], 1) == [1, 2, 3]
    assert centre_out([1, 2], 7) == [7, 1, 2]  # off the grid: tried first, as the baseline


def start_config(optimizer: str, scale: str) -> dict:
    """Where a fresh coordinate descent starts (no tuned smaller scale in the store)."""
    protocol, _ = make_protocol(Cell(optimizer, scale, 1.0, "coordinate"), 8, [])
    return protocol.start


def test_start_config_is_the_defaults_on_the_cpu_grid_with_the_scale_batch():
    grid = load_grid("muon", "cpu")
    start = start_config("muon", "cpu-xs")
    assert set(start) == set(grid)
    assert all(start[k] in grid[k] for k in grid)
    assert start["learning_rate"] == 0.032  # the default 0.04 is between grid points
    assert start["train_batch_size"] == 32


def test_paper_scales_use_the_paper_grid():
    assert start_config("adamw", "0.1B")["train_batch_size"] == 128
    assert config_key({"b": 1, "a": 2}) == config_key({"a": 2, "b": 1})
