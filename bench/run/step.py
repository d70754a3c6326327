"""One training step, the only one: the train loop, the timing of `optbench bench` and the time
estimates, the GPU bench and the optimizer tests all call it.

The step is: the optimizer's curvature pass (if its registry entry asks for one), forward and backward
over micro-batches, gradient clipping, the scheduled learning rates, the optimizer step, zero_grad.
A run spread over processes (bench.run.distributed) passes its `parallel` hooks: the gradients are
averaged over ranks before clipping, and its step is the optimizer's step across ranks.
"""
from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from bench.model.llama import LlamaModel, head_loss
from bench.run.faults import Fault

if TYPE_CHECKING:
    from bench.run.distributed import Parallel

LossFn = Callable[[LlamaModel, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class StepTimes:
    """Wall seconds of the last step: all of it up to the end of optimizer.step(), and that alone."""

    step_s: float = 0.0
    optimizer_s: float = 0.0


def train_step(model: LlamaModel, optimizer: torch.optim.Optimizer, batch: torch.Tensor, step: int, *,
               loss_fn: LossFn = head_loss, micro_batch: int = 0,
               autocast: AbstractContextManager = nullcontext(), curvature: bool = False,
               clip: float = 0.0, clip_params: Sequence[torch.Tensor] = (),
               lrs: Sequence[float] | None = None, fault: Fault | None = None,
               times: StepTimes | None = None, parallel: Parallel | None = None) -> torch.Tensor:
    """Train on `batch` (token rows: inputs and their next tokens), step number `step`; the batch's
    mean loss, detached (read back from the device only when the caller asks for it).

    `curvature`: call the optimizer's curvature_step first (OptimizerDef.needs_curvature_pass);
    `clip` > 0: clip the gradients of `clip_params` to that global norm; `lrs`: each param group's
    learning rate for this step (None: as they are); `times`: filled with this step's seconds;
    `parallel`: this rank's hooks when the run is spread over processes (`batch` is its rows).
    """
    t0 = time.perf_counter()
    x, y = batch[:, :-1], batch[:, 1:]
    if curvature:
        optimizer.curvature_step(step, model, x, micro_batch)
    loss = gradients(model, loss_fn, x, y, micro_batch, autocast, fault, step,
                     forward=parallel.forward if parallel else None)
    if parallel is not None:
        parallel.reduce_gradients()  # before clipping: the norm is the global one
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(clip_params, clip, foreach=True)
    if lrs is not None:
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr
    t1 = time.perf_counter()
    if parallel is None:
        optimizer.step()
    else:
        parallel.step()
    if times is not None:
        t2 = time.perf_counter()
        times.step_s, times.optimizer_s = t2 - t0, t2 - t1
    optimizer.zero_grad(set_to_none=True)
    if parallel is not None:
        parallel.zero_grad()
    return loss


def gradients(model: LlamaModel, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, micro_batch: int = 0,
              autocast: AbstractContextManager = nullcontext(), fault: Fault | None = None,
              step: int = 0, forward: Callable | None = None) -> torch.Tensor:
    """The batch's mean next-token loss (detached), its gradient accumulated over micro-batches of
    equal tokens per row (each chunk's mean weighted by its share of the rows).

    A model with an auxiliary loss (`has_aux_loss`: an MoE's load balancing) has it added to each
    chunk's loss for the backward pass only: the returned loss is the language model's. `forward`
    (xs, ys) -> (loss, aux or None): the chunk's losses through a wrapper (FSDP's) instead."""
    chunks = list(zip(x.split(micro_batch), y.split(micro_batch))) if micro_batch else [(x, y)]
    aux = getattr(model, "has_aux_loss", False)  # never a zero term: dense models stay bitwise
    total = None
    for xs, ys in chunks:
        with autocast:
            if forward is not None:
                loss, extra = forward(xs, ys)
            else:
                loss = loss_fn(model, model.trunk(xs), ys)
                extra = model.aux_loss() if aux else None
        if len(chunks) > 1:
            loss = loss * (xs.size(0) / x.size(0))
            extra = None if extra is None else extra * (xs.size(0) / x.size(0))
        if fault is not None:
            loss = fault.apply(step, loss)
        (loss if extra is None else loss + extra).backward()
        total = loss.detach() if total is None else total + loss.detach()
    return total
