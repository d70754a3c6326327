"""One run spread over N processes with torch.distributed: the process group, the per-rank
training body, and the local launcher of `optbench run --procs-per-trial N`.

Every rank builds the same model from the same seed and reads the same batches; each trains on an
equal share of every batch's rows, and the gradients are averaged over ranks, so each update is the
single-process full-batch update up to rounding. Only rank 0 evaluates, records and returns.

DDP is an explicit all-reduce of the gradients (one flattened buffer) after the backward pass, not
torch's DistributedDataParallel: the train step drives the model through model.trunk, model.aux_loss
and its tagged parameters, and DDP's hooks are armed only by the wrapper's forward(), which the step
never calls. The explicit all-reduce needs no wrapper and keeps the step one code path.

FSDP is FSDP2 (`fully_shard` per transformer block and the root) on a copy of the model that runs
forward and backward, so parameters and gradients live sharded there. Optimizers stay unaware of
DTensors, generic for every optimizer (ZeRO-style ownership): the model built first is the master
copy the optimizer was built on; each parameter is owned by one rank (balanced by size), the full
gradients are gathered into the master (so clipping sees the global norm), each owner steps only
the parameters it owns, so only it holds their optimizer state, and broadcasts the new values,
which every rank writes into its shards. The learning rates train_step sets land on that optimizer
as they do in one process. An optimizer whose step depends on which parameters it steps
(REPLICATED: a step count read from one parameter, one generator drawn from parameter by parameter,
a norm over all parameters)
and every optimizer from outside bench/optimizers step every parameter on every rank instead,
on the same full gradients (exact, but their state is not sharded). The master copy is a full
replica on every rank (what Sophia's curvature pass, MuonClip's logits and evaluation read), so
FSDP here shards optimizer state, gradients and the forward's parameters, not the parameters' memory.

Both modes: Sophia's curvature estimates are averaged over ranks (the same probes everywhere make
that the full batch's estimate); MuonClip's max attention logits are the max over ranks. DDP
checkpoints are rank 0's (the ranks hold the same state) and every rank resumes from them; FSDP
checkpoints hold every owner's optimizer state, gathered to rank 0, and resume only at the same
number of ranks. Under --compile FSDP compiles the sharded copy's blocks after fully_shard: the
copy is a deep copy, which drops the master's compiled code.
"""
from __future__ import annotations

import json
import socket
import tempfile
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from bench.errors import UserError

if TYPE_CHECKING:
    from bench.run.spec import RunResult, RunSpec
    from bench.run.train import RunOptions

MODES = ("ddp", "fsdp")
# A rank that dies leaves the others blocked in a collective; this bounds how long (a checkpoint
# written by rank 0 while the others wait is the longest legitimate wait).
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
# Optimizers whose step depends on which parameters it steps, so under FSDP every rank steps every
# parameter: Sophia decides its curvature refresh from its first parameter's step count, Kron draws
# each parameter's probe in turn from one generator, MARS clips its corrected gradient to a norm
# over all parameters. (Every other optimizer here was checked: fsdp ends bitwise at ddp's loss.)
REPLICATED = frozenset({"sophia", "kron", "mars"})


@dataclass(frozen=True)
class Rank:
    """This process's place in the run's process group."""

    rank: int
    world: int
    mode: str  # ddp | fsdp

    @property
    def main(self) -> bool:
        return self.rank == 0


# --- checks, setup and teardown ---------------------------------------------------------------

def validate(spec: RunSpec, options: RunOptions, cpus: int | None = None, gpus: int | None = None) -> None:
    """Bad input as a one-line UserError, before anything trains or is stored. `cpus`, `gpus`: what
    the processes may use (None: this machine's; a sweep checks its cluster's)."""
    n, mode = options.procs, options.parallel
    if mode not in MODES:
        raise UserError(f"--parallel must be one of {', '.join(MODES)}, got {mode!r}")
    batch = spec.hparams["train_batch_size"]
    if batch % n:
        raise UserError(f"train_batch_size {batch} does not split evenly over {n} processes "
                        "(--procs-per-trial must divide it)")
    gpus = torch.cuda.device_count() if gpus is None else gpus
    if spec.device == "cuda" and n > gpus:
        raise UserError(f"--procs-per-trial {n} needs {n} GPUs, {gpus} visible")
    if spec.device == "cpu":
        from bench.run.estimate import usable_cpus

        have = usable_cpus() if cpus is None else cpus
        if n * (options.threads or 1) > have:
            raise UserError(f"--procs-per-trial {n} x --threads {options.threads or 1} needs "
                            f"{n * (options.threads or 1)} CPUs, {have} available")


