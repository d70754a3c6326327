"""The `optbench analyze` and `optbench reproduce` subcommands.

analyze: speedups, tables and figures from our results store, each context (data, eval data,
tokenizer, precision, device, eval tokens) analysed alone unless --mix-contexts pools them.
reproduce: the same from the study's published result files (analysis/paper/data/), printed
beside the study's headline. Bad input raises bench.errors.UserError, which the CLI prints as one
line (exit code 2); problems with single input files are warnings and the rest is analysed.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd

from analysis.cells import MIXED_CONTEXTS, hardware_note, split_by_context
from analysis.paper.ingest import DEFAULT_DATA_DIR
from analysis.paper.reproduce import STUDY_FIT_RATIOS, STUDY_HEADLINE_RATIO, reproduce
from analysis.pipeline import AnalysisOptions, AnalysisOutputs, analyze_by_context, run_analysis
from analysis.speedups import SpeedupOptions, missing_intervals, parse_ratios
from analysis.tables import format_frame, speedup_wide
from bench.errors import UserError
from bench.paths import results_dir
from bench.store.record import CONTEXT_COLUMNS, context_text
from bench.urls import shown_url


def register(subparsers) -> None:
    """Add the `analyze` and `reproduce` subcommands to an argparse subparsers object."""
    analyze = subparsers.add_parser(
        "analyze", help="speedups, tables and plots from the results store",
        description="Fit AdamW's loss vs data per scale, estimate every optimizer's speedup with "
                    "bootstrap intervals, and write tables (Markdown, CSV, LaTeX) and figures.")
    analyze.add_argument("--store", default=None,
                         help="results store URL (default: OPTBENCH_STORE or the SQLite store "
                              "under results/)")
    analyze.add_argument("--out", type=Path, default=None,
                         help="output folder (default: results/analysis)")
    analyze.add_argument("--ladder", choices=("cpu", "paper"), default=None,
                         help="analyse only this ladder's runs")
    add_context_flags(analyze)
    analyze.add_argument("--reuse-stale", action="store_true",
                         help="use results of older code where the current code has none")
    analyze.add_argument("--mix-contexts", action="store_true",
                         help="pool runs of different contexts into one analysis, every table "
                              "labelled MIXED CONTEXTS (default: each context analysed alone)")
    _common_options(analyze, fit_ratios="all", ratio=None)
    analyze.set_defaults(func=run_analyze)

    repro = subparsers.add_parser(
        "reproduce", help="the study's speedup figure and tables from its published results",
        description="Ingest the study's result files, regenerate its speedup-vs-scale figure and "
                    "tables with intervals, and print our speedups beside its headline.")
    repro.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR,
                       help="the study's result files (default: the copy shipped in "
                            "analysis/paper/data)")
    repro.add_argument("--out", type=Path, default=None,
                       help="output folder (default: results/reproduce)")
    _common_options(repro, fit_ratios=",".join(f"{r:g}" for r in STUDY_FIT_RATIOS),
                    ratio=STUDY_HEADLINE_RATIO)
    repro.set_defaults(func=run_reproduce)


def add_context_flags(parser: argparse.ArgumentParser) -> None:
    """--data, --precision, ...: keep only runs of that context (only_contexts applies them)."""
    for name in CONTEXT_COLUMNS:
        parser.add_argument(_flag(name), dest=f"only_{name}", default=None, metavar="VALUE",
                            help=f"only runs with this {name}, written as in the context label"
                                 + (" ('held-out' for the training data's held-out split)"
                                    if name == "eval_data" else ""))


def _common_options(parser: argparse.ArgumentParser, fit_ratios: str, ratio: float | None):
    parser.add_argument("--fit-ratios", default=fit_ratios,
                        help=f"data ratios AdamW's law is fitted on, e.g. 1,2,4,8, or 'all' "
                             f"(default: {fit_ratios})")
    parser.add_argument("--ratio", type=float, default=ratio,
                        help="data ratio of the headline speedup-vs-scale figure (default: "
                             + (f"{ratio:g})" if ratio else "the largest ratio most scales "
                                                            "have speedups at)"))
    parser.add_argument("--n-boot", type=int, default=2000,
                        help="bootstrap replicates per scale (default: 2000)")
    parser.add_argument("--level", type=float, default=0.9,
                        help="confidence level of the intervals (default: 0.9)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap random seed (default: 0)")
    parser.add_argument("--no-plots", action="store_true", help="write tables only")
    parser.add_argument("--highlight", default="", metavar="OPTIMIZERS",
                        help="comma-separated optimizers drawn in colour on the speedup figures, "
                             "the others in grey (default: all in colour)")


def run_analyze(args: argparse.Namespace) -> int:
    """Handler of `optbench analyze`: the store's runs through `analyze_runs`."""
    return analyze_runs(load_store_runs(args.store, args.reuse_stale), args)


