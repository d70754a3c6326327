"""One training run: RunSpec in, RunResult out, a pure function of the spec.

The loop reads like the algorithm: batch, (optional curvature pass), forward, backward, clip,
schedule, optimizer step. The loss is read back from the device only every `log_every` steps, so
the inner loop has no host-device sync. Only the end-of-budget held-out loss is the result.
"""
from __future__ import annotations

import math
import resource
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

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
from bench.model.flops import flops_per_token
from bench.model.llama import LlamaModel, compile_model, head_loss
from bench.model.scales import get_scale
from bench.optimizers import registry
from bench.run import faults
from bench.run.checkpoint import Checkpointer
from bench.run.schedules import lr_multiplier
from bench.run.spec import RunResult, RunSpec

BUCKETS = ("frequent", "middle", "rare")
# Diverged: a non-finite loss, or a smoothed train loss this many times ln(vocab), the loss of the
# uniform prediction a freshly initialised model starts near (a fixed reference, so a run that is
# already exploding at its first log point is still caught).
DIVERGENCE_FACTOR = 1.5
EVAL_BATCH = 32  # sequences per evaluation forward pass


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


def run(spec: RunSpec, options: RunOptions | None = None) -> RunResult:
    """Train to the end of the budget and evaluate; failures come back as a status, not an error."""
    options = options or RunOptions()
    if options.threads:
        torch.set_num_threads(options.threads)
    start = time.perf_counter()
    scale = get_scale(spec.scale)
    data = load_data(spec.data, spec.eval_data, spec.tokenizer, scale.tokens(spec.ratio))
    result = RunResult(run_key=spec.key, spec=spec.to_dict(), status="ok", final_loss=None,
                       unigram_loss=unigram_loss(data), threads=torch.get_num_threads())
    fault = faults.planned(result.spec)  # None unless a reliability test injects one
    try:
        _train(spec, data, options, result, fault)
    except Exception as e:  # an optimizer that raises fails its run, not the sweep around it
        result.status, result.reason = "failed", f"{type(e).__name__}: {e}".splitlines()[0]
    result.wall_time_s = time.perf_counter() - start
    return result


def _train(spec: RunSpec, data: TokenData, options: RunOptions, result: RunResult,
           fault: faults.Fault | None = None) -> None:
    scale, hp = get_scale(spec.scale), spec.hparams
    device = torch.device(spec.device)
    torch.manual_seed(spec.seed)
    model = LlamaModel(scale, data.vocab_size).to(device)
    loss_fn = compile_model(model) if options.compile else head_loss
    result.compiled, result.micro_batch = options.compile, options.micro_batch
    tagged = model.tagged_parameters()
    result.roles = {t.name: t.role.value for t in tagged}
    result.non_embedding_params = scale.non_embedding_params
    opt_def = registry.get(spec.optimizer)
    optimizer = opt_def.build(tagged, hp, model)
    # An optimizer that clips inside its own update (MARS clips its corrected gradient, as the study
    # did) says so; clipping the raw gradient as well would clip twice.
    clip = 0.0 if opt_def.extra.get("clips_gradients") else hp["max_grad_norm"]
    peak_lrs = [g["lr"] for g in optimizer.param_groups]

    batch_size = hp["train_batch_size"]
    steps = scale.steps(spec.ratio, batch_size)
    batches = Batches(data, scale.seq_len, batch_size, spec.seed)
    result.steps, result.tokens = steps, steps * batch_size * scale.seq_len
    result.epochs = batches.epochs(steps)
    if (warning := warn_epochs(result.epochs)) and options.progress:
        print(warning, file=sys.stderr)

    params = [t.param for t in tagged]
    autocast = _autocast(spec, device)
    curvature = getattr(optimizer, "curvature_step", None)
    ckpt = _checkpointer(spec, options)
    first = _resume(ckpt, model, optimizer, batches, result)
    limit = DIVERGENCE_FACTOR * math.log(data.vocab_size)
    bar = _progress(steps, options.progress)
    bar.update(first)
    running, opt_time, t_train = torch.zeros((), device=device), 0.0, time.perf_counter()
    for step in range(first, steps):
        batch = _to_device(batches.next(), device)
        x, y = batch[:, :-1], batch[:, 1:]
        if curvature is not None:
            curvature(step, model, x, options.micro_batch)
        loss = _forward_backward(model, loss_fn, x, y, options.micro_batch, autocast, fault, step)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        mult = lr_multiplier(step, steps, hp["warmup"], hp["lr_schedule"], hp["decay"], hp["min_lr_ratio"])
        for group, peak in zip(optimizer.param_groups, peak_lrs):
            group["lr"] = peak * mult
        t0 = time.perf_counter()
        optimizer.step()
        opt_time += time.perf_counter() - t0
        optimizer.zero_grad(set_to_none=True)
        running += loss.detach()
        if (step + 1) % options.log_every == 0 or step + 1 == steps:
            mean = running.item() / ((step % options.log_every) + 1)  # the only sync point
            running.zero_()
            result.curve.append((step + 1, mean))
            bar.update(step + 1 - bar.n)
            bar.set_postfix(loss=f"{mean:.3f}")
            if not math.isfinite(mean) or mean > limit:
                result.status, result.reason = "diverged", f"train loss {mean:.3g} at step {step + 1}"
                break
            if ckpt and ckpt.due(step + 1, steps):
                ckpt.save({"step": step + 1, "curve": result.curve, "model": model.state_dict(),
                           "optimizer": optimizer.state_dict(), "position": batches.position})
    bar.close()
    done = max(1, step + 1 - first)
    result.tokens_per_s = done * batch_size * scale.seq_len / (time.perf_counter() - t_train)
    result.optimizer_step_ms = 1000 * opt_time / done
    result.flops = flops_per_token(scale, data.vocab_size) * result.tokens
    result.optimizer_state_bytes = state_bytes(optimizer)
    result.peak_memory_bytes = _peak_memory(device)
    if result.status == "ok":
        _evaluate(spec, model, data, result, autocast, options.micro_batch or EVAL_BATCH)
    if ckpt:
        ckpt.remove()


