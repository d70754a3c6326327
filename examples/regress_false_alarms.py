"""How often `optbench regress` alarms on an unchanged tree: the check run on random disjoint
splits of one tuning's runs over many seeds, one split as the baseline and one as the new
measurement (results/baselines/README.md, "How a change is judged").

    python examples/regress_false_alarms.py RUNS.csv [--baseline FILE] [--splits 200] [--seeds-per-side 5]

RUNS.csv: optimizer, ratio, seed, final_loss for one baseline's configs at every seed, its own
seeds included: `optbench regress --seeds 0,1,...,19 --runs-out RUNS.csv` writes them (on the
baseline's CPU its own seeds reproduce it to the last bit). FILE is that baseline (default: the
committed one); an older one comes back with `git show REV:results/baselines/...`.
"""
import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sweeps.regress.baseline import DEFAULT_PATH, load
from sweeps.regress.check import check
from sweeps.regress.stats import REGRESSION


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs")
    p.add_argument("--baseline", default=str(DEFAULT_PATH))
    p.add_argument("--splits", type=int, default=200)
    p.add_argument("--seeds-per-side", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for path in (args.runs, args.baseline):
        if not Path(path).is_file():
            print(f"error: no file {path}", file=sys.stderr)
            return 2
    baseline = load(args.baseline)
    steps = {(r["optimizer"], r["ratio"]): r["steps"] for r in baseline.runs}
    runs = pd.read_csv(args.runs)
    if not _holds(runs, baseline):
        print(f"error: {args.runs} does not hold {args.baseline}'s own runs (pass the baseline it was measured on)",
              file=sys.stderr)
        return 2
    seeds = sorted(set(runs["seed"]))
    if len(seeds) < 2 * args.seeds_per_side:
        print(f"error: {len(seeds)} seeds cannot make two disjoint sides of {args.seeds_per_side}", file=sys.stderr)
        return 2
    records = [dict(optimizer=r.optimizer, ratio=float(r.ratio), seed=int(r.seed), status="ok",
                    final_loss=float(r.final_loss), steps=steps[(r.optimizer, float(r.ratio))],
                    wall_time_s=0.0) for r in runs.itertuples()]
    rng = np.random.default_rng(args.seed)
    alarms = {name: 0 for name in baseline.optimizers}
    any_alarm, start = 0, time.monotonic()
    for i in range(args.splits):
        drawn = rng.permutation(seeds)[: 2 * args.seeds_per_side]
        base_seeds, now_seeds = set(drawn[: args.seeds_per_side]), set(drawn[args.seeds_per_side:])
        base = dataclasses.replace(baseline, seeds=tuple(sorted(base_seeds)),
                                   runs=[r for r in records if r["seed"] in base_seeds])
        outcome = check(base, [r for r in records if r["seed"] in now_seeds])
        flagged = [v.optimizer for v in outcome.verdicts if v.verdict == REGRESSION]
        for name in flagged:
            alarms[name] += 1
        any_alarm += bool(flagged)
        eta = (time.monotonic() - start) / (i + 1) * (args.splits - i - 1)
        print(f"[{i + 1}/{args.splits}] ETA {eta:.0f} s, alarms so far: {any_alarm}", file=sys.stderr, flush=True)
    print(f"{any_alarm} of {args.splits} splits alarmed ({any_alarm / args.splits:.1%}); per optimizer: "
          + ", ".join(f"{n} {k}" for n, k in alarms.items()))
    return 0


def _holds(runs: pd.DataFrame, baseline) -> bool:
    """Whether the runs file has the baseline's own losses at its seeds (losses from progress
    lines carry 4 decimals, hence the tolerance)."""
    loss = {(r.optimizer, float(r.ratio), int(r.seed)): r.final_loss for r in runs.itertuples()}
    return all(abs(loss.get((r["optimizer"], float(r["ratio"]), int(r["seed"])), np.inf) - r["final_loss"]) < 1e-4
               for r in baseline.runs)


if __name__ == "__main__":
    sys.exit(main())
