"""One training run: RunSpec in, RunResult out, a pure function of the spec.

The loop reads like the algorithm: batch, one training step (bench.run.step: optional curvature
pass, forward, backward, clip, schedule, optimizer step). The loss is read back from the device only
every `log_every` steps, so the inner loop has no host-device sync. Only the end-of-budget held-out
loss is the result. The loop reads nothing from the environment: how to run, and a test's injected
fault, come in through RunOptions.

A run spread over processes (RunOptions.procs > 1) is launched by bench.run.distributed, whose ranks
each call run() with their `rank`: each trains on its share of every batch's rows with gradients
averaged over ranks; only rank 0 evaluates, checkpoints and returns the result.
"""
from __future__ import annotations

import math
import resource
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.tokens import (
    Batches,
    TokenData,
    bytes_per_token,
    eval_batches,
    load_data,
    token_buckets,
    unigram_loss,
    warn_epochs,
)
from bench.model.build import build_model
from bench.model.flops import flops_per_token
from bench.model.llama import LlamaModel, compile_model, head_loss
from bench.optimizers import registry
from bench.run import identity
from bench.run.checkpoint import Checkpointer
from bench.run.failures import ENVIRONMENT_FAILURE, classify, no_device
from bench.run.faults import Fault
from bench.run.hardware import device_model
from bench.run.schedules import lr_multiplier
from bench.run.spec import RunResult, RunSpec
from bench.run.step import StepTimes, train_step

if TYPE_CHECKING:
    from bench.run.distributed import Parallel, Rank

BUCKETS = ("frequent", "middle", "rare")
# Diverged: a non-finite loss, or a smoothed train loss this many times ln(vocab), the loss of the
# uniform prediction a freshly initialised model starts near (a fixed reference, so a run that is
# already exploding at its first log point is still caught).
DIVERGENCE_FACTOR = 1.5
EVAL_BATCH = 32  # sequences per evaluation forward pass
# The held-out curve: the loss at this many evenly spaced steps, the last at the end of the run, on
# the first 1/CURVE_SHARE of the evaluation tokens (one set for every point, so the points compare;
# all of them cost about one more evaluation). The result, final_loss, scores all the tokens.
CURVE_POINTS = 8
CURVE_SHARE = 8


@dataclass
class RunOptions:
    """How to run, not what: these never change the result (so they are not in the run key)."""

    threads: int | None = None  # torch threads; set in every run since Ray reuses worker processes
    progress: bool = False
    log_every: int = 10
    checkpoint_dir: str | None = None  # where mid-run checkpoints go (None: no checkpoints)
    checkpoint_every: int = 0  # steps between checkpoints; rounded up to a multiple of log_every
    # Sequences per forward/backward pass (0: the whole batch); gradients accumulate to the batch, so
    # the update is the same up to rounding. Paper scales need it: one 0.1B batch of 128 x 4096
    # tokens with a 128k vocabulary has 270 GB of logits.
    micro_batch: int = 0
    compile: bool = False  # torch.compile the blocks and the loss head (same math, fused kernels)
    procs: int = 1  # processes the run is spread over (torch.distributed), each with `threads`
    parallel: str = "ddp"  # with procs > 1: ddp (replicated) | fsdp (sharded, FSDP2)
    # A reliability test's injected failure; the callers that honour OPTBENCH_FAULT (`optbench run`,
    # the sweep's task) pass faults.planned(spec.to_dict()). None in every real run.
    fault: Fault | None = None


class Evaluation(NamedTuple):
    """The end-of-budget held-out loss (nats/token), overall and by token frequency bucket."""

    loss: float
    by_frequency: dict[str, float]


class _Trained(NamedTuple):
    model: LlamaModel
    autocast: AbstractContextManager
    checkpointer: Checkpointer | None


def run(spec: RunSpec, options: RunOptions | None = None, *, rank: Rank | None = None) -> RunResult:
    """Train to the end of the budget and evaluate; failures come back as a status, not an error
    (bench.run.failures: "failed" for the run's own, "error" for its environment's). With
    options.procs > 1 the run is spread over that many local processes (bad input: UserError);
    `rank`: called as one of them (bench.run.distributed)."""
    options = options or RunOptions()
    if options.procs > 1 and rank is None:
        from bench.run import distributed

        distributed.validate(spec, options)
        return distributed.launch(spec, options)
    if options.threads:
        torch.set_num_threads(options.threads)
    start = time.perf_counter()
    result = RunResult(run_key=spec.key, spec=spec.to_dict(), status="ok", final_loss=None,
                       threads=torch.get_num_threads(), code=identity.current(spec.optimizer).as_dict(),
                       procs=rank.world if rank else 1, parallel=rank.mode if rank else "")
    if reason := no_device(spec.device):
        result.status, result.reason = ENVIRONMENT_FAILURE, reason
        return result
    result.hardware = device_model(spec.device)
    scale = spec.shape
    data = load_data(spec.data, spec.eval_data, spec.tokenizer, scale.tokens(spec.ratio))
    result.unigram_loss = unigram_loss(data)
    try:
        trained = _train(spec, data, options, result, rank)
        if result.status == "ok" and (rank is None or rank.main):  # the other ranks' results are dropped
            result.eval_curve.append((result.steps, _curve_loss(spec, trained.model, data, trained.autocast,
                                                                options.micro_batch)))
            evaluation = _evaluate(spec, trained.model, data, trained.autocast,
                                   options.micro_batch or EVAL_BATCH)
            if math.isfinite(evaluation.loss):
                result.final_loss, result.loss_by_frequency = evaluation.loss, evaluation.by_frequency
                result.bits_per_byte = evaluation.loss / bytes_per_token(data) / math.log(2)
            else:
                result.status, result.reason = "diverged", "non-finite evaluation loss"
        if trained.checkpointer and (rank is None or rank.main):
            trained.checkpointer.remove()
    except Exception as e:  # an optimizer that raises fails its run, not the sweep around it
        result.status, result.reason = classify(e)
    result.wall_time_s = time.perf_counter() - start
    return result


