"""One trial over N processes (torch.distributed, gloo on CPU): 2 processes x 1 thread end at the
final loss of 1 process x 1 thread under ddp and fsdp, a checkpointed run resumes to the last bit
under both, the plan's memory per process is what a real rank holds and its communication per
step what real ranks send, a sweep's gang runs through real Ray and stores procs == 2, a rank that
dies or hangs is an attempt, never a result, a gang that cannot be placed gives up in time, a rank
whose own run fails gives the trial its failure, and bad input is one line with exit code 2.

The tolerance is measured, not guessed: at cpu-xs, ratio 0.05 (16 steps), |2x1 - 1x1| was 2e-9
nats for adamw and kron and 7e-8 for muon, the same under ddp and fsdp (the averaged gradient
differs from the full-batch one only in rounding); SOAP: see its test."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench.errors import UserError
from bench.run.distributed import Rank, owners, shard_rows, validate
from bench.run.spec import RunSpec
from bench.run.train import RunOptions, run
from sweeps.gang import PREFIX, gang_task

RATIO = 0.05
ADAMW = RunSpec("adamw", "cpu-xs", RATIO, {}, 0).to_dict()
TOLERANCE = 1e-6  # nats; measured differences are below 1e-8 (module docstring)
SHARED_CACHE = Path(__file__).resolve().parents[1] / "results" / "cache"


@pytest.fixture
def cache(monkeypatch, results_dir):
    """The tokenizer and shards: the checkout's cache when it has one (no rebuild per session)."""
    path = SHARED_CACHE if SHARED_CACHE.is_dir() else results_dir / "cache"
    monkeypatch.setenv("OPTBENCH_CACHE", str(path))
    return path


@pytest.mark.unit
def test_owners_balance_parameters_by_size():
    owner = owners([100, 10, 60, 50, 1], 2)
    load = [sum(s for s, o in zip([100, 10, 60, 50, 1], owner) if o == r) for r in range(2)]
    assert owner[0] != owner[2] and sorted(load) == [110, 111]


@pytest.mark.unit
def test_each_rank_takes_an_equal_share_of_the_rows():
    import torch

    batch = torch.arange(12).reshape(6, 2)
    parts = [shard_rows(batch, Rank(r, 3, "ddp")) for r in range(3)]
    assert torch.equal(torch.cat(parts), batch) and all(p.size(0) == 2 for p in parts)


@pytest.mark.unit
@pytest.mark.parametrize("options, message", [
    (RunOptions(procs=3, threads=1), "does not split evenly over 3"),
    (RunOptions(procs=2, threads=1, parallel="zero"), "--parallel must be one of"),
])
def test_bad_combinations_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        validate(RunSpec("adamw", "cpu-xs", RATIO), options, cpus=64)


@pytest.mark.unit
def test_more_processes_than_cpus_is_a_user_error():
    with pytest.raises(UserError, match="needs 4 CPUs, 2 available"):
        validate(RunSpec("adamw", "cpu-xs", RATIO), RunOptions(procs=2, threads=2), cpus=2)


_SINGLE: dict[tuple[str, int], float] = {}


def _single(name: str, micro_batch: int = 0) -> float:
    if (name, micro_batch) not in _SINGLE:
        options = RunOptions(threads=1, micro_batch=micro_batch)
        _SINGLE[name, micro_batch] = run(RunSpec(name, "cpu-xs", RATIO), options).final_loss
    return _SINGLE[name, micro_batch]


@pytest.mark.system
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
@pytest.mark.parametrize("name", ["adamw", "muon", "soap", "kron"])
def test_two_processes_end_at_the_single_process_loss(name, mode, cache, one_thread):
    result = run(RunSpec(name, "cpu-xs", RATIO), RunOptions(threads=1, procs=2, parallel=mode))
    assert result.status == "ok", result.reason
    assert (result.procs, result.parallel) == (2, mode)
    # SOAP's eigenbases amplify rounding: its full-batch loss and its loss with gradients
    # accumulated over two halves (--micro-batch 16) differ by 0.054 nats in one process, and two
    # processes reproduce the latter, the same sums
    micro = 16 if name == "soap" else 0
    assert abs(result.final_loss - _single(name, micro)) < TOLERANCE


