"""CLI command `curves`: held-out loss against tokens for chosen runs, a cell's best configs, or
every config a sweep tried in a cell (--trials)."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from bench.cli.args import positive_float, scale_filter
from bench.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("curves", help="plot held-out loss against tokens: chosen runs, or each "
                                             "optimizer's best config in a cell (its seeds as a band)")
    p.add_argument("--store", default=None, help="results store URL (default: sqlite under results/)")
    p.add_argument("--run", dest="runs", action="append", default=[], metavar="KEY",
                   help="a run key (repeatable); else a cell: --scale and --ratio")
    p.add_argument("--scale", default=None)
    p.add_argument("--ratio", type=positive_float, default=None)
    p.add_argument("--optimizers", default=None, help="comma-separated (default: all stored in the cell)")
    p.add_argument("--trials", action="store_true",
                   help="every config tried in the cell (at its tuning seed), not only the best")
    p.add_argument("--reuse-stale", action="store_true",
                   help="also plot results of older code (stale, see `optbench runs --stale`)")
    p.add_argument("--out", type=Path, default=None,
                   help="file stem (default: results/curves/<scale>-<ratio>x); .png, .pdf and .csv")
    p.set_defaults(func=cmd_curves)


def cmd_curves(args: argparse.Namespace) -> int:
    from analysis.curves import curve_frame, leaders, plot_curves, plot_trials
    from analysis.plots import with_ext
    from bench.paths import results_dir
    from bench.store.database import ResultStore
    from bench.urls import shown_url

    store = ResultStore(args.store)
    results = _chosen_runs(store, args) if args.runs else _cell_runs(store, args)
    frame = curve_frame(results)
    if not (frame["curve"] == "held-out").any():
        raise UserError("these runs have no held-out curve (stored before optbench recorded curves); "
                        "train them again with this version")
    first = results[0].spec
    cell = f"{first['scale']}-{first['ratio']:g}x" + ("-trials" if args.trials else "")
    stem = args.out or results_dir() / "curves" / cell
    title = (f"{first['scale']} at {first['ratio']:g}x Chinchilla" if not args.runs
             else f"{len(results)} run(s)") + f" (from {shown_url(store.url)})"
    if args.trials:
        paths = plot_trials(frame, stem, title)
        print(_leaders(leaders(frame)))
    else:
        paths = plot_curves(frame, stem, title)
        print(_rankings(frame))
    frame.to_csv(with_ext(stem, "csv"), index=False)
    print(f"wrote {', '.join(str(p) for p in paths)} and {with_ext(stem, 'csv')}")
    return 0


def _chosen_runs(store, args) -> list:
    results = []
    for key in args.runs:
        result = store.get(key, reuse_stale=args.reuse_stale)
        if result is None:
            raise UserError(f"no result of run {key} from the current code in the store "
                            "(`optbench runs` lists what is there)")
        results.append(result)
    return results


def _cell_runs(store, args) -> list:
    """The runs of each optimizer's best config in the cell (all its seeds), one context only."""
    from analysis.cells import config_key, split_by_context, summarize_cells

    if args.scale is None or args.ratio is None:
        raise UserError("curves needs --run KEY, or a cell: --scale and --ratio")
    scale = scale_filter(args.scale)
    optimizers = [o.strip() for o in args.optimizers.split(",")] if args.optimizers else None
    runs = store.frame(optimizer=optimizers, scale=scale, reuse_stale=args.reuse_stale)
    runs = runs[[math.isclose(r, args.ratio) for r in runs["ratio"]]]
    if not len(runs):
        raise UserError(f"no stored result at {scale} {args.ratio:g}x" + (f" of {args.optimizers}" if optimizers else ""))
    contexts = split_by_context(runs)
    if len(contexts) > 1:
        raise UserError(f"the runs of this cell hold {len(contexts)} contexts ({'; '.join(c for c, _ in contexts)}); "
                        "pick runs with --run")
    if args.trials:  # every config at the seed the cell was tuned at (its lowest)
        tuning_seed = runs.groupby("optimizer")["seed"].transform("min")
        keys = list(runs.loc[runs["seed"] == tuning_seed, "run_key"])
    else:
        best = {row.optimizer: config_key(row.hparams) for row in summarize_cells(runs).itertuples() if row.hparams}
        keys = [k for k, o, h in zip(runs["run_key"], runs["optimizer"], runs["hparams"])
                if best.get(o) == config_key(h)]
    by_key = {r.run_key: r for r in store.results(optimizer=optimizers, scale=scale, reuse_stale=args.reuse_stale)}
    return [by_key[k] for k in keys]


def _leaders(table) -> str:
    """Per optimizer: the curve points where a config other than the final best led."""
    lines = ["the config with the lowest held-out loss at each curve point, against the final best:"]
    for optimizer, rows in table.groupby("optimizer"):
        other = rows[~rows["leader_is_final_best"]]
        if not len(other):
            lines.append(f"  {optimizer}: the final best config led at every point")
            continue
        gaps = ", ".join(f"step {r.step} ({r.final_best_loss - r.leader_loss:+.4f})" for r in other.itertuples())
        lines.append(f"  {optimizer}: another config led at {len(other)} of {len(rows)} points; the final "
                     f"best trailed it by {gaps}")
    return "\n".join(lines)


def _rankings(frame) -> str:
    """The optimizers in order of mean held-out loss at each curve point, and whether it changes."""
    held = frame[frame["curve"] == "held-out"]
    means = held.groupby(["step", "optimizer"])["value"].mean().unstack()
    lines = ["held-out loss by step (mean over seeds; ranking best first):"]
    for step, row in means.iterrows():
        order = row.dropna().sort_values()
        lines.append(f"  step {step:5d}: " + "  ".join(f"{o} {v:.4f}" for o, v in order.items()))
    final = list(held.groupby("optimizer")["final_loss"].mean().sort_values().index)  # all eval tokens
    lines.append("  final loss (all evaluation tokens): " + " < ".join(final))
    flips = [step for step, row in means.iterrows() if list(row.dropna().sort_values().index) != final]
    lines.append("the ranking at every curve point matches the final one" if not flips else
                 f"the ranking differs from the final one at step(s) {', '.join(str(s) for s in flips)}")
    return "\n".join(lines)
