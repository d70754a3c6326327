"""One analysis over a runs frame: cells, speedups, tables and figures, written to one folder.

Both `optbench analyze` (our store) and `optbench reproduce` (the study's files) call
`run_analysis`; only where the runs come from differs. One analysis holds one context
(bench.store.record.CONTEXT_COLUMNS): `run_analysis` refuses runs of several contexts unless told
to mix them, and `analyze_by_context` analyses each context alone, exactly as if the runs held
only it, into a folder of its own.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.cells import check_runs, ok_mask, scale_order, split_by_context, summarize_cells
from analysis.plots import plt
from analysis.sensitivity import one_d_ablations
from analysis.speedups import (
    SpeedupOptions,
    SpeedupResult,
    estimate_speedups,
    interval_method,
    missing_intervals,
)
from analysis.tables import Table, build_tables, write_table
from bench.errors import UserError


@dataclass(frozen=True)
class AnalysisOptions:
    """speedup: how speedups are estimated; headline_ratio: the ratio of the headline figure
    (None: the ratio with the most speedups, the larger on a tie); plots: draw figures;
    mix_contexts: pool runs of different contexts into one analysis (its context reads MIXED
    CONTEXTS); highlight: optimizers drawn in colour on the speedup figures (the others grey)."""

    speedup: SpeedupOptions = SpeedupOptions()
    headline_ratio: float | None = None
    plots: bool = True
    mix_contexts: bool = False
    highlight: tuple[str, ...] = ()


@dataclass
class AnalysisOutputs:
    cells: pd.DataFrame
    result: SpeedupResult
    headline_ratio: float | None
    ablations: pd.DataFrame  # the one-parameter ablations (analysis.sensitivity)
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
    _check_some(runs, options)
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
    _check_some(runs, options)
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


def _check_some(runs: pd.DataFrame, options: AnalysisOptions) -> None:
    if runs is None or not len(runs):
        raise UserError("no runs to analyse")
    check_runs(runs)
    unknown = sorted(set(options.highlight) - set(runs["optimizer"]))
    if unknown:
        raise UserError(f"--highlight {unknown[0]!r}: no such optimizer in the runs "
                        f"({', '.join(sorted(set(runs['optimizer'])))})")


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
    return AnalysisOutputs(cells, result, pick_headline_ratio(result.speedups, options),
                           one_d_ablations(runs))


def _write(runs: pd.DataFrame, out: AnalysisOutputs, out_dir: Path,
           options: AnalysisOptions) -> AnalysisOutputs:
    """Every table and figure of `out` under out_dir (their paths added to out.files)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = out.result
    for table in build_tables(out.cells, result.speedups, result.fits, out.ablations, options.speedup.level):
        out.files += write_table(table, out_dir)
    if options.plots:
        for stem, fig in figures(out, options):
            out.files += plots.save(fig, out_dir / stem)
    return out


def figures(out: AnalysisOutputs, options: AnalysisOptions) -> Iterator[tuple[str, plt.Figure]]:
    """Every figure of an analysis with its file stem, drawn one at a time and not yet saved."""
    cells, result, headline = out.cells, out.result, out.headline_ratio
    speedups, baseline = result.speedups, options.speedup.baseline
    context = cells["context"].iloc[0]
    order = plots.value_order(speedups, headline, baseline)
    if headline is not None:
        missing = missing_intervals(speedups)
        draw = partial(plots.speedup_figure, speedups, order=order, context=context,
                       method=interval_method(speedups, options.speedup.level), baseline=baseline,
                       highlight=options.highlight)
        yield "speedup_vs_scale", draw([headline], notes=(missing,))
        ratios, dropped = _ratios_in_fit_range(speedups, result.fit_objects, baseline)
        yield "speedup_vs_scale_all", draw(ratios, notes=(dropped, missing))
    yield "loss_vs_data", plots.loss_figure(cells, result.fit_objects, order, context, False, baseline)
    if result.fit_objects:
        yield "loss_minus_adamw_fit", plots.loss_figure(cells, result.fit_objects, order, context, True,
                                                        baseline)
    for optimizer in sorted(out.ablations["optimizer"].unique()):
        fig = plots.sensitivity_figure(out.ablations, optimizer, scale_order(cells), context)
        yield f"sensitivity_{optimizer}", fig


def _ratios_in_fit_range(speedups: pd.DataFrame, fits: dict, baseline: str) -> tuple[list[float], str]:
    """The ratios with speedups inside some scale's fitted budgets, and a note on those left out:
    beyond them every cell, AdamW's own included, is read through an extrapolated law."""
    finite = speedups[np.isfinite(speedups["speedup"])]
    ratios = sorted(finite.loc[finite["optimizer"] != baseline, "ratio"].unique())
    inside = [r for r in ratios if any(min(f.ratios) <= r <= max(f.ratios) for f in fits.values())]
    notes = []
    for r in sorted(set(ratios) - set(inside)):
        own = finite[(finite["optimizer"] == baseline) & (finite["ratio"] == r)]
        reads = ", ".join(f"{v:.2f}x at {s}" for s, v in zip(own["scale"], own["speedup"]))
        notes.append(f"{r:g}x left out: beyond the budgets {baseline}'s law was fitted on"
                     + (f" ({baseline}'s own {r:g}x runs read {reads} against it)" if reads else ""))
    return inside or ratios, ("; ".join(notes) + ". speedups.csv lists every ratio.") if notes else ""


def _check_ratio(cells: pd.DataFrame, ratio: float | None) -> None:
    """Fail before the slow part when the headline ratio is not in the data at all."""
    ratios = sorted(cells["ratio"].unique())
    if ratio is not None and ratio not in ratios:
        raise UserError(f"no cells at ratio {ratio:g} to plot (ratios: "
                        f"{', '.join(f'{r:g}' for r in ratios)})")


def pick_headline_ratio(speedups: pd.DataFrame, options: AnalysisOptions) -> float | None:
    """The requested ratio; else the ratio with the most speedups (optimizer and scale pairs),
    the larger on a tie: the headline shows as many optimizers as the data allow."""
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
    coverage = others.groupby("ratio").size()
    return float(max(coverage.index, key=lambda r: (coverage[r], r)))
