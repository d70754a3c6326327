"""The CI regression check: re-run the baseline's optimizers at their tuned hyperparameters,
recompute the speedups over AdamW, and compare them with the committed baseline.

The layout of a new baseline (Layout) fits a 2-core budget of about 10 minutes: AdamW at 0.25,
0.5 and 1x Chinchilla (three budgets for its 3-parameter law), the others at 0.25 and 0.5x, where
their losses fall inside the range AdamW's law was fitted on (their speedups are read off the
fit, not extrapolated), five seeds everywhere (fewer miss real faults). Nothing runs below
0.25x: there AdamW's loss depends on when a seed leaves the early loss plateau, which only adds
noise to the fit. How a change is judged is in stats.py, the file format in baseline.py, how the
runs are trained in runs.py.
"""
from __future__ import annotations

import math
import platform
import shlex
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from analysis.cells import summarize_cells
from bench.errors import UserError
from bench.run.estimate import usable_cpus
from bench.run.hardware import cpu_model
from bench.run.spec import RunSpec
from bench.store.record import CONTEXT_COLUMNS, spec_context
from bench.study import REFERENCE_OPTIMIZER
from bench.urls import hide_passwords, shown_url
from sweeps.regress.baseline import Baseline, Entry, run_record, runs_frame
from sweeps.regress.runs import Report, train_all
from sweeps.regress.stats import REGRESSION, CheckOptions, Side, Verdict, change, compare, measure_side

REPO = Path(__file__).resolve().parents[2]
SUMMARY_LEVEL = 0.9  # the level of the intervals written into the baseline for readers
RUN_TIMEOUT_FLOOR_S = 600.0


@dataclass(frozen=True)
class Layout:
    """What a new baseline runs (an existing one carries its own layout in the file)."""

    scale: str = "cpu-xs"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    threads: int = 1
    reference_ratios: tuple[float, ...] = (0.25, 0.5, 1.0)
    ratios: tuple[float, ...] = (0.25, 0.5)
    optimizers: tuple[str, ...] = (REFERENCE_OPTIMIZER, "nadamw", "muon", "soap", "lion", "normuon")
    # Lion at its tuned lr leaves its early loss plateau late, and its seeds spread too widely
    # inside the plateau to show a fault: it runs up to 1x.
    ratios_of: tuple[tuple[str, tuple[float, ...]], ...] = (("lion", (0.5, 1.0)),)

    def ratios_for(self, name: str) -> tuple[float, ...]:
        if name == REFERENCE_OPTIMIZER:
            return self.reference_ratios
        return dict(self.ratios_of).get(name, self.ratios)


@dataclass
class Outcome:
    verdicts: list[Verdict]
    level: float  # of every interval in the table
    alpha: float
    seconds: float  # training time of the new measurement

    @property
    def regressed(self) -> list[str]:
        return [v.optimizer for v in self.verdicts if v.verdict == REGRESSION]


def measure(baseline: Baseline, workers: int, seeds: tuple[int, ...] | None = None,
            report: Report | None = None, timeout_s: float = 0.0) -> tuple[list[dict[str, Any]], float]:
    """Train every run of the baseline's layout afresh; the run records and the seconds it took.
    `timeout_s`: a run's deadline in a pool of workers (runs.train_all)."""
    start = time.perf_counter()
    results = train_all(list(baseline.specs(seeds)), baseline.threads, workers, report, timeout_s)
    return [run_record(r) for r in results], time.perf_counter() - start


def run_timeout(baseline: Baseline) -> float:
    """The default --run-timeout: ten times the baseline's slowest run, at least RUN_TIMEOUT_FLOOR_S
    (a slower machine than the baseline's must not be taken for a hung run)."""
    slowest = max((float(r.get("wall_time_s") or 0.0) for r in baseline.runs), default=0.0)
    return max(RUN_TIMEOUT_FLOOR_S, 10 * slowest)


def check(baseline: Baseline, now_runs: list[dict[str, Any]],
          options: CheckOptions = CheckOptions(), seconds: float = math.nan) -> Outcome:
    """Compare a new measurement of the baseline's layout with the baseline."""
    names = list(baseline.optimizers)
    base_cells, now_cells = cells_of(baseline, baseline.runs), cells_of(baseline, now_runs)
    base = measure_side(base_cells, options, stream=0)
    now = measure_side(now_cells, options, stream=1)
    diff = change(base_cells, now_cells, base, now, options)
    verdicts = compare(base, now, diff, names, options, failure_notes(baseline.runs, now_runs))
    return Outcome(verdicts, options.level(len(names)), options.alpha, seconds)


def cells_of(baseline: Baseline, runs: list[dict[str, Any]]) -> pd.DataFrame:
    return summarize_cells(runs_frame(runs, baseline))


def failure_notes(base_runs: list[dict], now_runs: list[dict]) -> dict[str, str]:
    """Optimizers with more diverged or failed runs now than in the baseline, and how many."""
    before = Counter(r["optimizer"] for r in base_runs if r["status"] != "ok")
    after = Counter(r["optimizer"] for r in now_runs if r["status"] != "ok")
    total = Counter(r["optimizer"] for r in now_runs)
    return {name: f"{after[name]} of {total[name]} runs diverged or failed (baseline: {before[name]})"
            for name in after if after[name] > before[name]}