def _train(spec: RunSpec, data: TokenData, options: RunOptions, result: RunResult,
           rank: Rank | None = None) -> _Trained:
    """Train to the end of the budget (or divergence). What it learns about the run goes into
    `result` as soon as it is known, so that a run that raises part-way keeps it."""
    scale, hp = spec.shape, spec.hparams
    device = torch.device(spec.device)
    torch.manual_seed(spec.seed)
    model = build_model(scale, data.vocab_size).to(device)
    loss_fn = compile_model(model) if options.compile else head_loss
    result.compiled, result.micro_batch = options.compile, options.micro_batch
    tagged = model.tagged_parameters()
    result.roles = {t.name: t.role.value for t in tagged}
    result.non_embedding_params = scale.non_embedding_params
    opt_def = registry.get(spec.optimizer)
    optimizer = opt_def.build(tagged, hp, model)
    # An optimizer that clips inside its own update (MARS clips its corrected gradient, as the study
    # did) says so; clipping the raw gradient as well would clip twice.
    clip = 0.0 if opt_def.clips_gradients else hp["max_grad_norm"]
    peak_lrs = [g["lr"] for g in optimizer.param_groups]
    parallel = _parallel(rank, model, optimizer, loss_fn, spec.optimizer, options.compile)
    main = rank is None or rank.main

    batch_size = hp["train_batch_size"]
    steps = scale.steps(spec.ratio, batch_size)
    batches = Batches(data, scale.seq_len, batch_size, spec.seed)
    result.steps, result.tokens = steps, steps * batch_size * scale.seq_len
    result.epochs = batches.epochs(steps)
    if (warning := warn_epochs(result.epochs)) and options.progress:
        print(warning, file=sys.stderr)

    params = [t.param for t in tagged]
    autocast = _autocast(spec, device)
    ckpt = _checkpointer(spec, options)
    first = _resume(ckpt, model, optimizer, batches, result, parallel)
    limit = DIVERGENCE_FACTOR * math.log(data.vocab_size)
    curve_at = {round(steps * k / CURVE_POINTS) for k in range(1, CURVE_POINTS)} - {0, steps}
    bar = _progress(steps, options.progress)
    bar.update(first)
    running, opt_time, t_train = torch.zeros((), device=device), 0.0, time.perf_counter()
    times = StepTimes()
    for step in range(first, steps):
        mult = lr_multiplier(step, steps, hp["warmup"], hp["lr_schedule"], hp["decay"], hp["min_lr_ratio"])
        loss = train_step(model, optimizer, _to_device(_rows(batches.next(), rank), device), step,
                          loss_fn=loss_fn, micro_batch=options.micro_batch, autocast=autocast,
                          curvature=opt_def.needs_curvature_pass, clip=clip, clip_params=params,
                          lrs=[peak * mult for peak in peak_lrs], fault=options.fault, times=times,
                          parallel=parallel)
        opt_time += times.optimizer_s
        running += loss
        if step + 1 in curve_at and main:
            result.eval_curve.append((step + 1, _curve_loss(spec, model, data, autocast, options.micro_batch)))
        if (step + 1) % options.log_every == 0 or step + 1 == steps:
            total = running if parallel is None else parallel.mean(running)  # over ranks
            mean = total.item() / ((step % options.log_every) + 1)  # the only sync point
            running.zero_()
            result.curve.append((step + 1, mean))
            result.lr_curve.append((step + 1, mult))
            bar.update(step + 1 - bar.n)
            bar.set_postfix(loss=f"{mean:.3f}")
            if not math.isfinite(mean) or mean > limit:
                result.status, result.reason = "diverged", f"train loss {mean:.3g} at step {step + 1}"
                break
            if ckpt and ckpt.due(step + 1, steps):
                _save(ckpt, step + 1, model, optimizer, batches, result, parallel, main)
    bar.close()
    done = max(1, step + 1 - first)
    result.tokens_per_s = done * batch_size * scale.seq_len / (time.perf_counter() - t_train)
    result.optimizer_step_ms = 1000 * opt_time / done
    result.flops = flops_per_token(scale, data.vocab_size) * result.tokens
    result.optimizer_state_bytes = state_bytes(optimizer)
    result.peak_memory_bytes = _peak_memory(device)
    return _Trained(model, autocast, ckpt)


