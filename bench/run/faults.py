"""Fault injection for reliability tests: make chosen runs fail the way real runs fail.

OPTBENCH_FAULT holds rules separated by ";", each KIND@STEP followed by optional :KEY=VALUE filters:

    OPTBENCH_FAULT="raise@3:learning_rate=0.004;nan@5:optimizer=muon:seed=1"

- raise@S: the training step S raises RuntimeError (a crashing kernel or optimizer);
- nan@S:   the training loss is NaN from step S on (a run that blows up);
- oom@S:   the training step S runs out of memory (an environment failure: bench/run/failures.py);
- exit@S:  the process dies at step S without unwinding (os._exit: a segfault, the kernel's OOM
           killer, a lost node), so whoever waits on it sees a dead worker, not an exception;
- hang@S:  step S never returns (a wedged device or collective): only a kill ends the run.

A rule applies to the runs whose spec matches every filter: a RunSpec field (optimizer, scale,
ratio, seed, ...), a hyperparameter (learning_rate, ...), or `rank`, one process of a sweep's
trial spread over several (sweeps/gang.py: rank=1 fails that rank of the gang alone); numbers
compare as numbers. The rest of the run is untouched, so the real failure handling (train.run's
status, the divergence check, the sweep's worst-loss rule) is what a test exercises. Being an
OPTBENCH_ variable, it reaches Ray workers on a cluster too. The train loop never reads it: the
entry points that start runs (`optbench run`, the sweep's task and gang, the regression check) pass
`planned(...)` as RunOptions.fault. Unset, it costs one environment lookup per run.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import torch

from bench.errors import UserError

VARIABLE = "OPTBENCH_FAULT"
KINDS = ("raise", "nan", "oom", "exit", "hang")
EXIT_CODE = 70  # what an exit fault dies with (EX_SOFTWARE), told apart from a signal


@dataclass(frozen=True)
class Fault:
    kind: str
    step: int

    def apply(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        """The loss of training step `step`, with the fault applied once its step is reached."""
        if step < self.step:
            return loss
        if self.kind == "raise":
            raise RuntimeError(f"injected fault ({VARIABLE}): raise at step {self.step}")
        if self.kind == "exit":
            os._exit(EXIT_CODE)
        if self.kind == "hang":
            threading.Event().wait()  # never set
        if self.kind == "oom":
            raise torch.OutOfMemoryError(f"injected fault ({VARIABLE}): out of memory at step {self.step}")
        return loss * float("nan")


def planned(spec_fields: dict[str, Any]) -> Fault | None:
    """The first rule of OPTBENCH_FAULT that matches this run (RunSpec.to_dict()), if any."""
    text = os.environ.get(VARIABLE, "").strip()
    if not text:
        return None
    for rule in filter(None, (r.strip() for r in text.split(";"))):
        fault, filters = _parse(rule)
        if all(_matches(spec_fields, key, value) for key, value in filters):
            return fault
    return None


def _parse(rule: str) -> tuple[Fault, list[tuple[str, str]]]:
    head, *filters = rule.split(":")
    kind, _, step = head.partition("@")
    if kind not in KINDS or not step.isdigit():
        raise UserError(f"{VARIABLE}: bad rule {rule!r}; expected KIND@STEP[:KEY=VALUE...], "
                        f"KIND one of {', '.join(KINDS)}")
    pairs = [tuple(f.split("=", 1)) for f in filters]
    if any(len(p) != 2 for p in pairs):
        raise UserError(f"{VARIABLE}: bad filter in {rule!r}; expected KEY=VALUE")
    return Fault(kind, int(step)), pairs


def _matches(fields: dict[str, Any], key: str, wanted: str) -> bool:
    value = fields.get(key, fields.get("hparams", {}).get(key))
    if value is None:
        return False
    try:
        return float(value) == float(wanted)
    except (TypeError, ValueError):
        return str(value) == wanted
