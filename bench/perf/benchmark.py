"""`optbench bench`: throughput and overhead figures, each a ratio measured in the same run.

- this machine's matrix-multiply peak (fp32 and bf16), the yardstick for everything below;
- training throughput per CPU scale (tokens/s, achieved FLOP/s as a share of that peak, fp32 and
  bf16 autocast);
- each optimizer's step time relative to fused AdamW and as a share of a whole training step, per
  scale, and its optimizer-state memory relative to AdamW's;
- the ceiling at each scale's own shapes: its step's matrix products and attention timed alone
  (bench/perf/ceilings.py), the share of peak that no implementation of those shapes beats here;
- Muon's Newton-Schulz: its time against the time its FLOPs take at its precision's peak, and
  against its batched products timed alone;
- sweep throughput with 1 and 2 workers and Ray's per-trial overhead (bench/perf/throughput.py).
The goals of the performance issue are checked in bench/perf/goals.py. Writes results/bench.json.
Machines are noisy (+-20% run to run): read the ratios, not the seconds.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from bench.model.flops import DEFAULT_VOCAB, flops_per_token
from bench.model.llama import compile_model, head_loss
from bench.model.scales import get_scale
from bench.optimizers.kron import update_fraction
from bench.optimizers.muon import orthogonalise
from bench.optimizers.newton_schulz import ns_dtype
from bench.optimizers.registry import all_optimizers, get
from bench.paths import results_dir
from bench.perf.ceilings import best_time, newton_schulz_matmuls_ms, training_ceiling
from bench.roles import Role
from bench.run.hardware import cpu_model
from bench.run.spec import RunSpec
from bench.run.timing import model_and_batch, timed_steps
from bench.run.train import state_bytes

SOAP_SPARSE_REFRESH = 10  # the SOAP paper's precondition_frequency, reported beside the default 1
NS_STEPS = 5


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """Best-of FLOP/s of an n x n matrix product: the machine's practical peak."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n**3 / best_time(lambda: torch.mm(a, b), repeats)


def build_optimizer(name: str, model, scale_name: str, **overrides):
    """The optimizer with its registry defaults for the scale, `overrides` on top."""
    hp = RunSpec(name, scale_name, hparams=overrides).hparams
    return get(name).build(model.tagged_parameters(), hp, model)


def training_throughput(scale_name: str, steps: int) -> dict[str, Any]:
    """fp32 eager and compiled (RunOptions.compile), and bf16 autocast; each with fused AdamW. The
    compiled row also gives what compiling costs a fresh process (compile_seconds) and the steps
    after which `--compile` has paid for it."""
    out: dict[str, Any] = {}
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    for name, precision, autocast, compiled in (("fp32", "fp32", nullcontext, False),
                                                ("fp32-compiled", "fp32", nullcontext, True),
                                                ("bf16", "bf16", bf16, False)):
        scale, model, x = model_and_batch(scale_name)
        if compiled:  # as a fresh process would: no graphs from the previous scale's shapes
            torch._dynamo.reset()
        loss_fn = compile_model(model) if compiled else head_loss
        opt = build_optimizer("adamw", model, scale_name)
        step_s, _, first_s = timed_steps(model, opt, x, steps, autocast, loss_fn)
        tokens_s = x.size(0) * scale.seq_len / step_s
        flops = tokens_s * flops_per_token(scale, DEFAULT_VOCAB)
        out[name] = {"tokens_per_s": tokens_s, "flops_per_s": flops, "precision": precision,
                     "step_ms": 1000 * step_s}
        if compiled:
            saved_s = out["fp32"]["step_ms"] / 1000 - step_s
            compile_s = compile_seconds(scale_name, torch.get_num_threads())
            out[name]["compile_s"] = compile_s
            out[name]["pays_back_after_steps"] = compile_s / saved_s if saved_s > 0 else None
    return out


