"""The GPU benchmark's code, run on the CPU at the smallest scale so it cannot rot where CI has no GPU
(its figures there mean nothing; tests/test_cuda.py and `optbench bench --device cuda` run it on a GPU)."""
import json

import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.model.flops import flops_per_token
from bench.model.scales import get_scale
from bench.perf.gpu import (
    datasheet_peak,
    format_report,
    run_gpu_benchmarks,
    write_report,
)
from sweeps.plan import seconds_per_token

pytestmark = pytest.mark.usefixtures("two_threads")


def test_report_has_throughput_mfu_and_optimizer_shares(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTBENCH_RESULTS", str(tmp_path))
    report = run_gpu_benchmarks(["cpu-xs"], ["muon", "soap", "lion"], micro_batch=8, repeats=2, vocab=512,
                                peak_n=256, progress=lambda m: None)
    training = report["scales"]["cpu-xs"]["training"]
    # eager and compiled, and (at the first scale) twice the micro-batch; cuDNN attention only on a GPU
    assert set(training) == {"eager", "compiled", "compiled, micro 16"} and training["compiled"]["compiled"]
    for row in training.values():
        assert row["tokens_per_s"] > 0 and 0 < row["mfu_vs_measured_peak"]
        # 32 rows as micro-batches, plus one optimizer step
        passes = 32 // row["micro_batch"]
        step_ms = passes * row["micro_step_ms"] + row["adamw_step_ms"]
        assert row["training_step_s"] == pytest.approx(step_ms / 1000)
    profile = report["scales"]["cpu-xs"]["profile"]
    assert 0 < len(profile) <= 12 and all(k["ms"] > 0 for k in profile)
    assert sum(k["share"] for k in profile) <= 1 + 1e-9
    opts = report["scales"]["cpu-xs"]["optimizers"]
    assert list(opts) == ["adamw", "muon", "soap", "lion", "soap (every 10)"]
    assert opts["adamw"]["step_time_vs_adamw"] == 1.0
    assert all(0 < r["share_of_training_step"] < 1 for r in opts.values())
    assert "muon" in format_report(report)
    path = write_report(report, str(tmp_path / "gpu.json"))
    assert json.loads(open(path).read())["scales"]["cpu-xs"]["optimizers"]["muon"]["optimizer_step_ms"] > 0
    # a sweep on GPUs estimates its time from the written report
    assert seconds_per_token("cpu-xs", 1, "cuda", pd.DataFrame())[1].startswith("no stored runs")
    write_report(report)
    rate, source = seconds_per_token("cpu-xs", 1, "cuda", pd.DataFrame())
    best = max(r["model_flops_per_s"] for r in training.values())
    assert rate == pytest.approx(flops_per_token(get_scale("cpu-xs")) / best) and "GPU benchmark" in source


def test_datasheet_peaks_tell_the_pcie_h100_from_the_sxm_one():
    assert datasheet_peak("NVIDIA H100 PCIe") == 756e12
    assert datasheet_peak("NVIDIA H100 80GB HBM3") == datasheet_peak("NVIDIA H200") == 989e12
    assert datasheet_peak("Some Future GPU") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_bench_on_cuda_without_a_gpu_is_one_line_and_exit_2(capsys):
    assert main(["bench", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no GPU is visible" in err and "\n" not in err
