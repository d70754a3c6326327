"""Cells never mix contexts: a run on other data, eval data, tokenizer, precision, device or eval
tokens is another measurement, never one more seed of a cell (bench.store.record.CONTEXT_COLUMNS).

The finding this reproduces: one bf16 Muon run on another dataset joined Muon's cpu-xs cell as a
sixth "seed" and moved its speedup from 1.6x to 4.6x with no warning."""
import math
from dataclasses import replace

import numpy as np
import pytest

from analysis.cells import MIXED_CONTEXTS, split_by_context, summarize_cells
from analysis.fit import power_law
from analysis.paper.ingest import load_paper_runs
from analysis.sensitivity import one_d_ablations
from analysis.speedups import SpeedupOptions, estimate_speedups
from analysis.tables import build_tables
from bench.cli import main
from bench.model.scales import get_scale
from bench.run.identity import current
from bench.run.spec import RunResult, RunSpec
from bench.store.database import ResultStore
from bench.store.record import StoredRun, context_labels, to_frame
from sweeps.regress.baseline import DEFAULT_PATH, load, runs_frame
from sweeps.report import speedup_section

LAW = (0.8, 0.6, 1.8)  # AdamW's loss at cpu-xs: alpha * ratio^-B + beta
MUON_GAIN = 1.6  # Muon reaches AdamW's loss at 1.6x the data
DEFAULT = "data=default eval=held-out tok=bpe-512 fp32 cpu eval_tokens=131072"
STRAY = "data=text:other.txt eval=held-out tok=bpe-512 bf16 cpu eval_tokens=131072"
FAST = ["--no-plots", "--n-boot", "200"]


def _result(optimizer: str, ratio: float, seed: int, loss: float, **context) -> RunResult:
    spec = RunSpec(optimizer, "cpu-xs", ratio, {}, seed, **context)
    return RunResult(spec.key, spec.to_dict(), "ok", loss, steps=100, tokens=1000,
                     non_embedding_params=get_scale("cpu-xs").non_embedding_params,
                     code=current(optimizer).as_dict())


def _results(stray: bool) -> list[RunResult]:
    """AdamW at 4 ratios and Muon with 5 seeds in the default context; with `stray`, one more
    Muon run on other data in bf16, far below AdamW's asymptote."""
    rng = np.random.default_rng(0)
    runs = [_result("adamw", r, 0, power_law(r, *LAW) + rng.normal(0, 0.002))
            for r in (0.5, 1.0, 2.0, 4.0)]
    runs += [_result("muon", 1.0, seed, power_law(MUON_GAIN, *LAW) + rng.normal(0, 0.003))
             for seed in range(5)]
    if stray:
        runs.append(_result("muon", 1.0, 5, LAW[2] - 0.3, data="text:other.txt",
                            precision="bf16"))
    return runs


def _store(tmp_path, stray: bool) -> str:
    url = f"sqlite:///{tmp_path / ('stray.db' if stray else 'clean.db')}"
    store = ResultStore(url)
    for result in _results(stray):
        store.put(result)
    return url


@pytest.fixture
def stores(tmp_path):
    return _store(tmp_path, stray=False), _store(tmp_path, stray=True)


def _analyze(url: str, out, *flags: str) -> int:
    return main(["analyze", "--store", url, "--out", str(out), *FAST, *flags])


def _csv(path) -> str:
    return path.read_text()


@pytest.mark.integration
def test_a_run_of_another_context_leaves_the_default_contexts_analysis_unchanged(stores, tmp_path,
                                                                                capsys):
    clean, stray = stores
    assert _analyze(clean, tmp_path / "clean") == 0
    capsys.readouterr()
    assert _analyze(stray, tmp_path / "stray") == 0
    printed = capsys.readouterr()
    default, other = tmp_path / "stray" / "context-1", tmp_path / "stray" / "context-2"
    for name in ("speedups.csv", "final_losses.csv", "run_counts.csv", "fits.csv"):
        assert _csv(default / name) == _csv(tmp_path / "clean" / name), name
    assert "the runs hold 2 contexts" in printed.out
    assert f"context-1: {DEFAULT} (9 runs)" in printed.out
    assert f"context-2: {STRAY} (1 run)" in printed.out
    assert "no speedups in this context: it has no AdamW law" in printed.out
    assert "no adamw run with a loss at this scale in this context" in printed.err
    muon = _csv(other / "speedups.csv").splitlines()[1].split(",")
    assert muon[:3] == ["muon", "cpu-xs", "1"] and muon[5] == ""  # no speedup
    assert f"Context: {STRAY}." in (other / "final_losses.md").read_text()
    assert STRAY in (tmp_path / "stray" / "contexts.md").read_text()


