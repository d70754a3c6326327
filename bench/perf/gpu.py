"""`optbench bench --device cuda`: the GPU figures of the performance goals.

- the card's bf16 matrix-multiply peak, measured (8192^3 products) beside its datasheet figure;
- training throughput of the paper scales in bf16 autocast with fused AdamW and SDPA attention,
  eager and with torch.compile'd blocks: tokens/s and model FLOPs utilisation (MFU, the model's
  training FLOPs per token from bench.model.flops over the datasheet peak, and over the measured one);
- each optimizer's step time against fused AdamW and as a share of a whole training step.

A training step is the paper's batch (128 x 4096 tokens) as micro-batches whose gradients
accumulate, then one optimizer step; it is timed as micro-batch passes x count + the optimizer step,
each the median of several, with CUDA events. Tokens are random ids of the study's vocabulary (the
Llama-3 tokenizer's 128,256), since throughput does not depend on the text.
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from typing import Any, Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.model.flops import flops_per_token
from bench.model.llama import LlamaModel, compile_model, head_loss
from bench.model.scales import get_scale
from bench.optimizers.registry import all_optimizers
from bench.perf.benchmark import SOAP_SPARSE_REFRESH, build_optimizer
from bench.perf.benchmark import write_report as bench_write_report
from bench.run.step import gradients

LLAMA3_VOCAB = 128_256
# Dense bf16 tensor-core peaks from NVIDIA's datasheets (FLOP/s), by a substring of the device name;
# the first match wins, so the PCIe H100 is listed before the SXM one.
DATASHEET_BF16 = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
                  ("A100", 312e12), ("L40S", 362e12), ("A10G", 70e12)]


def _time(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    """Median seconds of fn() over `repeats` calls after warm-up calls; on a GPU timed with CUDA
    events (the work is asynchronous), elsewhere with the host clock."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if not torch.cuda.is_available():
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


def _device() -> torch.device:
    """The GPU; the CPU only so that tests can run this module's code on a machine without one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def matmul_peak(n: int = 8192) -> float:
    """bf16 FLOP/s of an n^3 product on random data (zeros run faster than real data)."""
    a, b = (torch.randn(n, n, device=_device(), dtype=torch.bfloat16) for _ in range(2))
    return 2 * n**3 / _time(lambda: a @ b, repeats=10, warmup=3)


def datasheet_peak(name: str) -> float | None:
    return next((peak for key, peak in DATASHEET_BF16 if key in name), None)


def _model(scale_name: str, compiled: bool, vocab: int):
    """The model and its loss function, compiled as bench.run.train does with RunOptions.compile."""
    torch.manual_seed(0)
    with _device():  # initialised where it runs: 0.3B with its vocabulary is 0.4B weights
        model = LlamaModel(get_scale(scale_name), vocab)
    return model, compile_model(model) if compiled else head_loss


def _tokens(scale_name: str, rows: int, vocab: int) -> torch.Tensor:
    scale = get_scale(scale_name)
    g = torch.Generator(device=_device()).manual_seed(0)
    return torch.randint(0, vocab, (rows, scale.seq_len + 1), device=_device(), generator=g)


def _micro_step(model: LlamaModel, loss_fn, batch: torch.Tensor, attention=None) -> None:
    """One micro-batch's forward and backward, as the train step runs them (bench.run.step)."""
    backends = sdpa_kernel(attention) if attention is not None else nullcontext()
    with backends:
        gradients(model, loss_fn, batch[:, :-1], batch[:, 1:],
                  autocast=torch.autocast(_device().type, dtype=torch.bfloat16))


def training_throughput(scale_name: str, micro_batch: int, compiled: bool, repeats: int,
                        vocab: int = LLAMA3_VOCAB, attention=None) -> dict[str, Any]:
    """tokens/s and MFU of the scale's batch as micro-batches plus one fused AdamW step
    (`attention`: an SDPA backend to force, else torch's choice)."""
    scale = get_scale(scale_name)
    model, loss_fn = _model(scale_name, compiled, vocab)
    opt = build_optimizer("adamw", model, scale_name)
    batch = _tokens(scale_name, micro_batch, vocab)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    micro_s = _time(lambda: _micro_step(model, loss_fn, batch, attention), repeats, warmup=3)
    opt_s = _time(opt.step, repeats)
    batch_rows = scale.default_batch
    step_s = micro_s * batch_rows / micro_batch + opt_s
    tokens_s = batch_rows * scale.seq_len / step_s
    return {"micro_batch": micro_batch, "compiled": compiled, "micro_step_ms": 1000 * micro_s,
            "adamw_step_ms": 1000 * opt_s, "training_step_s": step_s, "tokens_per_s": tokens_s,
            "model_flops_per_s": tokens_s * flops_per_token(scale, vocab),
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0}


