"""CLI command `agreement`: does a measurement of ours (a results store's context, or a regression
baseline) rank the optimizers as the study did at one of its scales? Kendall's tau and the mean
absolute difference of log speedups, with bootstrap intervals (analysis/agreement.py), a table and
a scatter figure."""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from analysis.agreement import Side, agreement, by_ratio, side, speedup_ratios
from analysis.speedups import SpeedupResult
from bench.cli.analysis import add_context_flags, load_store_runs, only_contexts
from bench.errors import UserError

STUDY_SCALE = "0.1B"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "agreement", help="how well our speedups rank the optimizers as the study did",
        description="Per optimizer, the geometric-mean speedup over AdamW in one context and scale of "
                    "ours beside the study's at one of its scales; Kendall's tau between the two and "
                    "the mean absolute difference of their logs, with bootstrap intervals; a table and "
                    "a scatter figure.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--store", default=None,
                        help="results store URL (default: OPTBENCH_STORE or the SQLite store under results/)")
    source.add_argument("--baseline", type=Path, default=None,
                        help="a regression baseline file (optbench regress) instead of a store")
    p.add_argument("--scale", default=None, help="our scale (default: the only one the runs have)")
    p.add_argument("--ratios", default=None,
                   help="our ratios to average over, e.g. 1,2 (default: all; AdamW's law is fitted on "
                        "every ratio either way)")
    add_context_flags(p)
    p.add_argument("--study-scale", default=STUDY_SCALE,
                   help=f"the study's scale to compare with (default: {STUDY_SCALE})")
    p.add_argument("--out", type=Path, default=None,
                   help="file stem (default: results/agreement/<scale>-vs-<study scale>); "
                        ".csv (per optimizer), -cells.csv (our cells: each best config's seeds), "
                        "-by-ratio.csv (the agreement of each of our ratios alone), .md, .png, .pdf")
    p.add_argument("--choose", choices=("means", "tuning-seed"), default="means",
                   help="each cell's winner, where a sweep ran --finalists: the best mean over seeds "
                        "(default, as `analyze`) or the best tuning-seed loss, the study's rule")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates (default: 2000)")
    p.add_argument("--level", type=float, default=0.9, help="interval level (default: 0.9)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap random seed (default: 0)")
    p.add_argument("--no-plots", action="store_true", help="write tables only")
    p.add_argument("--space", dest="spaces", action="append", default=[], metavar="NAME=FILE",
                   help="a grid amendment the sweep ran with (repeatable): the at_grid_end column "
                        "reads the amended grid")
    p.set_defaults(func=cmd_agreement)


def cmd_agreement(args: argparse.Namespace) -> int:
    from analysis.plots import agreement_figure, save, with_ext
    from analysis.tables import format_frame
    from bench.paths import results_dir
    from sweeps.grid import amended_optimizers, use_spaces

    use_spaces(args.spaces, [])
    if args.n_boot < 100 or not 0.5 <= args.level < 1.0:
        raise UserError(f"--n-boot must be at least 100 and --level in [0.5, 1) (got {args.n_boot}, {args.level})")
    ours = _our_side(args)
    if amended := amended_optimizers():
        ours = replace(ours, context=f"{ours.context}; grids amended (--space): {', '.join(amended)}")
    study = _study_side(args)
    agr = agreement(ours.side, study, args.level)
    ratios = _shown(by_ratio(ours.result, ours.scale, ours.side.label, study, args.level))
    stem = args.out or results_dir() / "agreement" / f"{ours.scale}-vs-{args.study_scale}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    table = _shown(agr.table)
    table.to_csv(with_ext(stem, "csv"), index=False)
    cells_csv = stem.with_name(f"{stem.name}-cells.csv")
    ours.cells.to_csv(cells_csv, index=False)
    ratios_csv = stem.with_name(f"{stem.name}-by-ratio.csv")
    ratios.to_csv(ratios_csv, index=False)
    summary = (summary_lines(agr, ours.side.label, study.label) + selection_lines(ours.cells)
               + off_grid_lines(ours.cells))
    by_ratio_text = ["Each of our ratios alone against the study:", format_frame(ratios)]
    with_ext(stem, "md").write_text(
        "\n\n".join([f"Context: {ours.context}", format_frame(table), *summary, *by_ratio_text]) + "\n")
    print(f"context: {ours.context}")
    print(format_frame(table))
    print("\n".join(summary))
    print("\n".join(by_ratio_text))
    if agr.only_one_side:
        print("left out (on one side only): "
              + ", ".join(f"{n} ({where})" for n, where in agr.only_one_side.items()))
    written = [with_ext(stem, "csv"), cells_csv, ratios_csv, with_ext(stem, "md")]
    if not args.no_plots:
        written += save(agreement_figure(agr, ours.side.label, study.label, ours.context), stem)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def summary_lines(agr, ours: str, study: str) -> list[str]:
    n = len(agr.table)
    level = f"{agr.level:.0%}"
    return [f"Kendall's tau ({ours} vs {study}, {n} optimizers, AdamW included): "
            f"{agr.tau[0]:.2f} [{agr.tau[1]:.2f}, {agr.tau[2]:.2f}] ({level} bootstrap)",
            f"mean |log speedup difference| (AdamW left out): "
            f"{agr.mad[0]:.3f} [{agr.mad[1]:.3f}, {agr.mad[2]:.3f}]"]