def _to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Pinned host memory makes the copy asynchronous, so the GPU never waits on the data."""
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch


def _forward_backward(model: LlamaModel, loss_fn, x: torch.Tensor, y: torch.Tensor, micro_batch: int,
                      autocast, fault: faults.Fault | None, step: int) -> torch.Tensor:
    """The batch's mean next-token loss, its gradient accumulated over micro-batches of equal tokens
    per row (each chunk's mean weighted by its share of the rows)."""
    chunks = list(zip(x.split(micro_batch), y.split(micro_batch))) if micro_batch else [(x, y)]
    total = None
    for xs, ys in chunks:
        with autocast:
            loss = loss_fn(model, model.trunk(xs), ys)
        if len(chunks) > 1:
            loss = loss * (xs.size(0) / x.size(0))
        if fault is not None:
            loss = fault.apply(step, loss)
        loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    return total


def _evaluate(spec: RunSpec, model: LlamaModel, data: TokenData, result: RunResult, autocast,
              batch_size: int) -> None:
    """End-of-budget held-out loss, overall and by the training frequency of the target token."""
    scale = get_scale(spec.scale)
    buckets = token_buckets(data).numpy()
    sums, counts = np.zeros(len(BUCKETS)), np.zeros(len(BUCKETS))
    model.eval()
    with torch.no_grad(), autocast:
        for batch in eval_batches(data, scale.seq_len, spec.eval_tokens, batch_size):
            batch = _to_device(batch, torch.device(spec.device))
            logits = model(batch[:, :-1]).float()
            losses = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="none")
            # numpy's sequential bincount keeps the sums bitwise equal across thread counts
            which = buckets[batch[:, 1:].flatten().cpu().numpy()]
            sums += np.bincount(which, weights=losses.double().cpu().numpy(), minlength=len(BUCKETS))
            counts += np.bincount(which, minlength=len(BUCKETS))
    model.train()
    loss = float(sums.sum() / counts.sum())
    if not math.isfinite(loss):
        result.status, result.reason = "diverged", "non-finite evaluation loss"
        return
    result.final_loss = loss
    result.bits_per_byte = loss / bytes_per_token(data) / math.log(2)
    result.loss_by_frequency = {b: float(s / c) for b, s, c in zip(BUCKETS, sums, counts) if c > 0}


def _checkpointer(spec: RunSpec, options: RunOptions) -> Checkpointer | None:
    if not options.checkpoint_dir or options.checkpoint_every <= 0:
        return None
    every = -(-options.checkpoint_every // options.log_every) * options.log_every
    return Checkpointer(Path(options.checkpoint_dir), spec.key, every)


def _resume(ckpt, model, optimizer, batches, result) -> int:
    """Load the last checkpoint if there is one; the first step to run."""
    state = ckpt.load() if ckpt else None
    if state is None:
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    batches.position = state["position"]
    result.curve = [tuple(p) for p in state["curve"]]
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
