"""Sweep throughput for `optbench bench`: trials per hour with 1 and 2 workers, and Ray's overhead.

The same batch of small trials (cpu-xs, different seeds) runs as Ray tasks three times: one worker
with one thread (the baseline the scaling goal is judged against), one worker per core with one
thread each, and one worker with every core's thread (the other way to use the cores). Ray's
per-trial overhead is a task's wall time (submitted to result back) minus the run's own wall time.
"""
from __future__ import annotations

import time
from typing import Any

from bench.run.estimate import usable_cpus
from bench.run.spec import RunSpec
from sweeps.task import train_task

RATIO = 0.1  # 32 optimizer steps of cpu-xs: long enough to dominate Ray's fixed costs


def _batch(workers: int, threads: int, trials: int) -> dict[str, Any]:
    import ray

    from sweeps.driver import fair_share_workers

    fair_share_workers()
    ray.init(address="local", num_cpus=workers * threads, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(train_task).options(num_cpus=threads)
        # warm every worker process (a cold one spends seconds importing torch), as a sweep's first
        # trials do once and its hundreds of later trials do not
        warm = RunSpec("adamw", "cpu-xs", 0.01, {}, seed=999).to_dict()
        ray.get([task.remote(warm, {"threads": threads}) for _ in range(workers)])
        start, pending, overheads = time.perf_counter(), {}, []
        for seed in range(trials):
            spec = RunSpec("adamw", "cpu-xs", RATIO, {}, seed=seed).to_dict()
            pending[task.remote(spec, {"threads": threads})] = time.perf_counter()
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            result = ray.get(ref)
            overheads.append(time.perf_counter() - pending.pop(ref) - result["wall_time_s"])
        elapsed = time.perf_counter() - start
    finally:
        ray.shutdown()
    # a queued task's wait for a free worker is not overhead: report the smallest waits
    quickest = sorted(overheads)[:workers]
    return {"workers": workers, "threads": threads, "trials": trials, "seconds": elapsed,
            "trials_per_hour": 3600 * trials / elapsed, "ray_overhead_s": sum(quickest) / len(quickest)}


def measure(trials: int = 6) -> dict[str, Any]:
    cores = usable_cpus()
    one = _batch(1, 1, trials)
    many = _batch(cores, 1, trials)
    threaded = _batch(1, cores, trials)
    return {"one_worker": one, f"{cores}_workers": many, f"one_worker_{cores}_threads": threaded,
            "speedup_many_vs_one": many["trials_per_hour"] / one["trials_per_hour"],
            "speedup_many_vs_one_threaded": many["trials_per_hour"] / threaded["trials_per_hour"]}
