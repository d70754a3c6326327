"""examples/ladder_probe_search.py, the search behind docs/LADDER.md's batch-4 cells: where its walk
stops, when it searches the learning rate again, that it ends at a local minimum of both keys, and
its refusal of a bad start."""
import math

import pytest

from examples import ladder_probe_search as lps

pytestmark = pytest.mark.unit


def _bowl(best_lr, best_warmup, asked):
    """A loss with one minimum; records every config asked for."""
    def loss(lr, warmup, seed):
        asked.append((lr, warmup, seed))
        return math.log2(lr / best_lr) ** 2 + (0 if warmup is None else 4 * abs(warmup - best_warmup))
    return loss


def test_the_walk_finds_the_minimum_from_either_side():
    for start in (0.0005, 0.064):
        assert lps.best_lr(_bowl(0.004, None, []), start, None) == pytest.approx(0.004)


def test_a_moved_warmup_searches_the_learning_rate_again():
    asked = []
    lr, warmup = lps.search(_bowl(0.004, 0.4, asked), 0.004, 0.2, [0.05, 0.2, 0.4])
    assert (lr, warmup) == (pytest.approx(0.004), 0.4)
    assert {(a[0], a[1]) for a in asked} >= {(0.002, 0.4), (0.008, 0.4)}


def test_the_search_ends_where_no_neighbour_of_either_key_is_better():
    # the best learning rate grows with the warmup, so the one scan, made at the learning rate
    # before the last walk, stops beside a better warmup
    grid = [0.05, 0.2, 0.4, 0.6, 0.8]

    def loss(lr, warmup, seed):
        x, j = math.log2(lr / 0.001), grid.index(warmup)
        return (x - j) ** 2 + 0.5 * (j - 4) ** 2

    lr, warmup = lps.search(loss, 0.001, 0.2, grid)
    j = grid.index(warmup)
    neighbours = [(lr / 2, warmup), (lr * 2, warmup), *((lr, w) for w in grid[max(j - 1, 0):j + 2])]
    assert all(loss(*n, 0) >= loss(lr, warmup, 0) for n in neighbours)


def test_no_warmup_key_searches_only_the_learning_rate():
    asked = []
    assert lps.search(_bowl(0.008, 0.2, asked), 0.002, None, [0.05, 0.2, 0.4]) == (pytest.approx(0.008), None)
    assert {a[1] for a in asked} == {None}


def test_a_bad_set_stops_with_one_line_and_code_2(tmp_path, capsys):
    start = tmp_path / "start.json"
    start.write_text('{"start": {"learning_rate": 0.01}}')
    with pytest.raises(SystemExit) as stop:
        lps.parse(["--optimizer", "adamw", "--start", str(start), "--set", "train_batch_size",
                   "--learning-rate", "0.01", "--ratio", "1", "--model", "m.toml", "--store", "sqlite://"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
