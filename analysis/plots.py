"""The study's figures, drawn with matplotlib's Agg backend and saved as PNG and PDF.

- speedup vs model scale: one line per optimizer, bootstrap intervals as error bars (the study's
  headline figure is this at 8x Chinchilla); hollow markers flag extrapolated cells;
- loss vs data budget per scale: every optimizer's cells with AdamW's fitted law;
- sensitivity: loss above the cell's best vs each hyperparameter, from the one-parameter
  ablations (one figure per optimizer, one line per regime).
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window (CI and servers have no display)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from analysis.cells import scale_order  # noqa: E402
from analysis.fit import PowerLawFit  # noqa: E402
from bench.study import REFERENCE_OPTIMIZER

FORMATS = ("png", "pdf")
DIVERGED_Y = 1.0  # where a diverged ablation sits on the sensitivity plots (loss above best)
_PLAIN = FuncFormatter(lambda v, _: f"{v:g}")  # "1e-05", not mathtext: 3x faster to draw


def save(fig: plt.Figure, stem: Path) -> list[Path]:
    """Write stem.png and stem.pdf and close the figure."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(f".{ext}") for ext in FORMATS]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def optimizer_colors(optimizers, baseline: str = REFERENCE_OPTIMIZER) -> dict[str, tuple]:
    """A fixed colour per optimizer (the baseline black), stable across figures."""
    others = sorted(set(optimizers) - {baseline})
    cmap = plt.get_cmap("tab10" if len(others) <= 10 else "tab20")
    colors = {opt: cmap(i % cmap.N) for i, opt in enumerate(others)}
    colors[baseline] = (0.0, 0.0, 0.0, 1.0)
    return colors


def speedup_vs_scale(speedups: pd.DataFrame, ratios: list[float], stem: Path, level: float,
                     baseline: str = REFERENCE_OPTIMIZER) -> list[Path]:
    """Speedup vs non-embedding parameters, one panel per ratio, one line per optimizer."""
    scales = scale_order(speedups)
    x_of = _scale_positions(speedups, scales)
    colors = optimizer_colors(speedups["optimizer"], baseline)
    ncols = min(len(ratios), 3)
    nrows = math.ceil(len(ratios) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 4.8 * nrows), squeeze=False,
                             sharey=True)
    others = sorted(set(speedups["optimizer"]) - {baseline})
    for ax, ratio in zip(axes.flat, ratios):
        sub = speedups[(speedups["ratio"] == ratio) & (speedups["optimizer"] != baseline)]
        for k, opt in enumerate(others):
            rows = sub[(sub["optimizer"] == opt) & np.isfinite(sub["speedup"])]
            if not len(rows):
                continue
            rows = rows.assign(x=rows["scale"].map(x_of).astype(float)).sort_values("x")
            dodge = 1.0 + 0.012 * (k - (len(others) - 1) / 2)  # keep error bars apart
            _speedup_line(ax, rows, rows["x"] * dodge, colors[opt])
        ax.axhline(1.0, color="black", lw=1, ls=":")
        ax.set_xscale("log")
        ax.set_xticks([x_of[s] for s in scales], scales)
        ax.minorticks_off()
        ax.set_xlabel("model scale (non-embedding parameters)")
        ax.set_title(f"{ratio:g}x Chinchilla")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(ratios):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"speedup over {baseline} ({level:.0%} interval)")
    handles = [Line2D([], [], color=colors[o], marker="o", label=o) for o in others]
    handles += [Line2D([], [], color="black", ls=":", label=f"{baseline} (1.0)"),
                Line2D([], [], color="grey", marker="o", ls="none", markerfacecolor="white",
                       label="extrapolated fit")]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return save(fig, stem)


def _speedup_line(ax, rows: pd.DataFrame, x: pd.Series, color) -> None:
    y = rows["speedup"].to_numpy()
    low = np.where(np.isfinite(rows["ci_low"]), y - rows["ci_low"], 0.0)
    high = np.where(np.isfinite(rows["ci_high"]), rows["ci_high"] - y, 0.0)
    high = np.where(np.isinf(rows["ci_high"]), 0.0, high)  # unbounded: no bar rather than a wall
    ax.errorbar(x, y, yerr=[low, high], color=color, marker="o", ms=5, capsize=3, lw=1.5)
    extrap = rows["extrapolated"].to_numpy(dtype=bool)
    ax.scatter(np.asarray(x)[extrap], y[extrap], s=36, facecolors="white", edgecolors=[color],
               zorder=3)