@pytest.mark.system
def test_fsdp_with_compile_ends_at_the_compiled_single_process_loss(cache, one_thread):
    """Measured: 1.7e-9 nats apart (5.3419742208 against 5.3419742192), equal to DDP's to the bit."""
    spec = RunSpec("adamw", "cpu-xs", RATIO)
    one = run(spec, RunOptions(threads=1, compile=True))
    two = run(spec, RunOptions(threads=1, procs=2, parallel="fsdp", compile=True))
    assert two.status == "ok" and two.compiled, two.reason
    assert abs(two.final_loss - one.final_loss) < TOLERANCE


@pytest.mark.integration
def test_fsdp_compiles_the_blocks_it_runs(one_thread):
    """The sharded copy is a deep copy, which drops the master's compiled code: its own blocks
    must be compiled after fully_shard, or --compile would compile only the loss head."""
    from bench.model.llama import compile_model
    from bench.run.distributed import build, free_port, setup, teardown

    setup(0, 1, "127.0.0.1", free_port(), "cpu")
    try:
        _, model, optimizer = _built("adamw")
        loss_fn = compile_model(model)
        sharded = build(Rank(0, 1, "fsdp"), model, optimizer, loss_fn, "adamw", compiled=True)
        assert all(block._compiled_call_impl is not None for block in sharded.wrapped.model.layers)
    finally:
        teardown()


def _built(name: str, vocab: int = 512, model: dict | None = None) -> tuple:
    """A cpu-xs run's spec, its model (seed 0) and optimizer, as every rank (and one process) builds them."""
    from bench.model.build import build_model
    from bench.optimizers.registry import get

    spec = RunSpec(name, "cpu-xs", RATIO, model=model or {})
    torch.manual_seed(0)
    net = build_model(spec.shape, vocab)
    return spec, net, get(name).build(net.tagged_parameters(), spec.hparams, net)


def _two_ranks(target, *args) -> list:
    """target(rank, port, *args, out) in 2 spawned processes of one group: what each put on `out`."""
    import torch.multiprocessing as mp

    from bench.run.distributed import free_port

    context, port = mp.get_context("spawn"), free_port()
    out = context.SimpleQueue()
    ranks = [context.Process(target=target, args=(r, port, *args, out)) for r in (0, 1)]
    for p in ranks:
        p.start()
    values = [out.get(), out.get()]
    for p in ranks:
        p.join()
    return values


def _moe_gradient(rank: int | None, port: int = 0, mode: str = "", out=None):
    """One batch's gradient of a cpu-xs MoE in micro-batches of 4 rows, flattened: averaged over 2
    ranks (each with its half of the rows) and put on `out`, or returned from one process (`rank`
    None)."""
    from bench.model.llama import head_loss
    from bench.run.distributed import build, setup, teardown
    from bench.run.step import gradients

    torch.set_num_threads(1)
    if rank is not None:
        setup(rank, 2, "127.0.0.1", port, "cpu")
    try:
        spec, model, optimizer = _built("adamw", model={"arch": "moe"})
        batch = torch.randint(0, 512, (spec.hparams["train_batch_size"], spec.shape.seq_len + 1),
                              generator=torch.Generator().manual_seed(1))
        parallel = None
        if rank is not None:
            parallel = build(Rank(rank, 2, mode), model, optimizer, head_loss, "adamw")
            batch = shard_rows(batch, Rank(rank, 2, mode))
        gradients(model, head_loss, batch[:, :-1], batch[:, 1:], micro_batch=4,
                  forward=parallel.forward if parallel else None)
        if parallel is not None:
            parallel.reduce_gradients()
        flat = torch.cat([p.grad.flatten() for p in model.parameters()])
        if out is None:
            return flat
        out.put(flat.numpy())  # by value, not through shared memory its process takes away
    finally:
        if rank is not None:
            teardown()