def analyze_runs(runs: pd.DataFrame, args: argparse.Namespace) -> int:
    """Analyse a runs frame (the store's shape) with the options of `optbench analyze`."""
    options = _options(args)
    runs = only_contexts(runs, args)
    if args.ladder is not None:
        runs = runs[runs["ladder"] == args.ladder]
    if not len(runs):
        where = f" on the {args.ladder} ladder" if args.ladder else ""
        raise UserError(f"the results store holds no runs{where}: nothing to analyse")
    out_dir = args.out or results_dir() / "analysis"
    if args.mix_contexts:
        outputs = run_analysis(runs, out_dir, replace(options, mix_contexts=True))
        contexts = split_by_context(runs)
        if len(contexts) > 1:
            print(f"{MIXED_CONTEXTS}: {len(contexts)} contexts pooled into one analysis:")
            for label, sub in contexts:
                print(f"  {label} ({_runs_text(len(sub))})")
        if note := hardware_note(runs):
            print(f"note: {note}")
        _print_summary(outputs, out_dir, options.speedup.level)
        return 0
    analyses = analyze_by_context(runs, out_dir, options)
    if len(analyses) > 1:
        print(f"the runs hold {len(analyses)} contexts; each is analysed alone (--mix-contexts "
              f"pools them; {', '.join(_flag(n) for n in CONTEXT_COLUMNS)} pick runs):")
        for analysis in analyses:
            print(f"  {analysis.out_dir.name}: {analysis.context} "
                  f"({_runs_text(len(analysis.runs))})")
    for analysis in analyses:
        print(f"\ncontext: {analysis.context} ({_runs_text(len(analysis.runs))})")
        if note := hardware_note(analysis.runs):
            print(f"note: {note}")
        if analysis.outputs is None:
            print("not analysed: none of its runs finished with a loss")
            continue
        if not len(analysis.outputs.result.fits):
            print("no speedups in this context: it has no AdamW law (see the warnings)")
        _print_summary(analysis.outputs, analysis.out_dir, options.speedup.level)
    return 0