def updated(baseline: Baseline, now_runs: list[dict[str, Any]], seconds: float,
            seeds: tuple[int, ...] | None = None, tuning: dict[str, Any] | None = None) -> Baseline:
    """The baseline re-measured: same layout and hyperparameters, new runs, summaries, provenance."""
    new = replace(baseline, runs=now_runs, seeds=seeds or baseline.seeds)
    side = measure_side(cells_of(new, now_runs), CheckOptions(), stream=0)
    new.speedups = _records(side.speedups)
    new.summary = summary(side, list(new.optimizers))
    provenance = dict(baseline.provenance)
    if tuning is not None:
        provenance["tuning"] = tuning
    provenance["measured"] = {**environment(), "training_seconds": round(seconds, 1)}
    new.provenance = provenance
    return new


def new_baseline(tuned: dict[str, dict[str, Any]], layout: Layout = Layout()) -> Baseline:
    """A baseline with no runs yet: `tuned` maps each optimizer (AdamW first) to its best config."""
    if REFERENCE_OPTIMIZER not in tuned:
        raise UserError(f"a baseline needs {REFERENCE_OPTIMIZER} (speedups are over it)")
    names = [REFERENCE_OPTIMIZER] + [n for n in tuned if n != REFERENCE_OPTIMIZER]
    entries = {n: Entry(dict(RunSpec(n, layout.scale, 1.0, tuned[n]).hparams), layout.ratios_for(n))
               for n in names}
    return Baseline(layout.scale, layout.seeds, layout.threads, entries)


def tuning_runs(store_url: str, scale: str, ratio: float) -> pd.DataFrame:
    """The sweep store's runs at `scale` and `ratio` in the baseline's context (the default data,
    tokenizer, precision and device), read once for tuned_configs and tuning_record."""
    from bench.store.database import ResultStore

    frame = ResultStore(store_url).frame(scale=scale)
    context = spec_context(RunSpec(REFERENCE_OPTIMIZER, scale).to_dict())
    keep = np.logical_and.reduce([frame[c] == context[c] for c in CONTEXT_COLUMNS])
    return frame[keep & (frame["ratio"].astype(float) == float(ratio))]


def tuned_configs(frame: pd.DataFrame, store_url: str, scale: str, ratio: float,
                  optimizers: list[str]) -> dict[str, dict]:
    """Each optimizer's best config (lowest mean loss) among the sweep's runs (tuning_runs)."""
    cells = summarize_cells(frame) if len(frame) else pd.DataFrame(columns=["optimizer"])
    best = {row["optimizer"]: row for _, row in cells.iterrows()}
    missing = [n for n in optimizers if n not in best or not best[n]["hparams"]]
    if missing:
        raise UserError(f"the store {store_url} has no finished {scale} {ratio:g}x runs of "
                        f"{', '.join(missing)}; run the sweep first")
    return {n: dict(best[n]["hparams"]) for n in optimizers}


def tuning_record(frame: pd.DataFrame, store_url: str, scale: str, ratio: float,
                  command: str) -> dict[str, Any]:
    """Provenance of the tuned hyperparameters: the sweep, its store, and when its runs ran (store
    URLs with their passwords hidden)."""
    trials = frame.groupby("optimizer").size().to_dict() if len(frame) else {}
    return {"command": hide_passwords(command), "store": shown_url(store_url), "scale": scale, "ratio": ratio,
            "trials": {k: int(v) for k, v in trials.items()},
            "first_run": str(frame["created_at"].min()) if len(frame) else "",
            "last_run": str(frame["created_at"].max()) if len(frame) else "",
            "run_seconds_total": round(float(frame["wall_time_s"].sum()), 1) if len(frame) else 0.0,
            **{f"recorded_{k}": v for k, v in environment().items()}}


def summary(side: Side, names: list[str], level: float = SUMMARY_LEVEL) -> list[dict[str, Any]]:
    """Per optimizer: its statistic with a bootstrap interval, in readable units."""
    rows = []
    for name in names:
        low, high = side.interval(name, level)
        if name == REFERENCE_OPTIMIZER:
            rows.append({"optimizer": name, "statistic": "mean loss over its ratios",
                         "value": side.point[name], "ci_low": low, "ci_high": high, "level": level})
        else:
            rows.append({"optimizer": name, "statistic": "geometric-mean speedup over its ratios",
                         "value": math.exp(side.point.get(name, math.nan)), "ci_low": math.exp(low),
                         "ci_high": math.exp(high), "level": level})
    return [_finite(r) for r in rows]


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    keep = ["optimizer", "ratio", "loss", "adamw_fit_loss", "speedup", "ci_low", "ci_high",
            "extrapolated", "below_asymptote", "n_seeds", "note"]
    return [_finite(row) for row in frame[keep].to_dict(orient="records")]


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """A row JSON can hold: plain Python numbers, NaN as null, infinities as "inf"/"-inf"."""
    return {k: _plain(v) for k, v in row.items()}


def _plain(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return None
        return float(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    return v


def environment() -> dict[str, Any]:
    """Where and when a measurement was taken: commit (and whether the tree had local changes),
    date, command line (URL passwords hidden), torch, Python, CPU model and count."""
    return {"commit": _git("rev-parse", "HEAD"), "uncommitted_changes": bool(_git("status", "--porcelain")),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": shlex.join(["optbench", *map(hide_passwords, sys.argv[1:])]),
            "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu": cpu_model(), "cpus": usable_cpus()}


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


