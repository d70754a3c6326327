"""Cautious AdamW (bench/optimizers/cautious.py): the masked coordinates are exactly those whose
AdamW update disagrees in sign with the gradient, each variant's rescale, each variant step by step
against its source (Levanter's scale_by_cautious; C-Optim's c_adamw.py), checkpoint resume and
registration."""
import math

import pytest
import torch

from bench.optimizers.cautious import cautious_mask
from bench.optimizers.registry import get
from bench.roles import Role

from .testkit import assert_registered, assert_resume_is_bitwise, random_grads, step_with, tagged

pytestmark = pytest.mark.integration

SHAPES = {"w": (6, 5), "norm": (5,)}
HP = {"learning_rate": 1e-2, "beta1": 0.9, "beta2": 0.95, "epsilon": 1e-8, "weight_decay": 0.1}


def _cautious(params, **overrides):
    return get("cautious").build(params, {**get("cautious").defaults, **HP, **overrides}, None)


def _levanter(params, grad_steps, learning_rate, beta1, beta2, epsilon, weight_decay):
    """stanford-crfm/levanter src/levanter/optim/cautious.py (commit 03d0240df5197ca998b206b01c9d2921d280b370)
    scale_by_cautious, add_decayed_weights, scale(-lr), in float64. Returns the final weights and,
    per step, the AdamW direction of the first tensor."""
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
            u_c = u * mask / (mask.mean() + epsilon)
            decay = weight_decay if tp.role is Role.HIDDEN else 0.0
            ws[i] = ws[i] - learning_rate * (u_c + decay * ws[i])
            if i == 0:
                directions.append(u)
    return ws, directions


def _c_optim(params, grad_steps, learning_rate, beta1, beta2, epsilon, weight_decay):
    """kyleliang919/C-Optim c_adamw.py (commit 2c0517c4db2e50b56d389ba4803eab1f4b3b8ae3), AdamW.step's
    per-parameter path with correct_bias=True, in float64."""
    ws = [tp.param.detach().double() for tp in params]
    ms = [torch.zeros_like(w) for w in ws]
    vs = [torch.zeros_like(w) for w in ws]
    for t, grads in enumerate(grad_steps, start=1):
        for i, (tp, g) in enumerate(zip(params, grads)):
            g = g.double()
            wd = weight_decay if tp.role is Role.HIDDEN else 0.0
            ws[i] = ws[i] + ws[i] * (-learning_rate * wd)
            ms[i] = ms[i] * beta1 + g * (1 - beta1)
            vs[i] = vs[i] * beta2 + g * g * (1 - beta2)
            denom = vs[i].sqrt() + epsilon
            step_size = learning_rate * math.sqrt(1 - beta2**t) / (1 - beta1**t)
            mask = (ms[i] * g > 0).double()
            mask = mask / mask.mean().clamp(min=1e-3)
            ws[i] = ws[i] - step_size * (ms[i] * mask) / denom
    return ws


def test_masked_coordinates_are_exactly_the_sign_disagreements():
    params = tagged({"w": (8, 8)})
    grad_steps = random_grads(params, 3)  # independent draws: many coordinates flip sign
    _, directions = _levanter(params, grad_steps, **{**HP, "weight_decay": 0.0})
    opt = _cautious(params, weight_decay=0.0)
    for t, grads in enumerate(grad_steps):
        before = params[0].param.detach().clone()
        step_with(opt, params, grads)
        moved = params[0].param != before
        agree = directions[t] * grads[0].double() > 0
        assert torch.equal(moved, agree), f"step {t}: moved coordinates differ from sign agreement"
        if t > 0:
            assert 0 < agree.sum() < agree.numel()  # the test exercises both cases
        # the kept coordinates are rescaled by 1 / (mean(mask) + eps)
        scale = 1 / (agree.double().mean().item() + HP["epsilon"])
        torch.testing.assert_close((before - params[0].param)[agree].double(),
                                   HP["learning_rate"] * scale * directions[t][agree], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("variant,kept,scale", [("study", 4, 16 / (4 + 16e-2)), ("study", 0, 0.0),
                                                ("authors", 4, 4.0), ("authors", 0, 0.0)])
def test_each_variant_rescales_the_kept_coordinates_by_its_sources_rule(variant, kept, scale):
    """A 16-entry norm gain with `kept` agreeing coordinates: 1 / (1/4 + eps) (Levanter, eps 1e-2
    here so that the eps shows) or 1 / max(1/4, 1e-3) (C-Optim); nothing kept moves nothing."""
    grad = torch.ones(16)
    update = -torch.ones(16)
    update[:kept] = 1.0
    mask = cautious_mask(update, grad, 1e-2, variant)
    torch.testing.assert_close(mask[:kept], torch.full((kept,), scale), rtol=1e-6, atol=0)
    assert not mask[kept:].any()


def test_the_authors_clamp_bounds_the_rescale_at_1000():
    grad = torch.ones(10000)
    update = -torch.ones(10000)
    update[0] = 1.0  # a mean of 1e-4, below the clamp
    torch.testing.assert_close(cautious_mask(update, grad, 0.0, "authors")[0], torch.tensor(1000.0))


@pytest.mark.parametrize("variant,reference", [("study", _levanter), ("authors", _c_optim)])
def test_each_variant_matches_its_source_over_20_steps_in_fp32(variant, reference):
    params = tagged(SHAPES)
    grad_steps = random_grads(params, 20)
    hp = {**HP, "epsilon": 1e-3}  # large enough that the sources' epsilon placements differ
    expected = reference(params, grad_steps, **hp)
    expected = expected[0] if variant == "study" else expected
    opt = _cautious(params, variant=variant, epsilon=1e-3)
    for grads in grad_steps:
        step_with(opt, params, grads)
    for tp, w in zip(params, expected):
        assert (tp.param.double() - w).abs().max() < 1e-4, tp.name


def test_the_20_step_comparison_tells_the_variants_apart():
    """At epsilon 1e-3 the sources' epsilon placements differ by more than the tolerance above."""
    params = tagged(SHAPES)
    grad_steps = random_grads(params, 20)
    hp = {**HP, "epsilon": 1e-3}
    levanter, c_optim = _levanter(params, grad_steps, **hp)[0], _c_optim(params, grad_steps, **hp)
    assert max((a - b).abs().max() for a, b in zip(levanter, c_optim)) > 5e-4  # 5x the tolerance


@pytest.mark.parametrize("variant", ["study", "authors"])
def test_resume_from_checkpoint_is_bitwise(variant):
    assert_resume_is_bitwise("cautious", variant=variant)


def test_registered_with_complete_defaults_and_space():
    assert_registered("cautious", {"beta1", "beta2", "epsilon", "weight_decay", "variant"})
