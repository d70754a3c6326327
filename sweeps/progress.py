"""Live progress of a sweep on stderr: runs done of the most the plan may need, an ETA, runs
running and failed, and the best loss so far per optimizer; a tqdm bar on a terminal, plain event
lines otherwise (logs, CI, tests).

The total is the plan's upper bound (a protocol may stop early, and then the sweep ends sooner).
The ETA is the planned tokens not yet trained times the seconds per token of the runs trained so
far (before the first one ends: the plan's estimate), over the workers. Counting tokens, not runs,
matters: a sweep trains its small ratios first, and a mean over their runs would put the ETA of its
large ones at a fraction of their time.

Event lines name the run key, so a log shows exactly which runs were trained and which were read
back from the store.
"""
from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from tqdm import tqdm

from bench.run.spec import RunResult
from bench.urls import hide_passwords
from sweeps.cell import CellTuning, Request, loss_of


class Progress:
    def __init__(self, total: int = 0, estimate_s: float = math.nan, workers: int = 1,
                 stream: TextIO | None = None, total_tokens: int = 0):
        """`total`: the most runs the plan may need; `estimate_s`: the plan's seconds for all of
        them on one worker (nan: unknown); `workers`: runs at once; `total_tokens`: the planned
        runs' tokens (0: unknown, then the ETA weighs every run alike)."""
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total, self.workers = total, max(1, workers)
        self.by_tokens = total_tokens > 0
        self.total_tokens = total_tokens if self.by_tokens else total  # else each run counts 1
        self.estimate_s = estimate_s  # until runs tell us
        self.trained = self.reused = self.failed = self.errors = self.running = 0
        self.trained_s = 0.0
        self.done_tokens = self.trained_tokens = 0
        self.best: dict[str, float] = {}
        self.start = time.monotonic()
        self.bar = tqdm(total=total or None, unit="run", file=self.stream, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n}/{total} runs [{elapsed}{postfix}]") if self.tty else None

    @property
    def done(self) -> int:
        return self.trained + self.reused + self.errors

    def started(self, tuning: CellTuning, request: Request) -> None:
        self.running += 1
        if not self.tty:  # on a terminal the status line shows what runs; a log wants each start
            self._event(f"started  {_what(tuning, request)}")
        else:
            self.refresh()

    def finished(self, tuning: CellTuning, request: Request, result: RunResult, reused: bool) -> None:
        tokens = self._tokens(tuning)
        self.done_tokens += tokens
        if reused:
            self.reused += 1
        else:
            self.running -= 1
            self.trained += 1
            self.trained_s += result.wall_time_s
            self.trained_tokens += tokens
        self.failed += result.status != "ok"
        loss = loss_of(result)
        optimizer = tuning.cell.optimizer
        if request.seed == 0 and loss < self.best.get(optimizer, math.inf):
            self.best[optimizer] = loss
        outcome = (f"loss {result.final_loss:.4f}" if math.isfinite(loss)
                   else f"{result.status}: {result.reason}")
        how = "stored  " if reused else "finished"
        self._event(f"{how} {_what(tuning, request)}: {outcome}"
                    + ("" if reused else f" in {result.wall_time_s:.0f} s"))

    def errored(self, tuning: CellTuning, request: Request, message: str) -> None:
        self.running -= 1
        self.errors += 1
        self.done_tokens += self._tokens(tuning)
        self._event(f"error    {_what(tuning, request)}: {hide_passwords(message)}")

    def _tokens(self, tuning: CellTuning) -> int:
        """What one run of this cell counts for in the ETA: its tokens, or 1 without a token total."""
        return tuning.cell.tokens_per_run if self.by_tokens else 1

    def eta_s(self) -> float:
        """Seconds until the most runs the plan may need are done (nan: no total or estimate)."""
        if not self.total:
            return math.nan
        rate = (self.trained_s / self.trained_tokens if self.trained_tokens
                else self.estimate_s / self.total_tokens)
        return max(0, self.total_tokens - self.done_tokens) * rate / self.workers

    def status(self) -> str:
        best = "  ".join(f"{o} {v:.4f}" for o, v in sorted(self.best.items()) if math.isfinite(v))
        eta = self.eta_s()
        return (f"{self.trained} trained, {self.reused} from store, {self.running} running, "
                f"{self.failed + self.errors} diverged/failed"
                + (f", ETA {_duration(eta)} at most" if math.isfinite(eta) and self.done < self.total else "")
                + (f" | best: {best}" if best else ""))

    def refresh(self) -> None:
        """Redraw the bar (terminal only)."""
        if self.bar is not None:
            self.bar.n = self.done
            self.bar.set_postfix_str(self.status(), refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.refresh()
            self.bar.close()
        else:
            self.stream.write(self._line() + "\n")
        self.stream.flush()

    def _line(self) -> str:
        minutes = (time.monotonic() - self.start) / 60
        of = f" of {self.total}" if self.total else ""
        return f"[{minutes:5.1f} min] {self.done}{of} runs: {self.status()}"

    def _event(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
            self.refresh()
        else:
            self.stream.write(f"{self._line()}  {text}\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _what(tuning: CellTuning, request: Request) -> str:
    """The cell, seed, run key, and how the config differs from the cell's baseline."""
    start = tuning.protocol.start
    changed = " ".join(f"{k}={v}" for k, v in request.config.items() if start.get(k) != v)
    return f"{tuning.cell.label} seed {request.seed} run {request.key} ({changed or 'baseline'})"
