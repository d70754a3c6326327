"""Live progress of a sweep on stderr: runs done / running / failed and the best loss so far per
optimizer, redrawn in place on a terminal; as plain event lines otherwise (logs, CI, tests).

Event lines name the run key, so a log shows exactly which runs were trained and which were read
back from the store.
"""
from __future__ import annotations

import math
import shutil
import sys
import time
from typing import TextIO

from bench.run.spec import RunResult
from bench.urls import hide_passwords
from sweeps.cell import CellTuning, Request, loss_of


class Progress:
    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.trained = self.reused = self.failed = self.errors = self.running = 0
        self.best: dict[str, float] = {}
        self.start = time.monotonic()

    def started(self, tuning: CellTuning, request: Request) -> None:
        self.running += 1
        if not self.tty:  # on a terminal the status line shows what runs; a log wants each start
            self._event(f"started  {_what(tuning, request)}")
        else:
            self.refresh()

    def finished(self, tuning: CellTuning, request: Request, result: RunResult, reused: bool) -> None:
        if reused:
            self.reused += 1
        else:
            self.running -= 1
            self.trained += 1
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
        self._event(f"error    {_what(tuning, request)}: {hide_passwords(message)}")

    def status(self) -> str:
        best = "  ".join(f"{o} {v:.4f}" for o, v in sorted(self.best.items()) if math.isfinite(v))
        minutes = (time.monotonic() - self.start) / 60
        return (f"[{minutes:5.1f} min] {self.trained} trained, {self.reused} from store, "
                f"{self.running} running, {self.failed + self.errors} diverged/failed"
                + (f" | best: {best}" if best else ""))

    def refresh(self) -> None:
        """Redraw the status line (terminal only)."""
        if self.tty:
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r" + self.status()[:width].ljust(width))
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
        else:
            self.stream.write(self.status() + "\n")
        self.stream.flush()

    def _event(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text + "\n")
            self.refresh()
        else:
            self.stream.write(f"{self.status()}  {text}\n")
        self.stream.flush()


def _what(tuning: CellTuning, request: Request) -> str:
    """The cell, seed, run key, and how the config differs from the cell's baseline."""
    start = tuning.protocol.start
    changed = " ".join(f"{k}={v}" for k, v in request.config.items() if start.get(k) != v)
    return f"{tuning.cell.label} seed {request.seed} run {request.key} ({changed or 'baseline'})"
