"""The Ray task of a sweep: one training run in a worker process, its result as a plain dict.

A module of its own so workers import only what a run needs. Ray reuses worker processes, so the
run sets its own torch thread count every time (RunOptions.threads).
"""
from __future__ import annotations

from typing import Any


def train_task(spec: dict[str, Any], options: dict[str, Any], starts=None) -> dict[str, Any]:
    """`options`: RunOptions' fields (sweeps.driver.Resources.run_options); `starts`: the sweep's
    StartLog, told when the run starts (its deadline counts from then), or None."""
    from bench.run.faults import planned
    from bench.run.spec import RunSpec
    from bench.run.train import RunOptions, run
    from sweeps.deadlines import report_start

    run_spec = RunSpec.from_dict(spec)
    report_start(starts, run_spec.key)
    options = RunOptions(**options, progress=False,
                         fault=planned(run_spec.to_dict()))  # OPTBENCH_FAULT, which workers inherit
    result = run(run_spec, options)
    result.node = _node()
    return result.to_dict()


def _node() -> str:
    """The Ray node this runs on ("" when called outside Ray, as the regression runs do)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
