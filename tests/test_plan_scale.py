"""The plan tells the truth at every scale (issue #18): a CUDA plan from a machine without a GPU,
the refusal of a sweep that cannot finish on what it sees, and the memory arithmetic against real
models and optimizers (bench.run.memory, sweeps.capacity)."""
import re

import pytest
import torch

from bench.cli import main
from bench.model.build import build_model
from bench.model.scales import get_scale, resolve_model
from bench.optimizers.registry import get
from bench.run import estimate
from bench.run.gpus import KNOWN
from bench.run.memory import optimizer_state_bytes, process_memory
from bench.run.spec import RunSpec
from bench.run.step import train_step
from bench.store.database import ResultStore
from sweeps import capacity

pytestmark = pytest.mark.integration

PLAN_1_2B = ["sweep", "--scale", "1.2B", "--device", "cuda", "--dry-run", "--optimizers", "adamw,muon",
             "--ratios", "1"]


@pytest.fixture
def results(tmp_path, monkeypatch):
    """A results folder of the test's own, and a fixed CPU rate in place of the measured burst (the
    0.1B plan's time is then days, and nothing is measured while the machine is busy)."""
    monkeypatch.setenv("OPTBENCH_RESULTS", str(tmp_path))
    monkeypatch.setattr(estimate, "_measure", lambda scale, steps=5: 5e9)
    return tmp_path


def _nothing_stored(store_url, results) -> bool:
    import ray

    return (len(ResultStore(store_url).frame()) == 0 and not (results / "optuna.journal").exists()
            and not ray.is_initialized())


@pytest.mark.skipif(torch.cuda.is_available(), reason="plans for a GPU this machine does not have")
@pytest.mark.parametrize("extra, per_trial, parallel", [([], 1, "ddp"),
                                                         (["--procs-per-trial", "8", "--parallel", "fsdp"], 8, "fsdp"),
                                                         (["--procs-per-trial", "8"], 8, "ddp")])
def test_1_2b_cuda_dry_run_without_a_gpu_prints_the_gpu_block(extra, per_trial, parallel, results, store_url, capsys):
    assert main([*PLAN_1_2B, *extra, "--store", store_url]) == 0
    out = capsys.readouterr().out
    assert "adamw 1x" in out and "Cost (at most): 16 runs" in out  # the plan's lines kept
    assert "On CUDA: H100 (80.0 GiB, 989 TFLOP/s dense bf16; datasheet)" in out
    assert f"GPUs per trial: {per_trial} " in out
    params = process_memory("adamw", get_scale("1.2B"), 512, 1, per_trial, parallel).params
    assert f"Memory per GPU at micro-batch {256 // per_trial}: parameters {params / 2**30:,.1f} GiB" in out
    assert "GPU-hours: " in out and "for the sweep" in out and "at 40% MFU, from a default of 40%" in out
    assert (f"with communication: {parallel} over 8 GPUs within a node at 450 GB/s" in out) == (per_trial > 1)
    assert _nothing_stored(store_url, results)


@pytest.mark.skipif(torch.cuda.is_available(), reason="plans for a GPU this machine does not have")
def test_gpu_hours_grow_with_the_communication_of_a_spread_trial(results, store_url, capsys):
    """Perfect scaling would give every spread the same GPU-hours: the links' time (bench.run.comms)
    makes 8 GPUs in a node cost more than 1, and 16 over InfiniBand more again."""
    hours = []
    for extra in ([], ["--procs-per-trial", "8", "--parallel", "fsdp"], ["--procs-per-trial", "16", "--parallel", "fsdp"]):
        assert main([*PLAN_1_2B, *extra, "--store", store_url]) == 0
        out = capsys.readouterr().out
        hours.append(float(re.search(r"GPU-hours: ([\d,.]+) per trial", out)[1].replace(",", "")))
    assert hours[0] < hours[1] < hours[2], hours
    assert "fsdp over 16 GPUs InfiniBand across nodes at 50 GB/s" in out


def test_gpu_hours_follow_the_flops_and_the_planned_gpu(results, store_url, capsys):
    assert main([*PLAN_1_2B, "--gpu", "a100-80gb", "--store", store_url]) == 0
    out = capsys.readouterr().out
    shape = get_scale("1.2B")
    from bench.model.flops import flops_per_token

    hours = 16 * shape.tokens(1) * flops_per_token(shape) / (0.4 * KNOWN["A100-80GB"][1]) / 3600
    assert f"{hours:,.1f} for the sweep" in out and "On CUDA: A100-80GB" in out


