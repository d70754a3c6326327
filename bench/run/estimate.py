"""Time estimates on this machine: a short measured training burst gives achieved FLOP/s, cached.

`seconds_per_token` is the one source of every estimate: `optbench scales` and the sweep's cost
estimate (which prefers stored runs' wall times).
The figure is per process with the given thread count and per CPU scale, since small models run far
below the large ones' FLOP/s (cpu-xs at 40% of cpu-l's). The paper scales are far too slow to
measure on a CPU and take the largest CPU scale's rate, so their CPU estimates give only an order of
magnitude. Evaluation and data loading are not included. A burst measured while the machine is
busy (its load average above its CPUs) would understate this machine, so it is used once and never
cached; every figure says how it was obtained.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from typing import NamedTuple, Sequence

import torch

from bench.model.flops import flops_per_token
from bench.model.scales import SCALES, Scale, get_scale
from bench.paths import cache_dir, results_dir
from bench.run.timing import model_and_batch, timed_steps


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


LARGEST_CPU_SCALE = "cpu-l"


class Rate(NamedTuple):
    """Training FLOP/s on this machine at the CPU scale measured, and how it was obtained."""

    flops_per_s: float
    scale: str  # the scale measured (a paper scale's estimate takes the largest CPU scale's)
    how: str


def achieved_flops(scale_name: str, threads: int | None = None, refresh: bool = False) -> Rate:
    """Training FLOP/s of a short AdamW burst at `scale_name` (a paper scale: the largest CPU
    scale's), cached per scale and thread count unless the machine was busy while it ran."""
    scale = get_scale(scale_name)
    if scale.ladder != "cpu":
        scale = get_scale(LARGEST_CPU_SCALE)
    threads = threads or torch.get_num_threads()
    key = f"{scale.name}/{threads}"
    burst = f"a training burst at {scale.name} on {threads} thread(s)"
    path = cache_dir() / "throughput.json"
    cached = json.loads(path.read_text()) if path.exists() else {}
    if not refresh and key in cached:
        return Rate(cached[key], scale.name, f"{burst}, measured earlier on this machine (cached in {path})")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        load_before = os.getloadavg()[0]
        value = _measure(scale)
        load = max(load_before, os.getloadavg()[0])
    finally:
        torch.set_num_threads(old)
    if load > usable_cpus():
        return Rate(value, scale.name, f"{burst}, measured now while the machine was busy (load {load:.1f} on "
                           f"{usable_cpus()} CPUs): likely too slow, not cached")
    cached[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cached))
    return Rate(value, scale.name, f"{burst}, measured now (load {load:.1f} on {usable_cpus()} CPUs) and cached")


def _measure(scale: Scale, steps: int = 5) -> float:
    """FLOP/s at the median of `steps` fused-AdamW training steps, timed as `optbench bench` times
    them (bench.run.timing), so that a burst of other load during one step does not go into the cache."""
    _, model, x = model_and_batch(scale.name)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    step_s, _, _ = timed_steps(model, opt, x, steps)
    return x.size(0) * scale.seq_len * flops_per_token(scale) / step_s


def seconds_per_token(scale: Scale, threads: int | None = None, device: str = "cpu",
                      stored_rates: Sequence[float] = ()) -> tuple[float, str]:
    """Seconds per training token at `scale` here, and where the figure comes from: the one source
    of every time estimate (`optbench scales`, a sweep's plan). `stored_rates` are stored runs'
    seconds per token at this scale (loading and evaluation included), preferred when there are
    any; else the GPU benchmark (cuda) or a measured training burst (cpu) of the nearest ladder
    scale's Llama, at this shape's FLOPs."""
    if stored_rates:
        return (statistics.median(stored_rates),
                f"the median of {len(stored_rates)} stored run(s) at {scale.name}, loading and evaluation included")
    flops, measured_at = flops_per_token(scale), _nearest_ladder_scale(scale)
    if device == "cuda":
        measured = measured_gpu_flops(measured_at)
        if measured is None:
            return math.nan, "no stored runs at this scale and no GPU throughput measured (make bench-gpu)"
        return flops / measured[0], measured[1]
    rate = achieved_flops(measured_at, threads)
    return (flops / rate.flops_per_s, f"{rate.how}: {rate.flops_per_s / 1e9:.1f} GFLOP/s per process; "
            "evaluation and data loading not included")


def run_seconds(scale: Scale, ratio: float, threads: int | None = None) -> tuple[float, str]:
    """Seconds of training for a ratio-x budget at `scale` here (no stored runs), and their source."""
    per_token, how = seconds_per_token(scale, threads)
    return scale.tokens(ratio) * per_token, how


def _nearest_ladder_scale(scale: Scale) -> str:
    """The ladder scale of `scale`'s name, or for a shape of the user's own the one nearest in
    non-embedding parameters (a rate measured there is an order of magnitude)."""
    if scale.name in SCALES:
        return scale.name
    return min(SCALES.values(), key=lambda s: abs(math.log(s.non_embedding_params / scale.non_embedding_params))).name


def measured_gpu_flops(scale: str) -> tuple[float, str] | None:
    """The best training FLOP/s results/bench-gpu.json holds for `scale` (else for its largest
    measured scale, which underrates a larger model), and where the figure comes from."""
    path = results_dir() / "bench-gpu.json"
    try:
        report = json.loads(path.read_text())
        measured = {name: max(r["model_flops_per_s"] for r in entry["training"].values() if "error" not in r)
                    for name, entry in report["scales"].items()}
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: no estimate
        return None
    if not measured:
        return None
    name = scale if scale in measured else max(measured, key=lambda n: get_scale(n).non_embedding_params)
    return measured[name], (f"the GPU benchmark in {path} ({report['machine']['device']}, best mode at {name}: "
                            f"{measured[name] / 1e12:.0f} TFLOP/s)")


DEFAULT_MFU = 0.40  # a GPU plan's model FLOPs utilisation when none is measured here


def planned_mfu() -> tuple[float, str]:
    """The MFU a GPU plan assumes, and its source: the best training row of results/bench-gpu.json
    (model FLOPs over the datasheet peak of the card it ran on), else DEFAULT_MFU."""
    path = results_dir() / "bench-gpu.json"
    try:
        report = json.loads(path.read_text())
        rows = [(r["mfu"], mode, name) for name, entry in report["scales"].items()
                for mode, r in entry["training"].items() if "error" not in r and r.get("mfu")]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none yet, or unreadable
        rows = []
    if not rows:
        return DEFAULT_MFU, f"a default of {DEFAULT_MFU:.0%} (no GPU benchmark in {path}; make bench-gpu measures one)"
    mfu, mode, name = max(rows)
    return mfu, f"the best measured in {path} ({report['machine']['device']}, {mode} at {name})"
