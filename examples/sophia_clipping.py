"""How often Sophia's step is clipped: the share of entries whose |m_hat| / max(gamma h, eps) reaches 1.

Sophia (bench/optimizers/sophia.py) moves an entry by lr * clip(m_hat / max(gamma h, eps), -1, 1).
Where the curvature estimate h is small, negative or not yet warmed up, the ratio saturates and the
entry takes a sign step of size lr, as Lion or signSGD would. This script trains one run through `optbench run` (a throwaway store:
examples/unstored.py) while recording, every `--every` steps, the shares of clipped entries and of
entries with h <= 0, over all parameters and over the decay_roles group (the hidden matrices and
the head by default). The clip is the study variant's (m bias-corrected, as Levanter's).

    python -m examples.sophia_clipping --out clip.csv -- --scale cpu-xs --ratio 2 --seed 0 \
        --set learning_rate=0.002 ...

Everything after `--` goes to `optbench run --optimizer sophia`. The recording only reads the
optimizer's state after each step, so the run's final loss is the one `optbench run` stores for
the same arguments (tests/test_diagnostics.py).
"""
from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

import torch

from bench.optimizers.sophia import SophiaH
from examples.unstored import run_unstored, split_args

FIELDS = ("step", "clipped_all", "clipped_matrices", "h_nonpositive_all", "h_nonpositive_matrices")
LABELS = ("clipped, all entries", "clipped, hidden matrices and head", "h <= 0, all entries",
          "h <= 0, hidden matrices and head")


class Recorder:
    def __init__(self, every: int):
        self.every, self.rows = every, []
        self.hits: Counter[str] = Counter()
        self.sizes: Counter[str] = Counter()  # entries per part: "all", "matrices"

    @torch.no_grad()
    def after_group(self, opt: SophiaH, params: list[torch.Tensor], group: dict) -> None:
        step = opt.state[params[0]]["step"]
        if step % self.every:
            return
        beta1 = group["betas"][0]
        parts = ("all", "matrices") if group is opt.param_groups[0] else ("all",)  # decay_groups' first
        for p in params:
            state = opt.state[p]
            m_hat = state["exp_avg"] / (1.0 - beta1**step)
            denom = (group["gamma"] * state["hessian"]).clamp_min(group["eps"])
            clipped = (m_hat.abs() >= denom).sum().item()
            nonpositive = (state["hessian"] <= 0).sum().item()
            for part in parts:
                self.hits[f"clipped_{part}"] += clipped
                self.hits[f"h_nonpositive_{part}"] += nonpositive
                self.sizes[part] += p.numel()
        if group is opt.param_groups[-1]:
            shares = {k: self.hits[k] / self.sizes[k.rsplit("_", 1)[1]] for k in self.hits}
            self.rows.append({"step": step, **shares})
            self.hits.clear()
            self.sizes.clear()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="CSV of the shares by step")
    parser.add_argument("--every", type=int, default=10, help="record every N steps")
    parser.add_argument("--plot", metavar="STEM", help="also draw the shares by step (STEM.png, STEM.pdf)")
    parser.add_argument("--title", help="the figure's second title line (default: the run's arguments)")
    args, run_args = split_args(parser, argv)
    if args.every < 1:
        parser.error(f"--every: {args.every} is not a positive number of steps")
    recorder = Recorder(args.every)
    update_group = SophiaH.update_group

    def recorded(self: SophiaH, params: list[torch.Tensor], group: dict) -> None:
        update_group(self, params, group)
        recorder.after_group(self, params, group)

    SophiaH.update_group = recorded
    try:
        code = run_unstored("sophia", run_args)
    finally:
        SophiaH.update_group = update_group
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(recorder.rows)
    print(f"{len(recorder.rows)} rows -> {Path(args.out)}", file=sys.stderr)
    if args.plot and recorder.rows:
        plot(recorder.rows, Path(args.plot), args.title or " ".join(run_args))
    return code


def plot(rows: list[dict[str, float]], stem: Path, title: str) -> None:
    from analysis.plots import plt, save

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    for key, label in zip(FIELDS[1:], LABELS):
        style, color = ("--" if key.endswith("matrices") else "-"), ("C0" if key.startswith("clipped") else "C1")
        ax.plot(steps, [r.get(key, float("nan")) for r in rows], style, color=color, label=label)
    ax.set(xlabel="step", ylabel="share of entries", ylim=(0, 1.02))
    ax.set_title(f"Sophia: clipped steps and h <= 0\n{title}", fontsize=8)
    ax.legend(fontsize=8)
    save(fig, stem)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
