"""Adam-mini with some roles given one second moment per entry (plain Adam there): where its blocks cost.

Adam-mini (bench/optimizers/adam_mini.py) keeps one v per block: per token row for the embedding
and the head, per head for wq and wk, per output neuron for the other matrices. Giving a role one
block per entry turns Adam-mini into Adam for that role and leaves the rest as it is, so a run
with `--per-entry hidden` against one without says what the hidden matrices' blocks cost or gain.
The run goes through `optbench run --optimizer adam_mini` into a throwaway store
(examples/unstored.py); with no --per-entry it is the stored run, bit for bit.

    python -m examples.adam_mini_blocks --per-entry embedding,head -- --scale cpu-xs --ratio 2 \
        --seed 0 --set learning_rate=0.016 ...
"""
from __future__ import annotations

import argparse
import sys

from bench.optimizers import adam_mini
from bench.roles import Role
from examples.unstored import run_unstored, split_args


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-entry", default="", help="comma-separated roles (embedding, head, "
                        "hidden, norm) whose parameters get one v per entry")
    args, run_args = split_args(parser, argv)
    try:
        roles = {Role(name) for name in args.per_entry.split(",") if name}
    except ValueError as e:
        parser.error(f"--per-entry: {e}")
    block_count = adam_mini.block_count

    def per_entry(tp, model, variant="study"):
        return tp.param.numel() if tp.role in roles else block_count(tp, model, variant)

    adam_mini.block_count = per_entry
    try:
        return run_unstored("adam_mini", run_args)
    finally:
        adam_mini.block_count = block_count


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
