"""Real runs of the smallest CPU scale (short budgets keep them to seconds). What they cost is
measured by `make bench`, not asserted here."""
import pytest

from bench.run.hardware import cpu_model
from bench.run.spec import RunSpec
from bench.run.train import RunOptions, run


@pytest.mark.integration
def test_same_spec_gives_the_same_final_loss_to_the_last_bit():
    # Bitwise at a fixed thread count: BLAS splits weight-gradient reductions by thread count, so
    # 1 and 2 threads agree only to ~1e-9 (the thread count is recorded with every result).
    spec = RunSpec("adamw", "cpu-xs", 0.05, {})
    a, b = run(spec, RunOptions(threads=2)), run(spec, RunOptions(threads=2))
    assert a.status == "ok" and a.final_loss == b.final_loss
    assert a.curve == b.curve
    assert a.hardware == cpu_model() != ""  # bitwise holds on one kind of CPU: it is recorded
    assert run(RunSpec("adamw", "cpu-xs", 0.05, {}, seed=1), RunOptions(threads=2)).final_loss != a.final_loss


@pytest.mark.system  # a whole 1x budget: ~15 s
def test_one_chinchilla_run_at_the_smallest_scale_ends_well_below_unigram():
    r = run(RunSpec("adamw", "cpu-xs", 1.0, {}), RunOptions(threads=2))
    assert r.status == "ok"
    assert r.final_loss < 0.7 * r.unigram_loss
    assert r.steps >= 300 and r.tokens == r.steps * 32 * 128
    # reported figures are the run's own: sane, not asserted as timings
    assert r.flops > 0 and r.tokens_per_s > 0 and r.optimizer_state_bytes > 0
    assert set(r.loss_by_frequency) == {"frequent", "middle", "rare"}
    assert r.loss_by_frequency["frequent"] < r.loss_by_frequency["rare"]
    assert r.roles["head.weight"] == "head"


@pytest.mark.integration
def test_a_huge_learning_rate_is_reported_as_diverged_not_as_a_result():
    r = run(RunSpec("adamw", "cpu-xs", 0.1, {"learning_rate": 50.0, "max_grad_norm": 0.0, "warmup": 0.0}),
            RunOptions(threads=2))
    assert r.status == "diverged" and r.final_loss is None and r.reason


@pytest.mark.integration
def test_micro_batches_accumulate_to_the_same_training():
    # 4 micro-batches of 8 rows: the same gradient up to fp32 rounding, so the same run to ~1e-5
    spec = RunSpec("adamw", "cpu-xs", 0.05, {})
    whole = run(spec, RunOptions(threads=2))
    micro = run(spec, RunOptions(threads=2, micro_batch=8))
    assert micro.status == "ok" and micro.micro_batch == 8 and micro.steps == whole.steps
    assert abs(micro.final_loss - whole.final_loss) < 1e-4
    assert all(abs(a[1] - b[1]) < 1e-4 for a, b in zip(micro.curve, whole.curve))
    # a different split is not a no-op: the micro-batches really ran
    assert micro.final_loss != whole.final_loss


@pytest.mark.system  # torch.compile: tens of seconds
def test_compiled_blocks_train_like_eager_ones():
    spec = RunSpec("muon", "cpu-xs", 0.05, {})
    eager = run(spec, RunOptions(threads=2))
    compiled = run(spec, RunOptions(threads=2, compile=True))
    assert compiled.status == "ok" and compiled.compiled and not eager.compiled
    assert abs(compiled.final_loss - eager.final_loss) < 2e-3
