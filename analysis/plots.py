"""The study's figures, drawn with matplotlib's Agg backend and saved as PNG and PDF.

- speedup vs model scale: a panel per data ratio, a line per optimizer (legend ordered by value),
  intervals as error bars, hollow markers where AdamW's law is extrapolated, AdamW's own runs read
  through its law; the caption says how the intervals were made and names the context;
- loss vs data budget per scale with AdamW's law, and the same losses minus that law (lines 0.01
  nats apart become readable there); seed error bars wherever a cell has seeds;
- sensitivity: loss above the cell's best vs each hyperparameter from the one-parameter
  ablations, with the study's approximately-best band and diverged configs marked;
- tuning cost: best loss found against trials per protocol over search seeds, with the
  approximately-best band, and each search's winner against coordinate descent's on fresh seeds;
- agreement: our measurement's speedups against the study's, per optimizer, intervals on both
  axes (analysis/agreement.py).

Each `*_figure` function returns the drawn figure, so tests can read its artists back against the
tables; `save` writes it. Colours and markers are fixed per optimizer across figures.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window (CI and servers have no display)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from analysis.cells import scale_order  # noqa: E402
from analysis.fit import PowerLawFit  # noqa: E402
from analysis.tuning import reference_trace, winner_gap  # noqa: E402
from bench.study import APPROX_BEST_TOL, REFERENCE_OPTIMIZER, geometric  # noqa: E402

FORMATS = ("png", "pdf")
LOSS = "held-out loss (nats/token)"
MARKERS = ("o", "D", "^", "v", "P", "X", "*", "<", ">", "h", "p", "8")  # "s" is AdamW's
FADED = (0.72, 0.72, 0.72, 1.0)  # optimizers not highlighted
_PLAIN = FuncFormatter(lambda v, _: f"{v:g}")  # "1e-05", not mathtext: 3x faster to draw


@dataclass(frozen=True)
class Order:
    """Optimizers in legend order (best first), each one's legend label, and what the order is by."""

    names: list[str]
    labels: dict[str, str]
    title: str


