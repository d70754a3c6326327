"""Whether a sweep can finish on the resources it sees, and what it would need when it cannot.

A sweep CANNOT FINISH here (docs/DESIGN.md, "The plan at scale") when, before anything starts:
(a) memory: one trial process's estimated memory (bench.run.memory: parameters, gradients and
    optimizer state, the state split over N under fsdp, and activations at the chosen micro-batch) is more
    than its device's usable memory: 90% of the GPU's on CUDA; on CPU 90% of this machine's
    available RAM shared by the processes that run at once (workers x procs per trial). In a Ray
    cluster the CPU check is skipped: its nodes' memory is not seen one by one.
(b) time: the plan's estimated wall time (an upper bound) is more than --max-hours. On CUDA that is
    the sweep's GPU-hours over the GPUs in use (one trial is never shorter than its own GPU-hours
    over its GPUs); an unknown time never refuses.
Then `optbench sweep` refuses with one line saying what it would need (a smaller micro-batch, or
GPUs: how many and their GPU-hours, or a cluster through RAY_ADDRESS), unless --force.

GPU-hours come from the plan's FLOPs (bench.model.flops) at the planned GPU's datasheet peak times
an MFU (the best one measured in results/bench-gpu.json, else bench.run.estimate.DEFAULT_MFU), plus
a spread trial's communication between its GPUs (bench.run.comms), which stalls all of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from bench.model.flops import DEFAULT_VOCAB, flops_per_token
from bench.run.comms import bus_bytes, link_bytes_s, link_name
from bench.run.estimate import planned_mfu
from bench.run.gpus import GIB, Gpu
from bench.run.memory import (
    DEVICE_HEADROOM,
    Memory,
    available_ram,
    block_param_count,
    param_count,
    process_memory,
)

MOST_GPUS_PER_TRIAL = 64  # the largest fsdp group a plan suggests when one GPU is too small


@dataclass(frozen=True)
class Fit:
    """One process's memory at a micro-batch against what its device can give."""

    micro_batch: int  # sequences per forward/backward
    memory: dict[str, Memory]  # per optimizer
    usable: int  # bytes
    fitting: int  # the largest micro-batch that fits (0: none)

    @property
    def most(self) -> int:
        return max(m.total for m in self.memory.values())

    @property
    def fits(self) -> bool:
        return self.most <= self.usable


@dataclass(frozen=True)
class GpuPlan:
    gpu: Gpu
    procs: int  # GPUs per trial
    parallel: str
    fit: Fit
    trial_hours: float  # GPU-hours of the sweep's longest run
    gpu_hours: float  # of the whole sweep
    mfu: float
    mfu_source: str
    measured: str = ""  # the peak of a real step on the visible GPU, when there is one
    compute_s: float = 0.0  # one optimizer step's compute, on the trial's GPUs together
    comm_s: float = 0.0  # its communication between them (bench.run.comms), never overlapped
    comm_micro_batch: int = 0  # the micro-batch comm_s is for: the chosen one, or the largest that fits


