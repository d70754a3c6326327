"""The `optbench sweep` subcommand: plan, confirm, run, summarise.

    optbench sweep --scale cpu-xs --ratios 1,2 --optimizers adamw,muon,lion --workers 2 --yes

Prints the plan and its cost first and asks before starting (--yes skips the question; without a
terminal it is required). Running the same command again resumes an interrupted sweep.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from bench.cli.args import add_model_and_data_flags, model_choice
from bench.cli.run import add_reuse_flags, add_track_flag
from bench.errors import UserError

if TYPE_CHECKING:  # imported lazily below: every optbench command loads this module
    from sweeps.driver import Resources

DEFAULT_MAX_TRIALS = 8  # per optimizer and ratio: the whole learning-rate grid and a step beyond


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", help="tune optimizers with the study's protocol: Optuna studies, Ray trials",
        description="Tune each optimizer at one scale and several data ratios (coordinate descent "
                    "as in the study, or Optuna's TPE/GP with the same budget), store every run, "
                    "and print the best configs and the speedup over AdamW. Rerun to resume.")
    add_model_and_data_flags(p)
    p.add_argument("--ratios", default="1,2,4,8", help="data budgets in Chinchilla units (default: 1,2,4,8)")
    p.add_argument("--optimizers", default="adamw,muon",
                   help="comma-separated names (module:Class too), or 'all' (default: adamw,muon)")
    p.add_argument("--space", dest="spaces", action="append", default=[], metavar="[NAME=]FILE",
                   help="search space file of your own optimizer (repeatable; NAME needed when "
                        "there are several)")
    p.add_argument("--protocol", default="coordinate", choices=("coordinate", "tpe", "gp", "predict"),
                   help="coordinate: the study's Phase I (Phase II where a smaller scale is tuned); "
                        "tpe, gp: Optuna samplers with the same budget; predict: Phase III, "
                        "hyperparameters fitted over tuned smaller scales, run once")
    p.add_argument("--max-trials", type=int, default=DEFAULT_MAX_TRIALS,
                   help=f"most configs per optimizer and ratio (default: {DEFAULT_MAX_TRIALS})")
    p.add_argument("--seeds", type=int, default=1,
                   help="run each cell's best config with this many seeds (seed 0 tunes; default: 1)")
    p.add_argument("--workers", type=int, default=None,
                   help="trials at once (default: CPUs / threads, or one per GPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per trial (default: CPUs / workers, or 1)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: one GPU per trial when there are GPUs")
    p.add_argument("--micro-batch", type=int, default=0, metavar="SEQS",
                   help="sequences per forward/backward, gradients accumulated (for batches that do "
                        "not fit in memory; default: the whole batch)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer blocks and the loss head")
    p.add_argument("--store", default=None, help="results store URL (default: sqlite under results/)")
    p.add_argument("--optuna-storage", default=None,
                   help="Optuna storage: a Journal file path or an RDB URL (default: results/optuna.journal)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan and its cost, train nothing (with no rate cached for this scale "
                        "and thread count, a throughput burst of a few steps is measured first)")
    p.add_argument("--yes", "-y", action="store_true", help="start without asking")
    add_reuse_flags(p)
    add_track_flag(p)
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from bench.store.database import ResultStore
    from bench.track import require
    from sweeps.grid import use_spaces
    from sweeps.plan import Cell

    for name in ("max_trials", "seeds", "workers", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.micro_batch < 0:
        raise UserError(f"--micro-batch must be 0 or more, got {args.micro_batch}")
    require(args.track)  # a missing tracker package fails before the plan, not after the sweep
    context = sweep_context(args)
    scale = context_cell(context).shape
    ratios = parse_ratios(args.ratios)
    use_spaces(args.spaces, [n.strip() for n in args.optimizers.split(",") if n.strip() not in ("", "all")])
    optimizers = parse_optimizers(args.optimizers, context_cell(context).grid_ladder)
    store = ResultStore(args.store)  # opened first: a bad store fails before anything starts
    address = os.environ.get("RAY_ADDRESS") or None
    resources = resolve_resources(args, _cluster(address))
    cells = [Cell(o, scale.name, r, args.protocol, context[1]) for r in ratios for o in optimizers]
    if args.reuse_stale and not store.count_stale(optimizer=optimizers, scale=scale.name):
        raise UserError(f"--reuse-stale: the store holds no stale result of {', '.join(optimizers)} "
                        f"at {scale.name}")
    # read once: the protocols and the plan's cost (runs of this sweep's context only)
    stored = [r for r in store.runs(scale=_ladder_up_to(scale), reuse_stale=args.reuse_stale)
              if same_context(r, cells[0])]
    tunings = _tunings(cells, args, resources.device, stored)
    cost = _plan(tunings, args, resources, store, stored)
    if cost is None:
        return 1
    if args.dry_run:
        return 0
    return _run(tunings, args, resources, store, address, cost)


def sweep_context(args: argparse.Namespace):
    """(scale name, SweepContext) from the model and data flags; the model checked now."""
    import json

    from bench.run.spec import resolve_shape
    from sweeps.plan import SweepContext

    name, model, tokenizer = model_choice(args.scale, args.arch, args.model, args.tokenizer)
    shape, canonical = resolve_shape(name, model)
    return shape.name, SweepContext(args.data, args.eval_data, tokenizer, json.dumps(canonical, sort_keys=True))


def context_cell(context):
    """A cell of the sweep's scale and context: what its shape and grid are read from."""
    from sweeps.plan import Cell

    return Cell("adamw", context[0], 1.0, "coordinate", context[1])


