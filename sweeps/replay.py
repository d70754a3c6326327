"""A cell's tuning replayed from the store: every trial a protocol asked for, in the order it asked,
with the loss the store holds for it (analysis/tuning.py turns these into tuning-cost curves).

Protocols are deterministic given the losses they are told (sweeps/protocols/base.py), and a
larger budget only extends their trials (samplers.py, coordinate.py), so the order of a sweep's
trials is a function of the store alone: not of which worker finished first, nor of which sweep
trained a run (runs are shared across protocols and search seeds). Trials of one step (a coordinate
sweep's candidates, a sampler's round) count in the order asked. A replay stops where the protocol
stops, or at the first trial the store lacks (the sweep's budget ran out, or it was stopped).
"""
from __future__ import annotations

import math
from typing import Sequence

from analysis.cells import config_key, rank_configs
from analysis.tuning import Trace
from bench.store.record import StoredRun
from sweeps.cell import finalist_ids
from sweeps.grid import Config
from sweeps.plan import Cell
from sweeps.protocols.phases import make_protocol

UNBOUNDED = 100_000  # a budget no sweep reaches: the protocol or the store ends the replay


def replay(cell: Cell, stored: Sequence[StoredRun], device: str = "cpu", finalists: int = 1) -> Trace:
    """`cell`'s protocol at its search seed, told the seed-0 losses in `stored` (runs of the
    cell's context) until it stops or asks for a run the store lacks. Its winner is chosen as
    `sweep --finalists` did (_choose)."""
    protocol, _ = make_protocol(cell, UNBOUNDED, stored)
    runs = {r.run_key: r for r in stored}
    known: dict[str, float] = {}
    configs: list[Config] = []
    keys: list[str] = []
    finished = True
    while (proposal := protocol.propose(known)) is not None:
        for config in proposal:
            key = cell.spec(config, 0, device).key
            if key not in runs:
                finished = False
                break
            known[config_key(config)] = stored_loss(runs[key])
            configs.append(config)
            keys.append(key)
        if not finished:
            break
    losses = [known[config_key(c)] for c in configs]
    winner, chosen_on = _choose(cell, configs, losses, runs, device, finalists)
    return Trace(cell.protocol, cell.search_seed, protocol.label, tuple(losses), finished, tuple(configs),
                 tuple(keys), winner, _seed_losses(cell, winner, runs, device), chosen_on)


def stored_loss(run: StoredRun) -> float:
    """The loss a protocol is told: a finished run's final loss, +inf (the worst) otherwise."""
    ok = run.status == "ok" and math.isfinite(run.final_loss)
    return float(run.final_loss) if ok else math.inf


def _choose(cell: Cell, configs: list[Config], losses: list[float], runs: dict[str, StoredRun],
            device: str, k: int) -> tuple[Config | None, int]:
    """The winner and how many training seeds (0 up) chose it: the best seed-0 loss (ties: the
    smaller config id, as sweeps/cell.py), or the best of the `k` finalists (sweeps.cell.finalist_ids)
    on the seeds they all ran, as the sweep's rank_configs chose. A seed only the winner ran (a
    fresh seed, trained later to judge it) never takes part in the choice."""
    by_id = {config_key(c): c for c in configs}
    chosen = finalist_ids({config_key(c): loss for c, loss in zip(configs, losses)}, k)
    seeds = {cid: _seed_losses(cell, by_id[cid], runs, device) for cid in chosen}
    shared = min((len(v) for v in seeds.values()), default=0)
    if len(chosen) < 2 or shared < 2:
        return (by_id[chosen[0]] if chosen else None), 1
    ranked = rank_configs({cid: {s: x for s, x in enumerate(v[:shared]) if math.isfinite(x)}
                           for cid, v in seeds.items()})
    return by_id[ranked[0]], shared


def _seed_losses(cell: Cell, config: Config | None, runs: dict[str, StoredRun], device: str) -> tuple[float, ...]:
    """`config`'s loss at every training seed the store holds (0, 1, 2, ... until one is missing)."""
    out: list[float] = []
    while config is not None and (run := runs.get(cell.spec(config, len(out), device).key)) is not None:
        out.append(stored_loss(run))
    return tuple(out)
