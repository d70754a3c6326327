"""Timing on this machine: one measured training step for `optbench bench` and for the time
estimates (bench/estimate.py), and a best-of timer for single kernels (bench/ceilings.py)."""
from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any, Callable

import torch

from bench.model.flops import DEFAULT_VOCAB
from bench.model.llama import LlamaModel, head_loss
from bench.model.scales import Scale, get_scale


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    """Best-of wall time of fn() in seconds, after one warm-up call."""
    fn()  # first-call allocations and kernel selection
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def model_and_batch(scale_name: str) -> tuple[Scale, LlamaModel, torch.Tensor]:
    """The scale's model (seeded) and one batch of random token ids, `DEFAULT_VOCAB` wide."""
    scale = get_scale(scale_name)
    torch.manual_seed(0)
    model = LlamaModel(scale, DEFAULT_VOCAB)
    x = torch.randint(0, DEFAULT_VOCAB, (scale.default_batch, scale.seq_len + 1),
                      generator=torch.Generator().manual_seed(0))
    return scale, model, x


def timed_steps(model, opt, x, steps: int, autocast=nullcontext, loss_fn=head_loss,
                mean: bool = False) -> tuple[float, float, float]:
    """(seconds per training step, seconds per optimizer step), medians after two warm-ups (the
    first step of several optimizers builds their state, e.g. SOAP's eigenbases), and the first
    step's seconds (with torch.compile, the compilation); `mean`: means, for an optimizer whose
    costly steps come every few steps.

    The weights are put back after each step (untimed): at its peak learning rate with no warm-up,
    a step can blow the model up (SOAP's loss reaches ~3000 in 3 steps at cpu-l), and the overflowing
    activations then slow the forward and backward passes by a third, inflating the step it is
    compared with."""
    total, inner, first = [], [], 0.0
    curvature = getattr(opt, "curvature_step", None)
    params = list(model.parameters())
    initial = [p.detach().clone() for p in params]
    for i in range(steps + 2):
        t0 = time.perf_counter()
        if curvature is not None:
            curvature(i, model, x[:, :-1])
        with autocast():
            loss = loss_fn(model, model.trunk(x[:, :-1]), x[:, 1:])
        loss.backward()
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_copy_(params, initial)
        if i >= 2:
            total.append(t2 - t0)
            inner.append(t2 - t1)
        elif i == 0:
            first = t2 - t0
    average = (lambda xs: sum(xs) / len(xs)) if mean else (lambda xs: sorted(xs)[len(xs) // 2])
    return average(total), average(inner), first
