"""One analysis over a runs frame: cells, speedups, tables and figures, written to one folder.

Both `optbench analyze` (our store) and `optbench reproduce` (the study's files) call
`run_analysis`; only where the runs come from differs. One analysis holds one context
(bench.store.record.CONTEXT_COLUMNS): `run_analysis` refuses runs of several contexts unless told
to mix them, and `analyze_by_context` analyses each context alone, exactly as if the runs held
only it, into a folder of its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.cells import check_runs, ok_mask, scale_order, split_by_context, summarize_cells
from analysis.sensitivity import one_d_ablations
from analysis.speedups import SpeedupOptions, SpeedupResult, estimate_speedups
from analysis.tables import Table, build_tables, write_table
from bench.errors import UserError


@dataclass(frozen=True)
class AnalysisOptions:
    """speedup: how speedups are estimated; headline_ratio: the ratio of the headline figure
    (None: the largest ratio most scales have speedups at); plots: draw figures; mix_contexts:
    pool runs of different contexts into one analysis (its context reads MIXED CONTEXTS)."""

    speedup: SpeedupOptions = SpeedupOptions()
    headline_ratio: float | None = None
    plots: bool = True
    mix_contexts: bool = False


@dataclass
class AnalysisOutputs:
    cells: pd.DataFrame
    result: SpeedupResult
    headline_ratio: float | None
    files: list[Path] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        return self.result.notes

    def file(self, name: str) -> Path:
        """The written file called `name` (e.g. 'speedup_vs_scale.png')."""
        return next(p for p in self.files if p.name == name)


@dataclass
class ContextAnalysis:
    """One context of `analyze_by_context`: its label, runs and folder, and its analysis (None
    where none of its runs finished)."""

    context: str
    runs: pd.DataFrame
    out_dir: Path
    outputs: AnalysisOutputs | None


def run_analysis(runs: pd.DataFrame, out_dir: Path,
                 options: AnalysisOptions = AnalysisOptions()) -> AnalysisOutputs:
    """Analyse `runs` (of one context, unless options.mix_contexts) and write every table and
    figure under `out_dir`."""
    _check_some(runs)
    contexts = split_by_context(runs)
    if len(contexts) > 1 and not options.mix_contexts:
        raise UserError(f"the runs hold {len(contexts)} contexts "
                        f"({'; '.join(label for label, _ in contexts)}): analyse each alone "
                        f"(analyze_by_context) or mix them explicitly")
    return _write(runs, _estimate(runs, options), out_dir, options)


def analyze_by_context(runs: pd.DataFrame, out_dir: Path,
                       options: AnalysisOptions = AnalysisOptions()) -> list[ContextAnalysis]:
    """Analyse each context's runs alone, as if the runs held only them: into `out_dir` when
    there is one context, else into out_dir/context-1, context-2, ... (most runs first), listed
    in out_dir/contexts.md. A context where no run finished is listed and not analysed; one
    without any reference (AdamW) run draws no headline figure, whatever the requested ratio.
    Every context is estimated before anything is written, so bad input writes nothing."""
    _check_some(runs)
    groups = split_by_context(runs)
    if len(groups) == 1:
        return [ContextAnalysis(groups[0][0], runs, out_dir, run_analysis(runs, out_dir, options))]
    plans = [_plan(label, sub, out_dir / f"context-{i}", options)
             for i, (label, sub) in enumerate(groups, 1)]
    if all(plan.outputs is None for plan in plans):
        raise UserError(f"nothing to analyse: none of the {len(runs)} runs finished with a loss "
                        f"(all diverged or failed)")
    for plan in plans:
        if plan.outputs is not None:
            _write(plan.runs, plan.outputs, plan.out_dir, options)
    write_table(contexts_table(plans, out_dir), out_dir)
    return plans


def contexts_table(plans: list[ContextAnalysis], out_dir: Path) -> Table:
    """Which folder holds which context, and how many runs it has."""
    frame = pd.DataFrame({
        "folder": [str(plan.out_dir.relative_to(out_dir)) for plan in plans],
        "context": [plan.context for plan in plans],
        "runs": [len(plan.runs) for plan in plans],
        "analysed": ["yes" if plan.outputs is not None else "no: no run finished"
                     for plan in plans]})
    return Table("contexts", "The runs hold several contexts; each is analysed alone in its "
                 "folder (runs of different contexts never share a cell).", [("", frame)], frame)


def _check_some(runs: pd.DataFrame) -> None:
    if runs is None or not len(runs):
        raise UserError("no runs to analyse")
    check_runs(runs)


def _plan(label: str, runs: pd.DataFrame, out_dir: Path,
          options: AnalysisOptions) -> ContextAnalysis:
    if not ok_mask(runs).any():
        return ContextAnalysis(label, runs, out_dir, None)
    try:
        outputs = _estimate(runs, _context_options(runs, options))
    except UserError as e:
        raise UserError(f"context {label}: {e}") from None
    return ContextAnalysis(label, runs, out_dir, outputs)


def _context_options(runs: pd.DataFrame, options: AnalysisOptions) -> AnalysisOptions:
    """A context without the reference optimizer has no speedups: no headline ratio to check."""
    if options.speedup.baseline in set(runs["optimizer"]):
        return options
    return replace(options, headline_ratio=None)


def _estimate(runs: pd.DataFrame, options: AnalysisOptions) -> AnalysisOutputs:
    """Cells, speedups and the headline ratio, before anything is written."""
    cells = summarize_cells(runs, options.mix_contexts)
    if not np.isfinite(cells["loss"]).any():
        raise UserError(f"nothing to analyse: none of the {len(runs)} runs finished with a loss "
                        f"(all diverged or failed)")
    _check_ratio(cells, options.headline_ratio)
    result = estimate_speedups(cells, options.speedup)
    return AnalysisOutputs(cells, result, _headline_ratio(result.speedups, options))


def _write(runs: pd.DataFrame, out: AnalysisOutputs, out_dir: Path,
           options: AnalysisOptions) -> AnalysisOutputs:
    """Every table and figure of `out` under out_dir (their paths added to out.files)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = out.result
    for table in build_tables(out.cells, result.speedups, result.fits, options.speedup.level):
        out.files += write_table(table, out_dir)
    if options.plots:
        out.files += _draw(runs, out.cells, result, out.headline_ratio, out_dir, options.speedup)
    return out


