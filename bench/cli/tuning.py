"""CLI command `tuning-cost`: how many trials each tuning protocol needs to reach the
approximately-best band of a cell, over seeds of its search, replayed from the store
(sweeps/replay.py, analysis/tuning.py; docs/TUNING.md)."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from bench.cli.args import positive_float
from bench.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("tuning-cost", help="best loss found against trials for each protocol a "
                                                  "cell was swept with, over search seeds (the curves)")
    p.add_argument("--optimizer", required=True)
    p.add_argument("--scale", required=True)
    p.add_argument("--ratio", type=positive_float, required=True)
    p.add_argument("--store", default=None, help="results store URL (default: sqlite under results/)")
    p.add_argument("--optuna-storage", default=None,
                   help="where the sweeps recorded their studies, which say the protocols and search "
                        "seeds swept (default: results/optuna.journal)")
    p.add_argument("--finalists", type=int, default=1,
                   help="choose each search's winner as `sweep --finalists K` did: the best mean, over "
                        "the training seeds they all ran, of its K best seed-0 configs (default 1: its "
                        "best seed-0 loss); winners are compared on the seeds that chose neither")
    p.add_argument("--out", type=Path, default=None,
                   help="file stem (default: results/tuning-cost/<optimizer>-<scale>-<ratio>x); "
                        ".png, .pdf and .csv (every trial)")
    p.set_defaults(func=cmd_tuning_cost)


def cmd_tuning_cost(args: argparse.Namespace) -> int:
    from analysis.plots import save, tuning_cost_figure, with_ext
    from analysis.tuning import tuning_cost
    from bench.cli.sweep import ladder_up_to, same_context
    from bench.model.scales import get_scale
    from bench.paths import results_dir
    from bench.store.database import ResultStore
    from bench.urls import shown_url
    from sweeps.grid import load_grid
    from sweeps.plan import Cell
    from sweeps.replay import replay

    load_grid(args.optimizer, "cpu")  # an unknown optimizer fails here, in one line
    if args.finalists < 1:
        raise UserError(f"--finalists must be at least 1 (got {args.finalists})")
    scale = get_scale(args.scale)
    store = ResultStore(args.store)
    swept = swept_searches(args.optuna_storage, args.optimizer, scale.name, args.ratio)
    if not swept:
        raise UserError(f"no sweep of {args.optimizer} at {scale.name} {args.ratio:g}x is recorded in the "
                        "Optuna storage; run `optbench sweep` (with --protocol and --search-seed) first")
    cells = [Cell(args.optimizer, scale.name, args.ratio, p, search_seed=s) for p, s, _ in swept]
    stored = [r for r in store.runs(optimizer=args.optimizer, scale=ladder_up_to(scale))
              if same_context(r, cells[0])]
    traces = [replay(c, stored, finalists=args.finalists) for c in cells]
    for line in replay_changes(traces, [ran for _, _, ran in swept]):
        print(line, file=sys.stderr)
    traces = [t for t in traces if t.losses]
    if not traces:
        raise UserError(f"the store holds none of the runs these sweeps asked for ({shown_url(store.url)})")
    cost = tuning_cost(traces)
    print(format_cost(cost, traces, f"{args.optimizer} at {scale.name} {args.ratio:g}x"))
    stem = args.out or results_dir() / "tuning-cost" / f"{args.optimizer}-{scale.name}-{args.ratio:g}x"
    title = f"Tuning cost: {args.optimizer} at {scale.name}, {args.ratio:g}x Chinchilla"
    paths = save(tuning_cost_figure(traces, cost, title, f"the default data, tokenizer and fp32 on CPU "
                                                          f"(runs from {shown_url(store.url)})"), stem)
    trial_frame(traces, args.optimizer, scale.name, args.ratio).to_csv(with_ext(stem, "csv"), index=False)
    print(f"wrote {', '.join(str(p) for p in paths)} and {with_ext(stem, 'csv')}")
    return 0


def swept_searches(storage: str | None, optimizer: str, scale: str,
                   ratio: float) -> list[tuple[str, int, str | None]]:
    """(protocol, search seed, the description its sweep last recorded) of every study recorded
    for the cell in the default context: the names Cell.study_name gives, read back."""
    import optuna

    from sweeps.plan import Cell
    from sweeps.protocols.phases import PROTOCOLS
    from sweeps.record import open_storage

    prefix = Cell(optimizer, scale, ratio, "").study_name  # ".../<optimizer>/", the protocol follows
    found = []
    for study in optuna.get_all_study_summaries(open_storage(storage), include_best_trial=False):
        protocol, _, seed = study.study_name.removeprefix(prefix).partition("/seed")
        if study.study_name.startswith(prefix) and protocol in PROTOCOLS and (seed == "" or seed.isdigit()):
            found.append((protocol, int(seed or 0), study.user_attrs.get("description")))
    return sorted(found, key=lambda ps: (PROTOCOLS.index(ps[0]), ps[1]))


def replay_changes(traces, ran: list[str | None]) -> list[str]:
    """A warning for each search replayed as another protocol than its sweep last recorded: Phase II
    and transfer start from the best tuned cell the store holds, and a cell tuned after the sweep
    moves that start, so the replay is no longer what the sweep did."""
    return [f"warning: {t.protocol} search seed {t.search_seed} is replayed as {t.label}, but its sweep "
            f"ran as {description}: a cell it starts from was tuned since"
            for t, description in zip(traces, ran) if description and t.label != description]


def format_cost(cost, traces, cell: str) -> str:
    lines = [f"{cell}: best loss {cost.best:.4f}; the approximately-best band is within {cost.tol:g} of it."]
    if cost.goal:
        lines.append(f"Coordinate descent in the study's key order took C = {cost.reference_trials} trials; "
                     f"the goal: enter the band within C/3 = {cost.goal}.")
    else:
        lines.append("Coordinate descent in the study's key order has not finished in the store: no goal to judge by.")
    if cost.seed_sd > cost.tol:
        lines.append(f"Its winner's loss varies by {cost.seed_sd:.4f} (sd) over training seeds, more than the band: "
                     "trials to the band on seed-0 losses rank luck as well as configs; the winners' gap, "
                     "paired by seed on seeds the winners were not chosen on, is the fairer measure.")
    goal = cost.goal or "C/3"
    lines.append(f"  {'protocol':10} {'seeds':>5}  {'trials':14} {'to band':14} {'by ' + str(goal):>6}"
                 f" {'90% lower':>9}  {'gap at ' + str(goal) + ' (90% CI)':28} winner - coordinate's (90% CI)")
    for p in cost.protocols:
        group = [t for t in traces if t.protocol == p.protocol]
        lines.append(f"  {p.protocol:10} {len(p.seeds):5d}  {_ints(p.trials, group):14} "
                     f"{_ints(p.to_band):14} {f'{p.within_goal}/{p.judged}':>6} {p.rate_lower:9.2f}  "
                     f"{_interval(p.gap_at_goal):28} {_interval(p.winner_gap)}")
    firsts = [next(t for t in traces if t.protocol == p.protocol) for p in cost.protocols]
    lines += [f"  {t.protocol} at search seed {t.search_seed}: {t.label}" for t in firsts]
    chosen = sorted({t.chosen_on for t in traces if t.winner is not None})
    lines.append("winners chosen on " + " or ".join(
        "seed 0" if n == 1 else f"finalists' means over seeds 0-{n - 1}" for n in chosen)
        + "; compared on the training seeds neither winner was chosen on")
    lines.append("trials: '+' marks a search the store holds no further (its sweep stopped), not one that "
                 "finished; to band: '-' never entered it; intervals are over search seeds.")
    return "\n".join(lines)


def _interval(stat) -> str:
    mean, lo, hi = stat
    if math.isnan(mean):
        return "-"
    return f"{mean:+.4f}" + ("" if math.isnan(lo) else f" [{lo:+.4f}, {hi:+.4f}]")


def trial_frame(traces, optimizer: str, scale: str, ratio: float):
    """Every trial of every replayed search at seed 0 (what the curves are drawn from), then each
    search's winner at its further training seeds (trial empty, winner true; chose_winner: a seed
    its choice was made on)."""
    import json

    import pandas as pd

    def row(t, trial, seed, key, loss, best, config, winner):
        return {"optimizer": optimizer, "scale": scale, "ratio": ratio, "protocol": t.protocol,
                "search_seed": t.search_seed, "trial": trial, "seed": seed, "run_key": key, "loss": loss,
                "best_so_far": best, "finished": t.finished, "winner": winner,
                "chose_winner": winner and seed < t.chosen_on, "config": json.dumps(config, sort_keys=True)}

    rows = [row(t, i + 1, 0, key, loss, best, config, config == t.winner)
            for t in traces
            for i, (key, loss, best, config) in enumerate(zip(t.run_keys, t.losses, t.best_so_far(), t.configs))]
    rows += [row(t, None, seed, None, loss, None, t.winner, True)
             for t in traces for seed, loss in enumerate(t.winner_losses) if seed > 0]
    return pd.DataFrame(rows)


def _ints(values, group=None) -> str:
    """Comma-separated, '-' for None; with `group`, '+' after a search the store holds no further."""
    marks = ["" if t.finished else "+" for t in group] if group else [""] * len(values)
    return ",".join("-" if v is None else f"{v}{m}" for v, m in zip(values, marks))