def save(fig: plt.Figure, stem: Path) -> list[Path]:
    """Write stem.png and stem.pdf and close the figure."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [with_ext(stem, ext) for ext in FORMATS]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def with_ext(stem: Path, ext: str) -> Path:
    """stem.ext, keeping any dot in the stem ("adamw-cpu-xs-0.5x" is not "adamw-cpu-xs-0")."""
    return stem.with_name(f"{stem.name}.{ext}")


def optimizer_styles(optimizers, baseline: str = REFERENCE_OPTIMIZER) -> dict[str, dict]:
    """A fixed colour and marker per optimizer (the baseline black squares), stable across figures
    and telling apart lines that overlap or print in grey."""
    others = sorted(set(optimizers) - {baseline})
    cmap = plt.get_cmap("tab10" if len(others) <= 10 else "tab20")
    styles = {opt: {"color": cmap(i % cmap.N), "marker": MARKERS[i % len(MARKERS)]}
              for i, opt in enumerate(others)}
    styles[baseline] = {"color": (0.0, 0.0, 0.0, 1.0), "marker": "s"}
    return styles


def value_order(speedups: pd.DataFrame, ratio: float | None,
                baseline: str = REFERENCE_OPTIMIZER) -> Order:
    """Optimizers by speedup, best first, at `ratio` and the smallest scale where most of them
    have one (the others after, by their mean speedup); the baseline last."""
    finite = speedups[np.isfinite(speedups["speedup"]) & (speedups["optimizer"] != baseline)]
    names = sorted(set(speedups["optimizer"]) - {baseline})
    at = finite[finite["ratio"] == ratio]
    if not len(at):
        return Order(names + [baseline], {o: o for o in names + [baseline]}, "")
    counts = at.groupby("scale")["optimizer"].nunique()
    scale = max(scale_order(at), key=lambda s: counts.get(s, 0))  # ties: the smallest scale
    value = at[at["scale"] == scale].set_index("optimizer")["speedup"]
    mean = finite.groupby("optimizer")["speedup"].mean()
    names.sort(key=lambda o: (o not in value.index, -value.get(o, mean.get(o, -math.inf))))
    labels = {o: f"{o} {value[o]:.2f}x" if o in value.index else f"{o} (none here)" for o in names}
    labels[baseline] = f"{baseline} (its own runs)"
    return Order(names + [baseline], labels, f"speedup at {scale}, {ratio:g}x")


def _caption(fig: plt.Figure, lines: list[str]) -> None:
    """Text under the figure, wrapped to its width (bbox_inches='tight' keeps it in the file)."""
    width = int(fig.get_figwidth() * 15)
    text = "\n".join(textwrap.fill(line, width) for line in lines if line)
    fig.text(0.01, -0.01, text, ha="left", va="top", fontsize=8)


def _grid(n: int, max_cols: int, w: float, h: float, **kw):
    ncols = min(n, max_cols)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False, **kw)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, axes


# --- speedup vs scale --------------------------------------------------------------------------

def speedup_figure(speedups: pd.DataFrame, ratios: list[float], order: Order, context: str,
                   method: str, baseline: str = REFERENCE_OPTIMIZER, highlight=(),
                   notes: tuple[str, ...] = ()) -> plt.Figure:
    """Speedup vs non-embedding parameters, one panel per ratio, one line per optimizer; the
    optimizers in `highlight` in colour, the others grey."""
    scales = scale_order(speedups)
    x_of = _scale_positions(speedups, scales)
    styles = _highlighted(optimizer_styles(speedups["optimizer"], baseline), highlight, baseline)
    fig, axes = _grid(len(ratios), 3, 6.5, 4.8, sharey=True)
    for ax, ratio in zip(axes.flat, ratios):
        _speedup_panel(ax, speedups[speedups["ratio"] == ratio], order, x_of, styles, baseline)
        ax.set_xticks([x_of[s] for s in scales], scales)
        ax.set_title(f"{ratio:g}x Chinchilla")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"speedup over {baseline} (D_eff / D)")
    handles = [Line2D([], [], color=styles[o]["color"], marker=styles[o]["marker"],
                      ls="none" if o == baseline else "-", label=order.labels[o])
               for o in order.names if o in styles]
    handles += [Line2D([], [], color="black", ls=":", label=f"1.0: {baseline}'s law"),
                Line2D([], [], color="grey", marker="o", ls="none", markerfacecolor="white",
                       label="hollow: extrapolated law")]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               title=order.title)
    fig.tight_layout()
    unbounded = ("Arrowheads: intervals unbounded above (some replicates fell below the law's asymptote)."
                 if np.isposinf(speedups["ci_high"]).any() else "")
    _caption(fig, [f"Error bars: {method}.", unbounded,
                   f"Hollow markers: the loss lies outside the range of {baseline} losses its law "
                   f"was fitted on, so the speedup is read from an extrapolated law (less certain "
                   f"than its bar shows). {baseline} (black squares): its own runs read through its "
                   f"law, 1.0 where the law passes through them.", *notes, f"Context: {context}."])
    return fig


def _highlighted(styles: dict[str, dict], highlight, baseline: str) -> dict[str, dict]:
    if not highlight:
        return styles
    return {o: s if o in highlight or o == baseline else {**s, "color": FADED}
            for o, s in styles.items()}


def _speedup_panel(ax, sub: pd.DataFrame, order: Order, x_of: dict, styles: dict,
                   baseline: str) -> None:
    sub = sub[np.isfinite(sub["speedup"])]
    drawn = [o for o in order.names if (sub["optimizer"] == o).any()]
    for k, opt in enumerate(drawn):
        rows = sub[sub["optimizer"] == opt]
        rows = rows.assign(x=rows["scale"].map(x_of).astype(float)).sort_values("x")
        dodge = 1.0 + 0.012 * (k - (len(drawn) - 1) / 2)  # keep error bars apart
        _speedup_line(ax, rows, rows["x"] * dodge, opt, styles[opt], opt == baseline)
    ax.axhline(1.0, color="black", lw=1, ls=":")
    ax.set_xscale("log")
    ax.set_xlim(min(x_of.values()) / 1.4, max(x_of.values()) * 1.4)  # one scale: not the dodge's width
    ax.minorticks_off()
    ax.set_xlabel("model scale (non-embedding parameters)")
    ax.grid(alpha=0.3)


def _speedup_line(ax, rows: pd.DataFrame, x: pd.Series, opt: str, style: dict, points_only: bool) -> None:
    y = rows["speedup"].to_numpy()
    low = np.where(np.isfinite(rows["ci_low"]), y - rows["ci_low"], 0.0)
    high = np.where(np.isfinite(rows["ci_high"]), rows["ci_high"] - y, 0.0)
    lw = 2.0 if style["color"] != FADED else 1.0
    ax.errorbar(x, y, yerr=[low, high], color=style["color"], marker=style["marker"], ms=5, capsize=3,
                lw=lw, ls="none" if points_only else "-", label=opt, zorder=2 if style["color"] != FADED else 1)
    extrap = rows["extrapolated"].to_numpy(dtype=bool)
    ax.scatter(np.asarray(x)[extrap], y[extrap], s=30, marker=style["marker"], facecolors="white",
               edgecolors=[style["color"]], zorder=3, label=f"_extrapolated {opt}")
    for xi, yi in zip(np.asarray(x)[np.isposinf(rows["ci_high"])], y[np.isposinf(rows["ci_high"])]):
        ax.plot([xi, xi], [yi, yi * 1.1], color=style["color"], lw=lw, label=f"_unbounded {opt}")
        ax.plot(xi, yi * 1.1, marker="^", color=style["color"], label=f"_unbounded {opt}")


def _scale_positions(frame: pd.DataFrame, scales: list[str]) -> dict[str, float]:
    """x position per scale: its parameter count, or 1, 2, 3... where the count is unknown."""
    params = frame.groupby("scale")["params"].median()
    if all(np.isfinite(params.get(s, np.nan)) for s in scales):
        return {s: float(params[s]) for s in scales}
    return {s: float(i + 1) for i, s in enumerate(scales)}


# --- loss vs data ------------------------------------------------------------------------------

def loss_figure(cells: pd.DataFrame, fits: dict[str, PowerLawFit], order: Order, context: str,
                minus_fit: bool = False, baseline: str = REFERENCE_OPTIMIZER) -> plt.Figure:
    """Per scale, every optimizer's final loss against its data budget with AdamW's law; with
    minus_fit, the loss minus that law (0 is AdamW's law, below it is better)."""
    scales = scale_order(cells)
    styles = optimizer_styles(cells["optimizer"], baseline)
    fig, axes = _grid(len(scales), 2, 6.5, 4.5)
    for ax, scale in zip(axes.flat, scales):
        sub = cells[(cells["scale"] == scale) & np.isfinite(cells["loss"])]
        fit = fits.get(scale)
        for opt in [o for o in order.names if (sub["optimizer"] == o).any()]:
            _loss_line(ax, sub[sub["optimizer"] == opt].sort_values("ratio"), fit if minus_fit else None,
                       opt, styles[opt], opt == baseline)
        _fit_reference(ax, fit, sub["ratio"], minus_fit, baseline)
        ratios = sorted(sub["ratio"].unique())
        ax.set_xscale("log")
        ax.set_xticks(ratios, [f"{r:g}" for r in ratios])
        ax.minorticks_off()
        ax.set_title(scale)
        ax.set_xlabel("data budget (x Chinchilla)")
        ax.set_ylabel(f"final {LOSS}" if not minus_fit else f"loss - {baseline}'s law (nats/token)")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=styles[o]["color"], marker=styles[o]["marker"],
                      ls="none" if o == baseline else "-", label=order.labels[o])
               for o in order.names if o in styles and (cells["optimizer"] == o).any()]
    handles += [Line2D([], [], color="black", lw=1, label=f"{baseline}'s law"),
                Patch(color="grey", alpha=0.15, label="budgets the law was fitted on")]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               title=order.title)
    fig.tight_layout()
    _caption(fig, ["Each cell's best config: the mean final held-out loss over its seeds, error bars "
                   "+- one sd of the seeds (no bar: one seed).", f"Context: {context}."])
    return fig


