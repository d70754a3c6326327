"""Loss curves: how runs got to their end-of-budget loss, to see a ranking that flips mid-run.

Each run records its train loss and learning-rate multiplier every few steps and its held-out loss
at several points (bench.run.train.CURVE_POINTS), the last at the end of the run. Here they become
one long frame (one row per run, curve and step) and one figure: held-out loss against training
tokens, the seeds of one configuration as a band around their mean, with the schedule below.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.cells import config_key
from analysis.plots import optimizer_colors, plt, save
from bench.run.spec import RunResult

CURVES = {"eval_curve": "held-out", "curve": "train", "lr_curve": "lr"}
CURVE_COLUMNS = ["optimizer", "config", "seed", "run_key", "curve", "step", "tokens", "value"]


def curve_frame(results: list[RunResult]) -> pd.DataFrame:
    """One row per run, curve ("held-out", "train", "lr") and step, with the tokens seen by then."""
    rows = []
    for r in results:
        per_step = r.tokens / r.steps if r.steps else np.nan
        config = config_key(r.spec["hparams"])
        for attribute, name in CURVES.items():
            rows += [(r.spec["optimizer"], config, r.spec["seed"], r.run_key, name, step, step * per_step, value)
                     for step, value in getattr(r, attribute)]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def plot_curves(frame: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """Held-out loss (nats/token) against tokens, one line per optimizer and config (the mean over
    its seeds, a band from their lowest to highest); the lr multiplier in a panel below."""
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=(3, 1))
    colors = optimizer_colors(sorted(frame["optimizer"].unique()))
    for (optimizer, config), runs in frame.groupby(["optimizer", "config"], sort=True):
        held = runs[runs["curve"] == "held-out"].groupby("tokens")["value"]
        seeds = runs["seed"].nunique()
        label = f"{optimizer} ({seeds} seed{'s' if seeds > 1 else ''})"
        ax.plot(held.mean().index, held.mean().values, color=colors[optimizer], marker="o", ms=3, label=label)
        if seeds > 1:
            ax.fill_between(held.min().index, held.min().values, held.max().values, color=colors[optimizer],
                            alpha=0.2, linewidth=0)
        lr = runs[(runs["curve"] == "lr") & (runs["seed"] == runs["seed"].min())]
        ax_lr.plot(lr["tokens"], lr["value"], color=colors[optimizer], linewidth=1)
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, title="band: lowest to highest seed", title_fontsize=8)
    ax.grid(alpha=0.3)
    ax_lr.set_ylabel("lr / peak lr")
    ax_lr.set_xlabel("training tokens")
    ax_lr.grid(alpha=0.3)
    return save(fig, stem)