def loss_vs_data(cells: pd.DataFrame, fits: dict[str, PowerLawFit], stem: Path,
                 baseline: str = REFERENCE_OPTIMIZER) -> list[Path]:
    """Per scale: every optimizer's loss vs data ratio, and AdamW's fitted law."""
    scales = scale_order(cells)
    colors = optimizer_colors(cells["optimizer"], baseline)
    ncols = min(len(scales), 2)
    nrows = math.ceil(len(scales) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 4.5 * nrows), squeeze=False)
    for ax, scale in zip(axes.flat, scales):
        sub = cells[(cells["scale"] == scale) & np.isfinite(cells["loss"])]
        for opt, rows in sub.groupby("optimizer"):
            style = dict(marker="s", lw=2) if opt == baseline else dict(marker="o", lw=0.8)
            ax.plot(rows["ratio"], rows["loss"], color=colors[opt], label=opt, ls="none"
                    if opt == baseline else "-", **style)
        if scale in fits:
            _draw_fit(ax, fits[scale], sub["ratio"])
        ax.set_xscale("log")
        ratios = sorted(sub["ratio"].unique())
        ax.set_xticks(ratios, [f"{r:g}" for r in ratios])
        ax.minorticks_off()
        ax.set_title(scale)
        ax.set_xlabel("data budget (x Chinchilla)")
        ax.set_ylabel("final loss")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(scales):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return save(fig, stem)


def _draw_fit(ax, fit: PowerLawFit, ratios: pd.Series) -> None:
    lo, hi = min(ratios.min(), min(fit.ratios)), max(ratios.max(), max(fit.ratios))
    d = np.geomspace(lo / 1.15, hi * 1.15, 200)
    ax.plot(d, fit.predict(d), color="black", lw=1, label="AdamW fit (grey: budgets fitted)")
    ax.axvspan(min(fit.ratios), max(fit.ratios), color="grey", alpha=0.08, lw=0)
    ax.text(0.97, 0.95, f"L = {fit.alpha:.3g} D^-{fit.b:.3g} + {fit.beta:.3f}",
            transform=ax.transAxes, ha="right", va="top", fontsize=9)


def sensitivity(ablations: pd.DataFrame, optimizer: str, scales: list[str],
                stem: Path) -> list[Path]:
    """Loss above the cell's best vs each swept hyperparameter; one line per regime.

    `scales` orders the regimes (smallest model first).
    """
    sub = ablations[ablations["optimizer"] == optimizer]
    params = sorted(sub["param"].unique())
    ncols = min(len(params), 4)
    nrows = math.ceil(len(params) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False)
    colors = _regime_colors(sub, scales)
    for ax, param in zip(axes.flat, params):
        points = sub[sub["param"] == param]
        to_x = _value_axis(ax, points["value"])
        for (scale, ratio), color in colors.items():
            rows = points[(points["scale"] == scale) & (points["ratio"] == ratio)]
            if len(rows):
                _sensitivity_line(ax, rows, to_x, color)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.yaxis.set_major_formatter(_PLAIN)
        ax.set_title(param, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("loss - cell's best")
    handles = [Line2D([], [], color=c, marker="o", ms=3, label=f"{s} {r:g}x")
               for (s, r), c in colors.items()]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               title=optimizer)
    fig.suptitle(f"{optimizer}: one-parameter ablations around each regime's centre config "
                 f"(x: diverged)")
    fig.tight_layout()
    return save(fig, stem)


def _regime_colors(ablations: pd.DataFrame, scales: list[str]) -> dict[tuple[str, float], tuple]:
    """A colour per (scale, ratio), ordered by scale then ratio."""
    regimes = sorted(set(zip(ablations["scale"], ablations["ratio"])),
                     key=lambda sr: (scales.index(sr[0]) if sr[0] in scales else len(scales),
                                     sr[1]))
    cmap = plt.get_cmap("viridis")
    return {sr: cmap(i / max(len(regimes) - 1, 1)) for i, sr in enumerate(regimes)}


def _sensitivity_line(ax, rows: pd.DataFrame, to_x, color) -> None:
    x = to_x(rows["value"])
    y = (rows["loss"] - rows["cell_best"]).to_numpy(dtype=float)
    ok = ~rows["diverged"].to_numpy(dtype=bool)
    order = np.argsort(x[ok])
    ax.plot(x[ok][order], y[ok][order], marker="o", ms=3, lw=1, color=color)
    ax.scatter(x[~ok], np.full((~ok).sum(), DIVERGED_Y), marker="x", color=color)


def _value_axis(ax, values: pd.Series):
    """Set up the x axis for a hyperparameter's values; returns values -> x positions.

    Numbers go on a linear or (spanning 10x or more, all positive) log axis; anything else
    (booleans, names) goes on evenly spaced ticks.
    """
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        v = values.to_numpy(dtype=float)
        if np.all(v > 0) and v.max() / v.min() >= 10:
            ax.set_xscale("log")
            if v.max() / v.min() < 1e3:  # a short span: label 1, 2, 5 in each decade
                ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(_PLAIN)
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short spans
        return lambda vals: vals.to_numpy(dtype=float)
    names = sorted({str(v) for v in values})
    ax.set_xticks(range(len(names)), names)
    return lambda vals: np.array([names.index(str(v)) for v in vals], dtype=float)


def _scale_positions(frame: pd.DataFrame, scales: list[str]) -> dict[str, float]:
    """x position per scale: its parameter count, or 1, 2, 3... where the count is unknown."""
    params = frame.groupby("scale")["params"].median()
    if all(np.isfinite(params.get(s, np.nan)) for s in scales):
        return {s: float(params[s]) for s in scales}
    return {s: float(i + 1) for i, s in enumerate(scales)}
