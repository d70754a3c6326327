"""From runs to cells: one row per optimizer x scale x data ratio within a context.

Input is the runs frame (one row per run: bench.store.record.to_frame of the results store's, the
study's or the regression baseline's runs). A cell never pools runs of different contexts (data,
eval data, tokenizer, precision, device, eval tokens: bench.store.record.CONTEXT_COLUMNS): a run on
other data is another measurement, not another seed. Only an explicit `mix_contexts` pools them,
and then every cell's context reads MIXED CONTEXTS.

Within a cell, runs with the same hyperparameters are seeds of one config. Configs are compared
on the cell's tuning seed (its lowest finished seed: seed 0 of a sweep, where every config was
tried), as the tuning compared them; the winner's loss is then the mean over all its finished seeds.
Comparing means over different numbers of seeds would favour a config tried once and lucky over the
winner whose extra seeds regressed to its true mean (the winner's curse). The one exception is a
cell with finalists (`optbench sweep --finalists K`: two or more configs with two or more finished
seeds): they were all re-run to be compared on their means, so they are, ahead of every other
config (rank_configs). Diverged and failed runs never enter a mean; they are counted.
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from bench.errors import UserError
from bench.store.record import REQUIRED_COLUMNS, context_labels
from bench.study import APPROX_BEST_TOL, REFERENCE_OPTIMIZER

CELL_KEYS = ["optimizer", "scale", "ratio"]  # within one context
MIXED_CONTEXTS = "MIXED CONTEXTS"


def check_runs(runs: pd.DataFrame) -> None:
    """Raise UserError unless `runs` has the runs frame's columns (bench.store.record)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in runs.columns]
    if missing:
        raise UserError(f"the runs table lacks column(s) {', '.join(missing)}; "
                        f"it needs {', '.join(REQUIRED_COLUMNS)}")


def as_dict(hparams: Mapping[str, Any]) -> dict:
    """A copy of a run's hyperparameters, so the analysis never changes the caller's runs."""
    return dict(hparams)


def config_key(hparams: Mapping[str, Any]) -> str:
    """A canonical text form of a hyperparameter dict: equal configs give equal keys."""
    return json.dumps(dict(hparams), sort_keys=True, default=str)


def ok_mask(runs: pd.DataFrame) -> pd.Series:
    """Runs whose loss counts: status ok and a finite final loss."""
    loss = pd.to_numeric(runs["final_loss"], errors="coerce")
    return (runs["status"] == "ok") & np.isfinite(loss)


def rank_configs(seed_losses: Mapping[str, Mapping[int, float]]) -> list[str]:
    """Config ids, best first, given each one's finished losses by training seed; ties keep the
    mapping's order. With finalists (two or more configs that finished two or more seeds) they
    come first, more finished seeds first (a diverged seed loses), then by mean; every other config
    by its loss at the tuning seed (the lowest seed any config finished); configs without one last,
    by their mean. Without finalists this is the tuning's own comparison, at the tuning seed."""
    finished = {cid: seeds for cid, seeds in seed_losses.items() if seeds}
    tuning_seed = min((seed for seeds in finished.values() for seed in seeds), default=0)
    multi = {cid for cid, seeds in finished.items() if len(seeds) >= 2}
    finalists = multi if len(multi) >= 2 else set()

    def order(cid: str) -> tuple[int, int, float]:
        seeds = finished[cid]
        if cid in finalists:
            return 0, -len(seeds), float(np.mean(list(seeds.values())))
        if tuning_seed in seeds:
            return 1, 0, seeds[tuning_seed]
        return 2, 0, float(np.mean(list(seeds.values())))

    return sorted(finished, key=order)


