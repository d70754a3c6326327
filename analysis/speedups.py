"""Every cell's speedup over AdamW, with an interval and flags, from the cells table.

The cells are those of one context (analysis.cells): AdamW's law for a comparison is fitted only on
AdamW cells of the same scale and the same context, so cells of several contexts are refused. Per
scale: fit AdamW's law on its cells at the chosen ratios (analysis/fit.py), read every cell's
loss through it (speedup = D_eff / D), and bootstrap an interval (analysis/bootstrap.py). Each
cell is flagged where the estimate needs care:

- extrapolated: its loss lies outside the range of AdamW losses the fit was made on, so D_eff
  comes from the law beyond the budgets that pinned it down;
- below_asymptote: its loss is at or below the fit's beta, a loss AdamW would never reach, so the
  speedup is infinite (reported as inf, never a crash).

The residual scale for single-seed cells is pooled over the scales' fits by default
(sqrt(sum RSS / sum dof)): a 3-parameter fit through 4 points leaves one degree of freedom, and
its own residual scale can be near zero by luck (the study's 0.1B and 1.2B fits leave residuals
of about 1e-5, 100x smaller than the 0.3B and 0.5B ones).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.bootstrap import Intervals, Observed, Replicates, speedup_replicates
from analysis.cells import scale_order
from analysis.fit import FitError, PowerLawFit, fit_power_law
from bench.errors import UserError
from bench.study import REFERENCE_OPTIMIZER

SPEEDUP_COLUMNS = ["context", "optimizer", "scale", "ratio", "loss", "adamw_fit_loss", "speedup",
                   "ci_low", "ci_high", "extrapolated", "below_asymptote", "n_seeds", "uncertainty",
                   "params", "note"]
FIT_COLUMNS = ["context", "scale", "params", "alpha", "B", "beta", "fit_ratios", "n_points", "dof",
               "rmse", "r2", "residual_sd", "sigma", "sigma_source", "note"]


@dataclass(frozen=True)
class SpeedupOptions:
    """How speedups are estimated. fit_ratios None: every ratio AdamW has."""

    baseline: str = REFERENCE_OPTIMIZER
    fit_ratios: tuple[float, ...] | None = None
    n_boot: int = 2000
    level: float = 0.9
    seed: int | tuple[int, ...] = 0  # numpy's default_rng seed (a tuple: one of several streams)
    pool_sigma: bool = True


@dataclass
class SpeedupResult:
    """The per-scale fits, the per-cell speedups, and notes on anything that could not be done;
    row i of `loss_replicates` and `speedup_replicates` holds the bootstrap replicates behind
    row i of `speedups` (NaN where it has none)."""

    fits: pd.DataFrame
    speedups: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    fit_objects: dict[str, PowerLawFit] = field(default_factory=dict)
    loss_replicates: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    speedup_replicates: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))


def estimate_speedups(cells: pd.DataFrame,
                      options: SpeedupOptions = SpeedupOptions()) -> SpeedupResult:
    """Fit AdamW per scale and give every cell its speedup, interval and flags (the cells of one
    context: analysis.cells.split_by_context)."""
    _check_one_context(cells)
    notes: list[str] = []
    scales = scale_order(cells)
    fits: dict[str, tuple[PowerLawFit, list[Observed]]] = {}
    no_baseline: dict[str, str] = {}  # scale -> why it has no law at all
    for scale in scales:
        if not _has_baseline(cells, scale, options.baseline):
            no_baseline[scale] = (f"no {options.baseline} run with a loss at this scale in this "
                                  f"context")
            notes.append(f"scale {scale}: {no_baseline[scale]}, so no law to read speedups through")
            continue
        points = _fit_points(cells, scale, options)
        try:
            fits[scale] = (fit_power_law([p.ratio for p in points], [p.loss for p in points]),
                           points)
        except FitError as e:
            notes.append(f"scale {scale}: no AdamW fit: {e}")
    sigmas = _sigmas({s: f for s, (f, _) in fits.items()}, options.pool_sigma)
    rng = np.random.default_rng(options.seed)
    rows: list[dict] = []
    losses, speedups = [np.empty((0, options.n_boot))], [np.empty((0, options.n_boot))]
    for scale in scales:
        sub = cells[cells["scale"] == scale]
        if scale in fits:
            scale_rows, reps = _scale_speedups(sub, *fits[scale], sigmas[scale][0], options, rng,
                                               notes)
            rows += scale_rows
            losses.append(reps.losses)
            speedups.append(reps.speedups)
        else:
            note = no_baseline.get(scale, "no AdamW fit at this scale")
            rows += [_row(c, note=note) for _, c in sub.iterrows()]
            losses.append(np.full((len(sub), options.n_boot), np.nan))
            speedups.append(losses[-1])
    fit_table = pd.DataFrame([_fit_row(s, fits[s][0], cells, *sigmas[s]) for s in fits],
                             columns=FIT_COLUMNS)
    return SpeedupResult(fit_table, pd.DataFrame(rows, columns=SPEEDUP_COLUMNS), notes,
                         {s: f for s, (f, _) in fits.items()}, np.vstack(losses),
                         np.vstack(speedups))


def _check_one_context(cells: pd.DataFrame) -> None:
    contexts = list(cells["context"].unique())
    if len(contexts) > 1:
        raise ValueError(f"cells of {len(contexts)} contexts ({'; '.join(contexts)}): estimate "
                         f"each context's speedups apart (analysis.cells.split_by_context)")


def _has_baseline(cells: pd.DataFrame, scale: str, baseline: str) -> bool:
    return bool(((cells["scale"] == scale) & (cells["optimizer"] == baseline)
                 & np.isfinite(cells["loss"])).any())


def observed(cell: pd.Series) -> Observed:
    return Observed(float(cell["ratio"]), tuple(cell["losses"]))


def _fit_points(cells: pd.DataFrame, scale: str, options: SpeedupOptions) -> list[Observed]:
    base = cells[(cells["scale"] == scale) & (cells["optimizer"] == options.baseline)
                 & np.isfinite(cells["loss"])]
    if options.fit_ratios is not None:
        base = base[base["ratio"].isin(options.fit_ratios)]
    return [observed(c) for _, c in base.sort_values("ratio").iterrows()]


def _sigmas(fits: dict[str, PowerLawFit], pool: bool) -> dict[str, tuple[float, str]]:
    """The residual scale each scale's single-seed cells are perturbed with, and its source."""
    rss = sum(f.rss for f in fits.values() if f.dof > 0)
    dof = sum(f.dof for f in fits.values() if f.dof > 0)
    if pool and dof > 0:
        pooled = math.sqrt(rss / dof)
        source = f"pooled over {sum(f.dof > 0 for f in fits.values())} scale fit(s), {dof} dof"
        return {s: (pooled, source) for s in fits}
    return {s: (f.residual_sd, f"this scale's fit, {f.dof} dof" if f.dof > 0 else "none")
            for s, f in fits.items()}


