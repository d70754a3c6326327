"""The `optbench regress` subcommand: the CI regression check.

    optbench regress                          # check the tree against the committed baseline
    optbench regress --update-baseline        # after an intended change: re-measure and rewrite
    optbench regress --update-baseline --tuned-from sqlite:///results/tune.db \\
        --sweep-command "optbench sweep ..."  # a new baseline from a sweep's best configs

Exit codes: 0 no regression (or baseline written), 1 a regression (the table names the
optimizer), 2 bad input such as a missing or corrupt baseline file.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.errors import UserError

ARGUMENTS: list[tuple[str, dict]] = [  # flag, add_argument's keywords
    ("--baseline", dict(type=Path, default=None, help="baseline file (default: "
                        "results/baselines/regress-cpu-xs.json in the source tree)")),
    ("--workers", dict(type=int, default=None, help="runs at once, each with the baseline's "
                       "thread count (default: CPUs / threads)")),
    ("--alpha", dict(type=float, default=0.05, help="family-wise false-alarm rate over all "
                     "optimizers checked (default: 0.05)")),
    ("--seeds", dict(default=None, help="run these seeds instead of the baseline's, e.g. 3,4,5 "
                     "(to measure the check's false-alarm rate against seed noise)")),
    ("--runs-out", dict(type=Path, default=None, metavar="FILE", help="also write every run this "
                        "check trained to FILE (CSV: optimizer, ratio, seed, status, final_loss to the "
                        "last bit, steps, wall_time_s), e.g. for examples/regress_false_alarms.py")),
    ("--update-baseline", dict(action="store_true", help="re-measure and rewrite the baseline "
                               "(hyperparameters kept) instead of checking")),
    ("--tuned-from", dict(default=None, metavar="STORE", help="with --update-baseline: take each "
                          "optimizer's best config from this sweep store (a new baseline)")),
    ("--tune-ratio", dict(type=float, default=1.0, help="with --tuned-from: the data ratio the "
                          "sweep tuned at (default: 1)")),
    ("--optimizers", dict(default=None, help="with --tuned-from: comma-separated names, AdamW "
                          "first (default: adamw,nadamw,muon,soap,lion,normuon)")),
    ("--run-timeout", dict(type=float, default=None, metavar="SECONDS", help="stop the check, with no "
                           "verdict, when a run has no result this long after a worker took it (a hung "
                           "run; default: 10x the baseline's slowest run, at least 10 min; 0: never, and then "
                           "--workers 1 trains in this process)")),
    ("--sweep-command", dict(default="", help="with --tuned-from: the sweep's command line, "
                             "recorded as provenance")),
]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "regress", help="CI check: did an optimizer's speedup over AdamW move? (exit 1 if it fell)",
        description="Re-run the committed baseline's optimizers at their tuned hyperparameters and "
                    "seeds, recompute the speedups over AdamW, and compare them with the baseline "
                    "by a seed bootstrap (Bonferroni-corrected over the optimizers). Prints "
                    "baseline, now, change and verdict per optimizer; exits 1 on a regression.")
    for flag, options in ARGUMENTS:
        p.add_argument(flag, **options)
    p.set_defaults(func=cmd_regress)


def cmd_regress(args: argparse.Namespace) -> int:
    from sweeps.regress import baseline as files

    _check_args(args)
    path = args.baseline or files.DEFAULT_PATH
    seeds = _parse_seeds(args.seeds)
    if args.tuned_from:
        return _new_baseline(args, path, seeds)
    baseline = files.load(path)
    if args.update_baseline:
        return _update(baseline, args, path, seeds)
    return _check(baseline, args, seeds)


def _check(baseline, args, seeds) -> int:
    from bench.run.hardware import cpu_model
    from sweeps.regress.check import check, measure
    from sweeps.regress.report import cpu_line, format_table, reproduction_line, summary_line, write_runs
    from sweeps.regress.runs import print_progress
    from sweeps.regress.stats import CheckOptions

    workers = _workers(args, baseline.threads)
    timeout = _run_timeout(args, baseline)
    deadline = f", a run's deadline {timeout:.0f} s" if timeout else ""
    print(f"optbench regress: {sum(1 for _ in baseline.specs(seeds))} runs at {baseline.scale}, "
          f"{workers} worker(s) x {baseline.threads} thread(s){deadline}", flush=True)
    runs, seconds = measure(baseline, workers, seeds, print_progress(), timeout)
    if args.runs_out:
        write_runs(runs, args.runs_out)
    outcome = check(baseline, runs, CheckOptions(alpha=args.alpha), seconds)
    print(format_table(outcome.verdicts, outcome.level, outcome.alpha))
    print(reproduction_line(baseline.runs, runs))
    if note := cpu_line(baseline.provenance.get("measured", {}).get("cpu"), cpu_model()):
        print(note)
    print(f"{summary_line(outcome.verdicts)} (runs took {seconds:.0f} s)")
    return 1 if outcome.regressed else 0


def _update(baseline, args, path, seeds, tuning=None) -> int:
    from sweeps.regress import baseline as files
    from sweeps.regress.check import measure, updated
    from sweeps.regress.runs import print_progress

    workers = _workers(args, baseline.threads)
    runs, seconds = measure(baseline, workers, seeds, print_progress(), _run_timeout(args, baseline))
    new = updated(baseline, runs, seconds, seeds, tuning)
    files.save(new, path)
    for row in new.summary:
        print(f"  {row['optimizer']:>8}  {row['statistic']}: {_fmt(row['value'])} "
              f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}] ({100 * row['level']:.0f}%)")
    print(f"baseline written to {path} (runs took {seconds:.0f} s)")
    return 0


def _new_baseline(args, path, seeds) -> int:
    from bench.urls import shown_url
    from sweeps.regress.check import Layout, new_baseline, tuned_configs, tuning_record, tuning_runs

    names = [n.strip() for n in (args.optimizers or ",".join(Layout().optimizers)).split(",") if n.strip()]
    layout = Layout()
    runs = tuning_runs(args.tuned_from, layout.scale, args.tune_ratio)
    tuned = tuned_configs(runs, shown_url(args.tuned_from), layout.scale, args.tune_ratio, names)
    tuning = tuning_record(runs, args.tuned_from, layout.scale, args.tune_ratio, args.sweep_command)
    return _update(new_baseline(tuned, layout), args, path, seeds, tuning)


def _run_timeout(args: argparse.Namespace, baseline) -> float:
    """A run's deadline in seconds; 0: none."""
    from sweeps.regress.check import run_timeout

    return run_timeout(baseline) if args.run_timeout is None else args.run_timeout