@pytest.mark.system
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_micro_batches_and_the_moe_balancing_loss_work_over_ranks(mode, one_thread):
    """Each rank splits its 16 rows into micro-batches of 4: the chunks one process makes, so the
    MoE balancing loss (a function of each chunk's routing) is the same terms and the averaged
    gradient is the single process's up to the order of its sums. Compared on one step: over a
    run, top-k routing turns that rounding into discrete differences (measured, cpu-xs at 0.05x on
    an Intel Xeon: a routing change at step 11 left ddp 3.1e-6 nats from one process at step 16,
    fsdp 6e-9; 9e-9 for both on an AMD EPYC). One step's gradients differ by 0.92 fp32 ulps of the
    largest (4.7e-10 of 4.2e-3) under both; 4 ulps allow the three sums in another order."""
    spread = [torch.from_numpy(g) for g in _two_ranks(_moe_gradient, mode)]
    one = _moe_gradient(None)
    assert torch.equal(spread[0], spread[1])  # every rank holds the same averaged gradient
    print(f"{mode}: max |difference| {(spread[0] - one).abs().max():.2e}, max |gradient| {one.abs().max():.2e}")
    ulp = torch.finfo(torch.float32).eps * one.abs().max().item()
    torch.testing.assert_close(spread[0], one, rtol=0, atol=4 * ulp)


@pytest.mark.system
@pytest.mark.parametrize("name, mode", [("adamw", "ddp"), ("adamw", "fsdp"), ("muon", "fsdp"), ("kron", "fsdp")])
def test_a_run_over_ranks_resumes_from_its_checkpoint_to_the_last_bit(name, mode, tmp_path, cache, one_thread,
                                                                       monkeypatch):
    """Under FSDP each rank holds the optimizer state of the parameters it owns (with Kron every
    rank holds all of it: distributed.REPLICATED): rank 0 gathers them into the one checkpoint file and every
    rank takes its own back, so the resumed run ends bitwise at the uninterrupted one's loss."""
    spec = RunSpec(name, "cpu-xs", RATIO)
    options = RunOptions(threads=1, procs=2, parallel=mode, checkpoint_every=10, checkpoint_dir=str(tmp_path))
    straight = run(spec, RunOptions(threads=1, procs=2, parallel=mode))
    failed = _fails_after_the_checkpoint(spec, options, monkeypatch)
    assert failed.status == "failed" and (tmp_path / f"{spec.key}.pt").exists()
    resumed = run(spec, options)
    assert resumed.resumed_at == 10 and resumed.final_loss == straight.final_loss
    assert not (tmp_path / f"{spec.key}.pt").exists()


@pytest.mark.system
def test_a_sharded_checkpoint_is_never_resumed_by_another_layout(tmp_path, cache, one_thread, monkeypatch):
    """An FSDP checkpoint of Muon holds each of 2 ranks' own optimizer state: one process (or DDP)
    would take rank 0's half for the whole, so it starts again from step 0 instead, and ends at
    the loss of a run never interrupted."""
    spec = RunSpec("muon", "cpu-xs", RATIO)
    folder = {"checkpoint_every": 10, "checkpoint_dir": str(tmp_path)}
    _fails_after_the_checkpoint(spec, RunOptions(threads=1, procs=2, parallel="fsdp", **folder), monkeypatch)
    assert (tmp_path / f"{spec.key}.pt").exists()
    one = run(spec, RunOptions(threads=1, **folder))
    assert one.resumed_at == 0 and one.final_loss == _single("muon")


def _fails_after_the_checkpoint(spec: RunSpec, options: RunOptions, monkeypatch):
    """The run with both ranks raising at step 15, after the step-10 checkpoint."""
    from bench.run.faults import planned

    with monkeypatch.context() as env:
        env.setenv("OPTBENCH_FAULT", "raise@15")
        return run(spec, RunOptions(**{**options.__dict__, "fault": planned(spec.to_dict())}))


def _held_bytes(*tensors) -> int:
    """Bytes of the distinct storages behind `tensors` (a DTensor: its local shard's)."""
    storages = {}
    for t in tensors:
        if t is not None:
            storage = (t.to_local() if hasattr(t, "to_local") else t).untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def _rank_memory(rank: int, port: int, name: str, mode: str, vocab: int, held) -> None:
    """Two training steps of one rank; what it holds just before its optimizer steps (the master
    copy, its gradients, FSDP's shards and theirs, the optimizer state), the peak of step 2."""
    from bench.model.llama import head_loss
    from bench.optimizers.registry import get
    from bench.run.distributed import build, setup, teardown
    from bench.run.step import train_step

    torch.set_num_threads(1)
    setup(rank, 2, "127.0.0.1", port, "cpu")
    try:
        where, definition = Rank(rank, 2, mode), get(name)
        spec, model, optimizer = _built(name, vocab)
        parallel = build(where, model, optimizer, head_loss, name)
        shards = list(parallel.wrapped.parameters()) if mode == "fsdp" else []
        before, step = [], parallel.step

        def counted() -> None:
            state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
            params = [*model.parameters(), *shards]
            before.append(_held_bytes(*params, *(p.grad for p in params), *state))
            step()

        parallel.step = counted
        batch = torch.randint(0, vocab, (spec.hparams["train_batch_size"], spec.shape.seq_len + 1))
        for i in range(2):
            train_step(model, optimizer, shard_rows(batch, where), i, parallel=parallel,
                       curvature=definition.needs_curvature_pass)
        held.put(before[-1])
    finally:
        teardown()


