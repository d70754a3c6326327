"""Lion (bench/optimizers/lion.py): +-lr updates, the paper's equations, lion-pytorch step by step,
checkpoint resume and registration."""
import copy

import pytest
import torch
from lion_pytorch import Lion as ReferenceLion

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

SHAPES = {"w": (5, 4), "norm": (4,)}


def _lion(params, lr=1e-2, beta1=0.9, beta2=0.95, weight_decay=0.0):
    hp = {**get("lion").defaults, "learning_rate": lr, "beta1": beta1, "beta2": beta2,
          "weight_decay": weight_decay}
    return get("lion").build(params, hp, None)


def test_every_update_entry_is_plus_or_minus_lr_without_weight_decay():
    params = tagged(SHAPES)
    opt = _lion(params, lr=1e-3)
    for grads in random_grads(params, 4):
        before = [tp.param.detach().clone() for tp in params]
        step_with(opt, params, grads)
        for tp, b in zip(params, before):
            torch.testing.assert_close((tp.param - b).abs(), torch.full_like(b, 1e-3), rtol=0, atol=1e-6)


def test_matches_the_paper_equations():
    params = tagged(SHAPES)
    lr, b1, b2, wd = 1e-2, 0.9, 0.95, 0.5
    ws = [tp.param.detach().double() for tp in params]
    ms = [torch.zeros_like(w) for w in ws]
    opt = _lion(params, lr, b1, b2, wd)
    for grads in random_grads(params, 5):
        step_with(opt, params, grads)
        for i, (tp, g) in enumerate(zip(params, grads)):
            decay = wd if tp.role is Role.HIDDEN else 0.0  # norms are not decayed
            u = torch.sign(b1 * ms[i] + (1 - b1) * g.double())
            ws[i] = ws[i] - lr * (u + decay * ws[i])
            ms[i] = b2 * ms[i] + (1 - b2) * g.double()
    for tp, w in zip(params, ws):
        torch.testing.assert_close(tp.param.double(), w, rtol=0, atol=1e-6)


def test_matches_lion_pytorch_step_by_step():
    ours_model = tiny_model()
    theirs_model = copy.deepcopy(ours_model)
    hp = {"learning_rate": 3e-3, "beta1": 0.9, "beta2": 0.95, "weight_decay": 0.7}
    ours = build("lion", ours_model, **hp)
    # Same decay mask as ours (HIDDEN/HEAD decayed); lion-pytorch's default decay is p *= 1 - lr * wd.
    decayed = {tp.name for tp in ours_model.tagged_parameters() if tp.role in (Role.HIDDEN, Role.HEAD)}
    named = list(theirs_model.named_parameters())
    theirs = ReferenceLion([{"params": [p for n, p in named if n in decayed], "weight_decay": 0.7},
                            {"params": [p for n, p in named if n not in decayed], "weight_decay": 0.0}],
                           lr=3e-3, betas=(0.9, 0.95))
    for step in range(6):
        train(ours_model, ours, range(step, step + 1))
        train(theirs_model, theirs, range(step, step + 1))
        for (n, a), b in zip(ours_model.named_parameters(), theirs_model.parameters()):
            assert torch.equal(a, b), f"{n} differs from lion-pytorch at step {step}"


def test_resume_from_checkpoint_is_bitwise():
    assert_resume_is_bitwise("lion")


def test_registered_with_complete_defaults_and_space():
    assert_registered("lion", {"beta1", "beta2", "weight_decay"})
