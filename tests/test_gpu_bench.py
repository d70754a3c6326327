"""The GPU benchmark's code, run on the CPU at the smallest scale so it cannot rot where CI has no GPU
(its figures there mean nothing, so none is checked beyond being a finite number; tests/test_cuda.py
and `optbench bench --device cuda` run it on a GPU)."""
import json
import math

import pytest
import torch

from bench.cli import main
from bench.model.flops import flops_per_token
from bench.model.scales import get_scale
from bench.perf.gpu import datasheet_peak, format_report, run_gpu_benchmarks, write_report
from bench.run.estimate import seconds_per_token

pytestmark = pytest.mark.usefixtures("two_threads")


@pytest.mark.system  # torch.compile of three models: tens of seconds
def test_every_mode_and_optimizer_step_is_measured_and_the_report_feeds_sweep_estimates(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTBENCH_RESULTS", str(tmp_path))
    report = run_gpu_benchmarks(["cpu-xs"], ["muon", "soap", "lion"], micro_batch=8, repeats=2, vocab=512,
                                peak_n=256, progress=lambda m: None)
    training = report["scales"]["cpu-xs"]["training"]
    # eager and compiled, and (at the first scale) twice the micro-batch; cuDNN attention only on a GPU
    assert {mode: (row["compiled"], row["micro_batch"]) for mode, row in training.items()} == {
        "eager": (False, 8), "compiled": (True, 8), "compiled, micro 16": (True, 16)}
    assert all(math.isfinite(row[figure]) for row in training.values()
               for figure in ("tokens_per_s", "mfu_vs_measured_peak"))
    profile = report["scales"]["cpu-xs"]["profile"]
    assert 0 < len(profile) <= 12 and all(k["kernel"] for k in profile)
    opts = report["scales"]["cpu-xs"]["optimizers"]
    # every optimizer's step ran: a step that raises is reported as an "error" row, not a crash
    assert list(opts) == ["adamw", "muon", "soap", "lion", "soap (every 10)"]
    assert all("error" not in r and math.isfinite(r["step_time_vs_adamw"]) for r in opts.values()), opts
    assert all(name in format_report(report) for name in opts)
    path = write_report(report, str(tmp_path / "gpu.json"))
    assert json.loads(open(path).read())["scales"]["cpu-xs"]["optimizers"]["muon"]["optimizer_step_ms"] > 0
    # a sweep on GPUs estimates its time from the written report
    assert seconds_per_token(get_scale("cpu-xs"), 1, "cuda")[1].startswith("no stored runs")
    write_report(report)
    rate, source = seconds_per_token(get_scale("cpu-xs"), 1, "cuda")
    best = max(r["model_flops_per_s"] for r in training.values())
    assert rate == pytest.approx(flops_per_token(get_scale("cpu-xs")) / best) and "GPU benchmark" in source


@pytest.mark.unit
def test_datasheet_peaks_tell_the_pcie_h100_from_the_sxm_one():
    assert datasheet_peak("NVIDIA H100 PCIe") == 756e12
    assert datasheet_peak("NVIDIA H100 80GB HBM3") == datasheet_peak("NVIDIA H200") == 989e12
    assert datasheet_peak("Some Future GPU") is None


@pytest.mark.integration
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_bench_on_cuda_without_a_gpu_is_one_line_and_exit_2(capsys):
    assert main(["bench", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no GPU is visible" in err and "\n" not in err
