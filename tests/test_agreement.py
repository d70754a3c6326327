"""Agreement with the study (analysis/agreement.py, `optbench agreement`): on the study's own
speedups and the committed regression baseline."""
import contextlib
import csv
import io
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from analysis.agreement import Side, agreement, side
from analysis.cells import summarize_cells
from analysis.paper.ingest import load_paper_runs
from analysis.paper.reproduce import STUDY_FIT_RATIOS, study_options
from analysis.plots import agreement_figure
from analysis.speedups import estimate_speedups
from bench.cli import main
from bench.errors import UserError
from bench.model.scales import get_scale
from bench.run.identity import current
from bench.run.spec import RunResult, RunSpec
from bench.store.database import ResultStore
from sweeps.regress.baseline import DEFAULT_PATH as BASELINE

pytestmark = pytest.mark.integration
WIDE = Path(__file__).resolve().parents[1] / "examples" / "warmup_wide.json"

@pytest.fixture(scope="module")
def study():
    result = estimate_speedups(summarize_cells(load_paper_runs().runs), study_options(n_boot=300).speedup)
    return side(result, "0.1B", "study 0.1B", STUDY_FIT_RATIOS)


def _mirrored(s: Side, label: str) -> Side:
    """The same optimizers with every log speedup negated: the study's ranking turned upside down."""
    return Side(label, {n: -v for n, v in s.point.items()}, {n: -r for n, r in s.replicates.items()}, s.ratios)


def test_the_study_agrees_with_itself_and_not_with_its_mirror(study):
    same = agreement(study, study)
    assert same.tau == (1.0, 1.0, 1.0)
    assert same.mad == (0.0, 0.0, 0.0)
    assert len(same.table) == 11 and not same.only_one_side
    flipped = agreement(_mirrored(study, "mirror"), study)
    assert flipped.tau == (-1.0, -1.0, -1.0)
    assert flipped.mad[0] > 0.1


def test_study_side_averages_only_the_fitted_ratios(study):
    assert set(study.ratios.values()) == {(1.0, 2.0, 4.0, 8.0)}  # 16x (extrapolated) left out


def test_an_unbounded_speedup_ranks_nowhere_rather_than_crash(study):
    point = dict(study.point, muon=math.inf)
    agr = agreement(Side("ours", point, study.replicates, study.ratios), study)
    assert math.isnan(agr.tau[0]) and agr.mad[0] == math.inf


def test_too_few_shared_optimizers_is_an_error(study):
    few = Side("ours", {n: study.point[n] for n in ("adamw", "muon")},
               {n: study.replicates[n] for n in ("adamw", "muon")})
    with pytest.raises(UserError, match="share 2 optimizer"):
        agreement(few, study)


