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

from bench.cli.args import add_execution_flags, add_model_and_data_flags, model_choice
from bench.cli.run import add_reuse_flags, add_track_flag
from bench.errors import UserError
from bench.run.gpus import DEFAULT_GPU, KNOWN  # a table only: no torch at import

if TYPE_CHECKING:  # imported lazily below: every optbench command loads this module
    from sweeps.driver import Resources

DEFAULT_MAX_TRIALS = 8  # per optimizer and ratio: the whole learning-rate grid and a step beyond
DEFAULT_MAX_HOURS = 168.0  # 7 days: longer than that, a sweep here is a mistake, not a plan


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
                        "there are several), or NAME=FILE amending a shipped optimizer's grid: the "
                        "keys FILE lists replace its values, 'start' where the search begins "
                        "(README: Benchmark your optimizer)")
    p.add_argument("--protocol", default="coordinate",
                   choices=("coordinate", "tpe", "gp", "transfer", "predict"),
                   help="coordinate: the study's Phase I (Phase II where a smaller scale is tuned); "
                        "tpe, gp: Optuna samplers with the same budget; transfer: Phase II from "
                        "this scale's best at its smallest tuned ratio (docs/TUNING.md); predict: "
                        "Phase III, hyperparameters fitted over tuned smaller scales, run once")
    p.add_argument("--search-seed", type=int, default=0,
                   help="TPE/GP's sampler seed; coordinate descent's key order (0, the default: "
                        "the study's). Not part of any run: runs are shared across seeds and "
                        "protocols, each seed gets its own Optuna study (docs/TUNING.md)")
    p.add_argument("--max-trials", type=int, default=DEFAULT_MAX_TRIALS,
                   help=f"most configs per optimizer and ratio (default: {DEFAULT_MAX_TRIALS})")
    p.add_argument("--seeds", type=int, default=1,
                   help="run each cell's best config with this many seeds (seed 0 tunes; default: 1)")
    p.add_argument("--finalists", type=int, default=1, metavar="K",
                   help="run the K best configs at seed 0 with every --seeds and choose the winner "
                        "on their means, not on seed 0's luck (default: 1, the study's way)")
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
    add_execution_flags(p, "results/checkpoints")
    p.add_argument("--trial-timeout", type=float, default=None, metavar="SECONDS",
                   help="kill a trial with no result this long after its start (a hung device, "
                        "collective or worker) and store it as an attempt a rerun retries (default: a "
                        "multiple of the plan's estimate of the longest run, printed at the start; "
                        "0: never)")
    p.add_argument("--store", default=None, help="results store URL (default: sqlite under results/)")
    p.add_argument("--optuna-storage", default=None,
                   help="Optuna storage: a Journal file path or an RDB URL (default: results/optuna.journal)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan and its cost, train nothing (with no rate cached for this scale "
                        "and thread count, a throughput burst of a few steps is measured first)")
    p.add_argument("--yes", "-y", action="store_true",
                   help="start without asking (a sweep that cannot finish here still refuses)")
    p.add_argument("--force", action="store_true",
                   help="start even a sweep that cannot finish on the resources it sees (memory or "
                        "--max-hours; docs/DESIGN.md, 'The plan at scale')")
    p.add_argument("--max-hours", type=_positive_hours, default=DEFAULT_MAX_HOURS, metavar="H",
                   help=f"refuse a sweep whose estimated wall time is longer (default: {DEFAULT_MAX_HOURS:g}, "
                        "7 days)")
    p.add_argument("--gpu", type=_gpu_name, default=None, metavar="NAME",
                   help="the GPU a CUDA plan is for (memory, peak FLOP/s): one of "
                        f"{', '.join(KNOWN)} (default: the visible GPU, else {DEFAULT_GPU}); "
                        "--device cuda --dry-run plans on a machine without one")
    add_reuse_flags(p)
    add_track_flag(p)
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from bench.store.database import ResultStore
    from bench.track import require
    from sweeps import gang
    from sweeps.grid import space_label, use_spaces
    from sweeps.plan import Cell

    for name in ("max_trials", "seeds", "finalists", "workers", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.finalists > 1 and args.seeds < 2:
        raise UserError(f"--finalists {args.finalists} compares finalists over seeds: give --seeds 2 or more")
    if args.search_seed < 0:
        raise UserError(f"--search-seed must be 0 or more, got {args.search_seed}")
    if args.search_seed and args.protocol == "predict":
        raise UserError("--search-seed: --protocol predict runs one fitted config and has no search to seed")
    if args.micro_batch < 0:
        raise UserError(f"--micro-batch must be 0 or more, got {args.micro_batch}")
    if args.trial_timeout is not None and not args.trial_timeout >= 0:  # NaN too
        raise UserError(f"--trial-timeout must be 0 (never) or more seconds, got {args.trial_timeout:g}")
    require(args.track)  # a missing tracker package fails before the plan, not after the sweep
    context = sweep_context(args)
    scale = context_cell(context).shape
    ratios = parse_ratios(args.ratios)
    use_spaces(args.spaces, [n.strip() for n in args.optimizers.split(",") if n.strip() not in ("", "all")])
    optimizers = parse_optimizers(args.optimizers, context_cell(context).grid_ladder)
    store = ResultStore(args.store)  # opened first: a bad store fails before anything starts
    address = os.environ.get("RAY_ADDRESS") or None
    cluster = _cluster(address)
    resources = resolve_resources(args, cluster)
    cells = [Cell(o, scale.name, r, args.protocol, context[1], args.search_seed, space_label(o))
             for r in ratios for o in optimizers]
    gang.check(cells, resources, _planned_cluster(cluster, resources))  # --procs-per-trial: batches split, a gang fits
    if args.reuse_stale and not store.count_stale(optimizer=optimizers, scale=scale.name):
        raise UserError(f"--reuse-stale: the store holds no stale result of {', '.join(optimizers)} "
                        f"at {scale.name}")
    # read once: the protocols and the plan's cost (runs of this sweep's context only)
    stored = [r for r in store.runs(scale=ladder_up_to(scale), reuse_stale=args.reuse_stale)
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

    from bench.paths import results_dir
    from bench.run.estimate import usable_cpus
    from sweeps.driver import Resources

    cpus = int(cluster.get("CPU", 1)) if cluster else usable_cpus()
    gpus = int(cluster.get("GPU", 0)) if cluster else torch.cuda.device_count()
    device = args.device if args.device != "auto" else ("cuda" if gpus else "cpu")
    if device == "cuda" and not gpus and not args.dry_run:  # a dry run plans for --gpu's GPUs
        raise UserError("--device cuda, but no GPU is visible" + (" in the cluster" if cluster else "")
                        + " (--dry-run plans for GPUs without one: --gpu NAME)")
    if device == "cuda":
        workers = args.workers or max(1, gpus // args.procs_per_trial)
        threads = args.threads or max(1, cpus // workers)
    else:
        threads = args.threads or (max(1, cpus // args.workers) if args.workers else 1)
        workers = args.workers or max(1, cpus // (threads * args.procs_per_trial))
    return Resources(workers, threads, device, cluster.get("address") if cluster else None,
                     args.micro_batch, args.compile, args.procs_per_trial, args.parallel,
                     args.checkpoint_every, _absolute(args.checkpoint_dir or results_dir() / "checkpoints"))


def _absolute(path) -> str:
    """A path as the driver sees it: a worker's working directory is its node's, not the driver's."""
    from pathlib import Path

    return str(Path(path).resolve())


def _has_grid(opt, ladder: str) -> bool:
    try:
        opt.space(ladder)
    except UserError:
        return False
    return True


def ladder_up_to(scale) -> list[str]:
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
        tunings.append(CellTuning(cell, protocol, grid, args.seeds, device, args.finalists))
    return tunings


def _plan(tunings, args, resources, store, stored):
    """Print the plan and its cost (sweeps.plan.Cost); ask unless --yes. None if the user said no."""
    from sweeps.grid import amendments
    from sweeps.plan import CellCost, estimate_cost, format_plan, stored_runs
    from sweeps.record import default_target

    costs = [CellCost(t.cell, t.protocol.label, t.protocol.max_runs + args.finalists * (args.seeds - 1),
                      stored_runs(stored, t.cell)) for t in tunings]
    cost = estimate_cost(costs, resources.workers, resources.threads, resources.device, stored)
    for line in amendments():
        print(line)
    print(format_plan(costs, cost, {"workers": resources.workers, "threads": resources.threads,
                                    "device": resources.device, "store": store.url,
                                    "optuna": args.optuna_storage or default_target()}), flush=True)
    _check_capacity(tunings, costs, cost, args, resources)
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


def _check_capacity(tunings, costs, cost, args, resources) -> None:
    """The plan at scale (sweeps.capacity): on CUDA its GPU block; a sweep that cannot finish here
    refuses with one line unless --force, and a dry run prints that verdict instead."""
    from bench.run.gpus import planned_gpu
    from sweeps.capacity import (
        cpu_fit,
        format_gpu_block,
        gpu_plan,
        gpus_that_fit,
        measure,
        needs,
        reasons,
        refusal,
        vocab_size,
        wall_hours,
    )

    cell = tunings[0].cell
    shape, vocab = cell.shape, vocab_size(cell.context.tokenizer)
    optimizers = list(dict.fromkeys(t.cell.optimizer for t in tunings))
    gpu = planned_gpu(args.gpu)
    plan_for = lambda procs, parallel, micro_batch: gpu_plan(  # noqa: E731  (micro-batch 0: the chosen one)
        costs, optimizers, shape, vocab, gpu, micro_batch or resources.micro_batch, procs, parallel)
    if resources.device == "cuda":
        plan = plan_for(resources.procs, resources.parallel, resources.micro_batch)
        if args.dry_run:  # a real step on the visible GPU: only when asked for the plan alone
            plan = measure(plan, optimizers, shape, vocab)
        print(format_gpu_block(plan, resources.workers), flush=True)
        memory, hours = plan.fit, wall_hours(plan, resources.workers * resources.procs)
    else:
        memory, hours = cpu_fit(optimizers, shape, vocab, resources), cost.seconds / 3600
        if memory is not None and not memory.fits:
            print(f"Memory per process on CPU at micro-batch {memory.micro_batch}: {memory.most / 2**30:,.1f} "
                  f"GiB of {memory.usable / 2**30:,.1f} GiB usable: does not fit", flush=True)
    why = reasons(resources, memory, hours, args.max_hours, gpu.name)
    if not why:
        return
    needed = gpus_that_fit(optimizers, shape, vocab, gpu, resources.procs, resources.parallel,
                           resources.micro_batch)
    line = refusal(why, needs(cost.runs, memory, plan_for, needed, args.max_hours, why))
    if args.force:
        print(f"Forced (--force): {line}", flush=True)
    elif args.dry_run:
        print(f"Would refuse without --force: {line}", flush=True)
    else:
        raise UserError(line)


def _planned_cluster(cluster: dict | None, resources) -> dict | None:
    """What a gang is checked against: the machine or cluster, except in a CUDA dry run without a
    GPU (resolve_resources allows no other), which plans for one gang per worker on --gpu's GPUs."""
    import torch

    if resources.device != "cuda" or (cluster or {}).get("GPU") or (not cluster and torch.cuda.device_count()):
        return cluster
    from bench.run.estimate import usable_cpus

    planned = dict(cluster) if cluster else {"CPU": usable_cpus()}
    return {**planned, "GPU": resources.workers * resources.procs}


def _positive_hours(text: str) -> float:
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of hours: {text!r}")
    return value


def _gpu_name(text: str) -> str:
    import argparse

    known = {k.lower(): k for k in KNOWN}
    if text.strip().lower() not in known:
        raise argparse.ArgumentTypeError(f"unknown GPU {text!r}; known: {', '.join(KNOWN)}")
    return known[text.strip().lower()]


def _run(tunings, args, resources, store, address, cost) -> int:
    import ray

    from bench.track import where
    from bench.urls import shown_url
    from sweeps.driver import TIMEOUT_RULE, Driver, start_local, trial_timeout
    from sweeps.progress import Progress
    from sweeps.record import StudyRecorder, default_target, open_storage
    from sweeps.report import summary

    recorder = StudyRecorder(open_storage(args.optuna_storage))
    start = (lambda: None) if address else (lambda: start_local(resources))
    timeout = trial_timeout(cost.longest_run_s) if args.trial_timeout is None else args.trial_timeout
    print(f"Trial timeout: {f'{timeout:.0f} s' if timeout else 'none'} "
          f"({TIMEOUT_RULE if args.trial_timeout is None else '--trial-timeout'})", flush=True)
    try:
        progress = Progress(cost.runs, cost.seconds * resources.workers, resources.workers,
                            total_tokens=cost.tokens)
        Driver(tunings, store, recorder, resources, progress, start, args.reuse_stale,
               args.retry_failed, tuple(args.track), timeout).run()
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