def test_0_1b_on_cpu_refuses_in_one_line_even_with_yes(results, store_url, capsys):
    assert main(["sweep", "--scale", "0.1B", "--ratios", "1", "--optimizers", "adamw", "--workers", "1",
                 "--yes", "--store", store_url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot finish here" in err
    assert "over --max-hours 168" in err and "x H100 GPU(s)" in err and "GPU-hours" in err
    assert "RAY_ADDRESS" in err and "--force" in err
    assert _nothing_stored(store_url, results)


def test_force_is_accepted(results, store_url, capsys):
    assert main(["sweep", "--scale", "0.1B", "--ratios", "1", "--optimizers", "adamw", "--workers", "1",
                 "--force", "--dry-run", "--store", store_url]) == 0
    assert "Forced (--force): this sweep cannot finish here" in capsys.readouterr().out
    assert _nothing_stored(store_url, results)


def test_max_hours_is_the_limit(results, store_url, capsys):
    args = ["sweep", "--scale", "cpu-xs", "--ratios", "1", "--optimizers", "adamw", "--workers", "1",
            "--threads", "1", "--dry-run", "--store", store_url]
    assert main(args) == 0 and "refuse" not in capsys.readouterr().out
    assert main([*args, "--max-hours", "1e-6"]) == 0
    assert "Would refuse without --force" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--gpu", "nosuch"], "unknown GPU 'nosuch'"),
    (["--max-hours", "0"], "--max-hours"),
    (["--max-hours", "-3"], "--max-hours"),
    (["--max-hours", "inf"], "--max-hours"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message, results, store_url, capsys):
    assert main([*PLAN_1_2B, *args, "--store", store_url]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("scale, vocab", [("cpu-s", 512), ("cpu-l", 300)])
def test_parameter_memory_is_4_bytes_per_parameter_of_the_real_model(scale, vocab):
    shape = get_scale(scale)
    real = sum(p.numel() for p in build_model(shape, vocab).parameters())
    memory = process_memory("adamw", shape, vocab, 1)
    assert memory.params == memory.grads == 4 * real
    assert process_memory("adamw", shape, vocab, 1, procs=4, parallel="ddp").params == 4 * real
    # under fsdp: tests/test_distributed.py checks the plan against what a real rank holds


@pytest.mark.parametrize("optimizer", ["adamw", "muon", "lion", "soap", "kron"])
@pytest.mark.parametrize("scale, fields, vocab", [("cpu-m", {"layers": 3}, 384),
                                                  ("0.1B", {"layers": 1, "seq_len": 16}, 512)])
def test_optimizer_state_matches_a_real_optimizer_at_another_shape(optimizer, scale, fields, vocab):
    """Measured on 2 layers, checked on another count: cpu-m at its own width, and one layer of
    0.1B (512 wide: the state is measured at 256, where SOAP's and Kron's 256 x 256 blocks are
    already whole)."""
    shape, canonical = resolve_model(get_scale(scale), fields)
    torch.manual_seed(0)
    model = build_model(shape, vocab)
    definition = get(optimizer)
    opt = definition.build(model.tagged_parameters(), RunSpec(optimizer, scale, model=canonical).hparams, model)
    batch = torch.randint(0, vocab, (2, shape.seq_len + 1))
    for step in range(2):
        train_step(model, opt, batch, step, curvature=definition.needs_curvature_pass)
    measured = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                   if isinstance(t, torch.Tensor))
    assert optimizer_state_bytes(optimizer, shape, vocab) == pytest.approx(measured, rel=2e-3)


def test_activations_grow_with_the_micro_batch_and_the_fitting_one_fits():
    shape = get_scale("0.5B")
    one, eight = (process_memory("adamw", shape, 512, n) for n in (1, 8))
    assert eight.activations == 8 * one.activations and eight.params == one.params
    usable = int(40 * 2**30)
    found = capacity.fit(["adamw"], shape, 512, 0, 1, "ddp", "cuda", usable)
    assert not found.fits and 1 <= found.fitting < shape.default_batch
    assert capacity.fit(["adamw"], shape, 512, found.fitting, 1, "ddp", "cuda", usable).fits
    assert not capacity.fit(["adamw"], shape, 512, found.fitting + 1, 1, "ddp", "cuda", usable).fits


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a visible GPU")
def test_a_visible_gpu_measures_one_step_beside_the_estimate(results, store_url, capsys):
    assert main(["sweep", "--scale", "cpu-s", "--device", "cuda", "--dry-run", "--optimizers", "adamw",
                 "--ratios", "1", "--store", store_url]) == 0
    out = capsys.readouterr().out
    assert "visible, memory measured" in out and "measured: one adamw step on the visible GPU" in out
