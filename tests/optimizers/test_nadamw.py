"""NAdamW (bench/optimizers/nadamw.py): optax's nadamw equations (the study's), the Nesterov first
step, why torch's momentum_decay must be off, checkpoint resume and registration."""
import pytest
import torch

from bench.optimizers.registry import get
from bench.roles import Role

from .testkit import assert_registered, assert_resume_is_bitwise, random_grads, step_with, tagged

pytestmark = pytest.mark.integration

SHAPES = {"w": (5, 4), "norm": (4,)}
HP = {"learning_rate": 1e-2, "beta1": 0.9, "beta2": 0.95, "epsilon": 1e-8, "weight_decay": 0.1}


def _nadamw(params, **overrides):
    return get("nadamw").build(params, {**get("nadamw").defaults, **HP, **overrides}, None)


def _optax_nadamw(params, grad_steps, learning_rate, beta1, beta2, epsilon, weight_decay):
    """optax.scale_by_adam(nesterov=True) + add_decayed_weights + scale(-lr), in float64."""
    ws = [tp.param.detach().double() for tp in params]
    ms = [torch.zeros_like(w) for w in ws]
    vs = [torch.zeros_like(w) for w in ws]
    for t, grads in enumerate(grad_steps, start=1):
        for i, (tp, g) in enumerate(zip(params, grads)):
            g = g.double()
            ms[i] = beta1 * ms[i] + (1 - beta1) * g
            vs[i] = beta2 * vs[i] + (1 - beta2) * g * g
            m_hat = beta1 * ms[i] / (1 - beta1 ** (t + 1)) + (1 - beta1) * g / (1 - beta1**t)
            v_hat = vs[i] / (1 - beta2**t)
            decay = weight_decay if tp.role is Role.HIDDEN else 0.0
            ws[i] = ws[i] - learning_rate * (m_hat / (v_hat.sqrt() + epsilon) + decay * ws[i])
    return ws


def test_matches_the_optax_nadamw_equations():
    params = tagged(SHAPES)
    grad_steps = random_grads(params, 6)
    expected = _optax_nadamw(params, grad_steps, **HP)
    opt = _nadamw(params)
    for grads in grad_steps:
        step_with(opt, params, grads)
    for tp, w in zip(params, expected):
        torch.testing.assert_close(tp.param.double(), w, rtol=1e-5, atol=1e-6)


def test_first_step_moves_by_the_nesterov_factor():
    """Step 1: m_hat = g (1 + b1 / (1 + b1)), v_hat = g^2, so |dp| = lr (1 + 2 b1) / (1 + b1)."""
    params = tagged({"w": (6, 3)})
    before = params[0].param.detach().clone()
    step_with(_nadamw(params, weight_decay=0.0, epsilon=1e-12), params, random_grads(params, 1)[0])
    b1 = HP["beta1"]
    factor = HP["learning_rate"] * (1 + 2 * b1) / (1 + b1)
    torch.testing.assert_close((params[0].param - before).abs(), torch.full_like(before, factor))


def test_torch_default_momentum_schedule_would_not_match():
    """Pins why the builder sets momentum_decay = inf: torch's default psi schedule differs."""
    params = tagged(SHAPES)
    grad_steps = random_grads(params, 3)
    expected = _optax_nadamw(params, grad_steps, **HP)
    opt = _nadamw(params)
    for group in opt.param_groups:
        group["momentum_decay"] = 4e-3
    for grads in grad_steps:
        step_with(opt, params, grads)
    assert not torch.allclose(params[0].param.double(), expected[0], rtol=1e-3, atol=1e-4)


def test_resume_from_checkpoint_is_bitwise():
    assert_resume_is_bitwise("nadamw")


def test_registered_with_complete_defaults_and_space():
    assert_registered("nadamw", {"beta1", "beta2", "epsilon", "weight_decay"})
