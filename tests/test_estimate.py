"""Time estimates (bench/run/estimate.py): measured per CPU scale and thread count, cached."""
import json
import math
import os

import pytest

from bench.model.scales import get_scale
from bench.run.estimate import achieved_flops, run_seconds, usable_cpus

pytestmark = pytest.mark.integration


def test_throughput_is_measured_per_scale_and_thread_count_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # an idle machine
    rate = achieved_flops("cpu-xs", threads=1)
    assert math.isfinite(rate.flops_per_s) and rate.flops_per_s > 0 and "measured now" in rate.how
    assert json.loads((tmp_path / "throughput.json").read_text()) == {"cpu-xs/1": rate.flops_per_s}
    again = achieved_flops("cpu-xs", threads=1)  # read back, not measured again
    assert again.flops_per_s == rate.flops_per_s and "cached" in again.how
    seconds, how = run_seconds(get_scale("cpu-xs"), 2.0, threads=1)
    assert seconds == 2 * run_seconds(get_scale("cpu-xs"), 1.0, threads=1)[0] and how.startswith(again.how)


def test_a_rate_measured_on_a_busy_machine_is_used_once_and_never_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0 * usable_cpus(), 0.0, 0.0))
    rate = achieved_flops("cpu-xs", threads=1)
    assert rate.flops_per_s > 0 and "busy" in rate.how and "not cached" in rate.how
    assert not (tmp_path / "throughput.json").exists()