def same_context(run, cell) -> bool:
    """Whether a stored run shares the sweep's data, tokenizer and model."""
    from bench.store.record import spec_context

    mine = spec_context(cell.spec({}).to_dict())
    return all(getattr(run, name) == mine[name] for name in ("data", "eval_data", "tokenizer", "arch"))


def parse_optimizers(text: str, ladder: str) -> list[str]:
    """'adamw,muon' or 'all' (every optimizer with a search grid for the ladder)."""
    from bench.optimizers.registry import all_optimizers, get
    from sweeps.grid import load_grid

    if text.strip().lower() == "all":
        names = [o.name for o in all_optimizers() if _has_grid(o, ladder)]
    else:
        names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise UserError("--optimizers is empty")
    for name in names:
        load_grid(get(name).name, ladder)  # unknown name or missing grid: a UserError now
    return names


def parse_ratios(text: str) -> list[float]:
    """'1,2,4,8' -> [1.0, 2.0, 4.0, 8.0]; every ratio positive."""
    try:
        ratios = list(dict.fromkeys(float(t) for t in text.replace(" ", "").split(",") if t))
    except ValueError:
        raise UserError(f"--ratios wants positive numbers separated by commas, got {text!r}") from None
    if not ratios or any(not r > 0 or r == float("inf") for r in ratios):
        raise UserError(f"--ratios wants positive numbers separated by commas, got {text!r}")
    return ratios