def _scale_speedups(sub: pd.DataFrame, fit: PowerLawFit, points: list[Observed], sigma: float,
                    options: SpeedupOptions, rng: np.random.Generator,
                    notes: list[str]) -> tuple[list[dict], Replicates]:
    """The scale's rows and their replicates (row-aligned with `sub`)."""
    live = np.isfinite(sub["loss"].to_numpy(dtype=float))
    cells = [observed(c) for _, c in sub[live].iterrows()]
    fit_index = [_fit_index(c, points, options.baseline) for _, c in sub[live].iterrows()]
    reps = speedup_replicates(fit, points, cells, fit_index, sigma, n_boot=options.n_boot, rng=rng)
    intervals = reps.intervals(options.level)
    if intervals.reason:
        notes.append(f"scale {sub['scale'].iloc[0]}: no intervals: {intervals.reason}")
    bounds = dict(zip(sub.index[live], intervals.bounds))
    rows = [_cell_speedup(c, fit, bounds[i], intervals, sigma) if i in bounds
            else _row(c, note=_no_loss_note(c)) for i, c in sub.iterrows()]
    aligned = np.full((2, len(sub), options.n_boot), np.nan)
    aligned[:, live] = reps.losses, reps.speedups
    return rows, Replicates(*aligned, reps.failed_refits, reps.reason)


def _fit_index(cell: pd.Series, points: list[Observed], baseline: str) -> int | None:
    if cell["optimizer"] != baseline:
        return None
    matches = [i for i, p in enumerate(points) if p.ratio == float(cell["ratio"])]
    return matches[0] if matches else None


