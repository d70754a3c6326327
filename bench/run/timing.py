"""Timing on this machine: measured training steps for `optbench bench` and for the time estimates
(bench/run/estimate.py)."""
from __future__ import annotations

from contextlib import nullcontext

import torch

from bench.model.flops import DEFAULT_VOCAB
from bench.model.llama import LlamaModel, head_loss
from bench.model.scales import Scale, get_scale
from bench.run.step import StepTimes, train_step


def model_and_batch(scale_name: str) -> tuple[Scale, LlamaModel, torch.Tensor]:
    """The scale's model (seeded) and one batch of random token ids, `DEFAULT_VOCAB` wide."""
    scale = get_scale(scale_name)
    torch.manual_seed(0)
    model = LlamaModel(scale, DEFAULT_VOCAB)
    x = torch.randint(0, DEFAULT_VOCAB, (scale.default_batch, scale.seq_len + 1),
                      generator=torch.Generator().manual_seed(0))
    return scale, model, x


def timed_steps(model, opt, x, steps: int, autocast=nullcontext, loss_fn=head_loss,
                mean: bool = False, curvature: bool = False) -> tuple[float, float, float]:
    """(seconds per training step, seconds per optimizer step), medians after two warm-ups (the
    first step of several optimizers builds their state, e.g. SOAP's eigenbases), and the first
    step's seconds (with torch.compile, the compilation); `mean`: means, for an optimizer whose
    costly steps come every few steps; `curvature`: OptimizerDef.needs_curvature_pass.

    The step is the train loop's (bench.run.step) without gradient clipping or a schedule: the
    optimizer at its peak learning rate, on the whole batch `x`.

    The weights are put back after each step (untimed): at its peak learning rate with no warm-up,
    a step can blow the model up (SOAP's loss reaches ~3000 in 3 steps at cpu-l), and the overflowing
    activations then slow the forward and backward passes by a third, inflating the step it is
    compared with."""
    total, inner, first = [], [], 0.0
    params = list(model.parameters())
    initial = [p.detach().clone() for p in params]
    times = StepTimes()
    for i in range(steps + 2):
        train_step(model, opt, x, i, loss_fn=loss_fn, autocast=autocast(), curvature=curvature,
                   times=times)
        with torch.no_grad():
            torch._foreach_copy_(params, initial)
        if i >= 2:
            total.append(times.step_s)
            inner.append(times.optimizer_s)
        elif i == 0:
            first = times.step_s
    average = (lambda xs: sum(xs) / len(xs)) if mean else (lambda xs: sorted(xs)[len(xs) // 2])
    return average(total), average(inner), first
