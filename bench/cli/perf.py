"""CLI command for the performance benchmark: `bench` (CPU throughput and ceilings, or the GPU bench)."""
from __future__ import annotations

import argparse
import sys

from bench.cli.args import non_negative_int
from bench.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="measure throughput and optimizer overheads (results/bench.json)")
    p.add_argument("--scales", default=None, help="default: cpu-xs,cpu-s,cpu-m,cpu-l (0.1B,0.3B on cuda)")
    p.add_argument("--optimizers", default="all", help="comma-separated names, or all")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="cuda: the paper scales in bf16, eager and compiled (results/bench-gpu.json)")
    p.add_argument("--micro-batch", type=non_negative_int, default=4,
                   help="cuda: sequences per forward/backward (default: 4)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-sweep", action="store_true", help="skip the 1-vs-2-worker sweep measurement")
    p.set_defaults(func=cmd_bench)



def cmd_bench(args: argparse.Namespace) -> int:
    from bench.model.scales import get_scale
    from bench.optimizers.registry import get
    from bench.perf.benchmark import run_benchmarks, write_report
    from bench.perf.goals import format_report

    default = "0.1B,0.3B" if args.device == "cuda" else "cpu-xs,cpu-s,cpu-m,cpu-l"
    scales = [get_scale(s).name for s in (args.scales or default).split(",")]
    names = None if args.optimizers == "all" else [get(n).name for n in args.optimizers.split(",")]
    if args.device == "cuda":
        return _bench_gpu(scales, names, args)
    report = run_benchmarks(scales, names, args.steps, args.threads, sweep=not args.no_sweep,
                            progress=lambda m: print(m, file=sys.stderr))
    print(format_report(report))
    print(f"written to {write_report(report)}")
    return 0


def _bench_gpu(scales: list[str], names: list[str] | None, args: argparse.Namespace) -> int:
    import torch

    from bench.perf.gpu import format_report, run_gpu_benchmarks, write_report

    if not torch.cuda.is_available():
        raise UserError("--device cuda, but no GPU is visible")
    if args.micro_batch < 1:
        raise UserError("--micro-batch must be at least 1 for the GPU benchmark")
    report = run_gpu_benchmarks(scales, names, args.micro_batch, args.steps,
                                progress=lambda m: print(m, file=sys.stderr))
    print(format_report(report))
    print(f"written to {write_report(report)}")
    return 0