@pytest.mark.integration
def test_mix_contexts_pools_them_and_labels_every_table(stores, tmp_path, capsys):
    clean, stray = stores
    assert _analyze(clean, tmp_path / "clean") == 0
    assert _analyze(stray, tmp_path / "mixed", "--mix-contexts") == 0
    assert "MIXED CONTEXTS: 2 contexts pooled" in capsys.readouterr().out
    counts = _csv(tmp_path / "mixed" / "run_counts.csv")
    assert "muon,cpu-xs,1,1,6,6,0,0" in counts  # the stray run is a sixth seed here
    tables = sorted((tmp_path / "mixed").glob("*.md"))
    assert len(tables) == 8 and all(MIXED_CONTEXTS in t.read_text() for t in tables)

    def muon_speedup(folder):
        row = next(r for r in _csv(folder / "speedups.csv").splitlines() if r.startswith("muon,"))
        return float(row.split(",")[5])
    assert muon_speedup(tmp_path / "mixed") > muon_speedup(tmp_path / "clean") + 0.5


@pytest.mark.integration
def test_a_requested_headline_ratio_is_not_asked_of_a_context_without_adamw(stores, tmp_path):
    assert _analyze(stores[1], tmp_path / "out", "--ratio", "1") == 0  # context-2: muon only
    assert (tmp_path / "out" / "context-2" / "speedups.csv").exists()


@pytest.mark.integration
def test_a_filter_analyses_one_context_alone(stores, tmp_path):
    clean, stray = stores
    assert _analyze(clean, tmp_path / "clean") == 0
    assert _analyze(stray, tmp_path / "default", "--data", "default") == 0
    assert _csv(tmp_path / "default" / "speedups.csv") == _csv(tmp_path / "clean" / "speedups.csv")
    assert _analyze(stray, tmp_path / "bf16", "--precision", "bf16") == 0
    assert f"Context: {STRAY}." in (tmp_path / "bf16" / "speedups.md").read_text()


@pytest.mark.integration
@pytest.mark.parametrize("flags, message", [
    (["--data", "nope"], "--data 'nope' matches no stored run; stored data values: default, "
                         "text:other.txt"),
    (["--precision", "bf16", "--device", "cuda"],
     "--device 'cuda' matches no stored run with --precision bf16"),
])
def test_an_unknown_filter_value_is_a_one_line_error_and_writes_nothing(stores, tmp_path, capsys,
                                                                        flags, message):
    out = tmp_path / "out"
    assert _analyze(stores[1], out, *flags) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


@pytest.mark.integration
def test_the_store_gives_each_run_its_specs_context(tmp_path):
    store = ResultStore(f"sqlite:///{tmp_path / 'store.db'}")
    for result in _results(stray=True):
        store.put(result)
    frame = store.frame()
    assert context_labels(frame).count(STRAY) == 1
    assert frame.loc[frame["precision"] == "bf16", "data"].tolist() == ["text:other.txt"]


@pytest.mark.unit
def test_cells_keep_contexts_apart_and_pool_them_only_when_told():
    runs = to_frame([StoredRun(f"r{seed}", "muon", "cpu-xs", 1.0, seed, "ok", 3.0 + seed, 1, 1, 1,
                               1.0, {"learning_rate": 0.01}, precision=precision)
                     for seed, precision in enumerate(["fp32", "fp32", "bf16"])])
    apart = summarize_cells(runs)
    assert list(apart["n_seeds"]) == [2, 1]
    assert list(apart["context"]) == [DEFAULT, DEFAULT.replace("fp32", "bf16")]
    mixed = summarize_cells(runs, mix_contexts=True)
    assert list(mixed["n_seeds"]) == [3]
    assert mixed["context"].iloc[0].startswith(f"{MIXED_CONTEXTS} (2: {DEFAULT}; ")


@pytest.mark.unit
def test_speedups_and_tables_refuse_cells_of_several_contexts():
    runs = to_frame(StoredRun.from_result(r) for r in _results(stray=True))
    cells = summarize_cells(runs)
    with pytest.raises(ValueError, match="2 contexts"):
        estimate_speedups(cells, SpeedupOptions(n_boot=100))
    one = cells[cells["context"] == DEFAULT]
    result = estimate_speedups(one, SpeedupOptions(n_boot=100))
    assert math.isfinite(result.speedups.set_index("optimizer").loc["muon", "speedup"])
    with pytest.raises(ValueError, match="one context"):
        build_tables(cells, result.speedups, result.fits, one_d_ablations(runs), 0.9)


@pytest.mark.unit
def test_a_sweeps_speedups_come_one_section_per_context():
    clean = to_frame(StoredRun.from_result(r) for r in _results(stray=False))
    mixed = to_frame(StoredRun.from_result(r) for r in _results(stray=True))
    text = speedup_section(mixed)
    assert speedup_section(clean).startswith(f"Context {DEFAULT}:\nSpeedup over AdamW")
    assert speedup_section(clean) in text
    assert f"Context {STRAY}:\nSpeedup over AdamW: needs AdamW" in text


@pytest.mark.unit
def test_the_studys_runs_and_the_regression_baseline_each_hold_one_context():
    paper = split_by_context(load_paper_runs().runs)
    assert [label for label, _ in paper] == [
        "data=DCLM-baseline mix eval=Paloma c4-en tok=llama3 bf16 tpu eval_tokens=unknown"]
    baseline = replace(load(DEFAULT_PATH), eval_tokens=65536)  # a context of its specs' own
    regress = split_by_context(runs_frame(baseline.runs, baseline))
    assert [label for label, _ in regress] == [DEFAULT.replace("131072", "65536")]
