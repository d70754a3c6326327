"""One-parameter ablations: how the loss moves when one hyperparameter leaves its centre value.

Coordinate descent (the study's Phase I, and optbench's default protocol) ends at a centre config
with every one-parameter change around it run. Within a cell the centre is the config with the most
neighbours that differ from it in exactly one hyperparameter (ties: the lower loss), which finds
it whether the runs came from the study's files or from our store. Every neighbour gives a point
(param, value, loss); the centre gives one point per swept parameter. Seeds of one config are
averaged; a config with no finished seed is a diverged point.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.cells import CELL_KEYS, as_dict, config_key, ok_mask

ABLATION_COLUMNS = ["optimizer", "scale", "ratio", "param", "value", "loss", "diverged",
                    "is_centre", "cell_best"]


def one_d_ablations(runs: pd.DataFrame) -> pd.DataFrame:
    """Points (param, value, loss) of every cell's one-parameter ablations around its centre."""
    hparams = runs["hparams"].map(as_dict)
    runs = runs.assign(hparams=hparams, config=hparams.map(config_key), ok=ok_mask(runs),
                       final_loss=pd.to_numeric(runs["final_loss"], errors="coerce"))
    rows: list[dict] = []
    for key, group in runs.groupby(CELL_KEYS, sort=False):
        rows += _cell_ablations(dict(zip(CELL_KEYS, key)), _configs(group))
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


def _configs(group: pd.DataFrame) -> list[tuple[dict, float]]:
    """(hparams, mean finished loss or NaN) per distinct config of one cell."""
    out = []
    for _, grp in group.groupby("config", sort=False):
        ok = grp.loc[grp["ok"], "final_loss"]
        out.append((grp["hparams"].iloc[0], float(ok.mean()) if len(ok) else math.nan))
    return out


def _cell_ablations(cell: dict, configs: list[tuple[dict, float]]) -> list[dict]:
    if len(configs) < 2:
        return []
    diffs = [[_single_diff(a, b) for b, _ in configs] for a, _ in configs]
    counts = [sum(d is not None for d in row) for row in diffs]
    centre = max(range(len(configs)),
                 key=lambda i: (counts[i], -_loss_or_inf(configs[i][1])))
    if counts[centre] == 0:
        return []
    finite = [loss for _, loss in configs if np.isfinite(loss)]
    best = min(finite) if finite else math.nan
    centre_hp, centre_loss = configs[centre]
    rows, swept = [], set()
    for j, param in enumerate(diffs[centre]):
        if param is not None:
            swept.add(param)
            rows.append(_point(cell, param, configs[j][0][param], configs[j][1], False, best))
    rows += [_point(cell, p, centre_hp.get(p), centre_loss, True, best) for p in sorted(swept)]
    return rows


def _single_diff(a: dict, b: dict) -> str | None:
    """The one key on which a and b differ, or None (equal, or differ in several)."""
    differing = [k for k in set(a) | set(b) if a.get(k, _MISSING) != b.get(k, _MISSING)]
    return differing[0] if len(differing) == 1 else None


_MISSING = object()


def _point(cell: dict, param: str, value, loss: float, is_centre: bool, best: float) -> dict:
    return {**cell, "param": param, "value": value, "loss": loss,
            "diverged": not np.isfinite(loss), "is_centre": is_centre, "cell_best": best}


def _loss_or_inf(loss: float) -> float:
    return loss if np.isfinite(loss) else math.inf