def selection_lines(cells: pd.DataFrame) -> list[str]:
    """Per optimizer, the mean over its cells of how far its winner's seeds fell behind the one
    seed it was chosen on; large gaps say the ranking leans on lucky tuning seeds."""
    gaps = cells[cells["n_seeds"] >= 2].groupby("optimizer")["selection_gap"].mean().dropna()
    if gaps.empty:
        return []
    shown = ", ".join(f"{name} {gap:+.3f}" for name, gap in gaps.sort_values(ascending=False).items())
    return [f"selection gap (mean of the winner's seeds minus its tuning-seed loss, mean over cells): "
            f"{shown}; `sweep --finalists K` chooses on means instead"]


@dataclass(frozen=True)
class Ours:
    side: Side
    context: str  # its label
    scale: str
    cells: pd.DataFrame  # the cells behind it, as written to -cells.csv
    result: SpeedupResult  # every cell's speedup, behind `side`


def _our_side(args: argparse.Namespace) -> Ours:
    """Our side in its one context and scale; UserError on several (name one with the context
    flags or --scale)."""
    from analysis.cells import on_tuning_seed, split_by_context, summarize_cells
    from analysis.speedups import SpeedupOptions, estimate_speedups, parse_ratios

    ratios = parse_ratios(args.ratios, "--ratios")
    runs = _runs(args)
    runs = only_contexts(runs, args)
    contexts = split_by_context(runs)
    if len(contexts) != 1:
        listed = "; ".join(label for label, _ in contexts) or "none"
        raise UserError(f"the runs hold {len(contexts)} contexts ({listed}); pick one with --data, "
                        "--arch, ... as in `optbench analyze`")
    context, runs = contexts[0]
    scale = _scale(runs, args.scale)
    runs = runs[runs["scale"] == scale]
    if args.choose == "tuning-seed":
        runs = on_tuning_seed(runs)
    cells = summarize_cells(runs)
    result = estimate_speedups(cells, SpeedupOptions(n_boot=args.n_boot, level=args.level, seed=(args.seed, 1)))
    source = args.baseline.name if args.baseline else "store"
    label = f"{scale} ({source})"
    if ratios is not None:
        have = speedup_ratios(result, scale)
        if not set(ratios) & set(have):
            raise UserError(f"--ratios {args.ratios}: no speedups there; the speedups are at "
                            f"{', '.join(f'{r:g}' for r in have) or 'no ratio'}")
        label = f"{scale} ({source}, {','.join(f'{r:g}' for r in ratios)}x)"
    return Ours(side(result, scale, label, ratios), context, scale, _cells_shown(cells, runs), result)


def _runs(args: argparse.Namespace) -> pd.DataFrame:
    if args.baseline is None:
        return load_store_runs(args.store)
    from sweeps.regress.baseline import load, runs_frame

    baseline = load(args.baseline)
    return runs_frame(baseline.runs, baseline)


def _scale(runs: pd.DataFrame, wanted: str | None) -> str:
    scales = sorted(set(runs["scale"]))
    if wanted is None and len(scales) == 1:
        return scales[0]
    if wanted in scales:
        return wanted
    raise UserError(f"--scale {wanted}: the runs have scales {', '.join(scales) or 'none'}; name one"
                    if wanted else f"the runs have several scales ({', '.join(scales)}); name one with --scale")