def _parallel(rank: Rank | None, model, optimizer, loss_fn, name: str, compiled: bool) -> Parallel | None:
    if rank is None:
        return None
    from bench.run import distributed

    return distributed.build(rank, model, optimizer, loss_fn, name, compiled)


def _rows(batch: torch.Tensor, rank: Rank | None) -> torch.Tensor:
    """The batch rows this process trains on: all of them, or its rank's share."""
    if rank is None:
        return batch
    from bench.run.distributed import shard_rows

    return shard_rows(batch, rank)


def _to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Pinned host memory makes the copy asynchronous, so the GPU never waits on the data."""
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch


def _curve_loss(spec: RunSpec, model: LlamaModel, data: TokenData, autocast: AbstractContextManager,
                micro_batch: int) -> float:
    """The held-out loss on the curve's share of the evaluation tokens."""
    tokens = max(spec.shape.seq_len, spec.eval_tokens // CURVE_SHARE)
    return _evaluate(spec, model, data, autocast, micro_batch or EVAL_BATCH, tokens).loss


def _evaluate(spec: RunSpec, model: LlamaModel, data: TokenData, autocast: AbstractContextManager,
              batch_size: int, tokens: int | None = None) -> Evaluation:
    """Held-out loss on the first `tokens` evaluation tokens (None: all of the spec's), overall and
    by the training frequency of the target token."""
    scale = spec.shape
    buckets = token_buckets(data).numpy()
    sums, counts = np.zeros(len(BUCKETS)), np.zeros(len(BUCKETS))
    model.eval()
    with torch.no_grad(), autocast:
        for batch in eval_batches(data, scale.seq_len, tokens or spec.eval_tokens, batch_size):
            batch = _to_device(batch, torch.device(spec.device))
            logits = model(batch[:, :-1]).float()
            losses = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="none")
            # numpy's sequential bincount keeps the sums bitwise equal across thread counts
            which = buckets[batch[:, 1:].flatten().cpu().numpy()]
            sums += np.bincount(which, weights=losses.double().cpu().numpy(), minlength=len(BUCKETS))
            counts += np.bincount(which, minlength=len(BUCKETS))
    model.train()
    return Evaluation(float(sums.sum() / counts.sum()),
                      {b: float(s / c) for b, s, c in zip(BUCKETS, sums, counts) if c > 0})


def _checkpointer(spec: RunSpec, options: RunOptions) -> Checkpointer | None:
    if not options.checkpoint_dir or options.checkpoint_every <= 0:
        return None
    every = -(-options.checkpoint_every // options.log_every) * options.log_every
    return Checkpointer(Path(options.checkpoint_dir), spec.key, every)


def _save(ckpt, step, model, optimizer, batches, result, parallel, main) -> None:
    """Rank 0 writes the checkpoint: the master model and the data position are every rank's, and
    so is the optimizer state except under FSDP, where every rank sends its own (a collective)."""
    ranks = parallel.optimizer_states() if parallel else None
    if main:
        ckpt.save({"step": step, "curve": result.curve, "eval_curve": result.eval_curve,
                   "lr_curve": result.lr_curve, "model": model.state_dict(),
                   "optimizer": optimizer.state_dict(), "position": batches.position,
                   "layout": _layout(parallel), "rank_optimizers": ranks})


def _layout(parallel: Parallel | None):
    """Whose optimizer state a checkpoint of this run holds (bench.run.distributed.Parallel.layout)."""
    return parallel.layout if parallel else "full"


def _resume(ckpt, model, optimizer, batches, result, parallel) -> int:
    """Load the last checkpoint if there is one of this run's layout; the first step to run."""
    state = ckpt.load(_layout(parallel)) if ckpt else None
    if state is None:
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if parallel:
        parallel.resume(state)
    batches.position = state["position"]
    result.resumed_at = state["step"]
    result.curve = [tuple(p) for p in state["curve"]]
    result.eval_curve = [tuple(p) for p in state.get("eval_curve", [])]
    result.lr_curve = [tuple(p) for p in state.get("lr_curve", [])]
    return state["step"]


def _autocast(spec: RunSpec, device: torch.device):
    if spec.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the tensors in the optimizer's state."""
    return sum(v.numel() * v.element_size() for s in optimizer.state_dict()["state"].values()
               for v in s.values() if torch.is_tensor(v))


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # process peak RSS (Linux: KiB)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="step", desc="train", leave=False, file=sys.stderr)