def setup(rank: int, world: int, address: str, port: int, device: str) -> None:
    """Join the run's process group: gloo on CPU, NCCL with one GPU per rank on CUDA (rank modulo
    the visible GPUs: all of them locally, the one Ray gives each rank in a gang)."""
    if device == "cuda":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://{address}:{port}", rank=rank,
                            world_size=world, timeout=COLLECTIVE_TIMEOUT)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def rank_run(spec: RunSpec, options: RunOptions, rank: int, address: str, port: int) -> RunResult:
    """The per-rank body: join the group, train, leave; the RunResult (rank 0's is the run's)."""
    from bench.run.train import run

    if options.threads:
        torch.set_num_threads(options.threads)
    setup(rank, options.procs, address, port, spec.device)
    try:
        return run(spec, replace(options, progress=options.progress and rank == 0),
                   rank=Rank(rank, options.procs, options.parallel))
    finally:
        teardown()


# --- the local launcher -------------------------------------------------------------------------

def launch(spec: RunSpec, options: RunOptions) -> RunResult:
    """Run `spec` over options.procs local processes (torch.multiprocessing spawn); rank 0's result.
    A process that dies makes an environment failure, as a killed Ray worker does."""
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    from bench.run import identity
    from bench.run.failures import ENVIRONMENT_FAILURE
    from bench.run.spec import RunResult

    with tempfile.TemporaryDirectory(prefix="optbench-ranks-") as folder:
        out = Path(folder) / "result.json"
        try:
            mp.spawn(_spawned, args=(spec.to_dict(), options, free_port(), str(out)),
                     nprocs=options.procs, join=True)
        except ProcessException as e:
            last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            return RunResult(spec.key, spec.to_dict(), ENVIRONMENT_FAILURE, None, procs=options.procs,
                             parallel=options.parallel, reason=f"a rank failed: {last}",
                             code=identity.current(spec.optimizer).as_dict())
        return RunResult.from_dict(json.loads(out.read_text()))


def _spawned(rank: int, spec: dict, options: RunOptions, port: int, out: str) -> None:
    from bench.run.spec import RunSpec

    result = rank_run(RunSpec.from_dict(spec), options, rank, "127.0.0.1", port)
    if rank == 0:  # a file, not a pipe: a large result never blocks the process's exit
        Path(out).write_text(json.dumps(result.to_dict()))


# --- training across ranks ----------------------------------------------------------------------

def shard_rows(batch: torch.Tensor, rank: Rank) -> torch.Tensor:
    """This rank's equal share of the batch's rows (validate checked they divide)."""
    n = batch.size(0) // rank.world
    return batch[rank.rank * n:(rank.rank + 1) * n]


class Parallel:
    """The train step's hooks for a run over ranks (bench.run.step.train_step's `parallel`)."""

    forward: Callable | None = None  # the chunk loss through a wrapped model (None: the model's)

    def __init__(self, rank: Rank, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.rank, self.model, self.optimizer = rank, model, optimizer
        self.params = list(model.parameters())
        _average_curvature(optimizer, rank.world)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a per-rank value over ranks (the logged train loss)."""
        total = value.detach().clone()
        dist.all_reduce(total)
        return total / self.rank.world

    def reduce_gradients(self) -> None:
        """Average the gradients over ranks (one flattened all-reduce); a parameter without a
        gradient on every rank keeps none, as in one process."""
        present = torch.tensor([p.grad is not None for p in self.params], dtype=torch.float32,
                               device=self.params[0].device)
        dist.all_reduce(present, op=dist.ReduceOp.MAX)
        chosen = [p for p, has in zip(self.params, present.tolist()) if has]
        for p in chosen:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in chosen]
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= self.rank.world
        for g, new in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            g.copy_(new)
        _max_logits(self.model, self.model)

    def step(self) -> None:
        self.optimizer.step()

    def zero_grad(self) -> None:
        pass  # the optimizer's zero_grad clears the only gradients there are

    # A checkpoint holds the master model and rank 0's optimizer state, which under DDP are every
    # rank's. Its layout says whose optimizer state it holds: "full" (every parameter's), or
    # ("fsdp", world) with every rank's own state, which only the same number of ranks can resume.
    layout: Any = "full"

    def optimizer_states(self) -> list[dict] | None:
        """Every rank's optimizer state_dict on rank 0 where they differ (a collective: every
        rank calls it); None where rank 0's is everyone's."""
        return None

    def resume(self, state: dict[str, Any]) -> None:
        """After the checkpoint `state` was loaded into the master model and the optimizer."""


class Sharded(Parallel):
    """FSDP2 forward/backward on a sharded copy, ZeRO-style owners stepping the master copy."""

    def __init__(self, rank: Rank, model: nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: Callable, replicated: bool, compiled: bool = False):
        super().__init__(rank, model, optimizer)
        from torch.distributed.fsdp import fully_shard

        self.wrapped = _LossModule(_copy(model), loss_fn)
        for block in self.wrapped.model.layers:
            fully_shard(block)
            if compiled:
                block.compile()
        fully_shard(self.wrapped)
        shards = dict(self.wrapped.model.named_parameters())
        self.pairs = [(p, shards[name]) for name, p in model.named_parameters()]
        self.owner = owners([p.numel() for p in self.params], rank.world)
        self.replicated = replicated
        self.forward = self.wrapped

    def reduce_gradients(self) -> None:
        """Full averaged gradients into the master copy (FSDP2 has reduce-scattered the shards)."""
        for master, shard in self.pairs:
            master.grad = None if shard.grad is None else shard.grad.full_tensor()
        _max_logits(self.model, self.wrapped.model)

    def step(self) -> None:
        """The owners step their parameters; every rank takes the new values into its shards."""
        if not self.replicated:  # a parameter without a gradient is one an optimizer skips
            for p, owner in zip(self.params, self.owner):
                if owner != self.rank.rank:
                    p.grad = None
        self.optimizer.step()
        with torch.no_grad():
            if not self.replicated:
                self._broadcast()
            for master, shard in self.pairs:
                _write_shard(shard, master)

    def _broadcast(self) -> None:
        """Each owner's new values to every rank: one flattened broadcast per owner."""
        for r in range(self.rank.world):
            owned = [p.data for p, owner in zip(self.params, self.owner) if owner == r]
            if not owned:
                continue
            flat = torch._utils._flatten_dense_tensors(owned)
            dist.broadcast(flat, src=r)
            if r != self.rank.rank:
                for p, new in zip(owned, torch._utils._unflatten_dense_tensors(flat, owned)):
                    p.copy_(new)

    def zero_grad(self) -> None:
        for _, shard in self.pairs:
            shard.grad = None

    @property
    def layout(self) -> Any:
        return "full" if self.replicated else ("fsdp", self.rank.world)

    def optimizer_states(self) -> list[dict] | None:
        """Each owner holds the state of its own parameters only: all of them go to rank 0 (on
        the CPU: gather_object pickles them), so one file, written at once, holds the whole run."""
        if self.replicated:
            return None
        states = [None] * self.rank.world if self.rank.main else None
        dist.gather_object(_to_cpu(self.optimizer.state_dict()), states, dst=0)
        return states

    def resume(self, state: dict[str, Any]) -> None:
        """This rank's own optimizer state (rank 0's is loaded already), and the shards rewritten
        from the resumed master copy, which the forward reads."""
        if not self.replicated and not self.rank.main:
            self.optimizer.load_state_dict(state["rank_optimizers"][self.rank.rank])
        with torch.no_grad():
            for master, shard in self.pairs:
                _write_shard(shard, master)


