"""Time estimates on this machine: a short measured training burst gives achieved FLOP/s, cached.

Used by `optbench scales` and the sweep's cost estimate. The figure is per process with the given
thread count; runs at other scales are estimated from their FLOPs at that rate (small models run
below it, large ones near it, so estimates for the smallest scales are optimistic).
"""
from __future__ import annotations

import json
import os
import time

import torch
import torch.nn.functional as F

from bench.model import LlamaModel
from bench.paths import cache_dir
from bench.scales import Scale, get_scale

def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


CALIBRATION_SCALE = "cpu-s"
CALIBRATION_VOCAB = 512


def flops_per_token(scale: Scale, vocab_size: int = CALIBRATION_VOCAB) -> float:
    """Training FLOPs per token (Kaplan et al. 2020): 6 x weights (head included) + attention scores."""
    weights = scale.non_embedding_params + vocab_size * scale.hidden
    return 6.0 * weights + 6.0 * scale.layers * scale.seq_len * scale.hidden


def achieved_flops(threads: int | None = None, refresh: bool = False) -> float:
    """Training FLOP/s of a short AdamW burst on the calibration scale (cached per thread count)."""
    threads = threads or torch.get_num_threads()
    path = cache_dir() / "throughput.json"
    cached = json.loads(path.read_text()) if path.exists() else {}
    if not refresh and str(threads) in cached:
        return cached[str(threads)]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        value = _measure(get_scale(CALIBRATION_SCALE))
    finally:
        torch.set_num_threads(old)
    cached[str(threads)] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cached))
    return value


def _measure(scale: Scale, steps: int = 4, batch: int = 32) -> float:
    torch.manual_seed(0)
    model = LlamaModel(scale, CALIBRATION_VOCAB)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x = torch.randint(0, CALIBRATION_VOCAB, (batch, scale.seq_len + 1))
    for i in range(steps + 1):
        if i == 1:  # the first step warms up allocators and kernels
            start = time.perf_counter()
        loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - start
    return steps * batch * scale.seq_len * flops_per_token(scale) / elapsed


def run_seconds(scale: Scale, ratio: float, threads: int | None = None) -> float:
    return scale.tokens(ratio) * flops_per_token(scale) / achieved_flops(threads)
