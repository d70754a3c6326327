"""The end-of-sweep speedup section: the analysis package's fit over this sweep's runs, or why
there is no speedup."""
import pytest

from bench.model.scales import get_scale
from bench.store.record import StoredRun, to_frame
from sweeps.report import speedup_section

pytestmark = pytest.mark.unit


def runs(rows):
    """Finished seed-0 runs at cpu-xs: (optimizer, ratio, loss)."""
    n = get_scale("cpu-xs").non_embedding_params
    return to_frame(StoredRun(f"{o}{r}", o, "cpu-xs", r, 0, "ok", loss, 1, 1, n, 1.0,
                              {"learning_rate": 0.01}) for o, r, loss in rows)


def test_three_adamw_ratios_give_a_speedup_per_ratio():
    adamw = [("adamw", r, 3.0 + 1.0 * r ** -0.5) for r in (1.0, 2.0, 4.0, 8.0)]
    # muon at 1x reaches AdamW's 4x loss: a speedup of 4
    text = speedup_section(runs(adamw + [("muon", 1.0, 3.5)]))
    assert "Speedup over AdamW" in text and "1x" in text
    muon_line = next(line for line in text.splitlines() if line.startswith("muon"))
    assert muon_line.split()[1].startswith("4.0")


def test_two_ratios_say_why_there_is_no_speedup():
    text = speedup_section(runs([("adamw", 1.0, 3.5), ("adamw", 2.0, 3.4), ("muon", 1.0, 3.3)]))
    assert "none" in text and "3 or more" in text


def test_without_adamw_it_asks_for_adamw():
    assert "needs AdamW" in speedup_section(runs([("muon", 1.0, 3.3)]))


def test_a_table_without_intervals_says_why_in_its_header():
    """The finding this reproduces: the README's main job ended with speedups and no intervals,
    its AdamW law fitted through three single-seed points. Such a table must say why."""
    adamw = [("adamw", r, 3.0 + 1.0 * r ** -0.5) for r in (1.0, 2.0, 4.0)]
    text = speedup_section(runs(adamw + [("muon", 1.0, 3.5)]))
    header = next(line for line in text.splitlines() if line.startswith("Speedup over AdamW"))
    assert "no interval for 4 of 4 speedups: no residual scale" in header
