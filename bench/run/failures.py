"""Why a run failed: its numerics (a result) or its environment (an attempt, never a result).

A run that diverges, goes non-finite or whose optimizer raises is a result of its code and its
spec: it counts as the worst loss, and a change to the code makes it stale like any result. A run
stopped by where it ran (no such device, out of memory, a missing module, a file or disk error, a
killed worker, a collective whose other rank died or hung) says nothing about the optimizer: it is
recorded as an attempt with its reason and retried when asked again (a smaller --micro-batch after
running out of memory, say).
"""
from __future__ import annotations

import re

import torch

ENVIRONMENT_FAILURE = "error"  # the status of a run its environment stopped
_PREFIX = "environment"
# Messages of device failures that arrive as plain RuntimeError/AssertionError from torch.
_NO_DEVICE = re.compile(r"not compiled with CUDA|no CUDA GPUs|NVIDIA driver|CUDA driver|CUDA error|"
                        r"no kernel image|cudaErrorNoDevice", re.IGNORECASE)
_OUT_OF_MEMORY = re.compile(r"out of memory|can't allocate memory|DefaultCPUAllocator", re.IGNORECASE)
# A collective that timed out or lost its peer (gloo's and NCCL's plain RuntimeErrors): the other
# rank died or hung, which says nothing about this rank's optimizer.
_COLLECTIVE = re.compile(r"Timed out waiting \d+ms for \w+ operation|Connection (closed|reset) by peer|"
                         r"NCCL (error|communicator)", re.IGNORECASE)
_V1_REASONS = re.compile(r"^(OutOfMemoryError|MemoryError|ImportError|ModuleNotFoundError|OSError|"
                         r"FileNotFoundError|PermissionError)\b")


def classify(error: BaseException) -> tuple[str, str]:
    """(status, reason) of a run that raised `error`: ("failed", ...) or ("error", ...)."""
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    cause = environment_cause(error)
    return (ENVIRONMENT_FAILURE, f"{_PREFIX} ({cause}): {text}") if cause else ("failed", text)


def environment_cause(error: BaseException) -> str | None:
    """What in the environment stopped a run, in a few words; None for the run's own failure."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)) or _OUT_OF_MEMORY.search(str(error)):
        return "out of memory"
    if isinstance(error, ImportError):
        return "import error"
    if isinstance(error, OSError):
        return "system error"
    if isinstance(error, (RuntimeError, AssertionError)) and _NO_DEVICE.search(str(error)):
        return "no such device"
    if isinstance(error, torch.distributed.DistError) or (
            isinstance(error, RuntimeError) and _COLLECTIVE.search(str(error))):
        return "collective failed"
    return None


def no_device(device: str) -> str | None:
    """The reason a run on `device` cannot start here; None if it can."""
    if device == "cuda" and not torch.cuda.is_available():
        return f"{_PREFIX} (no such device): no CUDA device on this machine"
    return None


def task_failure(error_type: str, message: str) -> str:
    """The reason of a run whose task never returned a result: its worker died (WorkerCrashedError,
    after Ray's own retries) or the task raised before the run could start (RayTaskError)."""
    cause = "killed worker" if "Crashed" in error_type or "Died" in error_type else "the task raised"
    return f"{_PREFIX} ({cause}): {error_type}: {message}"


def timed_out(seconds: float) -> str:
    """The reason of a trial the sweep killed at its deadline (sweeps.driver, --trial-timeout)."""
    return (f"{_PREFIX} (timed out): no result within --trial-timeout {seconds:.0f} s (a hung device, "
            "collective or worker); killed")


def not_started(seconds: float) -> str:
    """The reason of a trial the sweep killed before it started: no trial was submitted, started
    or ended for a whole --trial-timeout (sweeps/deadlines.py), so the cluster has no room for it."""
    return (f"{_PREFIX} (timed out): not started, and no trial moved, within --trial-timeout "
            f"{seconds:.0f} s (no room on the cluster for it); killed")


def environment_failure(reason: str) -> bool:
    """Whether a stored reason is an environment's (also for stores from before the split, whose
    failures all read "failed": their reason says what raised)."""
    return (reason.startswith(_PREFIX) or bool(_V1_REASONS.match(reason))
            or bool(_NO_DEVICE.search(reason)) or bool(_OUT_OF_MEMORY.search(reason)))