def optimizer_steps(scale_name: str, names: list[str], passes_s: float, repeats: int,
                    vocab: int = LLAMA3_VOCAB) -> dict[str, Any]:
    """Each optimizer's step on random gradients: ms, vs fused AdamW, and its share of a training
    step whose forward/backward passes take `passes_s`."""
    def row(name: str, every: int = 0) -> dict[str, Any]:
        try:
            opt_s = _step_time(name, scale_name, repeats, vocab, every)
        except Exception as e:  # a broken CUDA path is a finding, not a crash of the whole bench
            return {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the last optimizer's state is garbage by now
        return {"optimizer_step_ms": 1000 * opt_s, "share_of_training_step": opt_s / (passes_s + opt_s)}

    rows = {name: row(name) for name in ["adamw", *[n for n in names if n != "adamw"]]}
    if "optimizer_step_ms" in rows.get("soap", {}):  # also refreshing every 10 steps, as the SOAP paper
        rows[f"soap (every {SOAP_SPARSE_REFRESH})"] = row("soap", SOAP_SPARSE_REFRESH)
    base = rows["adamw"]["optimizer_step_ms"]
    for row in rows.values():
        if "error" not in row:
            row["step_time_vs_adamw"] = row["optimizer_step_ms"] / base
    return rows


def _step_time(name: str, scale_name: str, repeats: int, vocab: int, every: int = 0) -> float:
    """Median seconds of a step on random gradients; with `every`, SOAP refreshing its bases every
    that many steps, timed as the mean over one such period."""
    model, _ = _model(scale_name, False, vocab)
    opt = build_optimizer(name, model, scale_name, **({"precondition_frequency": every} if every else {}))
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    if every:
        return _time(lambda: [opt.step() for _ in range(every)], repeats=2, warmup=1) / every
    return _time(opt.step, repeats, warmup=3)  # the warm-up builds state (SOAP's bases)


def run_gpu_benchmarks(scales: list[str], optimizers: list[str] | None, micro_batch: int, repeats: int,
                       vocab: int = LLAMA3_VOCAB, peak_n: int = 8192, progress=print) -> dict[str, Any]:
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    progress(f"bench: {name}: bf16 matmul peak")
    report: dict[str, Any] = {"machine": {"device": name, "torch": torch.__version__},
                              "matmul_peak_bf16_flops": matmul_peak(peak_n),
                              "datasheet_peak_bf16_flops": datasheet_peak(name), "scales": {}}
    names = optimizers or [o.name for o in all_optimizers()]
    for scale in scales:
        entry: dict[str, Any] = {"training": {}}
        for compiled in (False, True):
            mode = "compiled" if compiled else "eager"
            progress(f"bench: {scale}: training, {mode}")
            entry["training"][mode] = training_throughput(scale, micro_batch, compiled, repeats, vocab)
        report["scales"][scale] = entry
    first = scales[0]
    progress(f"bench: {first}: variants and a kernel profile")
    report["scales"][first]["training"].update(_variants(first, micro_batch, repeats, vocab))
    report["scales"][first]["profile"] = kernel_profile(first, micro_batch, vocab)
    progress(f"bench: {first}: {len(names)} optimizer steps")
    passes_s = min(r["training_step_s"] - r["adamw_step_ms"] / 1000
                   for r in report["scales"][first]["training"].values())
    report["scales"][first]["optimizers"] = optimizer_steps(first, names, passes_s, repeats, vocab)
    if "soap" in names:
        report["scales"][first]["soap_profile"] = step_profile("soap", first, vocab)
    _add_mfu(report)
    return report


def _variants(scale: str, micro_batch: int, repeats: int, vocab: int) -> dict[str, Any]:
    """What else would move throughput: twice the micro-batch, and cuDNN's attention (GPU only)."""
    rows: dict[str, Any] = {}
    try:
        rows[f"compiled, micro {2 * micro_batch}"] = training_throughput(scale, 2 * micro_batch, True,
                                                                         repeats, vocab)
    except torch.OutOfMemoryError:
        rows[f"compiled, micro {2 * micro_batch}"] = {"error": "out of memory"}
    if torch.cuda.is_available():
        rows["eager, cudnn attention"] = training_throughput(scale, micro_batch, False, repeats, vocab,
                                                             SDPBackend.CUDNN_ATTENTION)
    return rows


def kernel_profile(scale: str, micro_batch: int, vocab: int, top: int = 12) -> list[dict[str, Any]]:
    """The compiled micro-step's most expensive kernels (self time per micro-step, share of all)."""
    from torch.profiler import ProfilerActivity, profile

    model, loss_fn = _model(scale, True, vocab)
    batch = _tokens(scale, micro_batch, vocab)
    for _ in range(2):
        _micro_step(model, loss_fn, batch)
    gpu = torch.cuda.is_available()
    with profile(activities=[ProfilerActivity.CUDA if gpu else ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            _micro_step(model, loss_fn, batch)
        if gpu:
            torch.cuda.synchronize()
    field = "self_device_time_total" if gpu else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, field) > 0]
    total = sum(getattr(e, field) for e in events)
    events.sort(key=lambda e: getattr(e, field), reverse=True)
    return [{"kernel": e.key[:90], "ms": getattr(e, field) / 2000, "share": getattr(e, field) / total}
            for e in events[:top]]


def step_profile(name: str, scale: str, vocab: int, top: int = 8) -> list[dict[str, Any]]:
    """Where one optimizer step spends its time: the torch ops with the most host time (inclusive;
    a loop of small kernels is bound by the host), with their GPU time beside it."""
    from torch.profiler import ProfilerActivity, profile

    model, _ = _model(scale, False, vocab)
    opt = build_optimizer(name, model, scale)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    opt.step()
    gpu = torch.cuda.is_available()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])) as prof:
        opt.step()
        if gpu:
            torch.cuda.synchronize()
    ops = sorted((e for e in prof.key_averages() if e.key.startswith("aten::")),
                 key=lambda e: e.cpu_time_total, reverse=True)
    return [{"op": e.key, "calls": e.count, "host_ms": e.cpu_time_total / 1000,
             "device_ms": getattr(e, "device_time_total", 0) / 1000 if gpu else 0.0} for e in ops[:top]]


