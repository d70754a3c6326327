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
    (dict(optimizer="soap", hparams={"variant": "author"}), "'variant': must be one of study, authors"),
    (dict(hparams={"decay_roles": "hidden,gains"}), "'decay_roles': must be comma-separated role names"),
    (dict(optimizer="sophia", hparams={"hessian_estimator": "gn"}), "must be one of hutchinson, gnb"),
    (dict(optimizer="auon_hybrid", hparams={"ns_steps": 0}), "'ns_steps': must be an integer >= 1"),
    (dict(optimizer="soap", hparams={"max_precond_dim": 0}), "'max_precond_dim'"),
])
def test_bad_specs_are_user_errors(kwargs, message):
    base = dict(optimizer="adamw", scale="cpu-xs")
    with pytest.raises(UserError, match=message):
        RunSpec(**{**base, **kwargs})


def test_result_round_trips_through_a_dict():
    spec = RunSpec("adamw", "cpu-xs")
    r = RunResult(spec.key, spec.to_dict(), "ok", 3.0, curve=[(10, 4.0)])
    assert RunResult.from_dict(r.to_dict()) == r


# Run keys computed before any optimizer declared hyperparameters added later (main at 58c66a2):
# a spec with those hyperparameters at their defaults must keep exactly these keys.
KEYS_BEFORE_VARIANTS = {
    ("adamw", "cpu-xs", 1.0, ()): "887163910b23c5c02c32",
    ("soap", "cpu-xs", 1.0, ()): "f3d1b8921ead65a1d721",
    ("cautious", "cpu-xs", 1.0, ()): "c91f83d41ff6788f0be9",
    ("auon_hybrid", "cpu-xs", 1.0, ()): "a757469df59b1ed7a8d1",
    ("kron", "cpu-xs", 1.0, ()): "3493c43b879b2d4824cd",
    ("sophia", "cpu-xs", 1.0, ()): "35cd55da83f3df1a4fc2",
    ("muon", "cpu-xs", 1.0, ()): "e1a3ba3e9299214872f1",
    ("soap", "cpu-s", 2.0, (("learning_rate", 0.01),)): "0ab7ff1e9dd005a45c1b",
}


@pytest.mark.parametrize("args,key", KEYS_BEFORE_VARIANTS.items())
def test_hyperparameters_added_later_leave_the_key_unchanged_at_their_defaults(args, key):
    optimizer, scale, ratio, hparams = args
    seed = 3 if hparams else 0
    assert RunSpec(optimizer, scale, ratio, dict(hparams), seed=seed).key == key


def test_a_hyperparameter_added_later_enters_the_key_once_set_off_its_default():
    at_default = RunSpec("soap", "cpu-xs", 1.0, {"variant": "study", "max_precond_dim": 10000,
                                                 "decay_roles": "hidden,head"})
    assert at_default.key == KEYS_BEFORE_VARIANTS[("soap", "cpu-xs", 1.0, ())]
    assert "variant" in at_default.to_dict()["hparams"]  # stored with the run, only the key skips it
    changed = ({}, {"variant": "authors"}, {"max_precond_dim": 512}, {"decay_roles": "hidden"})
    assert len({RunSpec("soap", "cpu-xs", 1.0, hp).key for hp in changed}) == len(changed)