def _loss_line(ax, rows: pd.DataFrame, fit: PowerLawFit | None, opt: str, style: dict,
               points_only: bool) -> None:
    y = rows["loss"].to_numpy(dtype=float)
    if fit is not None:
        y = y - fit.predict(rows["ratio"])
    sd = np.where(rows["n_seeds"] >= 2, rows["loss_sd"], 0.0)
    ax.errorbar(rows["ratio"], y, yerr=np.nan_to_num(sd), color=style["color"], marker=style["marker"],
                ms=6 if points_only else 4, lw=0.9, capsize=2, ls="none" if points_only else "-",
                label=opt, zorder=3 if points_only else 2)


def _fit_reference(ax, fit: PowerLawFit | None, ratios: pd.Series, minus_fit: bool, baseline: str) -> None:
    """AdamW's law across every budget drawn (0 on the minus-fit panel), its fitted range shaded."""
    if fit is None:
        ax.text(0.5, 0.95, f"no {baseline} law at this scale", transform=ax.transAxes, ha="center", va="top")
        return
    ax.axvspan(min(fit.ratios), max(fit.ratios), color="grey", alpha=0.15, lw=0)
    if minus_fit:
        ax.axhline(0.0, color="black", lw=1)
        return
    lo, hi = min(ratios.min(), min(fit.ratios)), max(ratios.max(), max(fit.ratios))
    d = np.geomspace(lo / 1.15, hi * 1.15, 200)
    ax.plot(d, fit.predict(d), color="black", lw=1, label=f"_{baseline} law")
    ax.text(0.97, 0.95, f"L = {fit.alpha:.3g} D^-{fit.b:.3g} + {fit.beta:.3f}",
            transform=ax.transAxes, ha="right", va="top", fontsize=9)