def per_process_batch(shape, procs: int) -> int:
    """Sequences each process of a trial steps over (the batch split over its processes)."""
    return -(-shape.default_batch // procs)


def fit(optimizers, shape, vocab: int, micro_batch: int, procs: int, parallel: str, device: str,
        usable: int) -> Fit:
    """Memory per process at `micro_batch` (0: the whole per-process batch) and the largest
    micro-batch that fits: memory grows linearly with it, so two points give the line."""
    batch = per_process_batch(shape, procs)
    chosen = min(micro_batch or batch, batch)
    at = {o: process_memory(o, shape, vocab, chosen, procs, parallel, device) for o in optimizers}
    one = max(process_memory(o, shape, vocab, 1, procs, parallel, device).total for o in optimizers)
    per_sequence = max(m.activations for m in at.values()) / chosen
    fitting = max(0, min(batch, math.floor((usable - one) / per_sequence) + 1)) if usable >= one else 0
    return Fit(chosen, at, usable, fitting)


def gpu_plan(costs, optimizers, shape, vocab: int, gpu: Gpu, micro_batch: int, procs: int,
             parallel: str) -> GpuPlan:
    """The sweep on `gpu`s, `procs` per trial: memory per GPU, GPU-hours per trial and in all."""
    usable = int(gpu.memory_bytes * (1 - DEVICE_HEADROOM))
    mfu, source = planned_mfu()
    rate = (mfu * gpu.bf16_flops if gpu.bf16_flops else math.nan) / flops_per_token(shape, vocab)  # tokens/s
    memory = fit(optimizers, shape, vocab, micro_batch, procs, parallel, "cuda", usable)
    step_tokens = shape.default_batch * shape.seq_len
    compute_s = step_tokens / rate / procs
    runs_at = memory.micro_batch if memory.fits else memory.fitting or memory.micro_batch  # what can run
    comm_s = step_comm_seconds(shape, vocab, gpu, procs, parallel, runs_at)
    gpu_s_per_token = (compute_s + comm_s) * procs / step_tokens  # what the GPUs of a trial spend
    longest = max(c.cell.tokens_per_run for c in costs)
    tokens = sum(c.max_runs * c.cell.tokens_per_run for c in costs)
    return GpuPlan(gpu, procs, parallel, memory, longest * gpu_s_per_token / 3600,
                   tokens * gpu_s_per_token / 3600, mfu, source, compute_s=compute_s, comm_s=comm_s,
                   comm_micro_batch=runs_at)


def step_comm_seconds(shape, vocab: int, gpu: Gpu, procs: int, parallel: str, micro_batch: int) -> float:
    """One optimizer step's communication between a trial's GPUs (bench.run.comms: the worst
    case over optimizers, an owner's broadcast included)."""
    if procs <= 1:
        return 0.0
    micro_batches = -(-per_process_batch(shape, procs) // micro_batch)
    volume = bus_bytes(param_count(shape, vocab), block_param_count(shape, vocab), procs, parallel, micro_batches)
    return volume / link_bytes_s(gpu.link_bytes_s, procs)


def measure(plan: GpuPlan, optimizers, shape, vocab: int) -> GpuPlan:
    """The plan with the peak memory of one real step on the visible GPU beside its estimate: one
    process (procs 1) at the chosen micro-batch, the optimizer with the most state."""
    from dataclasses import replace

    from bench.run.memory import measured_peak

    if not plan.gpu.visible or plan.procs > 1:
        return plan
    name = max(optimizers, key=lambda o: plan.fit.memory[o].state)
    peak, how = measured_peak(name, shape, vocab, plan.fit.micro_batch)
    estimate = plan.fit.memory[name].total
    text = f"{how}: {gib(peak)} (the estimate: {gib(estimate)})" if peak else how
    return replace(plan, measured=text)


def vocab_size(tokenizer: str) -> int:
    """The vocabulary of a tokenizer spec: bpe-N's N, else the tokenizer's own (loaded), else the
    default's when it cannot be loaded here."""
    import re

    if m := re.fullmatch(r"bpe-(\d+)", tokenizer):
        return int(m[1])
    try:
        from bench.data.tokenizer import load_tokenizer

        return load_tokenizer(tokenizer).get_vocab_size()
    except Exception:  # offline, or not a tokenizer: the plan's estimate uses the default
        return DEFAULT_VOCAB


def gpus_that_fit(optimizers, shape, vocab: int, gpu: Gpu, procs: int, parallel: str,
                  micro_batch: int) -> tuple[int, str, int]:
    """(GPUs per trial, parallel, micro-batch) that fit: the plan's own GPUs per trial, else the
    fewest under fsdp; the micro-batch the largest that fits when the chosen one does not (0: it
    does). GPUs 0 when even MOST_GPUS_PER_TRIAL do not fit at micro-batch 1."""
    usable = int(gpu.memory_bytes * (1 - DEVICE_HEADROOM))
    n = procs
    while n <= MOST_GPUS_PER_TRIAL:
        mode = parallel if n == procs else "fsdp"
        found = fit(optimizers, shape, vocab, micro_batch, n, mode, "cuda", usable)
        if found.fitting:
            return n, mode, 0 if found.fits else found.fitting
        n *= 2
    return 0, "fsdp", 0


def cpu_fit(optimizers, shape, vocab: int, resources) -> Fit | None:
    """This machine's RAM shared by the processes that run at once; None in a cluster."""
    if resources.address:
        return None
    usable = int(available_ram() * (1 - DEVICE_HEADROOM)) // (resources.workers * resources.procs)
    return fit(optimizers, shape, vocab, resources.micro_batch, resources.procs, resources.parallel, "cpu", usable)


def wall_hours(plan: GpuPlan, gpus: int) -> float:
    """The sweep's hours on `gpus` GPUs: its GPU-hours shared by them, never under one trial's."""
    return max(plan.gpu_hours / gpus, plan.trial_hours / plan.procs)


def gib(n: float) -> str:
    return f"{n / GIB:,.1f} GiB"


def _duration(hours: float) -> str:
    return f"{hours / 24:,.1f} days" if hours >= 48 else f"{hours:,.1f} h"


def reasons(resources, memory: Fit | None, hours: float, max_hours: float, gpu: str) -> list[str]:
    """Why the sweep cannot finish on these resources (the module doc's rule); [] when it can.
    `memory`: a trial process's fit on its device (None: not checked); `hours`: the wall time."""
    out = []
    if memory is not None and not memory.fits:
        where = (f"this machine's available RAM, shared by {resources.workers * resources.procs} process(es)"
                 if resources.device == "cpu" else f"one {gpu}")
        out.append(f"one trial process needs {gib(memory.most)} at micro-batch {memory.micro_batch}, "
                   f"{gib(memory.usable)} usable on {where}")
    if math.isfinite(hours) and hours > max_hours:
        out.append(f"about {_duration(hours)} on {resources.workers} worker(s) x {resources.procs} "
                   f"process(es) on {resources.device}, over --max-hours {max_hours:g}")
    return out


def refusal(why: list[str], needs: str) -> str:
    """The one line of a sweep that cannot finish here."""
    return f"this sweep cannot finish here: {'; '.join(why)}. It needs {needs}; --force starts it anyway"


def needs(runs: int, memory: Fit | None, plan_for: Callable[[int, str, int], GpuPlan],
          needed: tuple[int, str, int], max_hours: float, why: list[str]) -> str:
    """What it would need: a smaller micro-batch when memory alone is the matter, else GPUs (how
    many, their GPU-hours) or a cluster. `needed`: gpus_that_fit's (GPUs per trial, parallel,
    micro-batch); `plan_for(GPUs per trial, parallel, micro-batch)`: the sweep's plan on them."""
    if len(why) == 1 and memory is not None and not memory.fits and memory.fitting:
        return f"--micro-batch {memory.fitting} (fits)"
    per_trial, parallel, micro_batch = needed
    plan = plan_for(max(1, per_trial), parallel, micro_batch)
    if not per_trial:
        return (f"more than {MOST_GPUS_PER_TRIAL} {plan.gpu.name} GPUs per trial even at micro-batch 1, "
                "or a cluster through RAY_ADDRESS")
    if not math.isfinite(plan.gpu_hours):
        total, hours = per_trial, "unknown GPU-hours (no datasheet peak for this GPU)"
    else:
        trials = max(1, math.ceil(plan.gpu_hours / max_hours / per_trial))
        total = per_trial * min(trials, max(1, runs))
        hours = (f"about {plan.gpu_hours:,.0f} GPU-hours, {_duration(wall_hours(plan, total))} "
                 f"on them at {plan.mfu:.0%} MFU")
    flags = f"--device cuda --procs-per-trial {per_trial}" + (" --parallel fsdp" if parallel == "fsdp" else "")
    flags += f" --micro-batch {micro_batch}" if micro_batch else ""
    return (f"{total} x {plan.gpu.name} GPU(s), {per_trial} per trial ({flags}): {hours}; "
            "or a cluster through RAY_ADDRESS")


def _comm_line(plan: GpuPlan) -> str:
    link = link_bytes_s(plan.gpu.link_bytes_s, plan.procs)
    if not math.isfinite(link):
        return "    communication between GPUs not counted (no link bandwidth known for this GPU)"
    return (f"    with communication: {plan.parallel} over {plan.procs} GPUs {link_name(plan.procs)} at "
            f"{link / 1e9:,.0f} GB/s each way, micro-batch {plan.comm_micro_batch}: {plan.comm_s:,.2f} s "
            f"per step beside {plan.compute_s:,.2f} s of compute (+{plan.comm_s / plan.compute_s:.0%}, "
            "not overlapped)")


def format_gpu_block(plan: GpuPlan, workers: int) -> str:
    """The plan's CUDA lines: GPUs per trial, memory per GPU, GPU-hours."""
    gpu, f = plan.gpu, plan.fit
    peak = f"{gpu.bf16_flops / 1e12:,.0f} TFLOP/s dense bf16" if gpu.bf16_flops else "peak unknown"
    source = "visible, memory measured" if gpu.visible else "datasheet"
    sharing = ("fsdp: optimizer state split over them; each keeps the whole fp32 master copy and "
               "its gradients beside its shard" if plan.parallel == "fsdp"
               and plan.procs > 1 else "ddp: each holds the whole model, gradients and optimizer state"
               if plan.procs > 1 else "it holds the whole model, gradients and optimizer state")
    first = next(iter(f.memory.values()))
    states = ", ".join(f"{o} {gib(m.state)}" for o, m in f.memory.items())
    verdict = "fits" if f.fits else (f"does not fit; micro-batch {f.fitting} fits" if f.fitting
                                     else "does not fit even at micro-batch 1")
    hours = (f"{plan.trial_hours:,.1f} per trial (the longest run), {plan.gpu_hours:,.1f} for the sweep"
             if math.isfinite(plan.gpu_hours) else "unknown (no datasheet peak for this GPU: pass --gpu)")
    lines = [f"On CUDA: {gpu.name} ({gib(gpu.memory_bytes)}, {peak}; {source})",
             f"  GPUs per trial: {plan.procs} ({sharing})",
             f"  Memory per GPU at micro-batch {f.micro_batch}: parameters {gib(first.params)}, gradients "
             f"{gib(first.grads)}, optimizer state {states}, activations {gib(first.activations)} (bf16)",
             f"    = at most {gib(f.most)} of {gib(f.usable)} usable ({1 - DEVICE_HEADROOM:.0%}): {verdict}",
             f"  GPU-hours: {hours}",
             f"    at {plan.mfu:.0%} MFU, from {plan.mfu_source}"]
    if plan.procs > 1:
        lines.append(_comm_line(plan))
    if plan.measured:
        lines.insert(4, f"    {plan.measured}")
    if math.isfinite(plan.gpu_hours):
        gpus = workers * plan.procs
        lines.append(f"  Wall time on {gpus} GPU(s) ({workers} trial(s) at once): about "
                     f"{_duration(wall_hours(plan, gpus))}")
    return "\n".join(lines)
