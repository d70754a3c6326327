"""A run killed with SIGKILL and started again resumes from its checkpoint and ends bitwise equal."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.run.spec import RunSpec
from bench.run.train import RunOptions, run

ARGS = ["run", "--optimizer", "adamw", "--scale", "cpu-xs", "--ratio", "0.3", "--threads", "2", "--json"]


def test_killed_run_resumes_from_its_checkpoint_to_the_same_final_loss(tmp_path, store_url):
    env = {**os.environ, "OPTBENCH_RESULTS": str(tmp_path)}
    cmd = [sys.executable, "-m", "bench.cli", *ARGS, "--store", store_url, "--checkpoint-every", "20"]
    ckpt_dir = tmp_path / "checkpoints"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not any(ckpt_dir.glob("*.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = torch_load_step(next(ckpt_dir.glob("*.pt")))
    assert 0 < saved < 96

    resumed = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout)
    straight = run(RunSpec("adamw", "cpu-xs", 0.3, {}), RunOptions(threads=2))
    assert resumed["final_loss"] == straight.final_loss
    assert [tuple(p) for p in resumed["curve"]] == straight.curve
    assert not any(ckpt_dir.glob("*.pt"))  # removed once the run is stored


def torch_load_step(path: Path) -> int:
    import torch

    return torch.load(path, weights_only=False)["step"]