# --- sensitivity -------------------------------------------------------------------------------

def sensitivity_figure(ablations: pd.DataFrame, optimizer: str, scales: list[str], context: str) -> plt.Figure:
    """Loss above the cell's best vs each swept hyperparameter; one line per regime (a colour
    family per scale, darker for more data). `scales` orders the regimes, smallest model first."""
    sub = ablations[ablations["optimizer"] == optimizer]
    params = sorted(sub["param"].unique())
    fig, axes = _grid(len(params), 4, 4, 3.2)
    styles = _regime_styles(sub, scales)
    for ax, param in zip(axes.flat, params):
        points = sub[sub["param"] == param]
        to_x = _value_axis(ax, points["value"])
        ax.axhspan(0, APPROX_BEST_TOL, color="tab:green", alpha=0.15, lw=0)
        for (scale, ratio), style in styles.items():
            rows = points[(points["scale"] == scale) & (points["ratio"] == ratio)]
            if len(rows):
                _sensitivity_line(ax, rows, to_x, style, f"{scale} {ratio:g}x")
        ax.set_yscale("symlog", linthresh=1e-3, linscale=0.5)
        ax.yaxis.set_major_formatter(_PLAIN)
        ax.set_title(param, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("loss - cell's best (nats/token)")
    handles = [Line2D([], [], label=f"{s} {r:g}x", ms=4, **style) for (s, r), style in styles.items()]
    handles += [Patch(color="tab:green", alpha=0.15, label=f"approx. best (within {APPROX_BEST_TOL:g})"),
                Line2D([], [], color="grey", marker="x", ls="none", label="diverged (top edge)")]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title=optimizer)
    fig.suptitle(f"{optimizer}: one-parameter ablations around each regime's centre config")
    fig.tight_layout()
    _caption(fig, [f"y: final {LOSS} minus the cell's best, symlog (linear below 1e-3, log above). "
                   "x: log where the values grow by a factor. Green band: the study's "
                   f"approximately best (within {APPROX_BEST_TOL:g} of the cell's best). x on the "
                   "top edge: a config that diverged (no loss).", f"Context: {context}."])
    return fig


_SCALE_MAPS = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")


def _regime_styles(ablations: pd.DataFrame, scales: list[str]) -> dict[tuple[str, float], dict]:
    """A colour family and marker per scale, darker for larger ratios; smallest scale first."""
    regimes = sorted(set(zip(ablations["scale"], ablations["ratio"])),
                     key=lambda sr: (scales.index(sr[0]) if sr[0] in scales else len(scales), sr[1]))
    ordered = list(dict.fromkeys(s for s, _ in regimes))
    styles = {}
    for i, scale in enumerate(ordered):
        ratios = [r for s, r in regimes if s == scale]
        cmap = plt.get_cmap(_SCALE_MAPS[i % len(_SCALE_MAPS)])
        for j, ratio in enumerate(ratios):
            shade = 0.45 + 0.5 * j / max(len(ratios) - 1, 1)
            styles[(scale, ratio)] = {"color": cmap(shade), "marker": ("o", "s", "^", "D")[i % 4]}
    return styles