@pytest.mark.system
@pytest.mark.parametrize("name, mode", [("muon", "fsdp"), ("adamw", "fsdp"), ("kron", "fsdp"), ("muon", "ddp")])
def test_the_plan_s_memory_per_process_is_what_a_real_rank_holds(name, mode):
    """bench.run.memory's parameters, gradients and optimizer state of one process against the
    tensors a real rank of a 2-process run holds at its peak (just before the optimizer steps),
    the larger of the two ranks. FSDP's own transient buffers (the gathered parameters of the
    forward and backward) are not counted by either."""
    from bench.model.scales import get_scale
    from bench.run.memory import process_memory

    vocab = 512
    measured = max(_two_ranks(_rank_memory, name, mode, vocab))
    planned = process_memory(name, get_scale("cpu-xs"), vocab, 1, procs=2, parallel=mode, device="cpu")
    assert planned.params + planned.grads + planned.state == pytest.approx(measured, rel=0.01)


class _Sent(TorchDispatchMode):
    """What the collectives run under it carry, in NCCL's bus-bandwidth terms for 2 ranks
    (bench/run/comms.py): an all-reduce 2(N-1)/N of its tensor, an all-gather (N-1)/N of its output,
    a reduce-scatter (N-1)/N of its input, a broadcast its tensor. Seen through torch's dispatcher,
    so FSDP2's own gathers count as much as bench.run.distributed's explicit calls."""

    CARRIED = {"c10d.allreduce_": lambda a: sum(_size(t) for t in a[0]),
               "c10d.broadcast_": lambda a: sum(_size(t) for t in a[0]),
               "c10d._allgather_base_": lambda a: _size(a[0]) / 2,
               "c10d._reduce_scatter_base_": lambda a: _size(a[1]) / 2,
               "_c10d_functional.all_gather_into_tensor": lambda a: _size(a[0]) * a[1] / 2}
    bytes = 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        carried = self.CARRIED.get(str(func.overloadpacket))
        self.bytes += carried(args) if carried else 0
        return func(*args, **(kwargs or {}))