class _LossModule(nn.Module):
    """The model's chunk loss as a forward(), so FSDP2's root hooks gather embed, norm and head
    (the step otherwise calls model.trunk and the loss head, which bypass the root's forward)."""

    def __init__(self, model: nn.Module, loss_fn: Callable):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, xs: torch.Tensor, ys: torch.Tensor):
        loss = self.loss_fn(self.model, self.model.trunk(xs), ys)
        return loss, (self.model.aux_loss() if getattr(self.model, "has_aux_loss", False) else None)


def build(rank: Rank, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable,
          optimizer_name: str, compiled: bool = False) -> Parallel:
    if rank.mode == "fsdp":
        return Sharded(rank, model, optimizer, loss_fn, stepped_everywhere(optimizer_name), compiled)
    return Parallel(rank, model, optimizer)


def stepped_everywhere(name: str) -> bool:
    """Whether every rank steps every parameter: REPLICATED, and optimizers from outside
    bench/optimizers (module:Class, entry points), whose steps may not skip a missing gradient."""
    from bench.optimizers import registry

    return name in REPLICATED or bool(registry.get(name).module)


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def _to_cpu(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def owners(sizes: list[int], world: int) -> list[int]:
    """Each parameter's owning rank: largest first to the least loaded (ties to the lower rank)."""
    load, owner = [0] * world, [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[i], load[r] = r, load[r] + sizes[i]
    return owner


def _write_shard(shard: torch.Tensor, full: torch.Tensor) -> None:
    """Copy this rank's part of `full` into the DTensor parameter `shard` (no communication)."""
    from torch.distributed.tensor import distribute_tensor

    local = distribute_tensor(full.detach(), shard.device_mesh, shard.placements, src_data_rank=None)
    shard.to_local().copy_(local.to_local())


def _max_logits(master: nn.Module, ran: nn.Module) -> None:
    """MuonClip reads each attention module's max logit of the last forward: the max over ranks,
    taken from the modules that ran the forward into the master's."""
    pairs = [(m, r) for m, r in zip(master.modules(), ran.modules())
             if getattr(r, "max_logit", None) is not None]
    for m, r in pairs:
        value = r.max_logit.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        m.max_logit = value


def _average_curvature(optimizer: torch.optim.Optimizer, world: int) -> None:
    """An optimizer with a curvature estimate (Sophia's update_curvature) takes the mean of the
    ranks' estimates: with the same probes on every rank, the estimate of the full batch."""
    inner = getattr(optimizer, "update_curvature", None)
    if inner is None:
        return

    def averaged(estimates: list[torch.Tensor]) -> None:
        for e in estimates:
            dist.all_reduce(e)
            e /= world
        inner(estimates)

    optimizer.update_curvature = averaged