def _add_mfu(report: dict[str, Any]) -> None:
    for entry in report["scales"].values():
        for row in entry["training"].values():
            if "error" in row:
                continue
            row["mfu_vs_measured_peak"] = row["model_flops_per_s"] / report["matmul_peak_bf16_flops"]
            if report["datasheet_peak_bf16_flops"]:
                row["mfu"] = row["model_flops_per_s"] / report["datasheet_peak_bf16_flops"]


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['machine']['device']}, torch {report['machine']['torch']}: bf16 matmul peak "
             f"{report['matmul_peak_bf16_flops'] / 1e12:.0f} TFLOP/s measured, "
             f"{(report['datasheet_peak_bf16_flops'] or 0) / 1e12:.0f} datasheet",
             f"{'scale':6} {'mode':24} {'micro':>5} {'tok/s':>10} {'MFU':>6} {'vs meas.':>8} {'GiB':>5}"]
    for scale, entry in report["scales"].items():
        for mode, r in entry["training"].items():
            if "error" in r:
                lines.append(f"{scale:6} {mode:24} {r['error']}")
                continue
            lines.append(f"{scale:6} {mode:24} {r['micro_batch']:5} {r['tokens_per_s']:10,.0f} "
                         f"{r.get('mfu', float('nan')):6.1%} {r['mfu_vs_measured_peak']:8.1%} "
                         f"{r['peak_memory_gib']:5.1f}")
        for k in entry.get("profile", []):
            lines.append(f"  {k['share']:6.1%} {k['ms']:8.2f} ms  {k['kernel']}")
        for op in entry.get("soap_profile", []):
            lines.append(f"  soap: {op['op']:32} x{op['calls']:<6} host {op['host_ms']:8.1f} ms  "
                         f"device {op['device_ms']:8.1f} ms")
        for name, r in entry.get("optimizers", {}).items():
            lines.append(f"  {name:12} " + (r["error"] if "error" in r else
                         f"{r['optimizer_step_ms']:8.2f} ms  {r['step_time_vs_adamw']:6.2f}x AdamW  "
                         f"{r['share_of_training_step']:6.2%} of a step"))
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: str | None = None) -> str:
    return bench_write_report(report, path, "bench-gpu.json")


def main(argv: list[str] | None = None) -> int:
    """For machines with a GPU but without the sweep stack (Ray, Optuna): only torch is needed."""
    p = argparse.ArgumentParser(prog="python -m bench.perf.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--scales", default="0.1B,0.3B")
    p.add_argument("--optimizers", default="all")
    p.add_argument("--micro-batch", type=int, default=4, help="sequences per forward/backward")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None, help="default: results/bench-gpu.json")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA device is visible", file=sys.stderr)
        return 2
    names = None if args.optimizers == "all" else args.optimizers.split(",")
    report = run_gpu_benchmarks(args.scales.split(","), names, args.micro_batch, args.repeats,
                                progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_report(report))
    print(f"written to {write_report(report, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
