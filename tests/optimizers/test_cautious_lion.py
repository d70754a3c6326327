"""Cautious Lion (bench/optimizers/cautious_lion.py): only the coordinates whose signed update agrees
with the gradient move, each by lr numel / (agreeing + 1); C-Optim's c_lion.py step by step;
checkpoint resume and registration."""
import pytest
import torch

from bench.optimizers.registry import get
from bench.roles import Role

from .testkit import (
    assert_registered,
    assert_resume_is_bitwise,
    build,
    random_grads,
    step_with,
    tagged,
    tiny_model,
    train,
)

pytestmark = pytest.mark.integration

SHAPES = {"w": (6, 5), "norm": (5,)}
HP = {"learning_rate": 1e-2, "beta1": 0.9, "beta2": 0.95, "weight_decay": 0.5}


def _opt(params, **overrides):
    return get("cautious_lion").build(params, {**get("cautious_lion").defaults, **HP, **overrides}, None)


def _c_optim(params, grad_steps, learning_rate, beta1, beta2, weight_decay):
    """kyleliang919/C-Optim c_lion.py (commit 2c0517c4db2e50b56d389ba4803eab1f4b3b8ae3) update_fn, in
    float64. Returns the final weights and, per step, the signed update of the first tensor."""
    ws = [tp.param.detach().double() for tp in params]
    ms = [torch.zeros_like(w) for w in ws]
    updates = []
    for grads in grad_steps:
        for i, (tp, g) in enumerate(zip(params, grads)):
            g = g.double()
            ws[i] = ws[i] * (1 - learning_rate * (weight_decay if tp.role is Role.HIDDEN else 0.0))
            update = (ms[i] * beta1 + g * (1 - beta1)).sign()
            mask = (update * g > 0).double()
            mask = mask * (mask.numel() / (mask.sum() + 1))
            ws[i] = ws[i] - learning_rate * update * mask
            ms[i] = ms[i] * beta2 + g * (1 - beta2)
            if i == 0:
                updates.append(update)
    return ws, updates


def test_only_agreeing_coordinates_move_each_by_lr_times_numel_over_kept_plus_one():
    params = tagged({"w": (8, 8)})
    grad_steps = random_grads(params, 4)
    _, updates = _c_optim(params, grad_steps, **{**HP, "weight_decay": 0.0})
    opt = _opt(params, weight_decay=0.0)
    for t, grads in enumerate(grad_steps):
        before = params[0].param.detach().clone()
        step_with(opt, params, grads)
        agree = updates[t] * grads[0].double() > 0
        moved = (params[0].param - before).double()
        if t > 0:
            assert 0 < agree.sum() < agree.numel()  # both cases exercised
        assert not moved[~agree].any()
        size = HP["learning_rate"] * agree.numel() / (agree.sum().item() + 1)
        torch.testing.assert_close(moved[agree].abs(), torch.full_like(moved[agree], size), rtol=1e-5, atol=0)


def test_matches_c_optim_over_20_steps_in_fp32():
    params = tagged(SHAPES)
    grad_steps = random_grads(params, 20)
    expected, _ = _c_optim(params, grad_steps, **HP)
    opt = _opt(params)
    for grads in grad_steps:
        step_with(opt, params, grads)
    for tp, w in zip(params, expected):
        assert (tp.param.double() - w).abs().max() < 1e-4, tp.name


def test_trains_a_tiny_model():
    model = tiny_model()
    losses = train(model, build("cautious_lion", model, learning_rate=1e-2, weight_decay=0.0), range(25))
    assert losses[-1] < 0.7 * losses[0]


def test_resume_from_checkpoint_is_bitwise():
    assert_resume_is_bitwise("cautious_lion")


def test_registered_with_complete_defaults_and_space():
    assert_registered("cautious_lion", {"beta1", "beta2", "weight_decay"})
