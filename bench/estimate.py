"""Time estimates on this machine: a short measured training burst gives achieved FLOP/s, cached.

Used by `optbench scales` and the sweep's cost estimate (which prefers stored runs' wall times).
The figure is per process with the given thread count and per CPU scale, since small models run far
below the large ones' FLOP/s (cpu-xs at 40% of cpu-l's). The paper scales are far too slow to
measure on a CPU and take the largest CPU scale's rate, so their CPU estimates give only an order of
magnitude. Evaluation and data loading are not included.
"""
from __future__ import annotations

import json
import os

import torch

from bench.paths import cache_dir
from bench.scales import Scale, get_scale
from bench.timing import VOCAB, model_and_batch, timed_steps


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


LARGEST_CPU_SCALE = "cpu-l"


def flops_per_token(scale: Scale, vocab_size: int = VOCAB) -> float:
    """Training FLOPs per token (Kaplan et al. 2020): 6 x weights (head included) + attention scores."""
    weights = scale.non_embedding_params + vocab_size * scale.hidden
    return 6.0 * weights + 6.0 * scale.layers * scale.seq_len * scale.hidden


def achieved_flops(scale_name: str, threads: int | None = None, refresh: bool = False) -> float:
    """Training FLOP/s of a short AdamW burst at `scale_name` (a paper scale: the largest CPU
    scale's), cached per scale and thread count."""
    scale = get_scale(scale_name)
    if scale.ladder != "cpu":
        scale = get_scale(LARGEST_CPU_SCALE)
    threads = threads or torch.get_num_threads()
    key = f"{scale.name}/{threads}"
    path = cache_dir() / "throughput.json"
    cached = json.loads(path.read_text()) if path.exists() else {}
    if not refresh and key in cached:
        return cached[key]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        value = _measure(scale)
    finally:
        torch.set_num_threads(old)
    cached[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cached))
    return value


def _measure(scale: Scale, steps: int = 5) -> float:
    """FLOP/s at the median of `steps` fused-AdamW training steps, timed as `optbench bench` times
    them (bench.timing), so that a burst of other load during one step does not go into the cache."""
    _, model, x = model_and_batch(scale.name)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    step_s, _, _ = timed_steps(model, opt, x, steps)
    return x.size(0) * scale.seq_len * flops_per_token(scale) / step_s


def run_seconds(scale: Scale, ratio: float, threads: int | None = None) -> float:
    return scale.tokens(ratio) * flops_per_token(scale) / achieved_flops(scale.name, threads)
