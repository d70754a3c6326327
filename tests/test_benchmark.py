"""`optbench bench` on the smallest scale: every figure present and finite, the findings that hold
on any machine (Muon's state, Kron's schedule at cpu-xs, nothing beats its ceiling or the peak), and
the goals checked against the report. No timing is asserted (that is what the benchmark is for)."""
import json
import math

import pytest

from bench import cli
from bench.perf.goals import HEAVY, check_goals


def _numbers(tree):
    """Every number in a report's nested dicts and lists."""
    if isinstance(tree, dict):
        return [n for v in tree.values() for n in _numbers(v)]
    if isinstance(tree, list):
        return [n for v in tree for n in _numbers(v)]
    return [tree] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


@pytest.mark.system  # two torch.compile runs and every optimizer's steps: tens of seconds
def test_bench_writes_every_figure_and_checks_the_goals(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPTBENCH_RESULTS", str(tmp_path))
    code = cli.main(["bench", "--scales", "cpu-xs", "--optimizers", "adamw,muon,soap,kron", "--steps", "1",
                     "--threads", "1", "--no-sweep"])
    assert code == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    entry = report["scales"]["cpu-xs"]
    assert all(math.isfinite(n) for n in _numbers(report))
    assert list(entry["training"]) == ["fp32", "fp32-compiled", "bf16"]
    assert entry["training"]["fp32-compiled"]["compile_s"] > 0  # its first step compiled the blocks
    assert entry["training"]["fp32"]["share_of_ceiling"] < 1  # the ceiling at its own shapes holds
    # SOAP is also measured refreshing its bases every 10 steps, averaged over those 10, and Kron
    # averaged over a whole run of its schedule (at cpu-xs 1x: all 320 steps fit its factors)
    assert list(entry["optimizers"]) == ["adamw", "muon", "soap", "kron", "soap (every 10)", "kron (1x run)"]
    assert entry["optimizers"]["kron (1x run)"]["steps_fitting_factors"] == 1.0
    assert entry["optimizers"]["muon"]["state_memory_vs_adamw"] < 1  # momentum only on hidden matrices
    ns = entry["newton_schulz"]
    assert ns["matrices"] == 4 * 7 and ns["times_the_peak_time"] > 1  # no faster than its FLOPs at peak
    goals = {g["goal"]: g for g in report["goals"]}
    assert "soap" in HEAVY and goals["cpu-xs soap step, share of a training step"]["target"] == "<= 0.15"
    assert goals["cpu-xs soap (every 10) step, share of a training step"]["target"] == "<= 0.15"
    assert goals["cpu-xs adamw step, share of a training step"]["target"] == "<= 0.05"
    out = capsys.readouterr().out
    assert "goals:" in out and "Newton-Schulz" in out and "ceiling at these shapes" in out


@pytest.mark.unit
def test_a_goal_is_met_or_missed_by_the_measured_value():
    report = {"scales": {"cpu-s": {"training": {"fp32": {"share_of_matmul_peak": 0.5},
                                                "fp32-compiled": {"share_of_matmul_peak": 0.7}},
                                   "optimizers": {"adamw": {"share_of_training_step": 0.02},
                                                  "kron": {"share_of_training_step": 0.2}},
                                   "newton_schulz": {"times_the_peak_time": 1.5}}},
              "sweep": {"one_worker": {"ray_overhead_s": 0.5}, "2_workers": {"ray_overhead_s": 2.5},
                        "speedup_many_vs_one": 1.9}}
    met = {g["goal"]: g["met"] for g in check_goals(report)}
    assert met == {"cpu-s training (fp32-compiled), share of fp32 matmul peak": True,
                   "cpu-s adamw step, share of a training step": True,
                   "cpu-s kron step, share of a training step": False,
                   "cpu-s Newton-Schulz, times its FLOPs' time at peak": True,
                   "sweep trials/hour, 2 workers vs 1": True,
                   "Ray overhead per trial, s": False}
