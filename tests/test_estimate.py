"""Time estimates (bench/run/estimate.py): measured per CPU scale and thread count, cached."""
import json
import math

import pytest

from bench.model.flops import flops_per_token
from bench.model.scales import get_scale
from bench.run.estimate import achieved_flops, run_seconds

pytestmark = pytest.mark.integration


def test_throughput_is_measured_per_scale_and_thread_count_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTBENCH_CACHE", str(tmp_path))
    rate = achieved_flops("cpu-xs", threads=1)
    assert math.isfinite(rate) and rate > 0
    assert json.loads((tmp_path / "throughput.json").read_text()) == {"cpu-xs/1": rate}
    assert achieved_flops("cpu-xs", threads=1) == rate  # read back, not measured again
    scale = get_scale("cpu-xs")  # a run's estimate: its FLOPs at its own scale's rate
    assert run_seconds(scale, 2.0, threads=1) == scale.tokens(2.0) * flops_per_token(scale) / rate
