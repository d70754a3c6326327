"""The seed-0 search behind docs/LADDER.md's batch-4 cells, where a sweep cannot go (its batch
grid is 16, 32, 64): the learning rate in steps of 2 from a start until both neighbours are worse,
then the warmup grid at that learning rate, the learning rate again if the warmup moved, then steps
to a better neighbour on the warmup grid (the learning rate walked again after each) until neither
key has one, then the winner at more seeds. Every run is an `optbench run` into one store, so each
row carries the same identity as a sweep's and a repeated config is read back rather than re-run.

    python examples/ladder_probe_search.py --optimizer lion --ratio 1 \
      --start docs/data/ladder-cpu-s-b16-short-lion.json --set train_batch_size=4 \
      --learning-rate 0.001 --warmup 0.2 --model STORE/model.toml --store sqlite:///STORE/optbench.db

--start is a grid amendment whose "start" gives every key; --set overrides one of them. Without
--warmup the optimizer's warmup is not searched (Muon and Scion have no warmup key).
"""
import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.cli.run import parse_sets
from bench.errors import UserError

Loss = Callable[[float, float | None, int], float]


def best_lr(loss: Loss, lr: float, warmup: float | None) -> float:
    """Walk down, then up, in factors of 2 while the loss improves at seed 0."""
    for factor in (0.5, 2.0):
        while loss(lr * factor, warmup, 0) < loss(lr, warmup, 0):
            lr *= factor
    return lr


def search(loss: Loss, lr: float, warmup: float | None, warmups: list[float]) -> tuple[float, float | None]:
    lr = best_lr(loss, lr, warmup)
    if warmup is None:
        return lr, None
    return polish(loss, lr, min(warmups, key=lambda w: loss(lr, w, 0)), warmups)


def polish(loss: Loss, lr: float, warmup: float, warmups: list[float]) -> tuple[float, float]:
    """Walk the learning rate, then step to a better neighbour of the warmup on its grid, until
    neither key has a better neighbour at seed 0. The warmup scan runs at the learning rate before
    the walk, where a warmup can lose that wins at the walk's end."""
    while True:
        lr = best_lr(loss, lr, warmup)
        i = warmups.index(warmup)
        best = min(warmups[max(i - 1, 0):i + 2], key=lambda w: (loss(lr, w, 0), w != warmup))
        if best == warmup:
            return lr, warmup
        warmup = best


def command(args: argparse.Namespace, optimizer: str, config: dict, seed: int) -> list[str]:
    """`optbench run` of one config at one seed into args.store (also examples/ladder_rerun.py's)."""
    cmd = [sys.executable, "-m", "bench.cli", "run", "--optimizer", optimizer, "--scale", args.scale,
           "--model", args.model, "--ratio", str(args.ratio), "--seed", str(seed), "--threads", "1",
           "--store", args.store, "--json"]
    return cmd + [a for k, v in config.items() for a in ("--set", f"{k}={v}")]


def optbench_run(cmd: list[str]) -> dict:
    """The stored result of one `optbench run ... --json` (trained now, or read back)."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:  # optbench's own one-line error, and its exit code
        print((done.stderr.strip().splitlines() or ["optbench run failed"])[-1], file=sys.stderr)
        sys.exit(done.returncode)
    return json.loads(done.stdout)


def optbench_loss(args: argparse.Namespace, start: dict) -> Loss:
    seen: dict[tuple, float] = {}
    began = time.monotonic()

    def loss(lr: float, warmup: float | None, seed: int) -> float:
        if (lr, warmup, seed) not in seen:
            keys = dict(start, learning_rate=lr, **({} if warmup is None else {"warmup": warmup}))
            seen[lr, warmup, seed] = optbench_run(command(args, args.optimizer, keys, seed))["final_loss"]
            # a walk's length is not known ahead, so no ETA: the count and the time so far
            print(f"{args.optimizer} seed {seed} lr {lr:g} warmup {warmup}: {seen[lr, warmup, seed]:.4f}"
                  f"  (config {len(seen)}, {time.monotonic() - began:.0f} s)", flush=True)
        return seen[lr, warmup, seed]
    return loss


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--optimizer", required=True)
    p.add_argument("--start", required=True, help="grid amendment (JSON) whose 'start' gives every key")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--learning-rate", type=float, required=True)
    p.add_argument("--warmup", type=float)
    p.add_argument("--warmups", default="0.05,0.2,0.4")
    p.add_argument("--seeds", default="1,2", help="seeds the winner runs at after seed 0")
    p.add_argument("--scale", default="cpu-s")
    p.add_argument("--ratio", type=float, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--store", required=True)
    args = p.parse_args(argv)
    try:
        start = json.loads(Path(args.start).read_text())["start"]
        start.update(parse_sets(args.set))  # `optbench run`'s reading: lr and wd name their keys
        args.warmups = [float(w) for w in args.warmups.split(",")]
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except (OSError, ValueError, KeyError, TypeError, UserError) as e:
        p.exit(2, f"ladder_probe_search: error: bad --start, --set, --warmups or --seeds: {e}\n")
    return args, start


def main(argv: list[str] | None = None) -> None:
    args, start = parse(argv)
    loss = optbench_loss(args, start)
    lr, warmup = search(loss, args.learning_rate, args.warmup, args.warmups)
    print(f"{args.optimizer} winner: lr {lr:g} warmup {warmup}", flush=True)
    for seed in args.seeds:
        loss(lr, warmup, seed)


if __name__ == "__main__":
    main()
