"""Tables in Markdown, CSV and LaTeX from a small synthetic analysis."""
import csv

import numpy as np
import pandas as pd
import pytest

from analysis.cells import summarize_cells
from analysis.fit import power_law
from analysis.sensitivity import one_d_ablations
from analysis.speedups import SpeedupOptions, estimate_speedups
from analysis.tables import Table, build_tables, to_latex, to_markdown, write_table
from bench.store.record import StoredRun, to_frame

pytestmark = pytest.mark.unit


def _run(optimizer, ratio, loss, lr=0.01, status="ok"):
    return StoredRun(f"{optimizer}/{ratio}/{lr}", optimizer, "cpu-s", ratio, 0, status, loss, 10, 1,
                     1000, 1.0, {"learning_rate": lr, "weight_decay": 0.1})


@pytest.fixture(scope="module")
def tables():
    rows = [_run("adamw", r, power_law(r, 0.6, 0.5, 2.0)) for r in (1.0, 2.0, 4.0, 8.0)]
    rows += [_run("adam_mini", 2.0, power_law(2.5, 0.6, 0.5, 2.0)),
             _run("adam_mini", 2.0, power_law(2.48, 0.6, 0.5, 2.0), lr=0.02),
             _run("adam_mini", 2.0, 7.9, lr=0.04, status="diverged")]
    runs = to_frame(rows)
    cells = summarize_cells(runs)
    result = estimate_speedups(cells, SpeedupOptions(n_boot=200))
    return {t.name: t for t in build_tables(cells, result.speedups, result.fits, one_d_ablations(runs), 0.9)}


def test_every_table_is_written_in_three_formats(tables, tmp_path):
    assert set(tables) == {"speedup_vs_scale", "speedups", "final_losses", "run_counts", "fits",
                           "best_hparams", "approx_best", "sensitivity"}
    for table in tables.values():
        paths = write_table(table, tmp_path)
        assert [p.suffix for p in paths] == [".md", ".csv", ".tex"]
        assert all(p.stat().st_size > 0 for p in paths)


def test_speedup_table_shows_value_and_interval_per_scale(tables):
    heading, wide = tables["speedup_vs_scale"].sections[1]
    assert heading == "2x Chinchilla"
    text = wide.set_index("optimizer").loc["adam_mini", "cpu-s"]
    assert text.startswith("1.25 [") and text.endswith("]")


def test_run_counts_include_the_diverged_run(tables):
    counts = tables["run_counts"].csv.set_index("optimizer").loc["adam_mini"]
    assert (counts["n_runs"], counts["n_ok"], counts["n_diverged"]) == (3, 2, 1)


def test_best_hyperparameters_come_one_block_per_optimizer_and_scale(tables):
    sections = dict(tables["best_hparams"].sections)
    assert list(sections) == ["adamw at cpu-s", "adam_mini at cpu-s"]
    block = sections["adam_mini at cpu-s"].set_index("hyperparameter")
    assert list(block.columns) == ["2x"]  # a column per ratio: blocks stay narrow
    assert block.loc["learning_rate", "2x"] == "0.01"
    assert block.loc["loss", "2x"] == f"{power_law(2.5, 0.6, 0.5, 2.0):.4f}"
    assert list(sections["adamw at cpu-s"].columns) == ["hyperparameter", "1x", "2x", "4x", "8x"]


def test_latex_right_aligns_columns_of_numbers_and_left_aligns_names():
    frame = pd.DataFrame({"optimizer": ["muon", "lion"], "0.1B": ["1.41* [1.34, 1.48]", "n/a"],
                          "loss": ["3.1113 +- 0.0012", "- (2 div)"], "eps": ["1e-05", ""],
                          "note": ["ok", "1 seed"]})
    latex = to_latex(Table("t", "c", [("", frame)], frame))
    assert r"\begin{tabular}{lrrrl}" in latex


def test_approx_best_lists_the_near_configs_with_their_differences(tables):
    row = tables["approx_best"].sections[0][1].set_index("optimizer").loc["adam_mini"]
    assert row["within 3e-3"] == 2
    assert row["the others differ from the best in"].startswith("learning_rate=0.02 (+0.0015)")


def test_markdown_escapes_pipes_and_latex_escapes_specials():
    frame = pd.DataFrame({"name": ["a|b", "adam_mini"], "v": ["50%", "x & y"]})
    table = Table("t", "caption_with_underscore", [("", frame)], frame)
    md = to_markdown(table)
    assert "| a\\|b | 50% |" in md and "| name | v |\n|---|---|\n" in md
    tex = to_latex(table)
    assert r"adam\_mini" in tex and r"50\%" in tex and r"x \& y" in tex
    assert r"\begin{tabular}{ll}" in tex and r"caption\_with\_underscore" in tex


def test_speedup_csvs_hold_numbers_and_flags_not_text(tables, tmp_path):
    rows = list(csv.DictReader(write_table(tables["speedups"], tmp_path)[1].open()))
    assert list(rows[0]) == ["optimizer", "scale", "ratio", "loss", "adamw_fit_loss", "speedup",
                             "ci_low", "ci_high"]
    mini = next(r for r in rows if r["optimizer"] == "adam_mini")
    assert float(mini["speedup"]) == pytest.approx(1.25, rel=1e-4)
    assert np.isfinite(float(mini["ci_low"]))
    detail = list(csv.DictReader(write_table(tables["speedup_vs_scale"], tmp_path)[1].open()))
    mini = next(r for r in detail if r["optimizer"] == "adam_mini")
    assert mini["extrapolated"] == "False" and mini["below_asymptote"] == "False"
