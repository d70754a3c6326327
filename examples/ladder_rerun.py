"""Re-run each optimizer's cpu-s winner from committed runs files at more seeds, or on another
machine, into one store: the winner as examples/ladder_cell_table.py chooses it (the best config at
seed 0), each run an `optbench run`, so a config already in the store is read back, not re-run.

    python -m examples.ladder_rerun --seeds 0,1,2 --batch 4 --jobs 2 [--finalists K] \
      --model STORE/model.toml --store sqlite:///STORE/optbench.db docs/data/ladder-cpu-s-b4-1x-runs.csv ...

--finalists K re-runs each optimizer's K best configs at seed 0 instead (a sweep's finalists), for
`ladder_cell_table.py --by-mean` to choose among; --by-mean re-runs the config that table chooses
(the best mean over the seeds its finalists ran); --at-ratio R runs the winners at ratio R, not at
the --ratio they were chosen at (a transfer, as a sweep's `--protocol transfer` starts from);
--set KEY=VALUE changes a key in the configs of the optimizers --optimizers names (AdamW's only if
named), to try a step past the end of what was searched; --lr-factor F multiplies every chosen
config's learning rate by F, AdamW's included (a step of the study's factor-of-2 grid from each
optimizer's own winner: re-tuning the learning rate at a new ratio by one rule for all); --jobs
runs that many at once, one thread each (2 on 2 cores is the fastest per run finished).
"""
import argparse
import copy
import json
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from bench.cli.args import positive_float, positive_int
from bench.cli.run import parse_sets
from bench.errors import UserError
from examples.ladder_cell_table import finalists, read_runs, seed_list, winners
from examples.ladder_probe_search import command, optbench_run


def timed_run(cmd: list[str]) -> tuple[dict, float]:
    began = time.monotonic()
    return optbench_run(cmd), time.monotonic() - began


def eta(trained: list[float], done: int, left: int, jobs: int) -> str:
    """Time left at the pace of the runs trained so far, with as large a share of the runs left
    read back from the store (seconds each) as of the `done` so far: finalists' reruns are half
    read back, and an ETA that trained them all would be twice too long."""
    if left and not trained:
        return "ETA ?"
    return f"ETA {sum(trained) / done * left / jobs if left else 0:5.0f} s"


def changed(top: dict[str, list[str]], names: list[str], keys: dict) -> dict[str, list[str]]:
    """`top` with `keys` (parsed as `optbench run --set` parses them) in the configs of the
    optimizers in `names`; finalists that differed only in a changed key become one config, run once."""
    def change(config: str) -> str:
        return json.dumps(json.loads(config) | keys)

    return {name: list(dict.fromkeys(map(change, configs))) if name in names else configs
            for name, configs in top.items()}


def lr_scaled(top: dict[str, list[str]], factor: float) -> dict[str, list[str]]:
    """`top` with every config's learning rate times `factor`."""
    def scale(config: str) -> str:
        hparams = json.loads(config)
        return json.dumps(hparams | {"learning_rate": hparams["learning_rate"] * factor})

    return {name: [scale(c) for c in configs] for name, configs in top.items()}


def arguments(argv: list[str] | None) -> tuple[argparse.Namespace, dict]:
    """The parsed command line and its --set keys; a bad combination exits 2 with one line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="runs files (the format of examples/export_runs.py)")
    p.add_argument("--seeds", type=seed_list, default=[0], help="comma-separated seeds to run each winner at")
    p.add_argument("--batch", type=int, help="winners among the cpu-s runs at this train batch size")
    p.add_argument("--optimizers", type=lambda v: v.split(","), help="only these (and AdamW)")
    p.add_argument("--finalists", type=positive_int, default=1, help="each optimizer's K best configs at seed 0")
    p.add_argument("--by-mean", action="store_true", help="each optimizer's best config by its mean over seeds")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="with --optimizers: a key changed")
    p.add_argument("--lr-factor", type=positive_float, help="every chosen config's learning rate times this")
    p.add_argument("--ratio", type=float, default=1.0, help="the ratio the winners were chosen at")
    p.add_argument("--at-ratio", type=float, help="run them at this ratio (default: --ratio)")
    p.add_argument("--scale", default="cpu-s")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--model", required=True)
    p.add_argument("--store", required=True)
    args = p.parse_args(argv)
    try:
        keys = parse_sets(args.set)  # `optbench run`'s own reading, aliases (lr, wd) included
    except UserError as e:
        p.error(str(e))
    if keys and not args.optimizers:
        p.error("--set needs --optimizers")
    if args.lr_factor and "learning_rate" in keys:
        p.error("--lr-factor scales the learning rate --set gives: give one of them")
    if args.by_mean and args.finalists > 1:
        p.error("--by-mean re-runs one config per optimizer: drop --finalists")
    return args, keys


def plan(args: argparse.Namespace, keys: dict) -> list[tuple[str, int, int, list[str]]]:
    """(optimizer, its config's rank, seed, the `optbench run` command) for every run asked for: a
    seed for all first (stopped early, whole seeds), within it the optimizers whose runs took
    longest first (the pool's last minutes are then not one long run alone on a core)."""
    runs = read_runs(args.runs, args.batch, args.optimizers, args.ratio)
    top = ({name: [win.name] for name, win in winners(runs, args.scale, by_mean=True).items()} if args.by_mean
           else finalists(runs, args.scale, args.finalists))
    top = changed(top, args.optimizers or [], keys)
    top = lr_scaled(top, args.lr_factor) if args.lr_factor else top
    at = copy.copy(args)
    at.ratio = args.ratio if args.at_ratio is None else args.at_ratio
    pace = runs.groupby("optimizer").wall_time_s.median() if "wall_time_s" in runs else {}
    return [(name, rank, seed, command(at, name, json.loads(config), seed))
            for seed in args.seeds for name in sorted(top, key=lambda n: -pace.get(n, 0))
            for rank, config in enumerate(top[name])]


def main(argv: list[str] | None = None) -> None:
    args, keys = arguments(argv)
    todo = plan(args, keys)
    began, trained = time.monotonic(), []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(timed_run, cmd): (name, rank, seed) for name, rank, seed, cmd in todo}
        for done, future in enumerate(as_completed(futures), 1):
            (name, rank, seed), (result, took) = futures[future], future.result()
            fresh = took > result["wall_time_s"] / 2  # else read back from the store
            trained += [took] if fresh else []
            print(f"[{time.monotonic() - began:6.0f} s] {done}/{len(todo)} {eta(trained, done, len(todo) - done, args.jobs)}"
                  f"  {name} #{rank + 1} seed {seed}: {result['final_loss']:.4f}{'' if fresh else ' (stored)'}", flush=True)


if __name__ == "__main__":
    main()