def on_tuning_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs as if every cell's winner had been chosen on the tuning seed alone (the study's
    rule), not among finalists on their means: finalists other than the tuning seed's best keep
    only their tuning-seed run. From a `--finalists` sweep this gives both choices' results."""
    check_runs(runs)
    keep = pd.Series(True, index=runs.index)
    ok = runs[ok_mask(runs)]
    for _, cell in ok.groupby([context_labels(ok), *(ok[k] for k in CELL_KEYS)]):
        tuning_seed = cell["seed"].min()
        configs = cell["hparams"].map(config_key)
        at_seed = cell[cell["seed"] == tuning_seed]
        first = rank_configs({cfg: {tuning_seed: loss} for cfg, loss
                              in zip(configs[at_seed.index], at_seed["final_loss"].astype(float))})
        if first:
            others = cell.index[(configs != first[0]) & (cell["seed"] != tuning_seed)]
            keep[others] = False
    return runs[keep]


def summarize_cells(runs: pd.DataFrame, mix_contexts: bool = False) -> pd.DataFrame:
    """One row per (context, optimizer, scale, ratio) with the best config's loss and the cell's
    counts; `mix_contexts` pools the contexts (each cell's context then says MIXED CONTEXTS).

    Columns: context (its label), optimizer, scale, ratio, params, loss, loss_sd, n_seeds, losses
    (per-seed tuple), tuning_loss (the best config's loss at the tuning seed, the one it was chosen
    on), hparams (best config), n_configs, n_runs, n_ok, n_diverged, n_failed, approx_best (configs
    within 3e-3 of the best at the tuning seed, best first, with that loss).
    """
    check_runs(runs)
    hparams = runs["hparams"].map(as_dict)
    contexts = mixed_label(runs) if mix_contexts else context_labels(runs)
    runs = runs.assign(ratio=runs["ratio"].astype(float), hparams=hparams,
                       final_loss=pd.to_numeric(runs["final_loss"], errors="coerce"),
                       config=hparams.map(config_key), ok=ok_mask(runs), context=contexts)
    rows = [_cell_row(key, group)
            for key, group in runs.groupby(["context", *CELL_KEYS], sort=False)]
    cells = pd.DataFrame(rows)
    return sort_cells(cells) if len(cells) else cells


