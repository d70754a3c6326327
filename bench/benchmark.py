"""`optbench bench`: throughput and overhead figures, each a ratio measured in the same run.

- this machine's matrix-multiply peak (fp32 and bf16), the yardstick for everything below;
- training throughput per CPU scale (tokens/s, achieved FLOP/s as a share of that peak, fp32 and
  bf16 autocast);
- each optimizer's step time relative to fused AdamW, and as a share of a whole training step, per
  scale, and its optimizer-state memory relative to AdamW's;
- sweep throughput with 1 and 2 workers (sweeps/ provides it, when present).
Writes results/bench.json. Machines are noisy (+-20% run to run): read the ratios, not the seconds.
"""
from __future__ import annotations

import json
import time
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from bench.estimate import flops_per_token
from bench.model import LlamaModel
from bench.optimizers.registry import all_optimizers, get
from bench.paths import results_dir
from bench.scales import get_scale
from bench.spec import RunSpec

VOCAB = 512  # the default bpe-512 tokenizer's size


def matmul_peak(dtype: torch.dtype, n: int = 1024, repeats: int = 20) -> float:
    """Best-of FLOP/s of an n x n matrix product: the machine's practical peak."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _model_and_batch(scale_name: str, batch: int):
    scale = get_scale(scale_name)
    torch.manual_seed(0)
    model = LlamaModel(scale, VOCAB)
    x = torch.randint(0, VOCAB, (batch, scale.seq_len + 1), generator=torch.Generator().manual_seed(0))
    return scale, model, x


def _timed_steps(model, opt, x, steps: int, autocast=nullcontext) -> tuple[float, float]:
    """(median seconds per training step, median seconds per optimizer step) after one warm-up."""
    total, inner = [], []
    curvature = getattr(opt, "curvature_step", None)
    for i in range(steps + 1):
        t0 = time.perf_counter()
        if curvature is not None:
            curvature(i, model, x[:, :-1])
        with autocast():
            loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1).float(), x[:, 1:].flatten())
        loss.backward()
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if i:
            total.append(time.perf_counter() - t0)
            inner.append(t2 - t1)
    return sorted(total)[len(total) // 2], sorted(inner)[len(inner) // 2]


def _build(name: str, model, scale_name: str):
    hp = RunSpec(name, scale_name).hparams
    return get(name).build(model.tagged_parameters(), hp, model)


def training_throughput(scale_name: str, steps: int, peaks: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for precision, autocast in (("fp32", nullcontext),
                                ("bf16", lambda: torch.autocast("cpu", dtype=torch.bfloat16))):
        scale, model, x = _model_and_batch(scale_name, get_scale(scale_name).default_batch)
        opt = _build("adamw", model, scale_name)
        step_s, _ = _timed_steps(model, opt, x, steps, autocast)
        tokens_s = x.size(0) * scale.seq_len / step_s
        flops = tokens_s * flops_per_token(scale, VOCAB)
        out[precision] = {"tokens_per_s": tokens_s, "flops_per_s": flops,
                          "share_of_matmul_peak": flops / peaks[precision]}
    return out


def optimizer_overheads(scale_name: str, steps: int, names: list[str]) -> dict[str, Any]:
    """Per optimizer: step time vs fused AdamW, share of a training step, state memory vs AdamW."""
    rows: dict[str, Any] = {}
    for name in ["adamw", *[n for n in names if n != "adamw"]]:
        scale, model, x = _model_and_batch(scale_name, get_scale(scale_name).default_batch)
        opt = _build(name, model, scale_name)
        step_s, opt_s = _timed_steps(model, opt, x, steps)
        rows[name] = {"optimizer_step_ms": 1000 * opt_s, "share_of_training_step": opt_s / step_s,
                      "state_bytes": _state_bytes(opt)}
    base = rows["adamw"]
    for row in rows.values():
        row["step_time_vs_adamw"] = row["optimizer_step_ms"] / base["optimizer_step_ms"]
        row["state_memory_vs_adamw"] = row["state_bytes"] / max(1, base["state_bytes"])
    return rows


def _state_bytes(opt) -> int:
    return sum(v.numel() * v.element_size() for s in opt.state_dict()["state"].values()
               for v in s.values() if torch.is_tensor(v))


def run_benchmarks(scales: list[str], optimizers: list[str] | None, steps: int, threads: int,
                   sweep: bool = True, progress=print) -> dict[str, Any]:
    torch.set_num_threads(threads)
    names = optimizers or [o.name for o in all_optimizers()]
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    report: dict[str, Any] = {"threads": threads, "matmul_peak_flops": peaks, "scales": {}}
    for scale in scales:
        progress(f"bench: {scale}: training throughput")
        entry = {"training": training_throughput(scale, steps, peaks)}
        progress(f"bench: {scale}: {len(names)} optimizers")
        entry["optimizers"] = optimizer_overheads(scale, steps, names)
        report["scales"][scale] = entry
    if sweep:
        report["sweep"] = _sweep_throughput(progress)
    return report


def _sweep_throughput(progress) -> dict[str, Any]:
    try:
        from sweeps.throughput import measure
    except ImportError:
        return {"skipped": "sweeps.throughput is not available"}
    progress("bench: sweep throughput with 1 and 2 workers")
    return measure()


def write_report(report: dict[str, Any]) -> str:
    path = results_dir() / "bench.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    return str(path)


def format_report(report: dict[str, Any]) -> str:
    peaks = report["matmul_peak_flops"]
    lines = [f"matmul peak: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s "
             f"({report['threads']} threads)"]
    for scale, entry in report["scales"].items():
        tr = entry["training"]
        lines.append(f"\n{scale}: fp32 {tr['fp32']['tokens_per_s']:,.0f} tok/s "
                     f"({tr['fp32']['share_of_matmul_peak']:.0%} of peak), bf16 {tr['bf16']['tokens_per_s']:,.0f} "
                     f"tok/s ({tr['bf16']['share_of_matmul_peak']:.0%} of bf16 peak)")
        lines.append(f"  {'optimizer':12} {'step ms':>8} {'vs adamw':>9} {'% of step':>10} {'state vs adamw':>15}")
        for name, row in entry["optimizers"].items():
            lines.append(f"  {name:12} {row['optimizer_step_ms']:8.2f} {row['step_time_vs_adamw']:9.2f} "
                         f"{row['share_of_training_step']:10.1%} {row['state_memory_vs_adamw']:15.2f}")
    sweep = report.get("sweep")
    if sweep:
        lines.append(f"\nsweep: {json.dumps(sweep)}")
    return "\n".join(lines)
