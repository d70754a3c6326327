"""Ray runs a sweep's trials as tasks; the driver keeps the store and the Optuna record.

A local Ray instance by default (ray.init(num_cpus=workers x threads), no dashboard), or the
cluster at RAY_ADDRESS. Each task asks for its CPU threads (and one GPU on CUDA); at most
`workers` run at once, taken in turn from every cell so all optimizers progress together.

Resume: before a run is submitted its run key is looked up in the store and a stored result of the
current code is used instead (bench.run.identity; a stale one only with reuse_stale); the driver
writes each result to the store as soon as its task ends. The protocols are deterministic given the
results, so running the same sweep again after Ctrl-C, kill -9 or a crashed worker replays the
finished part from the store and trains only what is missing. A run its environment stopped (out of
memory, no device, a killed worker: bench.run.failures) stops its cell for this invocation and is
stored as an attempt, never as a result, so the next invocation retries it.

Trackers (--track, bench/track.py): every result a cell accepts, trained or read back from the
store, is sent from this process after it is stored; workers never import a tracker.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from itertools import chain, zip_longest
from typing import Callable

from bench.run.failures import ENVIRONMENT_FAILURE, task_failure
from bench.run.identity import current
from bench.run.spec import RunResult
from bench.store.database import ResultStore
from bench.track import send
from sweeps.cell import CellTuning, Request
from sweeps.progress import Progress
from sweeps.record import StudyRecorder
from sweeps.task import train_task

FORWARDED_ENV = ("OPTBENCH_", "HF_")  # settings a worker on another machine needs too
_QUIET = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}


@dataclass(frozen=True)
class Resources:
    workers: int  # trials at once
    threads: int  # torch threads (and Ray CPUs) per trial
    device: str  # cpu | cuda (one GPU per trial)
    address: str | None = None  # an existing cluster (RAY_ADDRESS); None: start a local one
    micro_batch: int = 0  # sequences per forward/backward in each trial (0: the whole batch)
    compile: bool = False  # torch.compile each trial's blocks and loss head


def connect(address: str) -> dict:
    """Join the cluster at `address` (RAY_ADDRESS); its resources, with the address."""
    import ray

    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    ray.init(address=address, runtime_env={"env_vars": env}, **_QUIET)
    return {**ray.cluster_resources(), "address": address}


def start_local(resources: Resources) -> None:
    """A local Ray instance sized for the sweep (stopped again by ray.shutdown())."""
    import ray

    fair_share_workers()
    gpus = resources.workers if resources.device == "cuda" else 0
    # "local": a new instance even when another one runs on this machine (address=None would join it)
    ray.init(address="local", num_cpus=resources.workers * resources.threads, num_gpus=gpus, **_QUIET)


def fair_share_workers() -> None:
    """Run a local instance's workers at normal priority. Ray starts them at niceness 15, so on a
    machine with any other busy process a trial gets a few percent of a core (docs/MEASUREMENTS.md)
    and its wall time, and every throughput figure, means nothing."""
    os.environ.setdefault("RAY_worker_niceness", "0")  # read by the raylet ray.init starts


class Driver:
    def __init__(self, tunings: list[CellTuning], store: ResultStore, recorder: StudyRecorder,
                 resources: Resources, progress: Progress, start: Callable[[], None] = lambda: None,
                 reuse_stale: bool = False, retry_failed: bool = False, trackers: tuple[str, ...] = ()):
        self.tunings, self.store, self.recorder = tunings, store, recorder
        self.resources, self.progress = resources, progress
        self.reuse_stale, self.retry_failed = reuse_stale, retry_failed
        self.trackers = trackers  # bench.track: every result the sweep uses, sent from this process
        self._start = start  # starts Ray; called before the first submission only (a finished
        # sweep run again reads everything back from the store and never starts it)
        self._task = None
        self.pending: dict = {}  # Ray object ref -> (tuning, request)
        self._absent: set[str] = set()  # run keys looked up and not in the store

    def run(self) -> None:
        """Train until every cell is done; results go to the store as each task ends."""
        import ray

        try:
            while True:
                self._reuse_stored()
                self._submit()
                if not self.pending:
                    return
                ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    self._collect(ref)
                self.progress.refresh()
        finally:
            for ref in self.pending:  # interrupted: stop what is still running
                ray.cancel(ref, force=True)
            self.progress.close()

    def _reuse_stored(self) -> None:
        """Give cells every wanted result the store holds; a stored result may unlock more."""
        changed = True
        while changed:
            changed = False
            for tuning in self.tunings:
                for request in self._unsubmitted(tuning):
                    if request.key in self._absent:
                        continue
                    found = self.store.lookup(request.key)
                    stored = found.current or (found.stale if self.reuse_stale else None)
                    if stored is None or (self.retry_failed and stored.status != "ok"):
                        tuning.stale += found.stale is not None and found.current is None
                        self._absent.add(request.key)
                        continue
                    self._accept(tuning, request, stored, reused=True)
                    changed = True

    def _submit(self) -> None:
        free = self.resources.workers - len(self.pending)
        if free <= 0:
            return
        queues = [[(t, r) for r in self._unsubmitted(t)] for t in self.tunings]
        in_turn = [item for item in chain.from_iterable(zip_longest(*queues)) if item is not None]
        for tuning, request in in_turn[:free]:
            self._launch(tuning, request)

    def _launch(self, tuning: CellTuning, request: Request) -> None:
        options = {"num_cpus": self.resources.threads,
                   "num_gpus": 1 if self.resources.device == "cuda" else 0,
                   "name": f"optbench {tuning.cell.label} {request.key}"}
        ref = self._remote().options(**options).remote(request.spec.to_dict(), self.resources.threads,
                                                       self.resources.micro_batch, self.resources.compile)
        self.pending[ref] = (tuning, request)
        self.progress.started(tuning, request)

    def _remote(self):
        if self._task is None:
            import ray

            self._start()
            self._task = ray.remote(train_task)
        return self._task

    def _collect(self, ref) -> None:
        import ray

        tuning, request = self.pending.pop(ref)
        try:
            result = RunResult.from_dict(ray.get(ref))
        except ray.exceptions.RayError as e:
            message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            result = RunResult(request.key, request.spec.to_dict(), ENVIRONMENT_FAILURE, None,
                               reason=task_failure(type(e).__name__, message),
                               code=current(request.spec.optimizer).as_dict())
        self.store.put(result)  # first: a run counts as done once it is in the store
        expected = current(request.spec.optimizer).as_dict()
        if result.status == ENVIRONMENT_FAILURE or result.code != expected:
            tuning.error = result.reason if result.status == ENVIRONMENT_FAILURE else (
                f"a worker ran other code ({result.code}) than this driver ({expected})")
            self.progress.errored(tuning, request, tuning.error)
            return
        self._accept(tuning, request, result, reused=False)

    def _accept(self, tuning: CellTuning, request: Request, result: RunResult, reused: bool) -> None:
        tuning.record(request, result, reused)
        self.recorder.record(tuning, request, result)
        # Reused results too: a sweep rerun with --track added sends its earlier runs; sending is
        # idempotent, so a plain rerun duplicates nothing.
        send(result, self.trackers)
        self.progress.finished(tuning, request, result, reused)

    def _unsubmitted(self, tuning: CellTuning) -> list[Request]:
        running = {r.key for _, r in self.pending.values()}
        return [r for r in tuning.wanted() if r.key not in running]
