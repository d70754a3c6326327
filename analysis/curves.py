"""Loss curves: how runs got to their end-of-budget loss, to see a ranking that flips mid-run.

Each run records its train loss and learning-rate multiplier every few steps and its held-out loss
at several points (bench.run.train.CURVE_POINTS), the last at the end of the run. Here they become
one long frame (one row per run, curve and step) and figures: held-out loss against training
tokens, the seeds of one configuration as a band around their mean, with the schedule below; or
every config a sweep tried in a cell (its trials), with the config leading at each curve point.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.cells import config_key
from analysis.plots import optimizer_styles, plt, save
from bench.run.spec import RunResult

CURVES = {"eval_curve": "held-out", "curve": "train", "lr_curve": "lr"}
CURVE_COLUMNS = ["optimizer", "config", "seed", "run_key", "curve", "step", "tokens", "value", "final_loss"]


def curve_frame(results: list[RunResult]) -> pd.DataFrame:
    """One row per run, curve ("held-out", "train", "lr") and step, with the tokens seen by then and
    the run's final loss (on all the evaluation tokens; a curve point scores a share of them)."""
    rows = []
    for r in results:
        per_step = r.tokens / r.steps if r.steps else np.nan
        config = config_key(r.spec["hparams"])
        for attribute, name in CURVES.items():
            rows += [(r.spec["optimizer"], config, r.spec["seed"], r.run_key, name, step, step * per_step, value,
                      r.final_loss) for step, value in getattr(r, attribute)]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def plot_curves(frame: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """Held-out loss (nats/token) against tokens, one line per optimizer and config (the mean over
    its seeds, a band from their lowest to highest); the lr multiplier in a panel below."""
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=(3, 1))
    styles = optimizer_styles(frame["optimizer"].unique())
    for (optimizer, config), runs in frame.groupby(["optimizer", "config"], sort=True):
        held = runs[runs["curve"] == "held-out"].groupby("tokens")["value"]
        seeds = runs["seed"].nunique()
        label = f"{optimizer} ({seeds} seed{'s' if seeds > 1 else ''})"
        ax.plot(held.mean().index, held.mean().values, ms=3, label=label, **styles[optimizer])
        if seeds > 1:
            ax.fill_between(held.min().index, held.min().values, held.max().values, color=styles[optimizer]["color"],
                            alpha=0.2, linewidth=0)
        lr = runs[(runs["curve"] == "lr") & (runs["seed"] == runs["seed"].min())]
        ax_lr.plot(lr["tokens"], lr["value"], color=styles[optimizer]["color"], linewidth=1)
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, title="band: lowest to highest seed", title_fontsize=8)
    ax.grid(alpha=0.3)
    ax_lr.set_ylabel("lr / peak lr")
    ax_lr.set_xlabel("training tokens")
    ax_lr.grid(alpha=0.3)
    return save(fig, stem)


def plot_trials(frame: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """Every config (trial) of each optimizer in a cell: held-out loss against tokens, a panel per
    optimizer, each line coloured by its final loss (darker is better), the final best in black."""
    held = frame[frame["curve"] == "held-out"]
    optimizers = sorted(held["optimizer"].unique())
    fig, axes = plt.subplots(1, len(optimizers), figsize=(5 * len(optimizers), 4), squeeze=False,
                             sharey=True)
    for ax, optimizer in zip(axes[0], optimizers):
        runs = held[held["optimizer"] == optimizer]
        final = runs.groupby("config")["final_loss"].mean().sort_values()
        cmap = plt.get_cmap("viridis")
        for rank in reversed(range(len(final))):  # rank 0 is the final best, drawn last, on top
            line = runs[runs["config"] == final.index[rank]].sort_values("step")
            ax.plot(line["tokens"], line["value"], lw=2 if rank == 0 else 0.8, marker="o" if rank == 0 else None,
                    ms=3, color="black" if rank == 0 else cmap(rank / max(len(final) - 1, 1)),
                    label=final.index[rank], zorder=3 if rank == 0 else 2)
        ax.set_title(f"{optimizer}: {len(final)} configs", fontsize=10)
        ax.set_xlabel("training tokens")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out loss (nats/token)")
    fig.suptitle(title, fontsize=10)
    fig.text(0.01, -0.02, "Each line one config at the cell's tuning seed; black: the best at the end of "
             "the budget; colour by final loss (yellow worst).", fontsize=8)
    fig.tight_layout()
    return save(fig, stem)


def leaders(frame: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer and curve point: the config with the lowest held-out loss there, and whether
    it is the config with the best final loss (the study's warning: mid-run leaders can lose)."""
    held = frame[frame["curve"] == "held-out"]
    rows = []
    for optimizer, runs in held.groupby("optimizer"):
        by_step = runs.pivot_table(index="step", columns="config", values="value")
        final_best = runs.groupby("config")["final_loss"].mean().idxmin()
        for step, losses in by_step.iterrows():
            rows.append({"optimizer": optimizer, "step": step, "leader": losses.idxmin(),
                         "leader_loss": losses.min(), "final_best_loss": losses[final_best],
                         "leader_is_final_best": losses.idxmin() == final_best})
    return pd.DataFrame(rows)