def split_by_context(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The runs of each context (label, runs), the context with the most runs first."""
    labels = pd.Series(context_labels(runs), index=runs.index)
    counts = labels.value_counts()
    order = sorted(dict.fromkeys(labels), key=lambda label: -counts[label])  # ties: first seen first
    return [(label, runs[labels == label]) for label in order]


def hardware_note(runs: pd.DataFrame) -> str | None:
    """A note when `runs` came from more than one kind of hardware (the CPU's or GPU's model), most
    runs first; None otherwise. Such runs share cells: they measure the same thing, and agree to
    rounding rather than to the last bit, so a user should know before reading differences of
    that size."""
    known = runs["hardware"][runs["hardware"] != ""] if "hardware" in runs else pd.Series(dtype=str)
    counts = known.value_counts()
    if len(counts) < 2:
        return None
    kinds = "; ".join(f"{name} ({n} run{'s' * (n != 1)})" for name, n in counts.items())
    return (f"these runs come from {len(counts)} kinds of hardware: {kinds}; losses agree across them "
            "to rounding, not to the last bit")


def mixed_label(runs: pd.DataFrame) -> str:
    """The context of runs pooled across contexts: MIXED CONTEXTS and the contexts pooled (the
    one context's own label when there is only one: nothing is mixed)."""
    labels = [label for label, _ in split_by_context(runs)]
    return labels[0] if len(labels) == 1 else f"{MIXED_CONTEXTS} ({len(labels)}: {'; '.join(labels)})"


def sort_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Contexts as they came; AdamW first, then optimizers by name; scales by size; ratios
    ascending."""
    scales = scale_order(frame)
    contexts = list(frame["context"].unique())
    return (frame.assign(_ctx=frame["context"].map(contexts.index),
                         _opt=frame["optimizer"].map(lambda o: (o != REFERENCE_OPTIMIZER, o)),
                         _scale=frame["scale"].map(scales.index))
            .sort_values(["_ctx", "_opt", "_scale", "ratio"])
            .drop(columns=["_ctx", "_opt", "_scale"]).reset_index(drop=True))


def scale_order(frame: pd.DataFrame) -> list[str]:
    """Scale names from smallest to largest model (by `params` if known, else by name)."""
    params = frame.groupby("scale")["params"].median() if "params" in frame else pd.Series(
        dtype=float)
    return sorted(frame["scale"].unique(),
                  key=lambda s: (_finite_or_inf(params.get(s, math.nan)), str(s)))


def _cell_row(key: tuple, group: pd.DataFrame) -> dict:
    context, optimizer, scale, ratio = key
    configs = _config_means(group[group["ok"]])
    best = configs.iloc[0] if len(configs) else None
    losses = tuple(best["losses"]) if best is not None else ()
    status = group["status"]
    return {
        "context": context, "optimizer": optimizer, "scale": scale, "ratio": float(ratio),
        "params": _median_params(group),
        "loss": float(np.mean(losses)) if losses else math.nan,
        "loss_sd": float(np.std(losses, ddof=1)) if len(losses) >= 2 else math.nan,
        "n_seeds": len(losses), "losses": losses,
        "tuning_loss": float(best["rank"]) if best is not None and not best["off_seed"] else math.nan,
        "hparams": dict(best["hparams"]) if best is not None else {},
        "n_configs": int(group["config"].nunique()), "n_runs": len(group),
        "n_ok": int(group["ok"].sum()), "n_diverged": int((status == "diverged").sum()),
        "n_failed": int((status == "failed").sum()),
        "approx_best": _approx_best(configs),
    }


def _config_means(ok_runs: pd.DataFrame) -> pd.DataFrame:
    """Finished configs of one cell with their seeds' losses, best first (rank_configs).

    "rank" is a config's loss at the cell's tuning seed (its mean when it has none: "off_seed"),
    "mean" its loss over all its seeds. Ties keep the order of first appearance, so an ingest that
    lists a cell's centre run first makes the centre win a tie.
    """
    tuning_seed = ok_runs["seed"].min() if len(ok_runs) else 0
    rows = {}
    for cfg, grp in ok_runs.groupby("config", sort=False):
        at_tuning_seed = grp.loc[grp["seed"] == tuning_seed, "final_loss"]
        rows[cfg] = {"config": cfg, "hparams": grp["hparams"].iloc[0],
                     "losses": tuple(float(v) for v in grp["final_loss"]),
                     "mean": float(grp["final_loss"].mean()), "off_seed": len(at_tuning_seed) == 0,
                     "rank": float((at_tuning_seed if len(at_tuning_seed) else grp["final_loss"]).mean()),
                     "by_seed": grp.groupby("seed")["final_loss"].mean().to_dict()}
    order = rank_configs({cfg: row.pop("by_seed") for cfg, row in rows.items()})
    return pd.DataFrame([rows[cfg] for cfg in order],
                        columns=["config", "hparams", "losses", "mean", "off_seed", "rank"])


def _approx_best(configs: pd.DataFrame) -> list[dict]:
    if not len(configs):
        return []
    on_seed = configs[~configs["off_seed"]].sort_values("rank", kind="stable")
    near = on_seed[on_seed["rank"] <= on_seed["rank"].min() + APPROX_BEST_TOL]
    return [{"hparams": dict(h), "loss": float(m)} for h, m in zip(near["hparams"], near["rank"])]


def _median_params(group: pd.DataFrame) -> float:
    if "non_embedding_params" not in group:
        return math.nan
    values = pd.to_numeric(group["non_embedding_params"], errors="coerce").dropna()
    return float(values.median()) if len(values) else math.nan


def _finite_or_inf(value: float) -> float:
    return float(value) if value is not None and np.isfinite(value) else math.inf