def _check_args(args: argparse.Namespace) -> None:
    if args.tuned_from and not args.update_baseline:
        raise UserError("--tuned-from makes a new baseline; it needs --update-baseline")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.run_timeout is not None and not args.run_timeout >= 0:  # NaN too
        raise UserError(f"--run-timeout must be 0 (never) or a number of seconds, got {args.run_timeout}")
    if args.runs_out and args.update_baseline:
        raise UserError("--runs-out writes a check's runs; with --update-baseline the baseline file keeps them")
    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha must be in (0, 1), got {args.alpha}")
    if args.runs_out:  # last: it creates the file's folder
        _writable(args.runs_out)


def _writable(path: Path) -> None:
    """Fail before any run trains, not after, if the runs file cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.open("a").close()
    except OSError as e:
        raise UserError(f"--runs-out cannot write {path}: {e.strerror}") from None


def _parse_seeds(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        seeds = tuple(dict.fromkeys(int(t) for t in text.replace(" ", "").split(",") if t))
    except ValueError:
        raise UserError(f"--seeds wants non-negative integers separated by commas, got {text!r}") from None
    if len(seeds) < 2 or min(seeds) < 0:
        raise UserError(f"--seeds wants 2 or more non-negative integers, got {text!r}")
    return seeds


def _workers(args: argparse.Namespace, threads: int) -> int:
    from bench.run.estimate import usable_cpus

    return args.workers or max(1, usable_cpus() // threads)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