def compile_seconds(scale_name: str, threads: int) -> float:
    """What `--compile` costs a run: in a fresh process, its first compiled step less a later one.
    Inductor's on-disk cache is used as this machine has it; a machine's first compiled run, with an
    empty cache, costs several times more (docs/MEASUREMENTS.md)."""
    code = (f"import torch; torch.set_num_threads({threads}); "
            f"from bench.perf.benchmark import _first_step_extra; print(_first_step_extra({scale_name!r}))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(run.stdout.split()[-1])


def _first_step_extra(scale_name: str) -> float:
    _, model, x = model_and_batch(scale_name)
    loss_fn = compile_model(model)
    step_s, _, first_s = timed_steps(model, build_optimizer("adamw", model, scale_name), x, 3, loss_fn=loss_fn)
    return first_s - step_s


def optimizer_overheads(scale_name: str, steps: int, names: list[str]) -> dict[str, Any]:
    """Per optimizer: step time vs fused AdamW, share of a training step, state memory vs AdamW."""
    rows = {name: _overhead(name, scale_name, steps) for name in ["adamw", *[n for n in names if n != "adamw"]]}
    if "soap" in rows:  # its bases are refreshed every step by default; every 10 is the SOAP paper's
        rows[f"soap (every {SOAP_SPARSE_REFRESH})"] = _overhead(
            "soap", scale_name, SOAP_SPARSE_REFRESH, mean=True, precondition_frequency=SOAP_SPARSE_REFRESH)
    if "kron" in rows:
        rows["kron (1x run)"] = _kron_run_average(scale_name, steps, rows["kron"])
    base = rows["adamw"]
    for row in rows.values():
        row["step_time_vs_adamw"] = row["optimizer_step_ms"] / base["optimizer_step_ms"]
        row["state_memory_vs_adamw"] = row["state_bytes"] / max(1, base["state_bytes"])
    return rows


def _overhead(name: str, scale_name: str, steps: int, mean: bool = False, **overrides) -> dict[str, Any]:
    scale, model, x = model_and_batch(scale_name)
    opt = build_optimizer(name, model, scale_name, **overrides)
    step_s, opt_s, _ = timed_steps(model, opt, x, steps, mean=mean, curvature=get(name).needs_curvature_pass)
    return {"optimizer_step_ms": 1000 * opt_s, "training_step_ms": 1000 * step_s,
            "share_of_training_step": opt_s / step_s, "state_bytes": state_bytes(opt)}


def _kron_run_average(scale_name: str, steps: int, fitting: dict[str, Any]) -> dict[str, Any]:
    """Kron's mean step over a whole 1x-Chinchilla run. Its schedule fits the preconditioner factors
    on every step for the first update_prob_flat_start steps, then ever more rarely: the bench's
    early steps (`fitting`) all fit; steps that do not are timed at the schedule's floor (one step
    in 20 fits; the median skips it), and the two are weighted by the schedule's share of fitting
    steps over the run."""
    plain = _overhead("kron", scale_name, steps, update_prob_flat_start=-10**6)
    hp = RunSpec("kron", scale_name).hparams
    share = update_fraction(get_scale(scale_name).steps(1.0, hp["train_batch_size"]),
                            hp["preconditioner_update_probability"], hp["update_prob_flat_start"])
    plain_ms = plain["optimizer_step_ms"]
    opt_ms = plain_ms + share * (fitting["optimizer_step_ms"] - plain_ms)
    training_ms = plain["training_step_ms"] - plain_ms + opt_ms
    return {"optimizer_step_ms": opt_ms, "training_step_ms": training_ms,
            "share_of_training_step": opt_ms / training_ms, "state_bytes": plain["state_bytes"],
            "steps_fitting_factors": share, "step_without_fitting_ms": plain_ms}


def newton_schulz_efficiency(scale_name: str, repeats: int = 10) -> dict[str, Any]:
    """Muon's orthogonalisation of every hidden matrix of the scale (batched by shape, as the
    optimizer runs it): its time, and its FLOPs by the precision each matrix is orthogonalised in
    (newton_schulz.ns_dtype: bf16 from 64-wide matrices up)."""
    _, model, _ = model_and_batch(scale_name)
    grads = [torch.randn_like(t.param) for t in model.tagged_parameters() if t.role == Role.HIDDEN]
    seconds = best_time(lambda: orthogonalise(grads, NS_STEPS, 1e-7), repeats)
    flops = {p: sum(_ns_flops(*g.shape) for g in grads if _precision(g) == p) for p in ("fp32", "bf16")}
    groups = Counter((*sorted(g.shape), ns_dtype(g)) for g in grads)
    matmuls_ms = newton_schulz_matmuls_ms([(n, *key) for key, n in groups.items()], NS_STEPS, repeats)
    return {"matrices": len(grads), "ms": 1000 * seconds, "flops_by_precision": flops,
            "matmuls_alone_ms": matmuls_ms}


def _precision(x: torch.Tensor) -> str:
    return "bf16" if ns_dtype(x) == torch.bfloat16 else "fp32"


def _ns_flops(rows: int, cols: int) -> float:
    """One quintic step on the wide orientation (m <= n): X X^T, A A, (bA + cA^2) X."""
    m, n = min(rows, cols), max(rows, cols)
    return NS_STEPS * (4 * m * m * n + 2 * m**3)


def run_benchmarks(scales: list[str], optimizers: list[str] | None, steps: int, threads: int,
                   sweep: bool = True, progress=print) -> dict[str, Any]:
    from bench.perf.goals import check_goals

    torch.set_num_threads(threads)
    names = optimizers or [o.name for o in all_optimizers()]
    progress("bench: matmul peak")
    before = _peaks()
    report: dict[str, Any] = {"machine": _machine(threads), "scales": {}}
    for scale in scales:
        progress(f"bench: {scale}: training throughput")
        entry = {"training": training_throughput(scale, steps), "ceiling": training_ceiling(scale, DEFAULT_VOCAB)}
        progress(f"bench: {scale}: {len(names)} optimizers")
        entry["optimizers"] = optimizer_overheads(scale, steps, names)
        entry["newton_schulz"] = newton_schulz_efficiency(scale)
        report["scales"][scale] = entry
    # measured before and after the scales, the higher kept: a burst of load during one
    # measurement must not flatter every share of peak
    after = _peaks()
    report["matmul_peak_flops"] = {p: max(before[p], after[p]) for p in before}
    _add_shares(report)
    if sweep:
        report["sweep"] = _sweep_throughput(progress)
    report["goals"] = check_goals(report)
    return report


def _peaks() -> dict[str, float]:
    return {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}


def _add_shares(report: dict[str, Any]) -> None:
    """Training FLOP/s as a share of the peak and of the ceiling (bench/perf/ceilings.py), and
    Newton-Schulz against its FLOPs' time at peak and its products' time alone."""
    peaks = report["matmul_peak_flops"]
    for entry in report["scales"].values():
        ceiling = entry["ceiling"]
        ceiling["share_of_matmul_peak"] = ceiling["flops_per_s"] / peaks["fp32"]
        for row in entry["training"].values():
            row["share_of_matmul_peak"] = row["flops_per_s"] / peaks[row["precision"]]
            if row["precision"] == "fp32":
                row["share_of_ceiling"] = row["flops_per_s"] / ceiling["flops_per_s"]
        ns = entry["newton_schulz"]
        ideal_ms = 1000 * sum(f / peaks[p] for p, f in ns["flops_by_precision"].items())
        ns["ms_at_peak"], ns["times_the_peak_time"] = ideal_ms, ns["ms"] / ideal_ms
        ns["matmuls_alone_times_the_peak_time"] = ns["matmuls_alone_ms"] / ideal_ms


def _machine(threads: int) -> dict[str, Any]:
    return {"threads": threads, "torch": torch.__version__, "cpu": cpu_model(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _sweep_throughput(progress) -> dict[str, Any]:
    from bench.perf.throughput import measure

    progress("bench: sweep throughput with 1 and 2 workers")
    return measure()


def write_report(report: dict[str, Any], path: str | Path | None = None, name: str = "bench.json") -> str:
    """Write the report as JSON to `path`, by default results/`name`."""
    target = Path(path) if path else results_dir() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2))
    return str(target)
