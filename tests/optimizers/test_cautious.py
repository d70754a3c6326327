"""Cautious AdamW (bench/optimizers/cautious.py): the masked coordinates are exactly those whose
AdamW update disagrees in sign with the gradient, the paper's equations, checkpoint resume and
registration."""
import pytest
import torch

from bench.optimizers.registry import get
from bench.roles import Role

from .testkit import assert_registered, assert_resume_is_bitwise, random_grads, step_with, tagged

pytestmark = pytest.mark.integration

SHAPES = {"w": (6, 5), "norm": (5,)}
HP = {"learning_rate": 1e-2, "beta1": 0.9, "beta2": 0.95, "epsilon": 1e-8, "weight_decay": 0.1}


def _cautious(params, **overrides):
    return get("cautious").build(params, {**get("cautious").defaults, **HP, **overrides}, None)


def _reference(params, grad_steps, learning_rate, beta1, beta2, epsilon, weight_decay):
    """Levanter's scale_by_cautious with the authors' numel / (sum + 1) rescale, in float64.
    Returns the final weights and, per step, the AdamW direction of the first tensor."""
    ws = [tp.param.detach().double() for tp in params]
    ms = [torch.zeros_like(w) for w in ws]
    vs = [torch.zeros_like(w) for w in ws]
    directions = []
    for t, grads in enumerate(grad_steps, start=1):
        for i, (tp, g) in enumerate(zip(params, grads)):
            g = g.double()
            ms[i] = beta1 * ms[i] + (1 - beta1) * g
            vs[i] = beta2 * vs[i] + (1 - beta2) * g * g
            u = (ms[i] / (1 - beta1**t)) / ((vs[i] / (1 - beta2**t)).sqrt() + epsilon)
            mask = (u * g > 0).double()
            u_c = u * mask * mask.numel() / (mask.sum() + 1)
            decay = weight_decay if tp.role is Role.HIDDEN else 0.0
            ws[i] = ws[i] - learning_rate * (u_c + decay * ws[i])
            if i == 0:
                directions.append(u)
    return ws, directions


def test_masked_coordinates_are_exactly_the_sign_disagreements():
    params = tagged({"w": (8, 8)})
    grad_steps = random_grads(params, 3)  # independent draws: many coordinates flip sign
    _, directions = _reference(params, grad_steps, **{**HP, "weight_decay": 0.0})
    opt = _cautious(params, weight_decay=0.0)
    for t, grads in enumerate(grad_steps):
        before = params[0].param.detach().clone()
        step_with(opt, params, grads)
        moved = params[0].param != before
        agree = directions[t] * grads[0].double() > 0
        assert torch.equal(moved, agree), f"step {t}: moved coordinates differ from sign agreement"
        if t > 0:
            assert 0 < agree.sum() < agree.numel()  # the test exercises both cases
        # the kept coordinates are rescaled by numel / (kept + 1)
        scale = agree.numel() / (agree.sum().item() + 1)
        torch.testing.assert_close((before - params[0].param)[agree].double(),
                                   HP["learning_rate"] * scale * directions[t][agree], rtol=1e-4, atol=1e-7)


def test_matches_the_paper_equations():
    params = tagged(SHAPES)
    grad_steps = random_grads(params, 6)
    expected, _ = _reference(params, grad_steps, **HP)
    opt = _cautious(params)
    for grads in grad_steps:
        step_with(opt, params, grads)
    for tp, w in zip(params, expected):
        torch.testing.assert_close(tp.param.double(), w, rtol=1e-5, atol=1e-6)


def test_resume_from_checkpoint_is_bitwise():
    assert_resume_is_bitwise("cautious")


def test_registered_with_complete_defaults_and_space():
    assert_registered("cautious", {"beta1", "beta2", "epsilon", "weight_decay"})
