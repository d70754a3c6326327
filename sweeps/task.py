"""The Ray task of a sweep: one training run in a worker process, its result as a plain dict.

A module of its own so workers import only what a run needs. Ray reuses worker processes, so the
run sets its own torch thread count every time (RunOptions.threads).
"""
from __future__ import annotations

from typing import Any


def train_task(spec: dict[str, Any], threads: int, micro_batch: int = 0, compile: bool = False) -> dict[str, Any]:
    from bench.run.faults import planned
    from bench.run.spec import RunSpec
    from bench.run.train import RunOptions, run

    run_spec = RunSpec.from_dict(spec)
    options = RunOptions(threads=threads, progress=False, micro_batch=micro_batch, compile=compile,
                         fault=planned(run_spec.to_dict()))  # OPTBENCH_FAULT, which workers inherit
    return run(run_spec, options).to_dict()
