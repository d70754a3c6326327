"""One analysis over a runs frame: cells, speedups, tables and figures, written to one folder.

Both `optbench analyze` (our store) and `optbench reproduce` (the study's files) call
`run_analysis`; only where the runs come from differs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.cells import scale_order, summarize_cells
from analysis.sensitivity import one_d_ablations
from analysis.speedups import SpeedupOptions, SpeedupResult, estimate_speedups
from analysis.tables import build_tables, write_table
from bench.errors import UserError


@dataclass(frozen=True)
class AnalysisOptions:
    """speedup: how speedups are estimated; headline_ratio: the ratio of the headline figure
    (None: the largest ratio most scales have speedups at); plots: draw figures."""

    speedup: SpeedupOptions = SpeedupOptions()
    headline_ratio: float | None = None
    plots: bool = True


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


def run_analysis(runs: pd.DataFrame, out_dir: Path,
                 options: AnalysisOptions = AnalysisOptions()) -> AnalysisOutputs:
    """Analyse `runs` and write every table and figure under `out_dir`."""
    if runs is None or not len(runs):
        raise UserError("no runs to analyse")
    cells = summarize_cells(runs)
    if not np.isfinite(cells["loss"]).any():
        raise UserError(f"nothing to analyse: none of the {len(runs)} runs finished with a loss "
                        f"(all diverged or failed)")
    _check_ratio(cells, options.headline_ratio)
    result = estimate_speedups(cells, options.speedup)
    headline = _headline_ratio(result.speedups, options)
    out = AnalysisOutputs(cells, result, headline)
    out_dir.mkdir(parents=True, exist_ok=True)
    for table in build_tables(cells, result.speedups, result.fits, options.speedup.level):
        out.files += write_table(table, out_dir)
    if options.plots:
        out.files += _draw(runs, cells, result, headline, out_dir, options.speedup)
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