def _sensitivity_line(ax, rows: pd.DataFrame, to_x, style: dict, label: str) -> None:
    x = to_x(rows["value"])
    y = (rows["loss"] - rows["cell_best"]).to_numpy(dtype=float)
    ok = ~rows["diverged"].to_numpy(dtype=bool)
    order = np.argsort(x[ok])
    ax.plot(x[ok][order], y[ok][order], ms=3, lw=1, label=label, **style)
    top = blended_transform_factory(ax.transData, ax.transAxes)  # x in data, y at the top edge
    ax.scatter(x[~ok], np.ones((~ok).sum()), marker="x", color=style["color"], transform=top,
               clip_on=False, zorder=3, label=f"_diverged {label}")


def _value_axis(ax, values: pd.Series):
    """Set up the x axis for a hyperparameter's values; returns values -> x positions.

    Numbers go on a log axis where they grow by a factor (bench.study.geometric), else a linear
    one, with the values themselves as ticks when there are few; anything else (booleans, names)
    on evenly spaced ticks.
    """
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        v = values.to_numpy(dtype=float)
        if geometric(v):
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())
        ticks = sorted(set(v))
        if len(ticks) <= 7:
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            if not geometric(v) and min(np.diff(ticks), default=1) < 0.12 * (ticks[-1] - ticks[0]):
                ax.tick_params(axis="x", labelrotation=45)  # close values (0.98, 0.99) collide
        ax.xaxis.set_major_formatter(_PLAIN)
        ax.xaxis.set_minor_formatter(NullFormatter())
        return lambda vals: vals.to_numpy(dtype=float)
    names = sorted({str(v) for v in values})
    ax.set_xticks(range(len(names)), names)
    return lambda vals: np.array([names.index(str(v)) for v in vals], dtype=float)


# --- tuning cost -------------------------------------------------------------------------------

PROTOCOL_COLORS = {"coordinate": "black", "tpe": "tab:blue", "gp": "tab:orange", "transfer": "tab:purple",
                   "predict": "tab:green"}


