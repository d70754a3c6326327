import pytest

from bench.errors import UserError
from bench.run.spec import RunResult, RunSpec

pytestmark = pytest.mark.unit


def test_run_key_is_stable_and_resolves_defaults():
    a = RunSpec("adamw", "cpu-xs", 1, {})
    b = RunSpec("adamw", "CPU-XS", 1.0, {"learning_rate": a.hparams["learning_rate"]})
    assert a.key == b.key
    assert RunSpec("adamw", "cpu-xs", 1, {"learning_rate": 0.1}).key != a.key
    assert RunSpec("adamw", "cpu-xs", 1, {}, seed=1).key != a.key


def test_unset_batch_takes_the_scales_default():
    assert RunSpec("adamw", "0.1B").hparams["train_batch_size"] == 128
    assert RunSpec("adamw", "cpu-xs").hparams["train_batch_size"] == 32


def test_spec_round_trips_through_a_dict():
    a = RunSpec("adamw", "cpu-xs", 2, {"warmup": 0.1}, seed=3)
    assert RunSpec.from_dict(a.to_dict()) == a


@pytest.mark.parametrize("kwargs,message", [
    (dict(optimizer="sgd9"), "unknown optimizer"),
    (dict(scale="3B"), "unknown scale"),
    (dict(ratio=0), "ratio"),
    (dict(hparams={"lr": 1e-3}), "unknown hyperparameter 'lr'"),
    (dict(hparams={"beta2": 1.0}), "beta2"),
    (dict(hparams={"learning_rate": -1.0}), "learning_rate"),
    (dict(hparams={"learning_rate": float("nan")}), "learning_rate"),
    (dict(hparams={"train_batch_size": 0}), "train_batch_size"),
    (dict(hparams={"lr_schedule": "exp"}), "lr_schedule"),
    (dict(precision="fp8"), "precision"),
    (dict(seed=-1), "seed"),
])
def test_bad_specs_are_user_errors(kwargs, message):
    base = dict(optimizer="adamw", scale="cpu-xs")
    with pytest.raises(UserError, match=message):
        RunSpec(**{**base, **kwargs})


def test_result_round_trips_through_a_dict():
    spec = RunSpec("adamw", "cpu-xs")
    r = RunResult(spec.key, spec.to_dict(), "ok", 3.0, curve=[(10, 4.0)])
    assert RunResult.from_dict(r.to_dict()) == r
