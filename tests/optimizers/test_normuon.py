"""NorMuon (bench/optimizers/normuon.py): equalised row norms, the reference code's equations,
checkpoint resume and registration."""
import math

import pytest
import torch

from bench.optimizers.muon import Muon
from bench.optimizers.normuon import NorMuon

from .testkit import assert_registered, assert_resume_is_bitwise, build, tiny_model, train

pytestmark = pytest.mark.integration


def _reference_normuon(w0, grads, lr, momentum, beta2, weight_decay):
    """zichongli5/NorMuon normuon_update + SingleDeviceNorMuon's step, written out in float64."""
    a, b, c = 3.4445, -4.7750, 2.0315
    w = w0.double()
    m = torch.zeros_like(w)
    v = torch.zeros(w.shape[0], 1, dtype=torch.float64)
    for g in grads:
        g = g.double()
        m = m + (1 - momentum) * (g - m)
        x = g + momentum * (m - g)
        tall = x.shape[0] > x.shape[1]
        x = x.T if tall else x
        x = x / (x.norm() + 1e-7)
        for _ in range(5):
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
        o = x.T if tall else x
        v = v + (1 - beta2) * ((o * o).mean(dim=-1, keepdim=True) - v)
        o2 = o / (v.sqrt() + 1e-10)
        o2 = o2 * (o.norm() / (o2.norm() + 1e-10))
        o2 = o2 * math.sqrt(max(1.0, w.shape[0] / w.shape[1]))
        w = w * (1 - lr * weight_decay) - lr * o2
    return w


def _first_step(opt_cls, grad, **kw):
    w = torch.nn.Parameter(torch.zeros_like(grad))
    opt = opt_cls([w], lr=1.0, weight_decay=0.0, **kw)
    w.grad = grad.clone()
    opt.step()
    return -w.detach()


def test_row_norms_of_the_normalised_update_are_equalised():
    grad = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))  # tall: U V^T rows differ
    muon_rows = _first_step(Muon, grad, ema=True).norm(dim=1)
    normuon_update = _first_step(NorMuon, grad)
    rows = normuon_update.norm(dim=1)
    assert muon_rows.std() / muon_rows.mean() > 0.05  # the imbalance NorMuon removes
    assert rows.std() / rows.mean() < 1e-5
    # the rescaling keeps the Frobenius norm of Muon's update
    torch.testing.assert_close(normuon_update.norm(), muon_rows.norm(), rtol=1e-5, atol=0)


def test_keeps_one_second_moment_per_output_neuron():
    w = torch.nn.Parameter(torch.randn(12, 8))
    opt = NorMuon([w], lr=0.01)
    w.grad = torch.randn(12, 8)
    opt.step()
    assert opt.state[w]["second_momentum_buffer"].shape == (12, 1)


def test_steps_match_a_float64_transcription_of_the_reference_code():
    shapes = [(6, 4), (4, 6), (4, 6)]
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    starts = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(1)
    grads = [[torch.randn(s, generator=gen) for _ in range(4)] for s in shapes]
    hp = dict(lr=0.05, momentum=0.9, beta2=0.95, weight_decay=0.1)
    opt = NorMuon(params, **hp)
    for step in range(4):
        for p, g in zip(params, grads):
            p.grad = g[step].clone()
        opt.step()
    for p, w0, g in zip(params, starts, grads):
        ref = _reference_normuon(w0, g, **hp)
        torch.testing.assert_close(p.detach().double(), ref, rtol=0, atol=2e-6)


def test_trains_a_tiny_model():
    model = tiny_model()
    losses = train(model, build("normuon", model), range(30))
    assert losses[-1] < 0.5 * losses[0]


def test_resume_from_checkpoint_is_bitwise():
    assert_resume_is_bitwise("normuon")


def test_registered_with_complete_defaults_and_loadable_space():
    assert_registered("normuon")