def tuning_cost_figure(traces, cost, title: str, context: str) -> plt.Figure:
    """Left: best loss so far minus the best any protocol found, by trial: a thin line per search
    seed, the median over seeds thick, the seeds' range shaded; the approximately-best band green;
    the goal's budget (a third of coordinate descent's trials) and coordinate descent's own trials as
    dashed verticals. Right: each search's winner against coordinate descent's, paired by training
    seed on the seeds neither was chosen on. `traces` and `cost` are analysis.tuning's."""
    fig, (ax, right) = plt.subplots(1, 2, figsize=(10, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    ax.axhspan(0, cost.tol, color="tab:green", alpha=0.15, lw=0)
    handles = [Patch(color="tab:green", alpha=0.15, label=f"approx. best (within {cost.tol:g})")]
    others = iter(plt.get_cmap("tab10").colors[4:])
    colors = {s.protocol: PROTOCOL_COLORS.get(s.protocol) or next(others) for s in cost.protocols}
    for summary in cost.protocols:
        group = [t for t in traces if t.protocol == summary.protocol]
        _tuning_lines(ax, group, cost.best, colors[summary.protocol])
        ok = f", {summary.within_goal}/{summary.judged} in band by {cost.goal}" if cost.goal else ""
        handles.append(Line2D([], [], color=colors[summary.protocol], lw=2,
                              label=f"{summary.protocol} ({len(group)} seed{'s' * (len(group) != 1)}{ok})"))
    for x, what in ((cost.goal, "C/3"), (cost.reference_trials, "C")):
        if x:
            ax.axvline(x, color="grey", ls="--", lw=1)
            ax.text(x, 0.01, f"{what}={x} ", transform=blended_transform_factory(ax.transData, ax.transAxes),
                    va="bottom", ha="right", fontsize=8, color="grey")
    ax.set_yscale("symlog", linthresh=1e-3, linscale=0.5)
    ax.yaxis.set_major_formatter(_PLAIN)
    ax.set_xlabel("trials (distinct configs, in the order the protocol asked for them)")
    ax.set_ylabel("best seed-0 loss so far - best found (nats/token)")
    ax.set_xlim(left=0.5)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, loc="upper right", fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    _winner_panel(right, traces, cost, colors)
    fig.tight_layout()
    _caption(fig, [f"Left: best found {cost.best:.4f}; y symlog (linear below 1e-3). Thin lines: one search "
                   "seed each (TPE/GP: the sampler's seed; coordinate descent: its key order, seed 0 "
                   "the study's); thick: the median over seeds; shaded: their range. A curve that ends "
                   "early stopped there (coordinate descent converged; its best counts on in the median) "
                   "or its sweep ran no further. C: coordinate descent's trials in the study's key order."
                   + (f" Its winner's loss varies by {cost.seed_sd:.4f} (sd over the training seeds that "
                      "did not choose it): a band narrower than that is entered partly by luck."
                      if cost.seed_sd > cost.tol else ""),
                   "Right: each search's winner minus coordinate descent's winner, mean over the training "
                   "seeds neither was chosen on (paired by seed); dots: search seeds, bar: "
                   "their mean with a 90% t interval.", f"Context: {context}."])
    return fig


def _winner_panel(ax, traces, cost, colors: dict) -> None:
    ref = reference_trace(traces)
    ax.axhline(0, color="black", lw=1)
    for i, summary in enumerate(cost.protocols):
        gaps = [g for t in traces if t.protocol == summary.protocol and not math.isnan(g := winner_gap(t, ref))]
        ax.plot([i] * len(gaps), gaps, "o", color=colors[summary.protocol], alpha=0.6, ms=5)
        mean, lo, hi = summary.winner_gap
        if not math.isnan(lo):
            ax.errorbar([i + 0.2], [mean], yerr=[[mean - lo], [hi - mean]], fmt="_", ms=12,
                        color=colors[summary.protocol], capsize=3)
    ax.set_xticks(range(len(cost.protocols)), [s.protocol for s in cost.protocols], fontsize=8)
    ax.set_xlim(-0.5, len(cost.protocols) - 0.3)
    ax.set_ylabel("winner - coordinate's winner (nats/token)")
    ax.set_title("winners on fresh seeds", fontsize=10)
    ax.grid(alpha=0.3, axis="y")


def _tuning_lines(ax, group, best: float, color) -> None:
    curves = [np.where(np.isfinite(c := t.best_so_far()), c - best, np.nan) for t in group]
    length = max(len(c) for c in curves)
    padded = np.full((len(curves), length), np.nan)
    for i, (t, c) in enumerate(zip(group, curves)):
        padded[i, :len(c)] = c
        if t.finished and len(c):  # it stopped: its best stays, for the median and the range
            padded[i, len(c):] = c[-1]
        ax.step(np.arange(1, len(c) + 1), c, where="post", color=color, lw=0.7, alpha=0.5)
    x = np.arange(1, length + 1)
    counts = np.sum(np.isfinite(padded), axis=0)
    shown = counts > 0
    with np.errstate(all="ignore"):
        lo, hi, mid = (f(padded[:, shown], axis=0) for f in (np.nanmin, np.nanmax, np.nanmedian))
    if len(curves) > 1:
        ax.fill_between(x[shown], lo, hi, step="post", color=color, alpha=0.12, lw=0)
    ax.step(x[shown], mid, where="post", color=color, lw=2)


# --- agreement with the study ----------------------------------------------------------------------

SPEEDUP_TICKS = (0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.1, 1.2, 1.4, 1.6, 1.8, 2, 2.5, 3, 4)


def agreement_figure(agr, ours: str, study: str, context: str) -> plt.Figure:
    """Each optimizer's geometric-mean speedup on our side against the study's, intervals on
    both axes, log-log around the diagonal of perfect agreement. `agr` is analysis.agreement's.
    An interval without an upper bound is drawn to the axis edge and ends in an arrow."""
    table = agr.table
    styles = optimizer_styles(table["optimizer"])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    values = table[["ours", "ours_low", "ours_high", "study", "study_low", "study_high"]].to_numpy(float)
    finite = values[np.isfinite(values) & (values > 0)]
    low, high = finite.min() / 1.1, finite.max() * 1.1
    ax.plot([low, high], [low, high], color="grey", lw=1, ls="--", label="equal speedups")
    label_ys = _spread_labels(table["ours"].to_numpy(float), low, high)
    for (_, row), label_y in zip(table.iterrows(), label_ys):
        style = styles[row["optimizer"]]
        x, y = row["study"], row["ours"]
        x_lo, x_hi = _bounded(row["study_low"], row["study_high"], low, high)
        y_lo, y_hi = _bounded(row["ours_low"], row["ours_high"], low, high)
        ax.errorbar(x, y, fmt=style["marker"], color=style["color"], capsize=3,
                    xerr=[[x - x_lo], [x_hi - x]], yerr=[[y - y_lo], [y_hi - y]])
        if not np.isfinite(row["ours_high"]):
            ax.plot(x, high, marker="^", color=style["color"], clip_on=False,
                    label=f"_unbounded {row['optimizer']}")
        if not np.isfinite(row["study_high"]):
            ax.plot(high, y, marker=">", color=style["color"], clip_on=False,
                    label=f"_unbounded {row['optimizer']}")
        ax.annotate(row["optimizer"], (x, y), xytext=(x * 1.04, label_y), fontsize=8,
                    color=style["color"], va="center",
                    arrowprops={"arrowstyle": "-", "color": style["color"], "lw": 0.5, "alpha": 0.5})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = _spaced([t for t in SPEEDUP_TICKS if low <= t <= high], math.log(high / low) / 16)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(_PLAIN)
        axis.set_minor_locator(NullLocator())
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel(f"speedup over AdamW, {study}")
    ax.set_ylabel(f"speedup over AdamW, {ours}")
    ax.grid(alpha=0.3, which="both")
    tau, mad = agr.tau, agr.mad
    ax.set_title(f"Kendall's tau {tau[0]:.2f} [{tau[1]:.2f}, {tau[2]:.2f}], "
                 f"mean |log diff| {mad[0]:.2f} [{mad[1]:.2f}, {mad[2]:.2f}]", fontsize=9)
    fig.tight_layout()
    _caption(fig, [f"Each point: one optimizer's geometric-mean speedup over its ratios on each side "
                   f"(ratios in the table beside this figure); bars and brackets: {agr.level:.0%} "
                   "bootstrap percentile intervals. Tau counts AdamW (about 1 on both sides, its own "
                   "cells read through its law); the mean |log difference| leaves it out. Arrowheads "
                   "at an edge: intervals unbounded (some replicates fell below AdamW's asymptote).",
                   f"Context: {context}."])
    return fig


def _spaced(ticks: list[float], min_log_gap: float) -> list[float]:
    """Ticks at least `min_log_gap` apart in log space (1.1 and 1.2 overlap on a wide axis)."""
    kept: list[float] = []
    for t in ticks:
        if not kept or math.log(t / kept[-1]) >= min_log_gap:
            kept.append(t)
    return kept


def _bounded(lo: float, hi: float, low: float, high: float) -> tuple[float, float]:
    """An interval clipped to the axes; a missing or infinite bound reaches the axis edge."""
    lo = lo if np.isfinite(lo) and lo > 0 else low
    return max(lo, low), (min(hi, high) if np.isfinite(hi) else high)


def _spread_labels(ys: np.ndarray, low: float, high: float, gap: float = 0.036) -> np.ndarray:
    """Label heights near `ys` (log axis from low to high) at least `gap` of the axis apart, so
    the names of optimizers with close speedups stay legible; order is kept. A speedup off the
    axes (unbounded, missing) is labelled at the nearer edge."""
    span = math.log(high / low)
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = np.clip(np.nan_to_num(np.log(ys / low) / span, nan=0.0), 0.0, 1.0)
    order = np.argsort(pos, kind="stable")
    out = pos.copy()
    for prev, cur in zip(order, order[1:]):
        out[cur] = max(pos[cur], out[prev] + gap)
    shift = max(0.0, out[order[-1]] - 0.98)  # keep the top label inside the axes
    return low * np.exp((out - shift) * span)