def only_contexts(runs: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    """The runs the context filters (--data, --precision, ...) keep; a value no run has is bad
    input (UserError), caught before anything is written."""
    chosen: list[str] = []
    for name in CONTEXT_COLUMNS:
        wanted = getattr(args, f"only_{name}")
        if wanted is None:
            continue
        values = runs[name].map(lambda value, name=name: context_text(name, value))
        if not (values == wanted).any():
            among = f" with {', '.join(chosen)}" if chosen else ""
            raise UserError(f"{_flag(name)} {wanted!r} matches no stored run{among}; stored "
                            f"{name} values: {', '.join(sorted(set(values))) or 'none'}")
        runs = runs[values == wanted]
        chosen.append(f"{_flag(name)} {wanted}")
    return runs


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _runs_text(n: int) -> str:
    return f"{n} run" + ("" if n == 1 else "s")


def run_reproduce(args: argparse.Namespace) -> int:
    """Handler of `optbench reproduce`."""
    options = _options(args)
    out_dir = args.out or results_dir() / "reproduce"
    rep = reproduce(out_dir, args.data, options)
    for issue in rep.paper.issues:
        print(f"warning: {issue}", file=sys.stderr)
    print(f"read {len(rep.paper.runs)} runs from {rep.paper.files_read} result files in "
          f"{args.data}")
    _print_summary(rep.outputs, out_dir, options.speedup.level)
    print(f"\nOur speedups beside the study's headline (fastest optimizer per scale, "
          f"{options.speedup.level:.0%} intervals, * = extrapolated fit):")
    print(format_frame(rep.comparison))
    return 0


def load_store_runs(url: str | None, reuse_stale: bool = False) -> pd.DataFrame:
    """The runs frame of the results store at `url` (None: the default store): the results of
    the current code (reuse_stale: else of older code), saying which store (its password hidden)
    it read and how many stale results it left out."""
    try:
        from bench.store.database import ResultStore  # lazily: only analyze needs the store
    except ImportError as e:
        raise UserError(f"the results store is not available in this installation: {e}") from None
    store = ResultStore(url)
    stale = store.count_stale()
    if reuse_stale and not stale:
        raise UserError(f"--reuse-stale: the results store {shown_url(store.url)} holds no stale result")
    runs = store.frame(reuse_stale=reuse_stale)
    print(f"read {_runs_text(len(runs))} from the results store {shown_url(store.url)}"
          + (f", {stale} of them stale (from older code), used as --reuse-stale asks" if reuse_stale
             else f"; skipped {_runs_text(stale)} whose results came from older code (stale: "
                  "`optbench runs --stale` lists them, --reuse-stale uses them)" if stale else ""))
    return runs


def _options(args: argparse.Namespace) -> AnalysisOptions:
    if args.n_boot < 100:
        raise UserError(f"--n-boot must be at least 100 (got {args.n_boot})")
    if not 0.5 <= args.level < 1.0:
        raise UserError(f"--level must be in [0.5, 1) (got {args.level})")
    speedup = SpeedupOptions(fit_ratios=parse_ratios(args.fit_ratios), n_boot=args.n_boot,
                             level=args.level, seed=args.seed)
    highlight = tuple(o.strip() for o in args.highlight.split(",") if o.strip())
    return AnalysisOptions(speedup, args.ratio, not args.no_plots, highlight=highlight)


def _print_summary(outputs: AnalysisOutputs, out_dir: Path, level: float) -> None:
    for note in outputs.notes:
        print(f"warning: {note}", file=sys.stderr)
    cells = outputs.cells
    print(f"{len(cells)} cells ({cells['optimizer'].nunique()} optimizers, "
          f"{cells['scale'].nunique()} scales); {int(cells['n_diverged'].sum())} diverged and "
          f"{int(cells['n_failed'].sum())} failed runs left out of the fits")
    for fit in outputs.result.fits.itertuples():
        bound = f"; {fit.note}" if fit.note else ""
        print(f"AdamW fit at {fit.scale}: L(D) = {fit.alpha:.4g} * D^-{fit.B:.4g} + {fit.beta:.4f}"
              f" on ratios {fit.fit_ratios} (rmse {fit.rmse:.2g}, {fit.dof} dof{bound})")
    ratio = outputs.headline_ratio
    if ratio is not None:
        missing = missing_intervals(outputs.result.speedups)
        print(f"\nSpeedup over AdamW at {ratio:g}x Chinchilla ({outputs.cells['context'].iloc[0]}; "
              f"{level:.0%} intervals" + (f"; {missing}" if missing else "") + "):")
        print(format_frame(speedup_wide(outputs.result.speedups, ratio)))
    print(f"\nwrote {len(outputs.files)} files to {out_dir}")
    for name in ("speedups.csv", "speedup_vs_scale.md", "speedup_vs_scale.png"):
        if any(p.name == name for p in outputs.files):
            print(f"  {outputs.file(name)}")
