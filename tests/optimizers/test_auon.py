"""AuON and Hybrid-AuON (bench/optimizers/auon.py): the cosh-RMS normalised update, the hybrid's
Newton-Schulz steps (one by default, ns_steps a hyperparameter), the update equations, checkpoint
resume and registration."""
import math

import pytest
import torch

from bench.errors import UserError
from bench.optimizers.auon import AuON, cosh_rms_normalise
from bench.optimizers.hybrid import HybridOptimizer
from bench.roles import Role

from .testkit import assert_registered, assert_resume_is_bitwise, build, tiny_model, train

pytestmark = pytest.mark.integration

NS = (3.4445, -4.7750, 2.0315)


def _auon_reference(w0, grads, lr, momentum, weight_decay, ns_steps):
    """The paper's update written out in float64 (see the module docstring)."""
    w, m = w0.double(), torch.zeros_like(w0, dtype=torch.float64)
    rows, cols = w.shape
    for g in grads:
        g = g.double()
        m = momentum * m + (1 - momentum) * g
        v = (1 - momentum) * g + momentum * m
        if ns_steps:
            x = v / (v.norm() + 1e-7)
            x = x.T if rows > cols else x
            for _ in range(ns_steps):
                gram = x @ x.T
                x = NS[0] * x + (NS[1] * gram + NS[2] * gram @ gram) @ x
            v = x.T if rows > cols else x
        gn = v / (v.norm() + 1e-7)
        u = gn / (torch.cosh(gn).square().mean().sqrt() + 1e-8)
        w = w * (1 - lr * weight_decay) - lr * math.sqrt(max(1, rows / cols)) * u
    return w


def _first_step(shape, ns_steps, grad):
    w = torch.nn.Parameter(torch.randn(shape))
    w0 = w.detach().clone()
    opt = AuON([w], lr=0.5, momentum=0.9, weight_decay=0.0, ns_steps=ns_steps)
    w.grad = grad.clone()
    opt.step()
    return ((w0 - w.detach()) / (0.5 * math.sqrt(max(1, shape[0] / shape[1])))).double()


def test_auon_step_is_the_normalised_momentum_shrunk_by_the_cosh_rms():
    grad = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    u = _first_step((12, 5), 0, grad)
    g = grad.double() / grad.double().norm()
    # The first Nesterov-EMA momentum is a positive multiple of the gradient: same direction ...
    torch.testing.assert_close(u / u.norm(), g, rtol=0, atol=1e-6)
    # ... and the length is 1 / RMS(cosh(G)), below 1: a spectral-norm trust region with no
    # orthogonalisation, so the singular values keep their ratios.
    torch.testing.assert_close(u.norm(), 1 / torch.cosh(g).square().mean().sqrt(), rtol=1e-5, atol=0)
    assert torch.linalg.matrix_norm(u, ord=2) < 1
    s_u, s_g = torch.linalg.svdvals(u), torch.linalg.svdvals(g)
    torch.testing.assert_close(s_u / s_u[0], s_g / s_g[0], rtol=0, atol=1e-5)


def test_cosh_brake_shortens_steps_with_large_entries():
    dense = torch.ones(4, 4)
    spike = torch.zeros(4, 4)
    spike[0, 0] = 1.0  # all the norm in one entry
    n = 16
    expected = 1 / math.sqrt((n - 1 + math.cosh(1.0) ** 2) / n)
    assert cosh_rms_normalise(spike).norm().item() == pytest.approx(expected, rel=1e-6)
    assert cosh_rms_normalise(spike).norm() < cosh_rms_normalise(dense).norm() < 1


def test_hybrid_applies_one_newton_schulz_step_to_the_singular_values():
    grad = torch.randn(6, 10, generator=torch.Generator().manual_seed(1))
    u = _first_step((6, 10), 1, grad)
    s = torch.linalg.svdvals(grad.double())
    x = s / s.norm()
    f = NS[0] * x + NS[1] * x**3 + NS[2] * x**5  # one quintic step maps sigma to f(sigma)
    s_u = torch.linalg.svdvals(u)
    torch.testing.assert_close(s_u / s_u[0], f / f[0], rtol=0, atol=1e-5)
    plain = _first_step((6, 10), 0, grad)
    s_plain = torch.linalg.svdvals(plain)
    assert (s_plain / s_plain[0] - s_u / s_u[0]).abs().max() > 0.05


@pytest.mark.parametrize("ns_steps", [0, 1, 5])
def test_steps_match_a_float64_reference(ns_steps):
    shapes = [(6, 4), (4, 6), (4, 6)]  # tall, wide, and a repeated shape (one batched call)
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    starts = [p.detach().clone() for p in params]
    g = torch.Generator().manual_seed(1)
    grads = [[torch.randn(s, generator=g) for _ in range(4)] for s in shapes]
    hp = dict(lr=0.3, momentum=0.9, weight_decay=0.1, ns_steps=ns_steps)
    opt = AuON(params, **hp)
    for step in range(4):
        for p, gs in zip(params, grads):
            p.grad = gs[step].clone()
        opt.step()
    for p, w0, gs in zip(params, starts, grads):
        ref = _auon_reference(w0, gs, **hp)
        torch.testing.assert_close(p.detach().double(), ref, rtol=0, atol=2e-6)


@pytest.mark.parametrize("name", ["auon", "auon_hybrid"])
def test_hidden_matrices_get_auon_and_the_rest_adamw(name):
    model = tiny_model()
    opt = build(name, model, learning_rate=0.2, muon_to_adam_lr=0.05)
    assert isinstance(opt, HybridOptimizer)
    matrix, adamw = opt.parts
    assert isinstance(matrix, AuON) and isinstance(adamw, torch.optim.AdamW)
    assert matrix.param_groups[0]["ns_steps"] == (1 if name == "auon_hybrid" else 0)
    roles = {id(t.param): t.role for t in model.tagged_parameters()}
    assert {roles[id(p)] for p in matrix.param_groups[0]["params"]} == {Role.HIDDEN}
    assert all(g["lr"] == pytest.approx(0.01) for g in adamw.param_groups)


@pytest.mark.parametrize("ns_steps", [1, 5])
def test_the_hybrids_step_count_is_a_hyperparameter(ns_steps):
    model = tiny_model()
    assert build("auon_hybrid", model, ns_steps=ns_steps).parts[0].param_groups[0]["ns_steps"] == ns_steps


def test_a_hybrid_without_newton_schulz_is_refused():
    with pytest.raises(UserError, match="ns_steps"):
        build("auon_hybrid", tiny_model(), ns_steps=0)


@pytest.mark.parametrize("name", ["auon", "auon_hybrid"])
def test_training_reduces_the_loss(name):
    model = tiny_model()
    losses = train(model, build(name, model), range(30))
    assert losses[-1] < 0.6 * losses[0]


@pytest.mark.parametrize("name", ["auon", "auon_hybrid"])
def test_resume_from_a_checkpoint_is_bitwise(name):
    assert_resume_is_bitwise(name)


@pytest.mark.parametrize("name", ["auon", "auon_hybrid"])
def test_registered_with_complete_defaults_and_loadable_spaces(name):
    assert_registered(name)
