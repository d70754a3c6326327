"""A run killed with SIGKILL and started again resumes from its checkpoint and ends bitwise equal to
a run never interrupted.

The first run cannot finish before it is killed: a fault (OPTBENCH_FAULT, bench/run/faults.py) makes
its last step raise. So whether the kill or the fault ends it, it leaves the same checkpoint, the
last one before that step, and nothing here depends on timing."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.model.scales import get_scale
from bench.run.spec import RunSpec
from bench.run.train import RunOptions, run

pytestmark = pytest.mark.system

SPEC = RunSpec("adamw", "cpu-xs", 0.2)
EVERY = 40  # --checkpoint-every: a multiple of the train loop's log_every (10), so taken as given
STEPS = get_scale(SPEC.scale).steps(SPEC.ratio, SPEC.hparams["train_batch_size"])
CRASH = STEPS - 1  # the first run's step that raises
SAVED = CRASH // EVERY * EVERY  # its last checkpoint
ARGS = ["run", "--optimizer", SPEC.optimizer, "--scale", SPEC.scale, "--ratio", str(SPEC.ratio), "--threads", "2",
        "--json", "--checkpoint-every", str(EVERY)]


def test_killed_run_resumes_from_its_checkpoint_to_the_same_final_loss(tmp_path, store_url, results_dir):
    straight = run(SPEC, RunOptions(threads=2))  # also builds the session's token cache, shared below
    env = {**{k: v for k, v in os.environ.items() if k != "OPTBENCH_FAULT"},
           "OPTBENCH_RESULTS": str(tmp_path), "OPTBENCH_CACHE": str(results_dir / "cache")}
    cmd = [sys.executable, "-m", "bench.cli", *ARGS]
    checkpoint = tmp_path / "checkpoints" / f"{SPEC.key}.pt"
    log = tmp_path / "first.log"
    with log.open("w") as err:  # its own store: a run the fault ends is stored there as failed
        first = subprocess.Popen([*cmd, "--store", f"sqlite:///{tmp_path / 'first.db'}"], stdout=subprocess.DEVNULL,
                                 stderr=err, env={**env, "OPTBENCH_FAULT": f"raise@{CRASH}"})
        deadline = time.monotonic() + 600
        while True:
            ended = first.poll() is not None  # looked at before the checkpoint: it may end right after it
            if _step(checkpoint) == SAVED:
                break
            assert not ended and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        first.kill()
        assert first.wait() in (-signal.SIGKILL, 1)  # killed, or failed at CRASH: never finished

    # A mark that only a resumed run can carry: its curve so far comes from the checkpoint.
    state = torch.load(checkpoint, weights_only=False)
    state["curve"][0] = (state["curve"][0][0], -1.0)
    torch.save(state, checkpoint)
    second = subprocess.run([*cmd, "--store", store_url], env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    resumed = json.loads(second.stdout)
    assert resumed["final_loss"] == straight.final_loss
    assert [tuple(p) for p in resumed["curve"]] == [(straight.curve[0][0], -1.0), *straight.curve[1:]]
    assert not checkpoint.exists()  # removed once the run is stored


def _step(checkpoint: Path) -> int | None:
    """The step a checkpoint was taken after; None while there is none (it is replaced atomically)."""
    return torch.load(checkpoint, weights_only=False)["step"] if checkpoint.exists() else None