def _draw(runs, cells, result: SpeedupResult, headline, out_dir: Path,
          options: SpeedupOptions) -> list[Path]:
    files: list[Path] = []
    speedups = result.speedups
    if headline is not None:
        files += plots.speedup_vs_scale(speedups, [headline], out_dir / "speedup_vs_scale",
                                        options.level, options.baseline)
        ratios = sorted(speedups.loc[np.isfinite(speedups["speedup"]), "ratio"].unique())
        files += plots.speedup_vs_scale(speedups, ratios, out_dir / "speedup_vs_scale_all",
                                        options.level, options.baseline)
    files += plots.loss_vs_data(cells, result.fit_objects, out_dir / "loss_vs_data",
                                options.baseline)
    ablations = one_d_ablations(runs)
    scales = scale_order(cells)
    for optimizer in sorted(ablations["optimizer"].unique()):
        files += plots.sensitivity(ablations, optimizer, scales,
                                   out_dir / f"sensitivity_{optimizer}")
    return files


def _check_ratio(cells: pd.DataFrame, ratio: float | None) -> None:
    """Fail before the slow part when the headline ratio is not in the data at all."""
    ratios = sorted(cells["ratio"].unique())
    if ratio is not None and ratio not in ratios:
        raise UserError(f"no cells at ratio {ratio:g} to plot (ratios: "
                        f"{', '.join(f'{r:g}' for r in ratios)})")


def _headline_ratio(speedups: pd.DataFrame, options: AnalysisOptions) -> float | None:
    """The requested ratio; else the largest ratio with speedups at the most scales."""
    others = speedups[(speedups["optimizer"] != options.speedup.baseline)
                      & np.isfinite(speedups["speedup"])]
    if options.headline_ratio is not None:
        if not (others["ratio"] == options.headline_ratio).any():
            raise UserError(f"no speedups at ratio {options.headline_ratio:g} to plot "
                            f"(ratios with speedups: "
                            f"{', '.join(f'{r:g}' for r in sorted(others['ratio'].unique()))})")
        return options.headline_ratio
    if not len(others):
        return None
    coverage = others.groupby("ratio")["scale"].nunique()
    return float(max(coverage.index, key=lambda r: (coverage[r], r)))
