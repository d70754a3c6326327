"""Re-run each optimizer's cpu-s winner from committed runs files at more seeds, or on another
machine, into one store: the winner as examples/ladder_cell_table.py chooses it (the best config at
seed 0), each run an `optbench run`, so a config already in the store is read back, not re-run.

    python -m examples.ladder_rerun --seeds 0,1,2 --batch 4 --jobs 2 [--finalists K] \
      --model STORE/model.toml --store sqlite:///STORE/optbench.db docs/data/ladder-cpu-s-b4-1x-runs.csv ...

--finalists K re-runs each optimizer's K best configs at seed 0 instead (a sweep's finalists), for
`ladder_cell_table.py --by-mean` to choose among; --set KEY=VALUE changes a key in the configs of
the optimizers --optimizers names (AdamW's only if named), to try a step past the end of what was
searched; --jobs runs that many at once, one thread each (2 on 2 cores is the fastest per run
finished).
"""
import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from bench.cli.args import positive_int
from bench.cli.run import parse_sets
from bench.errors import UserError
from examples.ladder_cell_table import finalists, read_runs, seed_list
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="runs files (the format of examples/export_runs.py)")
    p.add_argument("--seeds", type=seed_list, default=[0], help="comma-separated seeds to run each winner at")
    p.add_argument("--batch", type=int, help="winners among the cpu-s runs at this train batch size")
    p.add_argument("--optimizers", type=lambda v: v.split(","), help="only these (and AdamW)")
    p.add_argument("--finalists", type=positive_int, default=1, help="each optimizer's K best configs at seed 0")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="with --optimizers: a key changed")
    p.add_argument("--ratio", type=float, default=1.0)
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
    top = finalists(read_runs(args.runs, args.batch, args.optimizers, args.ratio), args.scale, args.finalists)
    top = changed(top, args.optimizers or [], keys)
    # a seed for all first: stopped early, whole seeds
    todo = [(name, rank, seed) for seed in args.seeds for name in top for rank in range(len(top[name]))]
    began, trained = time.monotonic(), []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(timed_run, command(args, name, json.loads(top[name][rank]), seed)): (name, rank, seed)
                   for name, rank, seed in todo}
        for done, future in enumerate(as_completed(futures), 1):
            (name, rank, seed), (result, took) = futures[future], future.result()
            fresh = took > result["wall_time_s"] / 2  # else read back from the store
            trained += [took] if fresh else []
            print(f"[{time.monotonic() - began:6.0f} s] {done}/{len(todo)} {eta(trained, done, len(todo) - done, args.jobs)}"
                  f"  {name} #{rank + 1} seed {seed}: {result['final_loss']:.4f}{'' if fresh else ' (stored)'}", flush=True)


if __name__ == "__main__":
    main()
