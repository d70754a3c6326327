"""Sophia-H (bench/optimizers/sophia.py): the clip bound |dp| <= lr, Hutchinson's estimator of the
Hessian diagonal, the study's update equations, the curvature schedule, checkpoint resume (probe RNG
included) and registration."""
import pytest
import torch

from bench.optimizers.registry import get
from bench.optimizers.sophia import batch_hutchinson, gaussian_probes, hessian_vector
from bench.roles import Role

from .testkit import (
    assert_registered,
    assert_resume_is_bitwise,
    batch,
    build,
    random_grads,
    step_with,
    tagged,
    tiny_model,
    train,
)

pytestmark = pytest.mark.integration

HP = {"learning_rate": 1e-2, "beta1": 0.9, "beta2": 0.95, "epsilon": 1e-7, "gamma": 0.05, "weight_decay": 0.1}


def test_no_entry_moves_more_than_lr_without_weight_decay():
    model = tiny_model()
    lr = 1e-3
    opt = build("sophia", model, learning_rate=lr, weight_decay=0.0, update_interval=2)
    largest = []
    for step in range(6):  # steps 0-1 have h = 0 (pure sign steps); h is refreshed at 2 and 4
        before = [p.detach().clone() for p in model.parameters()]
        train(model, opt, range(step, step + 1), curvature=True)
        largest.append(max((p - b).abs().max().item() for p, b in zip(model.parameters(), before)))
    assert max(largest) <= lr * (1 + 1e-4)
    assert largest[0] > lr * 0.999  # clipped entries move by exactly lr
    hessians = [opt.state[p]["hessian"] for p in model.parameters()]
    assert any(h.abs().sum() > 0 for h in hessians)  # the bound held with a live curvature estimate


def _hutchinson(loss, w, gen):
    u = gaussian_probes([w], gen)[0]
    return u * hessian_vector(loss, [w], [u])[0]


def test_hutchinson_estimates_the_hessian_diagonal():
    # u * (H u), u Gaussian, as batch_hutchinson builds it from these two pieces
    a = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 4.0]], dtype=torch.float64)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    estimates = torch.stack([_hutchinson(0.5 * w @ a @ w, w, gen) for _ in range(4000)])
    probe = torch.randn(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(estimates[0], probe * (a @ probe))  # one draw: u * (H u)
    # var(u_i (Hu)_i) = 2 H_ii^2 + sum_j!=i H_ij^2, so 10% is over 4 standard errors here
    torch.testing.assert_close(estimates.mean(0), a.diagonal(), rtol=0.1, atol=0)


def _levanter_sophia_step(w, m, h, g, t, learning_rate, beta1, beta2, epsilon, gamma, weight_decay, decayed):
    m = beta1 * m + (1 - beta1) * g
    u = ((m / (1 - beta1**t)) / torch.clamp(gamma * h, min=epsilon)).clamp(-1, 1)
    return w - learning_rate * (u + (weight_decay if decayed else 0.0) * w), m


def test_matches_the_study_equations_for_a_given_hessian():
    params = tagged({"w": (5, 4), "norm": (4,)})
    opt = get("sophia").build(params, {**get("sophia").defaults, **HP}, None)
    g = torch.Generator().manual_seed(3)
    hs = [torch.rand(tp.param.shape, generator=g) * 2 - 0.2 for tp in params]  # some negative entries
    ws = [tp.param.detach().double() for tp in params]
    ms = [torch.zeros_like(w) for w in ws]
    for t, grads in enumerate(random_grads(params, 5), start=1):
        for tp, h in zip(params, hs):
            opt.state[tp.param]["hessian"] = h.clone()
        step_with(opt, params, grads)
        for i, tp in enumerate(params):
            ws[i], ms[i] = _levanter_sophia_step(ws[i], ms[i], hs[i].double(), grads[i].double(), t, **HP,
                                                 decayed=tp.role is Role.HIDDEN)
    for tp, w in zip(params, ws):
        torch.testing.assert_close(tp.param.double(), w, rtol=1e-5, atol=1e-6)


def test_curvature_is_refreshed_after_every_update_interval_updates():
    model = tiny_model()
    opt = build("sophia", model, update_interval=3)
    wq = model.layers[0].attn.wq.weight
    snapshots = []
    for step in range(7):
        train(model, opt, range(step, step + 1), curvature=True)
        snapshots.append(opt.state[wq]["hessian"].clone())
    changed = [not torch.equal(a, b) for a, b in zip(snapshots, snapshots[1:])]
    # refreshed before updates 4 and 7 (after 3 and 6 updates), i.e. between snapshots 2-3 and 5-6
    assert changed == [False, False, True, False, False, True]
    assert all(p.grad is None for p in model.parameters())  # grads are left zeroed


def test_resume_from_checkpoint_is_bitwise():
    assert_resume_is_bitwise("sophia", update_interval=2)  # refreshes at 4 and 6, after the resume at 3


def test_registered_with_complete_defaults_and_space():
    assert_registered("sophia", {"beta1", "beta2", "epsilon", "gamma", "weight_decay", "update_interval"})


def test_micro_batched_hutchinson_is_the_whole_batch_estimate():
    # one probe, H u summed over chunks weighted by rows: the whole batch's estimate to rounding
    model = tiny_model().double()
    x = torch.cat([batch(0), batch(1)])[:6]
    params = list(model.parameters())
    whole = batch_hutchinson(model, x, params, torch.Generator().manual_seed(0))
    split = batch_hutchinson(model, x, params, torch.Generator().manual_seed(0), micro_batch=2)
    for a, b in zip(whole, split):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert any(a.abs().sum() > 0 for a in whole)
