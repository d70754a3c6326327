"""The regression check's table: per optimizer, baseline [ci], now [ci], change [ci], verdict.

Speedups print as geometric means over the optimizer's ratios ("1.84x") and their change as a
percentage; AdamW prints its mean loss and the change in nats. The change's interval is at the
Bonferroni-corrected level the verdict uses, so a verdict can be read off its own row; baseline
and now show 90% intervals, for reading the numbers themselves.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from sweeps.regress.stats import REGRESSION, SIDE_LEVEL, Verdict


def format_table(verdicts: list[Verdict], level: float, alpha: float) -> str:
    header = ["optimizer", "statistic", "baseline", "now", "change", "verdict"]
    rows = [header] + [_row(v) for v in verdicts]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {v.optimizer}: {v.note}" for v in verdicts if v.note]
    foot = (f"change: {100 * level:.2f}% interval, seed bootstrap, studentized; a verdict needs it to "
            f"exclude 0 (one-sided, family-wise alpha {alpha:g}, Bonferroni over {len(verdicts)} optimizers)"
            f"\nbaseline, now: {100 * SIDE_LEVEL:.0f}% intervals")
    return "\n".join(lines + ([""] + notes if notes else []) + ["", foot])


def summary_line(verdicts: list[Verdict]) -> str:
    bad = [v.optimizer for v in verdicts if v.verdict == REGRESSION]
    if bad:
        return f"regression: {', '.join(bad)}"
    return f"no regression in {len(verdicts)} optimizers"


def reproduction_line(base_runs: list[dict], now_runs: list[dict]) -> str:
    """How many runs gave the baseline's loss to the last bit (runs are bitwise deterministic for a
    spec and thread count, so an unchanged tree on the same kind of machine gives all of them)."""
    def key(r: dict) -> tuple:
        return r["optimizer"], float(r["ratio"]), int(r["seed"])

    base = {key(r): r["final_loss"] for r in base_runs}
    pairs = [(base[key(r)], r["final_loss"]) for r in now_runs if key(r) in base]
    if not pairs:
        return "losses: other seeds than the baseline's, so none to compare to the last bit"
    same = sum(b == n for b, n in pairs)
    moved = [abs(n - b) for b, n in pairs if b is not None and n is not None and b != n]
    line = f"losses: {same} of {len(pairs)} runs equal the baseline's to the last bit"
    if moved:
        line += f"; {len(moved)} moved, by at most {max(moved):.2e} nats"
    if len(pairs) - same - len(moved):
        line += f"; {len(pairs) - same - len(moved)} with no loss on one side"
    return line


def cpu_line(baseline_cpu: str | None, cpu: str) -> str | None:
    """Says so when this CPU is not the baseline's: losses then need not match to the bit (fp32
    kernels differ between CPU families), and only the verdicts' intervals speak to a change."""
    if baseline_cpu == cpu:
        return None
    was = baseline_cpu or "a CPU it does not name"
    return (f"cpu: the baseline was measured on {was}, this check on {cpu}; losses to the last bit "
            "are expected only on the baseline's CPU, the verdicts' intervals allow for the difference")


RUN_COLUMNS = ("optimizer", "ratio", "seed", "status", "final_loss", "steps", "wall_time_s")


def write_runs(runs: list[dict], path: Path) -> None:
    """The check's run records as CSV; a float's text is its repr, so losses read back bit for bit."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, RUN_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(runs)


def _row(v: Verdict) -> list[str]:
    if v.kind == "loss":
        return [v.optimizer, "mean loss", _loss(v.base, v.base_ci), _loss(v.now, v.now_ci),
                _signed(v.diff, v.diff_ci, "{:+.4f}"), v.verdict]
    return [v.optimizer, "speedup", _speedup(v.base, v.base_ci), _speedup(v.now, v.now_ci),
            _percent(v.diff, v.diff_ci), v.verdict]


def _loss(value: float, ci: tuple[float, float]) -> str:
    return f"{_num(value, '{:.4f}')} [{_num(ci[0], '{:.4f}')}, {_num(ci[1], '{:.4f}')}]"


def _speedup(log_value: float, ci: tuple[float, float]) -> str:
    fmt = "{:.2f}"
    return (f"{_num(_exp(log_value), fmt)}x [{_num(_exp(ci[0]), fmt)}, "
            f"{_num(_exp(ci[1]), fmt)}]")


def _percent(log_diff: float, ci: tuple[float, float]) -> str:
    def pct(x):
        return _num(100 * (_exp(x) - 1), "{:+.0f}") + ("%" if math.isfinite(x) else "")

    return f"{pct(log_diff)} [{pct(ci[0])}, {pct(ci[1])}]"


def _signed(value: float, ci: tuple[float, float], fmt: str) -> str:
    return f"{_num(value, fmt)} [{_num(ci[0], fmt)}, {_num(ci[1], fmt)}]"


def _exp(x: float) -> float:
    return math.exp(x) if not math.isnan(x) else math.nan


def _num(x: float, fmt: str) -> str:
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return fmt.format(x)