def _size(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _rank_sends(rank: int, port: int, name: str, mode: str, micro_batch: int, sent) -> None:
    """The bytes one training step of one rank carries (its second: the first sets FSDP up)."""
    from bench.model.llama import head_loss
    from bench.run.distributed import build, setup, teardown
    from bench.run.step import train_step

    torch.set_num_threads(1)
    setup(rank, 2, "127.0.0.1", port, "cpu")
    try:
        where = Rank(rank, 2, mode)
        spec, model, optimizer = _built(name)
        parallel = build(where, model, optimizer, head_loss, name)
        batch = shard_rows(torch.randint(0, 512, (spec.hparams["train_batch_size"], spec.shape.seq_len + 1)), where)
        train_step(model, optimizer, batch, 0, parallel=parallel, micro_batch=micro_batch)
        with _Sent() as counter:
            train_step(model, optimizer, batch, 1, parallel=parallel, micro_batch=micro_batch)
        sent.put(counter.bytes)
    finally:
        teardown()


@pytest.mark.system
@pytest.mark.parametrize("name, mode", [("adamw", "ddp"), ("adamw", "fsdp"), ("kron", "fsdp")])
def test_the_plan_s_communication_per_step_is_what_real_ranks_send(name, mode):
    """bench.run.comms against the collectives of one real step of a 2-process run, 8 micro-batches
    per process (kron: stepped on every rank, so no owner broadcasts). Measured: equal to the byte
    under fsdp; under ddp the ranks send 156 bytes more, the presence flags (4 bytes per parameter
    tensor) the plan leaves out; the 0.1% allows those."""
    from bench.model.scales import get_scale
    from bench.run.comms import bus_bytes
    from bench.run.distributed import stepped_everywhere
    from bench.run.memory import block_param_count, param_count

    micro_batch = 2
    measured = _two_ranks(_rank_sends, name, mode, micro_batch)
    shape = get_scale("cpu-xs")
    micro_batches = RunSpec(name, "cpu-xs", RATIO).hparams["train_batch_size"] // 2 // micro_batch
    planned = bus_bytes(param_count(shape, 512), block_param_count(shape, 512), 2, mode, micro_batches,
                        stepped_everywhere(name))
    print(f"{name} {mode}: planned {planned:,.0f} bytes per step, ranks sent {measured}")
    assert max(measured) == pytest.approx(planned, rel=1e-3)


@pytest.mark.system
def test_a_rank_that_dies_fails_its_gang_as_an_attempt_the_next_sweep_retries(tmp_path, cache):
    """Rank 1 of a 2-process trial dies mid-run (bench/run/faults.py: exit): rank 0, blocked in the
    gradient all-reduce, is killed with it; the trial is an environment failure, stored as an
    attempt and never as a result (exit 1), and the next sweep trains it."""
    from bench.run.failures import ENVIRONMENT_FAILURE, environment_failure
    from bench.store.database import ResultStore

    store = f"sqlite:///{tmp_path / 'store.db'}"
    args = ["sweep", "--scale", "cpu-xs", "--ratios", "0.05", "--optimizers", "adamw", "--max-trials", "1",
            "--procs-per-trial", "2", "--threads", "1", "--workers", "1", "--yes", "--store", store,
            "--optuna-storage", str(tmp_path / "optuna.journal")]
    first = _cli(args, tmp_path, cache, fault="exit@3:rank=1")
    assert first.returncode == 1, first.stderr[-3000:]
    assert "rank 1 of 2 died" in first.stdout and "run again to retry" in first.stdout, first.stdout[-3000:]
    assert not ResultStore(store).runs()
    (attempt,) = [r for what, r, _ in ResultStore(store).history() if what == "attempt"]
    assert attempt.status == ENVIRONMENT_FAILURE and environment_failure(attempt.reason)
    assert "rank 1 of 2 died" in attempt.reason
    again = _cli(args, tmp_path, cache)
    assert again.returncode == 0, again.stderr[-3000:]
    (result,) = ResultStore(store).runs()
    assert result.status == "ok" and result.run_key == attempt.run_key


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A local Ray instance of 2 CPUs for calling gang_task directly (as the driver does, with
    shorter waits), its workers planted with a fault on rank 1 (OPTBENCH_FAULT, set before
    ray.init so they inherit it) and the checkout's tokenizer cache."""
    import ray

    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPTBENCH_FAULT", "raise@3:rank=1")
        env.setenv("OPTBENCH_CACHE", str(SHARED_CACHE if SHARED_CACHE.is_dir()
                                         else tmp_path_factory.mktemp("results") / "cache"))
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield ray.remote(max_retries=0, num_cpus=0)(gang_task)  # as the driver's: no CPU of its own
        finally:
            ray.shutdown()


@pytest.mark.system
def test_a_gang_the_cluster_cannot_place_fails_in_time_and_frees_its_reservation(local_ray):
    """A busy cluster (another placement group holds every CPU): the gang's coordinator gives up
    at its placement timeout with a GangError naming what it wanted, and removes its own pending
    group rather than leave it to grab the CPUs later."""
    import ray
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    hog = placement_group([{"CPU": 2}])
    ray.get(hog.ready(), timeout=60)
    try:
        with pytest.raises(ray.exceptions.RayTaskError, match=r"could not place 2 processes of \{'CPU': 1\} within 3s"):
            ray.get(local_ray.remote(ADAMW, {"threads": 1, "procs": 2}, 3.0), timeout=120)
    finally:
        remove_placement_group(hog)
    gangs = [g for g in placement_group_table().values() if g["name"].startswith(PREFIX)]
    assert len(gangs) == 1 and gangs[0]["state"] == "REMOVED"


@pytest.mark.system
def test_a_rank_whose_run_fails_gives_the_trial_its_failure_after_the_grace(local_ray):
    """Rank 1's optimizer raises (the fixture's fault): rank 1 ends with a failed result while
    rank 0 waits in the all-reduce; after the grace the gang is killed and rank 1's failure is the
    trial's, the run's own (a result), not the environment's."""
    import ray

    from bench.run.failures import environment_failure

    options = {"threads": 1, "procs": 2, "parallel": "ddp"}
    result = ray.get(local_ray.remote(ADAMW, options, 120.0, 5.0), timeout=300)
    assert result["status"] == "failed" and not environment_failure(result["reason"]), result["reason"]


@pytest.mark.system
@pytest.mark.parametrize("procs, fault", [("1", "hang@3"), ("2", "hang@3:rank=1")])
def test_a_hung_trial_is_killed_at_its_deadline_and_stored_as_an_attempt(procs, fault, tmp_path, cache):
    """A trial that never returns (bench/run/faults.py: hang; with two processes, rank 1 wedges
    and rank 0 waits in the all-reduce) is killed at --trial-timeout: an attempt, never a result,
    and the sweep ends (exit 1) instead of waiting for ever."""
    from bench.run.failures import ENVIRONMENT_FAILURE, environment_failure
    from bench.store.database import ResultStore

    store = f"sqlite:///{tmp_path / 'store.db'}"
    done = _cli(["sweep", "--scale", "cpu-xs", "--ratios", "0.05", "--optimizers", "adamw", "--max-trials", "1",
                 "--procs-per-trial", procs, "--threads", "1", "--workers", "1", "--yes", "--store", store,
                 "--optuna-storage", str(tmp_path / "optuna.journal"), "--trial-timeout", "20"],
                tmp_path, cache, timeout=300, fault=fault)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Trial timeout: 20 s (--trial-timeout)" in done.stdout
    assert "no result within --trial-timeout 20 s" in done.stdout, done.stdout[-3000:]
    assert not ResultStore(store).runs()
    (attempt,) = [r for what, r, _ in ResultStore(store).history() if what == "attempt"]
    assert attempt.status == ENVIRONMENT_FAILURE and environment_failure(attempt.reason)


def _cli(args: list[str], tmp_path: Path, cache: Path, timeout: int = 600,
         fault: str = "") -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k not in ("OPTBENCH_FAULT", "RAY_ADDRESS")},
           "OPTBENCH_RESULTS": str(tmp_path), "OPTBENCH_CACHE": str(cache),
           **({"OPTBENCH_FAULT": fault} if fault else {})}
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.system
@pytest.mark.parametrize("args, message", [
    (["run", "--optimizer", "adamw", "--ratio", "0.05", "--procs-per-trial", "3"], "does not split evenly"),
    (["run", "--optimizer", "adamw", "--ratio", "0.05", "--procs-per-trial", "2", "--threads", "64"],
     "needs 128 CPUs"),
    (["sweep", "--ratios", "0.05", "--optimizers", "adamw", "--procs-per-trial", "2", "--threads", "64",
      "--workers", "1", "--yes"], "needs 128 CPUs"),
    (["sweep", "--ratios", "0.05", "--optimizers", "adamw", "--procs-per-trial", "3", "--threads", "1",
      "--workers", "1", "--yes"], "does not split evenly"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, cache):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    done = _cli([*args, "--scale", "cpu-xs", "--store", store], tmp_path, cache)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    from bench.store.database import ResultStore

    assert not (tmp_path / "store.db").exists() or not ResultStore(store).runs()


@pytest.mark.system
def test_a_sweep_runs_two_process_trials_through_ray(tmp_path, cache):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    done = _cli(["sweep", "--scale", "cpu-xs", "--ratios", "0.05", "--optimizers", "adamw", "--max-trials", "2",
                 "--procs-per-trial", "2", "--threads", "1", "--workers", "1", "--yes", "--store", store,
                 "--optuna-storage", str(tmp_path / "optuna.journal")], tmp_path, cache)
    assert done.returncode == 0, done.stderr[-3000:]
    from bench.store.database import ResultStore

    runs = ResultStore(store).runs(scale=["cpu-xs"])
    assert runs and all(r.status == "ok" for r in runs)
    for r in runs:
        stored = ResultStore(store).lookup(r.run_key).current
        assert (stored.procs, stored.parallel) == (2, "ddp") and stored.node
