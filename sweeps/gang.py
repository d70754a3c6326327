"""A trial spread over N processes (--procs-per-trial): a gang of Ray actors, one per rank.

The driver submits one coordinator task per trial (no CPUs of its own), so its loop still waits on
one object ref per trial. The coordinator reserves a placement group of N bundles (the trial's
threads as CPUs, and one GPU on CUDA; PACK, so a gang fills one node where it can and spans nodes
where it must), starts one actor per bundle, and the ranks rendezvous on rank 0's node IP and a free
port there (bench.run.distributed). It returns rank 0's result and removes the placement group.

Failures are the environment's (the driver turns a RayError into an attempt): a gang that cannot be
placed within PLACE_TIMEOUT_S, or a rank that dies, raises here; the other ranks are killed at once
rather than left blocked in a collective. A rank that ends with a failed result while rank 0 has
not ended (a run whose optimizer raised on one rank) leaves rank 0 waiting on a collective: after
GRACE_S the gang is killed and that rank's result is the trial's.
"""
from __future__ import annotations

from typing import Any

PLACE_TIMEOUT_S = 300.0  # a gang the cluster cannot place by then is an environment failure
GRACE_S = 60.0  # how long the other ranks get to end once one has
PREFIX = "optbench-gang-"  # placement group names: PREFIX + the trial's run key


class GangError(RuntimeError):
    """A gang that could not be placed or lost a rank."""


class RankActor:
    """One rank of a trial (a Ray actor in one bundle of the gang's placement group)."""

    def address(self) -> tuple[str, int]:
        """This node's IP and a free port on it: where the gang rendezvous (asked of rank 0)."""
        import ray

        from bench.run.distributed import free_port

        return ray.util.get_node_ip_address(), free_port()

    def train(self, spec: dict[str, Any], options: dict[str, Any], rank: int, address: str,
              port: int) -> dict[str, Any]:
        import ray

        from bench.run.distributed import rank_run
        from bench.run.faults import planned
        from bench.run.spec import RunSpec
        from bench.run.train import RunOptions

        run_spec = RunSpec.from_dict(spec)
        fault = planned({**run_spec.to_dict(), "rank": rank})
        run_options = RunOptions(**options, progress=False, fault=fault)
        result = rank_run(run_spec, run_options, rank, address, port)
        result.node = ray.get_runtime_context().get_node_id()
        return result.to_dict()


def gang_task(spec: dict[str, Any], options: dict[str, Any], place_timeout_s: float = PLACE_TIMEOUT_S,
              grace_s: float = GRACE_S, starts=None) -> dict[str, Any]:
    """Train one trial over options["procs"] ranks; rank 0's result (RunResult.to_dict()). `starts`:
    the sweep's StartLog, told once the gang is placed (its deadline counts from then), or None."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    from bench.run.spec import RunSpec
    from sweeps.deadlines import report_start

    n, threads, cuda = options["procs"], options["threads"], spec.get("device") == "cuda"
    bundle = {"CPU": threads, **({"GPU": 1} if cuda else {})}
    group = placement_group([dict(bundle) for _ in range(n)], strategy="PACK",
                            name=group_name(spec))
    actors = []
    try:
        if not group.wait(timeout_seconds=place_timeout_s):
            raise GangError(f"could not place {n} processes of {bundle} within {place_timeout_s:.0f}s "
                            f"(the cluster has {ray.cluster_resources()})")
        report_start(starts, RunSpec.from_dict(spec).key)
        actors = [_actor(group, i, threads, cuda) for i in range(n)]
        address, port = ray.get(actors[0].address.remote(), timeout=place_timeout_s)
        refs = [a.train.remote(spec, options, i, address, port) for i, a in enumerate(actors)]
        return _rank_zero(refs, grace_s)
    finally:
        for actor in actors:
            ray.kill(actor)
        remove_placement_group(group)


def _actor(group, index: int, threads: int, cuda: bool):
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    strategy = PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=index)
    # max_restarts 0: a rank that dies is a failed gang, never a lone rank rejoining mid-run
    return ray.remote(RankActor).options(num_cpus=threads, num_gpus=1 if cuda else 0, max_restarts=0,
                                         scheduling_strategy=strategy).remote()


def _rank_zero(refs: list, grace_s: float) -> dict[str, Any]:
    """Rank 0's result once it ends; a rank that dies raises at once; a rank that ends with a
    failure while rank 0 does not end within `grace_s` gives its own result."""
    import ray

    pending, early = list(refs), None
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=grace_s if early else None)
        if not ready:  # rank 0 stuck behind a rank that failed: that failure is the trial's
            return early
        ref = ready[0]
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as e:
            raise GangError(f"rank {refs.index(ref)} of {len(refs)} died: {_last_line(e)}") from None
        if ref is refs[0]:
            return result
        if result.get("status") != "ok" and early is None:
            early = result
    return early  # unreachable: rank 0 is among the refs


def group_name(spec: dict[str, Any]) -> str:
    from bench.run.spec import RunSpec

    return PREFIX + RunSpec.from_dict(spec).key


def remove_group(run_key: str) -> None:
    """Remove the placement group of the trial `run_key` if it is still there (the driver's cancel:
    a coordinator killed by force leaves its group reserved until the driver exits)."""
    from ray.util import get_placement_group
    from ray.util.placement_group import remove_placement_group

    try:
        remove_placement_group(get_placement_group(PREFIX + run_key))
    except Exception:  # none by that name (removed already, or never made): nothing to free
        pass


def _last_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__


def check(cells: list, resources, cluster: dict | None) -> None:
    """Bad input before a sweep with --procs-per-trial starts (one-line UserErrors): each cell's
    batch sizes (its default and its grid's) split over the ranks, and one gang fits the machine or
    cluster."""
    import torch

    from bench.optimizers import registry
    from bench.run.distributed import validate
    from bench.run.estimate import usable_cpus
    from bench.run.train import RunOptions
    from sweeps.grid import load_grid

    if resources.procs <= 1:
        return
    options = RunOptions(**resources.run_options())
    cpus = int(cluster.get("CPU", 1)) if cluster else usable_cpus()
    gpus = int(cluster.get("GPU", 0)) if cluster else torch.cuda.device_count()
    for cell in cells:
        grid = load_grid(cell.optimizer, cell.grid_ladder)
        batches = {registry.get(cell.optimizer).defaults["train_batch_size"], *grid.get("train_batch_size", [])}
        for batch in sorted(batches):
            validate(cell.spec({"train_batch_size": batch}, device=resources.device), options, cpus, gpus)
