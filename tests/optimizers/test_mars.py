"""MARS (bench/optimizers/mars.py): with gamma = 0 and no clipping it is AdamW, the study's update
equations with the global clip of the corrected gradient, checkpoint resume and registration."""
import pytest
import torch

from bench.optimizers.common import make_adamw
from bench.optimizers.registry import get
from bench.roles import Role

from .testkit import assert_registered, assert_resume_is_bitwise, random_grads, step_with, tagged

pytestmark = pytest.mark.integration

SHAPES = {"w": (5, 4), "v": (3, 4), "norm": (4,)}
HP = {"learning_rate": 1e-2, "beta1": 0.9, "beta2": 0.95, "epsilon": 1e-8, "gamma": 0.025,
      "weight_decay": 0.1, "max_grad_norm": 1.0}


def _mars(params, **overrides):
    return get("mars").build(params, {**get("mars").defaults, **HP, **overrides}, None)


def _levanter_mars(params, grad_steps, learning_rate, beta1, beta2, epsilon, gamma, weight_decay,
                   max_grad_norm):
    """Levanter's scale_by_mars + add_decayed_weights + scale(-lr), in float64."""
    ws = [tp.param.detach().double() for tp in params]
    ms, vs, prev = ([torch.zeros_like(w) for w in ws] for _ in range(3))
    for t, grads in enumerate(grad_steps, start=1):
        gs = [g.double() for g in grads]
        cs = [g + gamma * beta1 / (1 - beta1) * (g - p) for g, p in zip(gs, prev)]
        if max_grad_norm:
            norm = torch.sqrt(sum((c * c).sum() for c in cs))
            cs = [c * min(1.0, max_grad_norm / (norm.item() + 1e-6)) for c in cs]
        for i, (tp, c) in enumerate(zip(params, cs)):
            ms[i] = beta1 * ms[i] + (1 - beta1) * c
            vs[i] = beta2 * vs[i] + (1 - beta2) * c * c
            u = (ms[i] / (1 - beta1**t)) / ((vs[i] / (1 - beta2**t)).sqrt() + epsilon)
            decay = weight_decay if tp.role is Role.HIDDEN else 0.0
            ws[i] = ws[i] - learning_rate * (u + decay * ws[i])
        prev = gs
    return ws


def _run(params, grad_steps, **overrides):
    opt = _mars(params, **overrides)
    for grads in grad_steps:
        step_with(opt, params, grads)


def test_without_correction_and_clipping_it_is_adamw():
    params, twins = tagged(SHAPES), tagged(SHAPES)
    grad_steps = random_grads(params, 5)
    _run(params, grad_steps, gamma=0.0, max_grad_norm=0.0)
    adamw = make_adamw(twins, {**HP, "weight_decay": 0.1, "decay_roles": "hidden,head"}, HP["learning_rate"])
    for grads in grad_steps:
        step_with(adamw, twins, grads)
    for a, b in zip(params, twins):
        torch.testing.assert_close(a.param, b.param, rtol=1e-5, atol=1e-6)


def test_matches_the_study_equations_with_the_corrected_gradient_clipped():
    params = tagged(SHAPES)
    grad_steps = [[3 * g for g in grads] for grads in random_grads(params, 6)]  # norms ~ 15: clipped
    expected = _levanter_mars(params, grad_steps, **HP)
    _run(params, grad_steps)
    for tp, w in zip(params, expected):
        torch.testing.assert_close(tp.param.double(), w, rtol=1e-5, atol=1e-6)


def test_matches_the_study_equations_without_clipping():
    params = tagged(SHAPES)
    grad_steps = random_grads(params, 6)
    expected = _levanter_mars(params, grad_steps, **{**HP, "gamma": 0.1, "max_grad_norm": 0.0})
    _run(params, grad_steps, gamma=0.1, max_grad_norm=0.0)
    for tp, w in zip(params, expected):
        torch.testing.assert_close(tp.param.double(), w, rtol=1e-5, atol=1e-6)


def test_tells_the_train_loop_it_clips_gradients_itself():
    assert get("mars").clips_gradients is True


def test_resume_from_checkpoint_is_bitwise():
    assert_resume_is_bitwise("mars")


def test_registered_with_complete_defaults_and_space():
    assert_registered("mars", {"beta1", "beta2", "epsilon", "gamma", "weight_decay"})