def _study_side(args: argparse.Namespace):
    """The study at --study-scale over the ratios its AdamW law is fitted on (1-8x)."""
    from analysis.cells import summarize_cells
    from analysis.paper.ingest import load_paper_runs
    from analysis.paper.reproduce import STUDY_FIT_RATIOS, study_options
    from analysis.speedups import estimate_speedups

    options = study_options(n_boot=args.n_boot, level=args.level, seed=args.seed).speedup
    result = estimate_speedups(summarize_cells(load_paper_runs().runs), replace(options, seed=(args.seed, 2)))
    if args.study_scale not in set(result.speedups["scale"]):
        raise UserError(f"--study-scale {args.study_scale}: the study's scales are "
                        f"{', '.join(dict.fromkeys(result.speedups['scale']))}")
    return side(result, args.study_scale, f"study {args.study_scale}", STUDY_FIT_RATIOS)


def _cells_shown(cells: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Our cells as a small table: each cell's best config, its seeds' losses and their spread, how
    much worse its mean is than the tuning seed's loss it won on (`selection_gap`: the winner's
    curse), what tuning ran, and the hyperparameters the search varied whose best value is an end
    of the grid (the optimum may lie beyond it)."""
    out = cells[["optimizer", "ratio", "loss", "n_seeds", "losses", "loss_sd", "n_configs", "n_runs",
                 "hparams"]].copy()
    out.insert(6, "selection_gap", cells["loss"] - cells["tuning_loss"])
    out["losses"] = out["losses"].map(lambda losses: " ".join(f"{x:.6f}" for x in losses))
    grids = _grids(out["optimizer"], runs["ladder"].iloc[0])
    varied = _varied(runs)
    out["at_grid_end"] = [_grid_ends(grids[o], h, varied.get((o, float(r)), set()))
                          for o, r, h in zip(out["optimizer"], out["ratio"], out["hparams"])]
    out["off_grid"] = [_off_grid(grids[o], h) for o, h in zip(out["optimizer"], out["hparams"])]
    out["hparams"] = out["hparams"].map(lambda h: json.dumps(h, sort_keys=True))
    return out


def _varied(runs: pd.DataFrame) -> dict[tuple[str, float], set[str]]:
    """Per cell (optimizer, ratio): the hyperparameters whose value differs among its configs."""
    out = {}
    for (optimizer, ratio), group in runs.groupby(["optimizer", "ratio"]):
        configs = [dict(h) for h in group["hparams"]]
        keys = set().union(*configs)
        out[(optimizer, float(ratio))] = {k for k in keys if len({repr(c.get(k)) for c in configs}) > 1}
    return out


def _grids(optimizers: pd.Series, ladder: str) -> dict[str, dict[str, list]]:
    """Each optimizer's search grid on `ladder` (with this process's --space amendments); none for
    a shape of the user's own, which has no grid of ours."""
    from sweeps.grid import load_grid

    known = ladder in ("cpu", "paper")
    return {o: load_grid(o, ladder) if known else {} for o in set(optimizers)}


def _grid_ends(grid: dict[str, list], hparams: dict, varied: set[str]) -> str:
    ends = []
    for key, values in grid.items():
        numbers = sorted(v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool))
        if key in varied and len(numbers) > 2 and hparams.get(key) in (numbers[0], numbers[-1]):
            ends.append(f"{key}={hparams[key]:g} ({'lowest' if hparams[key] == numbers[0] else 'highest'})")
    return "; ".join(ends)


def _off_grid(grid: dict[str, list], hparams: dict) -> str:
    """The winner's values that its grid does not hold: a run from another search (a copied store,
    a hand-run config), which a reader of one search's ranking should know about."""
    return "; ".join(f"{k}={hparams[k]!r}" for k, values in grid.items()
                     if k in hparams and hparams[k] not in values)


def off_grid_lines(cells: pd.DataFrame) -> list[str]:
    """A warning naming each cell whose winner lies off the searched grid."""
    off = cells[cells["off_grid"] != ""]
    if off.empty:
        return []
    named = "; ".join(f"{o} {r:g}x ({v})" for o, r, v in zip(off["optimizer"], off["ratio"], off["off_grid"]))
    return [f"warning: {len(off)} winners lie off the grids searched (pass a sweep's --space files, or "
            f"read a store holding only that search): {named}"]


def _shown(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its numbers rounded."""
    out = table.copy()
    for col in out.columns:
        if out[col].dtype.kind == "f":
            out[col] = out[col].round(3)
    return out
