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
import math
import os
from dataclasses import dataclass
from itertools import chain, zip_longest
from typing import Callable

from bench.run.failures import ENVIRONMENT_FAILURE, not_started, task_failure, timed_out
from bench.run.identity import current
from bench.run.spec import RunResult
from bench.store.database import ResultStore
from bench.track import send
from sweeps.cell import CellTuning, Request
from sweeps.deadlines import Deadlines, start_log
from sweeps.progress import Progress
from sweeps.record import StudyRecorder
from sweeps.task import train_task

FORWARDED_ENV = ("OPTBENCH_", "HF_")  # settings a worker on another machine needs too (connect)
# ...except places on the driver's machine: a node keeps its own (the env of its `ray start`)
DRIVER_LOCAL_ENV = ("OPTBENCH_RESULTS", "OPTBENCH_CACHE", "OPTBENCH_STORE")
DRIVER_LOCAL_SUFFIXES = ("_HOME", "_CACHE", "_DIR", "_PATH")  # HF_HOME, HF_DATASETS_CACHE, HF_TOKEN_PATH...
# A trial with no result by its deadline is wedged (a hung device, collective or worker): killed
# and stored as an attempt. It counts from the trial's start (sweeps/deadlines.py) and is generous,
# since a false kill would repeat on every rerun: TIMEOUT_FACTOR times the plan's estimate of the
# longest run, never under TIMEOUT_FLOOR_S.
TIMEOUT_FACTOR = 10.0
TIMEOUT_FLOOR_S = 1800.0
TIMEOUT_RULE = (f"{TIMEOUT_FACTOR:g}x the plan's estimate of the longest run, at least "
                f"{TIMEOUT_FLOOR_S / 60:g} min; --trial-timeout to change")
_QUIET = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}


@dataclass(frozen=True)
class Resources:
    workers: int  # trials at once
    threads: int  # torch threads (and Ray CPUs) per trial
    device: str  # cpu | cuda (one GPU per trial)
    address: str | None = None  # an existing cluster (RAY_ADDRESS); None: start a local one
    micro_batch: int = 0  # sequences per forward/backward in each trial (0: the whole batch)
    compile: bool = False  # torch.compile each trial's blocks and loss head
    procs: int = 1  # processes per trial (torch.distributed), each with `threads` threads
    parallel: str = "ddp"  # with procs > 1: ddp | fsdp
    checkpoint_every: int = 0  # steps between a trial's checkpoints (0: none)
    checkpoint_dir: str | None = None  # where they go: a path every node reaches

    def run_options(self) -> dict:
        """bench.run.train.RunOptions' fields for each trial (plain data, for a Ray task)."""
        return {"threads": self.threads, "micro_batch": self.micro_batch, "compile": self.compile,
                "procs": self.procs, "parallel": self.parallel,
                "checkpoint_every": self.checkpoint_every, "checkpoint_dir": self.checkpoint_dir}


def trial_timeout(longest_run_s: float) -> float:
    """The default --trial-timeout in seconds, given the plan's estimate of the longest run."""
    if not math.isfinite(longest_run_s):
        return TIMEOUT_FLOOR_S
    return max(TIMEOUT_FLOOR_S, TIMEOUT_FACTOR * longest_run_s)


def connect(address: str) -> dict:
    """Join the cluster at `address` (RAY_ADDRESS); its resources, with the address.

    Every trial gets the driver's settings (forwarded_env): OPTBENCH_FAULT, HF_HUB_OFFLINE,
    HF_DATASETS_OFFLINE, HF_TOKEN... Never a path on the driver's machine (OPTBENCH_RESULTS,
    OPTBENCH_CACHE, OPTBENCH_STORE, HF_HOME, any *_CACHE, *_DIR, *_PATH): another node may not have
    it, and a node's own (the env of its `ray start`) must win, so each node builds its tokenizer and
    token shards in its own cache from the data source. Workers never open the store."""
    import ray

    ray.init(address=address, runtime_env={"env_vars": forwarded_env(os.environ)}, **_QUIET)
    return {**ray.cluster_resources(), "address": address}


def forwarded_env(environ) -> dict[str, str]:
    """The driver's variables every trial gets: FORWARDED_ENV's settings, no driver-local places."""
    return {k: v for k, v in environ.items() if k.startswith(FORWARDED_ENV)
            and k not in DRIVER_LOCAL_ENV and not k.endswith(DRIVER_LOCAL_SUFFIXES)}


def start_local(resources: Resources) -> None:
    """A local Ray instance sized for the sweep (stopped again by ray.shutdown())."""
    import ray

    fair_share_workers()
    gpus = resources.workers * resources.procs if resources.device == "cuda" else 0
    # "local": a new instance even when another one runs on this machine (address=None would join it)
    ray.init(address="local", num_cpus=resources.workers * resources.threads * resources.procs,
             num_gpus=gpus, **_QUIET)