def resolve_resources(args: argparse.Namespace, cluster: dict | None) -> Resources:
    """Workers, threads and device from the flags and what this machine (or cluster) has."""
    import torch

    from bench.run.estimate import usable_cpus
    from sweeps.driver import Resources

    cpus = int(cluster.get("CPU", 1)) if cluster else usable_cpus()
    gpus = int(cluster.get("GPU", 0)) if cluster else torch.cuda.device_count()
    device = args.device if args.device != "auto" else ("cuda" if gpus else "cpu")
    if device == "cuda" and not gpus:
        raise UserError("--device cuda, but no GPU is visible" + (" in the cluster" if cluster else ""))
    if device == "cuda":
        workers = args.workers or gpus
        threads = args.threads or max(1, cpus // workers)
    else:
        threads = args.threads or (max(1, cpus // args.workers) if args.workers else 1)
        workers = args.workers or max(1, cpus // threads)
    return Resources(workers, threads, device, cluster.get("address") if cluster else None,
                     args.micro_batch, args.compile)


def _has_grid(opt, ladder: str) -> bool:
    try:
        opt.space(ladder)
    except UserError:
        return False
    return True


def _ladder_up_to(scale) -> list[str]:
    """The scales of `scale`'s ladder up to it: what the plan reads (smaller tuned scales, and
    stored runs at this one); a shape of the user's own has only itself."""
    from bench.model.scales import SCALES

    return [s.name for s in SCALES.values()
            if s.ladder == scale.ladder and s.non_embedding_params <= scale.non_embedding_params] or [scale.name]


def _cluster(address: str | None) -> dict | None:
    """The resources of the cluster at RAY_ADDRESS (connecting to it), or None for a local run."""
    if not address:
        return None
    from sweeps.driver import connect

    return connect(address)


def _tunings(cells, args, device: str, stored):
    from sweeps.cell import CellTuning
    from sweeps.protocols.phases import make_protocol

    tunings = []
    for cell in cells:
        protocol, grid = make_protocol(cell, args.max_trials, stored)
        tunings.append(CellTuning(cell, protocol, grid, args.seeds, device))
    return tunings


def _plan(tunings, args, resources, store, stored):
    """Print the plan and its cost (sweeps.plan.Cost); ask unless --yes. None if the user said no."""
    from sweeps.plan import CellCost, estimate_cost, format_plan, stored_runs
    from sweeps.record import default_target

    costs = [CellCost(t.cell, t.protocol.label, t.protocol.max_runs + args.seeds - 1,
                      stored_runs(stored, t.cell)) for t in tunings]
    cost = estimate_cost(costs, resources.workers, resources.threads, resources.device, stored)
    print(format_plan(costs, cost, {"workers": resources.workers, "threads": resources.threads,
                                    "device": resources.device, "store": store.url,
                                    "optuna": args.optuna_storage or default_target()}), flush=True)
    if args.dry_run or args.yes:
        return cost
    if not sys.stdin.isatty():
        raise UserError("a sweep starts only when confirmed; pass --yes to start it without asking "
                        "(stdin is not a terminal, so it cannot ask)")
    answer = input("Start the sweep? [y/N] ")
    if answer.strip().lower() in ("y", "yes"):
        return cost
    print("not started")
    return None


def _run(tunings, args, resources, store, address, cost) -> int:
    import ray

    from bench.track import where
    from bench.urls import shown_url
    from sweeps.driver import Driver, start_local
    from sweeps.progress import Progress
    from sweeps.record import StudyRecorder, default_target, open_storage
    from sweeps.report import summary

    recorder = StudyRecorder(open_storage(args.optuna_storage))
    start = (lambda: None) if address else (lambda: start_local(resources))
    try:
        progress = Progress(cost.runs, cost.seconds * resources.workers, resources.workers)
        Driver(tunings, store, recorder, resources, progress, start, args.reuse_stale,
               args.retry_failed, tuple(args.track)).run()
    finally:
        if ray.is_initialized():
            ray.shutdown()
    for t in tunings:
        recorder.finish(t)
    # read the store again: the runs this sweep trained are in it now
    print(summary(tunings, store.frame(optimizer={t.cell.optimizer for t in tunings},
                                       scale=tunings[0].cell.scale, reuse_stale=args.reuse_stale)))
    target = args.optuna_storage or default_target()
    stale = sum(t.stale for t in tunings)
    print(f"\n{sum(t.trained for t in tunings)} runs trained"
          + (f" ({stale} of them had a stale result from other code)" if stale else "")
          + f", {sum(t.reused for t in tunings)} read "
          f"back from the store ({shown_url(store.url)}); Optuna studies in {shown_url(target)}"
          + ("" if "://" in target else f" (view: optuna-dashboard {target})"))
    for name in dict.fromkeys(args.track):
        print(f"Results sent to {name}: {where(name)}")
    return 1 if any(t.error for t in tunings) else 0
