"""Training the regression check's runs: in this process, or in a pool of worker processes.

The check never reads runs back from the results store: it measures the code as it is now, the
same on every machine whatever a user's store holds, so every run is trained afresh. A run its
environment stops (bench.run.failures) gives no verdict: the check ends with that error instead. Each run uses the baseline's thread count, which keeps it bitwise reproducible;
the number of workers only changes how many run at once, never a result. On a CPU, two 1-thread
runs side by side give the throughput of one 2-thread run (docs/MEASUREMENTS.md), so 2 cores take
2 workers x 1 thread.

Workers are started with "spawn" (no fork of a process whose torch thread pools already run).
The data is tokenized once in this process first, so workers on a fresh clone do not race to
build the same tokenizer and shards. Longest runs go first so the pool finishes together.
"""
from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable, Sequence

import torch

from bench.data.tokens import load_data
from bench.errors import UserError
from bench.model.scales import get_scale
from bench.run.failures import ENVIRONMENT_FAILURE
from bench.run.spec import RunResult, RunSpec
from sweeps.task import train_task

Report = Callable[[int, int, float, RunResult], None]  # (done, total, share of the tokens done, result)
POLL_S = 1.0  # how often the pool's deadlines are looked at


def train_all(specs: Sequence[RunSpec], threads: int, workers: int,
              report: Report | None = None, timeout_s: float = 0.0) -> list[RunResult]:
    """Train every spec; results in the order of `specs`. A pool of worker processes stops the
    check with a UserError when a run has no result `timeout_s` after the pool took it; one
    worker without a deadline (`timeout_s` 0) trains in this process instead, where nothing could
    stop a hung run."""
    report = report or (lambda done, total, share, result: None)
    if specs:
        _prepare_data(max(specs, key=lambda s: s.ratio))
    order = sorted(range(len(specs)), key=lambda i: -specs[i].ratio)
    results: dict[int, RunResult] = {}
    report = _by_tokens(specs, results, report)
    if workers <= 1 and timeout_s <= 0:
        _in_process(specs, order, threads, report, results)
    else:
        _in_pool(specs, order, threads, max(1, workers), report, results, timeout_s)
    stopped = [r for r in results.values() if r.status == ENVIRONMENT_FAILURE]
    if stopped:
        raise UserError(f"{len(stopped)} run(s) could not run on this machine, so no verdict: {stopped[0].reason}")
    return [results[i] for i in range(len(specs))]


def _by_tokens(specs: Sequence[RunSpec], results: dict[int, RunResult],
               report: Report) -> Callable[[int, int, int], None]:
    """Calls `report` with the finished run `results[i]` and the share of all runs' tokens done
    (runs differ in length by their ratio, so a share of runs would mislead an ETA)."""
    tokens = [spec.shape.tokens(spec.ratio) for spec in specs]
    planned, done = sum(tokens), 0

    def finished(count: int, total: int, i: int) -> None:
        nonlocal done
        done += tokens[i]
        report(count, total, done / planned, results[i])

    return finished


def _prepare_data(spec: RunSpec) -> None:
    load_data(spec.data, spec.eval_data, spec.tokenizer, get_scale(spec.scale).tokens(spec.ratio))


def _in_process(specs, order, threads, report, results) -> None:
    before = torch.get_num_threads()
    try:
        for i in order:
            results[i] = RunResult.from_dict(train_task(specs[i].to_dict(), {"threads": threads}))
            report(len(results), len(specs), i)
    finally:
        torch.set_num_threads(before)  # the caller's thread count is not ours to change


def _in_pool(specs, order, threads, workers, report, results, timeout_s) -> None:
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    futures = {pool.submit(train_task, specs[i].to_dict(), {"threads": threads}): i for i in order}
    taken: dict = {}  # future -> when the pool took it
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
            for future in done:
                i = futures[future]
                results[i] = RunResult.from_dict(future.result())
                report(len(results), len(specs), i)
            _check_deadlines(pending, taken, timeout_s, lambda f: specs[futures[f]])
    except BaseException:  # Ctrl-C, a crashed worker or a hung run: stop every worker now
        for process in list(pool._processes.values()):  # a hung worker never ends by itself
            process.kill()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _check_deadlines(pending, taken: dict, timeout_s: float, spec_of) -> None:
    """UserError for the first pending run the pool took more than `timeout_s` ago. The pool takes
    a run a little before a worker starts it (one queued ahead), so a deadline counts from then."""
    if timeout_s <= 0:
        return
    now = time.monotonic()
    for future in pending:
        if future.running():
            taken.setdefault(future, now)
            if now - taken[future] > timeout_s:
                spec = spec_of(future)
                raise UserError(f"{spec.optimizer} {spec.ratio:g}x seed {spec.seed}: no result within "
                                f"--run-timeout {timeout_s:g} s (a hung run?), so no verdict")


def print_progress(stream=None) -> Report:
    """A Report that prints one line per finished run (to stderr by default): elapsed time, runs
    done of the total, and an ETA from the pace so far over the tokens left."""
    start, stream = time.perf_counter(), stream or sys.stderr

    def report(done: int, total: int, share: float, result: RunResult) -> None:
        spec, elapsed = result.spec, time.perf_counter() - start
        loss = f"{result.final_loss:.4f}" if result.final_loss is not None else result.status
        print(f"[{elapsed:6.0f} s] {done:3d}/{total} ETA {elapsed * (1 - share) / share:4.0f} s "
              f"{spec['optimizer']:>8} {spec['ratio']:g}x seed {spec['seed']}: {loss} "
              f"({result.wall_time_s:.0f} s)", file=stream, flush=True)

    return report