def fair_share_workers() -> None:
    """Run a local instance's workers at normal priority. Ray starts them at niceness 15, so on a
    machine with any other busy process a trial gets a few percent of a core (docs/MEASUREMENTS.md)
    and its wall time, and every throughput figure, means nothing."""
    os.environ.setdefault("RAY_worker_niceness", "0")  # read by the raylet ray.init starts


class Driver:
    def __init__(self, tunings: list[CellTuning], store: ResultStore, recorder: StudyRecorder,
                 resources: Resources, progress: Progress, start: Callable[[], None] = lambda: None,
                 reuse_stale: bool = False, retry_failed: bool = False, trackers: tuple[str, ...] = (),
                 trial_timeout_s: float = 0.0):
        self.tunings, self.store, self.recorder = tunings, store, recorder
        self.trial_timeout_s = trial_timeout_s  # 0: trials may run for ever
        self.resources, self.progress = resources, progress
        self.reuse_stale, self.retry_failed = reuse_stale, retry_failed
        self.trackers = trackers  # bench.track: every result the sweep uses, sent from this process
        self._start = start  # starts Ray; called before the first submission only (a finished
        # sweep run again reads everything back from the store and never starts it)
        self._task = None
        self.pending: dict = {}  # Ray object ref -> (tuning, request)
        self._deadlines = Deadlines(trial_timeout_s)  # counted from each trial's start (StartLog)
        self._starts = None  # the StartLog actor, with Ray, when trials have a deadline
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
                self._check_deadlines()
                self.progress.refresh()
        finally:
            for ref, (_, request) in self.pending.items():  # interrupted: stop what is still running
                self._kill(ref, request)
            self.progress.close()

    def _kill(self, ref, request: Request) -> None:
        import ray

        ray.cancel(ref, force=True)
        if self.resources.procs > 1:  # a killed gang's coordinator leaves its group reserved
            from sweeps.gang import remove_group

            remove_group(request.key)

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
                   # a trial whose worker or node dies is run again (from its checkpoint, if any) on
                   # a live node: Ray's default, explicit because a lost node relies on it; options
                   # override ray.remote's, so a gang keeps its own 0 (_remote)
                   "max_retries": 3 if self.resources.procs == 1 else 0,
                   "name": f"optbench {tuning.cell.label} {request.key}"}
        if self.resources.procs > 1:  # a gang's coordinator: its ranks reserve the CPUs and GPUs
            options.update(num_cpus=0, num_gpus=0)
        ref = self._remote().options(**options).remote(request.spec.to_dict(), self.resources.run_options(),
                                                       starts=self._starts)
        self.pending[ref] = (tuning, request)
        self._deadlines.submitted(ref)
        self.progress.started(tuning, request)

    def _remote(self):
        if self._task is None:
            import ray

            self._start()
            if self.trial_timeout_s > 0:
                self._starts = start_log()
            if self.resources.procs > 1:
                from sweeps.gang import gang_task

                # never retried by Ray: a gang's failure is an attempt the next sweep retries
                self._task = ray.remote(max_retries=0)(gang_task)
            else:
                self._task = ray.remote(train_task)
        return self._task

    def _collect(self, ref) -> None:
        import ray

        tuning, request = self.pending.pop(ref)
        self._deadlines.ended(ref)
        try:
            result = RunResult.from_dict(ray.get(ref))
        except ray.exceptions.RayError as e:
            message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            result = self._attempt(request, task_failure(type(e).__name__, message))
        self._settle(tuning, request, result)

    def _check_deadlines(self) -> None:
        import ray

        if self._starts is not None:
            try:
                starts = ray.get(self._starts.starts.remote(), timeout=30)
            except ray.exceptions.RayError:  # the log lost (its node gone): the clocks run on as they are
                starts = {}
            for ref, (_, request) in self.pending.items():
                self._deadlines.saw(ref, starts.get(request.key, 0))
        overdue, started = self._deadlines.overdue()
        for ref in overdue:
            self._expire(ref, started)

    def _expire(self, ref, started: bool) -> None:
        """A trial past its deadline: killed, and an attempt the next invocation retries."""
        tuning, request = self.pending.pop(ref)
        self._deadlines.ended(ref)
        self._kill(ref, request)
        reason = (timed_out if started else not_started)(self.trial_timeout_s)
        self._settle(tuning, request, self._attempt(request, reason))

    def _attempt(self, request: Request, reason: str) -> RunResult:
        return RunResult(request.key, request.spec.to_dict(), ENVIRONMENT_FAILURE, None, reason=reason,
                         code=current(request.spec.optimizer).as_dict())

    def _settle(self, tuning: CellTuning, request: Request, result: RunResult) -> None:
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
