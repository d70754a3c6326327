"""What a sweep prints at the end: the best config of every cell and the speedup over AdamW.

Speedups come from the analysis package (analysis.cells.summarize_cells, then
analysis.speedups.estimate_speedups) applied to this sweep's runs only, so the table reflects the
protocol and budget that were run. Where the store holds more runs of a cell (other sweeps), the
best-config list says what the analysis of the whole store picks, so the two never differ unsaid.
Runs of different contexts (data, precision, ...: bench.store.record.CONTEXT_COLUMNS) never share a
cell: each context gets its own section. The study's law L(D) = alpha * D^(-B) + beta has three
parameters, so a scale needs AdamW at three or more ratios for a speedup; with fewer the analysis
says so and the best-loss table stands alone.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.cells import hardware_note, split_by_context, summarize_cells
from analysis.speedups import SpeedupOptions, estimate_speedups, missing_intervals
from analysis.tables import format_frame
from bench.store.record import context_labels
from bench.study import REFERENCE_OPTIMIZER
from sweeps.cell import CellTuning


def summary(tunings: list[CellTuning], frame: pd.DataFrame) -> str:
    """The best-config table and the speedup section, as text."""
    keys = set().union(*(t.results for t in tunings))
    runs = frame[frame["run_key"].isin(keys)]
    return "\n\n".join([best_table(tunings), best_configs(tunings, frame), speedup_section(runs)])


def best_table(tunings: list[CellTuning]) -> str:
    frame = pd.DataFrame([_best_row(t) for t in tunings])
    for optional in ("seeds", "note"):  # shown only when some cell has one
        if not (frame[optional] != "").any():
            frame = frame.drop(columns=optional)
    return ("Best loss per cell (seed 0; 'approx. best': configs within 3e-3 of the best):\n"
            + format_frame(frame))


def _best_row(t: CellTuning) -> dict:
    seeds = t.seed_losses()
    return {"optimizer": t.cell.optimizer, "ratio": f"{t.cell.ratio:g}x", "runs": len(t.losses),
            "diverged/failed": sum(not math.isfinite(v) for v in t.losses.values()),
            "best loss": _loss(t.best_loss()) if t.losses else "-",
            "seeds": (f"{np.mean(seeds):.4f} +- {np.std(seeds, ddof=1):.4f} ({len(seeds)})"
                      if len(seeds) >= 2 else ""),
            "approx. best": len(t.approx_best()),
            "note": f"stopped: {t.error} (run again to retry)" if t.error else ""}


def best_configs(tunings: list[CellTuning], frame: pd.DataFrame | None = None) -> str:
    """Each cell's winner among this sweep's runs; with the store's runs (`frame`), a line under
    every cell whose store holds runs this sweep did not ask for, saying what the analysis of the
    whole store (`optbench analyze`, `regress --tuned-from`) picks from them all."""
    lines = ["Best config per cell:"]
    for t in tunings:
        best = t.best_config()
        how = f" (the best mean of {t.finalists} finalists)" if t.finalists > 1 and best is not None else ""
        lines.append(f"  {t.cell.label:14} {_config_text(best)}{how}")
        if frame is not None:
            lines += _pooled(t, best, frame)
    return "\n".join(lines)


def _config_text(config) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items()) if config is not None else "(none finished)"


def _pooled(t: CellTuning, best, frame: pd.DataFrame) -> list[str]:
    """The store's view of the cell when it differs from this sweep's: the sweep chose among its
    own runs (its protocol, its finalists), the analysis chooses among every run of the cell in
    the same context (configs with two or more seeds all count as finalists), so a store extended
    by other sweeps can crown another config."""
    own = frame[frame["run_key"].isin(t.results)]
    if not len(own):
        return []
    labels = pd.Series(context_labels(frame), index=frame.index)
    cell = frame[(frame["optimizer"] == t.cell.optimizer) & (frame["scale"] == t.cell.scale)
                 & (frame["ratio"].astype(float) == float(t.cell.ratio))
                 & labels.isin(set(labels[own.index]))]
    extra = len(cell) - len(own)
    if extra <= 0:
        return []
    pooled = summarize_cells(cell).iloc[0]
    head = f"  {'':14} the store holds {extra} more run{'s' * (extra != 1)} of this cell (other sweeps)"
    if not pooled["n_seeds"]:
        return [f"{head}; none of them finished"]
    ours = t.cell.spec(best).to_dict()["hparams"] if best is not None else {}  # defaults filled in
    differs = {k: v for k, v in pooled["hparams"].items() if ours.get(k) != v}
    verdict = f"another winner, {_config_text(differs)}" if differs else "the same winner"
    seeds = int(pooled["n_seeds"])
    return [f"{head}; pooled with them (optbench analyze): {verdict}, loss {pooled['loss']:.4f} "
            f"over {seeds} seed{'s' * (seeds != 1)}"]


def speedup_section(runs: pd.DataFrame) -> str:
    """Speedup over AdamW per ratio, or why there is none; one section per context, each headed by
    the context it holds."""
    return "\n\n".join(f"Context {label}:\n{_context_speedups(sub)}" for label, sub in split_by_context(runs))


def _context_speedups(runs: pd.DataFrame) -> str:
    """The speedup section of one context's runs."""
    if not len(runs) or not np.isfinite(pd.to_numeric(runs["final_loss"], errors="coerce")).any():
        return "Speedup over AdamW: no finished runs."
    if REFERENCE_OPTIMIZER not in set(runs["optimizer"]):
        return "Speedup over AdamW: needs AdamW in the sweep (add it to --optimizers)."
    result = estimate_speedups(summarize_cells(runs), SpeedupOptions())
    lines = [f"note: {n}" for n in [*result.notes, hardware_note(runs)] if n]
    shown = result.speedups[np.isfinite(result.speedups["speedup"])]
    if not len(shown):
        return "\n".join(["Speedup over AdamW: none (the AdamW fit needs 3+ ratios at a scale).", *lines])
    missing = missing_intervals(result.speedups)
    lines += ["Speedup over AdamW (AdamW-equivalent data / data used, 90% interval"
              + (f"; {missing}" if missing else "") + "; * = loss outside AdamW's fitted range):",
              format_frame(speedup_grid(shown))]
    return "\n".join(lines)


def speedup_grid(speedups: pd.DataFrame) -> pd.DataFrame:
    """Optimizer rows, one column per ratio (scale too when there are several)."""
    several = speedups["scale"].nunique() > 1
    columns = [f"{s} {r:g}x" if several else f"{r:g}x"
               for s, r in zip(speedups["scale"], speedups["ratio"])]
    text = speedups.assign(column=columns, text=[_speedup_text(row) for _, row in speedups.iterrows()])
    grid = text.pivot_table(index="optimizer", columns="column", values="text", aggfunc="first", sort=False)
    return grid.fillna("").reset_index().rename_axis(columns=None)


def _speedup_text(row: pd.Series) -> str:
    mark = "*" if row["extrapolated"] else ""
    interval = f" [{row['ci_low']:.2f}, {row['ci_high']:.2f}]" if np.isfinite(row["ci_low"]) else ""
    return f"{row['speedup']:.2f}{mark}{interval}"


def _loss(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "diverged"