def _cell_speedup(cell: pd.Series, fit: PowerLawFit, bounds, intervals: Intervals,
                  sigma: float) -> dict:
    loss, ratio = float(cell["loss"]), float(cell["ratio"])
    low, high = fit.loss_range
    speedup = float(fit.speedup(loss, ratio))
    below = loss <= fit.beta
    notes = []
    if below:
        notes.append(f"loss below the fit's asymptote beta={fit.beta:.4f}: unbounded speedup")
    if intervals.reason:
        notes.append(intervals.reason)
    return _row(cell, adamw_fit_loss=float(fit.predict(ratio)), speedup=speedup,
                ci_low=bounds[0], ci_high=bounds[1], extrapolated=not (low <= loss <= high),
                below_asymptote=bool(below), uncertainty=_source(cell, sigma),
                note="; ".join(notes))


def _source(cell: pd.Series, sigma: float) -> str:
    if int(cell["n_seeds"]) >= 2:
        return f"{int(cell['n_seeds'])} seeds + fit"
    return f"residual sd {sigma:.2g} + fit" if np.isfinite(sigma) else "none"


def _no_loss_note(cell: pd.Series) -> str:
    return (f"no finished run ({int(cell['n_diverged'])} diverged, "
            f"{int(cell['n_failed'])} failed of {int(cell['n_runs'])})")


def _row(cell: pd.Series, **values) -> dict:
    row = {"context": cell["context"], "optimizer": cell["optimizer"], "scale": cell["scale"],
           "ratio": float(cell["ratio"]), "loss": float(cell["loss"]), "adamw_fit_loss": math.nan, "speedup": math.nan,
           "ci_low": math.nan, "ci_high": math.nan, "extrapolated": False,
           "below_asymptote": False, "n_seeds": int(cell["n_seeds"]), "uncertainty": "",
           "params": cell["params"], "note": ""}
    row.update(values)
    return row


def _fit_row(scale: str, fit: PowerLawFit, cells: pd.DataFrame, sigma: float,
             source: str) -> dict:
    params = cells.loc[cells["scale"] == scale, "params"].median()
    return {"context": cells["context"].iloc[0], "scale": scale, "params": params,
            "alpha": fit.alpha, "B": fit.b, "beta": fit.beta,
            "fit_ratios": " ".join(f"{r:g}" for r in fit.ratios), "n_points": len(fit.ratios),
            "dof": fit.dof, "rmse": fit.rmse, "r2": fit.r2, "residual_sd": fit.residual_sd,
            "sigma": sigma, "sigma_source": source, "note": fit.at_bound}


def missing_intervals(speedups: pd.DataFrame) -> str:
    """Why cells with a finite speedup have no interval, in one line; "" when every one has."""
    rows = speedups[np.isfinite(speedups["speedup"]) & ~np.isfinite(speedups["ci_low"])]
    if not len(rows):
        return ""
    reasons = "; ".join(dict.fromkeys(note for note in rows["note"] if note)) or "the bootstrap gave none"
    shown = int(np.isfinite(speedups["speedup"]).sum())
    return f"no interval for {len(rows)} of {shown} speedups: {reasons}"


def interval_method(speedups: pd.DataFrame, level: float) -> str:
    """How the intervals shown were made, in one sentence for a caption (analysis/bootstrap.py)."""
    sources = speedups.loc[np.isfinite(speedups["ci_low"]), "uncertainty"]
    seeded = sources.str.contains("seeds").any()
    single = sources.str.startswith("residual").any()
    parts = (["cells with several seeds resampled from their seeds"] if seeded else []) + \
        (["single-seed cells perturbed by the fit's residual sd (parametric)"] if single else [])
    if not parts:
        return "no intervals (the bootstrap gave none)"
    return f"{level:.0%} percentile bootstrap: {'; '.join(parts)}; AdamW's law refitted in every replicate"


def parse_ratios(text: str | None, flag: str = "--fit-ratios") -> tuple[float, ...] | None:
    """'1,2,4,8' -> (1.0, 2.0, 4.0, 8.0); None, '' or 'all' -> None (every ratio)."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    try:
        values = tuple(float(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise UserError(f"{flag} wants numbers separated by commas or 'all', "
                        f"got {text!r}") from None
    return values