def _run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_cli_on_the_regression_baseline(tmp_path):
    code, out, _ = _run("agreement", "--baseline", str(BASELINE), "--n-boot", "200", "--out",
                        str(tmp_path / "agr"))
    assert code == 0
    with (tmp_path / "agr.csv").open() as f:
        rows = {r["optimizer"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"adamw", "nadamw", "muon", "soap", "lion"}  # NorMuon is not in the study
    assert "normuon (cpu-xs (regress-cpu-xs.json))" in out
    assert rows["lion"]["ours_ratios"] == "0.5,1" and rows["muon"]["study_ratios"] == "1,2,4,8"
    for name, row in rows.items():
        assert float(row["ours_low"]) <= float(row["ours"]) <= float(row["ours_high"]), name
    with (tmp_path / "agr-cells.csv").open() as f:
        cells = list(csv.DictReader(f))
    assert len(cells) == 13 and all(len(c["losses"].split()) == int(c["n_seeds"]) == 5 for c in cells)
    for c in cells:  # the loss a winner was chosen on is one of its seeds' losses
        chosen_on = float(c["loss"]) - float(c["selection_gap"])
        assert min(abs(chosen_on - float(x)) for x in c["losses"].split()) < 1e-6, c
    assert "lion " in out.split("selection gap")[1]
    code, _, _ = _run("agreement", "--baseline", str(BASELINE), "--n-boot", "200", "--out",
                      str(tmp_path / "seed0"), "--choose", "tuning-seed", "--no-plots")
    # no finalists in the baseline: the study's rule chooses the same winners
    assert code == 0 and (tmp_path / "seed0.csv").read_text() == (tmp_path / "agr.csv").read_text()
    assert "Kendall's tau" in out and (tmp_path / "agr.png").stat().st_size > 0


def test_cli_reads_one_ratio_alone(tmp_path):
    """-by-ratio.csv holds each ratio's agreement alone; --ratios R averages over R only and
    agrees with that row."""
    code, _, _ = _run("agreement", "--baseline", str(BASELINE), "--n-boot", "200", "--no-plots",
                      "--out", str(tmp_path / "all"))
    with (tmp_path / "all-by-ratio.csv").open() as f:
        rows = {float(r["ratio"]): r for r in csv.DictReader(f)}
    assert code == 0 and set(rows) == {0.25, 0.5}  # at 1x fewer than 3 optimizers have a speedup
    assert all(float(r["tau_low"]) <= float(r["tau"]) <= float(r["tau_high"]) for r in rows.values())
    code, out, _ = _run("agreement", "--baseline", str(BASELINE), "--n-boot", "200", "--no-plots",
                        "--ratios", "0.5", "--out", str(tmp_path / "half"))
    with (tmp_path / "half.csv").open() as f:
        assert {r["ours_ratios"] for r in csv.DictReader(f)} == {"0.5"}
    half = rows[0.5]
    assert code == 0 and f"{float(half['tau']):.2f} [{float(half['tau_low']):.2f}, " in out
    assert f"{float(half['mad']):.3f} [{float(half['mad_low']):.3f}, " in out


def test_figure_draws_the_table(study):
    ours = _mirrored(study, "mirror")
    agr = agreement(ours, study)
    fig = agreement_figure(agr, "mirror", "study 0.1B", "test")
    drawn = {(round(x, 9), round(y, 9)) for line in fig.axes[0].lines
             for x, y in zip(line.get_xdata(), line.get_ydata())}
    for _, row in agr.table.iterrows():
        assert (round(row["study"], 9), round(row["ours"], 9)) in drawn



def test_figure_shows_unbounded_intervals_and_legible_labels(study):
    """A speedup interval without an upper bound reaches the top edge and ends in an arrow (not
    dropped); optimizers' names never sit on top of each other."""
    reps = dict(study.replicates)
    reps["muon"] = np.where(np.arange(len(reps["muon"])) % 5 == 0, np.inf, reps["muon"])
    agr = agreement(Side("ours", study.point, reps, study.ratios), study)
    muon = agr.table.set_index("optimizer").loc["muon"]
    assert math.isinf(muon["ours_high"])
    ax = agreement_figure(agr, "ours", "study 0.1B", "test").axes[0]
    top = ax.get_ylim()[1]
    arrows = [line for line in ax.lines if line.get_label().startswith("_unbounded")]
    assert [(x, y) for line in arrows for x, y in zip(line.get_xdata(), line.get_ydata())] == [
        (muon["study"], top)]
    heights = sorted(math.log(text.xyann[1]) for text in ax.texts)
    assert len(heights) == len(agr.table)
    assert min(np.diff(heights)) > 0.02 * math.log(top / ax.get_ylim()[0])

def _stored(optimizer: str, precision: str) -> RunResult:
    spec = RunSpec(optimizer, "cpu-xs", 1.0, {}, 0, precision=precision)
    return RunResult(spec.key, spec.to_dict(), "ok", 3.5, steps=100, tokens=1000,
                     non_embedding_params=get_scale("cpu-xs").non_embedding_params,
                     code=current(optimizer).as_dict())


def test_bad_input_is_one_line(tmp_path):
    code, _, err = _run("agreement", "--baseline", str(BASELINE), "--study-scale", "7B", "--out",
                        str(tmp_path / "a"), "--n-boot", "100")
    assert code == 2 and "--study-scale 7B" in err and err.count("\n") == 1
    for ratios, says in (("3", "speedups are at 0.25, 0.5, 1"), ("1,x", "--ratios wants numbers")):
        code, _, err = _run("agreement", "--baseline", str(BASELINE), "--ratios", ratios, "--out",
                            str(tmp_path / "r"), "--n-boot", "100")
        assert code == 2 and says in err and err.count("\n") == 1
    url = f"sqlite:///{tmp_path / 'two.db'}"
    store = ResultStore(url)
    for precision in ("fp32", "bf16"):
        for optimizer in ("adamw", "muon", "lion"):
            store.put(_stored(optimizer, precision))
    code, _, err = _run("agreement", "--store", url, "--out", str(tmp_path / "b"))
    assert code == 2 and "2 contexts" in err and "bf16" in err and err.count("\n") == 1
    assert len(ResultStore(url).frame()) == 6  # nothing stored is lost


def test_replicates_pair_column_by_column(study):
    """Shuffling one side's replicate columns keeps every per-optimizer interval (same samples)."""
    rng = np.random.default_rng(0)
    order = rng.permutation(len(next(iter(study.replicates.values()))))
    shuffled = replace(study, replicates={n: r[order] for n, r in study.replicates.items()})
    a, b = agreement(shuffled, study), agreement(study, study)
    assert a.table[["ours_low", "ours_high"]].equals(b.table[["ours_low", "ours_high"]])
    assert a.tau[0] == b.tau[0] == 1.0 and a.tau[1] < 1.0  # paired apart, the noise shows


def test_winners_off_the_searched_grid_are_named(tmp_path):
    """The baseline's AdamW, Lion and SOAP were tuned on a warmup grid widened to 0.8 (its sweep's
    --space) and won at warmup 0.8, 0.8 and 0.4: read against the shipped grid (up to 0.2) those
    winners are named as off it, in the output and in -cells.csv; given the grids the sweep
    searched, nothing is."""
    code, out, _ = _run("agreement", "--baseline", str(BASELINE), "--n-boot", "100", "--no-plots",
                        "--out", str(tmp_path / "shipped"))
    warning = next(line for line in out.splitlines() if line.startswith("warning:"))
    assert code == 0 and "adamw 0.25x (warmup=0.8)" in warning and "soap 0.5x (warmup=0.4)" in warning
    with (tmp_path / "shipped-cells.csv").open() as f:
        off = {(c["optimizer"], c["ratio"]): c["off_grid"] for c in csv.DictReader(f)}
    assert off[("lion", "1.0")] == "warmup=0.8" and off[("muon", "0.5")] == ""
    spaces = [arg for name in ("adamw", "nadamw", "soap", "lion")
              for arg in ("--space", f"{name}={WIDE}")]
    code, out, _ = _run("agreement", "--baseline", str(BASELINE), "--n-boot", "100", "--no-plots",
                        "--out", str(tmp_path / "widened"), *spaces)
    assert code == 0 and "warning:" not in out
