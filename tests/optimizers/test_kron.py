"""PSGD Kron (bench/optimizers/kron.py), against direct computations and PyPI kron-torch 0.3.3."""
import math

import pytest
import torch

from bench.optimizers.kron import DAMPING, SEED, Kron, norm_lower_bound, update_fraction, update_probability

from .testkit import assert_registered, assert_resume_is_bitwise, build, tiny_model, train

# tiny matrices: one thread avoids OpenMP oversubscription on busy CI cores
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


def _grads(n: int, shape: tuple[int, ...], seed: int = 0, dtype=torch.float32) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=dtype) for _ in range(n)]


def _lower_bound(a: torch.Tensor) -> torch.Tensor:
    """Li's bound written out: the largest column x, then ||A (x^T A / ||x^T A||)||."""
    x = a[:, (a * a).sum(0).argmax()]
    y = x @ a
    return torch.linalg.vector_norm(a @ (y / y.norm()))


def test_the_preconditioner_update_matches_a_direct_computation_on_a_2x3_problem():
    w = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
    g = _grads(1, (2, 3), dtype=torch.float64)[0]
    opt = Kron([w], lr=0.0, b1=0.0, preconditioner_update_probability=1.0, preconditioner_lr=0.1,
               preconditioner_init_scale=4.0)
    w.grad = g.clone()
    opt.step()

    v = torch.randn(2, 3, generator=torch.Generator().manual_seed(SEED), dtype=torch.float64)
    ql0, qr0 = 2.0 * torch.eye(2, dtype=torch.float64), 2.0 * torch.eye(3, dtype=torch.float64)  # 4^(1/2)
    a = ql0 @ (g + DAMPING * g.abs().mean() * v) @ qr0.T
    b = torch.linalg.inv(ql0).T @ v @ torch.linalg.inv(qr0)
    expected = {}
    for key, q, ta, tb in (("QL.0", ql0, a @ a.T, b @ b.T), ("QR.0", qr0, a.T @ a, b.T @ b)):
        expected[key] = q - 0.1 / _lower_bound(ta + tb) * torch.triu(ta - tb) @ q
        torch.testing.assert_close(opt.state[w][key], expected[key], atol=1e-12, rtol=0)
    assert torch.equal(opt.state[w]["QL.0"], torch.triu(opt.state[w]["QL.0"]))


def test_the_update_is_the_preconditioned_momentum_clipped_to_rms_1_1():
    w0 = torch.randn(2, 3, dtype=torch.float64)
    w = torch.nn.Parameter(w0.clone())
    opt = Kron([w], lr=0.01, b1=0.5, weight_decay=0.3, preconditioner_update_probability=1.0)
    grads = _grads(3, (2, 3), seed=1, dtype=torch.float64)
    m, expect = torch.zeros(2, 3, dtype=torch.float64), w0.clone()
    for t, g in enumerate(grads, start=1):
        w.grad = g.clone()
        opt.step()
        m = 0.5 * m + 0.5 * g
        ql, qr = opt.state[w]["QL.0"], opt.state[w]["QR.0"]  # the factors just fitted this step
        u = ql.T @ ql @ (m / (1 - 0.5**t)) @ qr.T @ qr
        u = u / max(1.0, (u.square().mean().sqrt() / 1.1).item())
        expect = expect - 0.01 * (u + 0.3 * expect)
        torch.testing.assert_close(w.detach(), expect, atol=1e-12, rtol=0)


def test_norm_lower_bound_brackets_the_spectral_norm():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 7, 5, generator=gen, dtype=torch.float64)
    a = x @ x.mT - 0.5 * torch.eye(7, dtype=torch.float64)  # symmetric, indefinite
    bound = norm_lower_bound(a)
    spectral = torch.linalg.matrix_norm(a, ord=2)
    assert torch.all(bound <= spectral * (1 + 1e-12)) and torch.all(bound >= spectral / math.sqrt(7))
    torch.testing.assert_close(bound, torch.stack([_lower_bound(m) for m in a]))
    assert norm_lower_bound(torch.zeros(1, 3, 3)).item() == 0.0


def test_update_probability_schedule_and_deterministic_update_counter():
    assert update_probability(10, 0.05, 500) == 1.0
    assert update_probability(500 + 1000, 0.05, 500) == pytest.approx(math.exp(-1.0))
    assert update_probability(10**6, 0.05, 500) == 0.05
    assert update_probability(1, 0.05, 10**6) == 1.0  # a flat start this long overflowed exp
    w = torch.nn.Parameter(torch.zeros(3, 3))
    opt = Kron([w], lr=0.01, preconditioner_update_probability=0.25, update_prob_flat_start=-10**5)
    updated = []
    for g in _grads(8, (3, 3)):
        before = opt.state[w]["QL.0"].clone() if opt.state[w] else torch.eye(3)
        w.grad = g
        opt.step()
        updated.append(not torch.equal(before, opt.state[w]["QL.0"]))
    assert updated == [False, False, False, True] * 2  # every 1/p = 4th step


def test_factor_balancing_keeps_the_preconditioner():
    w = torch.nn.Parameter(torch.zeros(3, 4, dtype=torch.float64))
    opt = Kron([w], lr=0.0, preconditioner_update_probability=1.0, preconditioner_lr=0.5)
    for g in _grads(99, (3, 4), dtype=torch.float64):
        w.grad = g
        opt.step()
    ql, qr = opt.state[w]["QL.0"].clone(), opt.state[w]["QR.0"].clone()
    opt.param_groups[0]["preconditioner_lr"] = 0.0  # the 100th update only rebalances
    w.grad = torch.ones(3, 4, dtype=torch.float64)
    opt.step()
    nl, nr = opt.state[w]["QL.0"].abs().max(), opt.state[w]["QR.0"].abs().max()
    torch.testing.assert_close(nl, nr)
    torch.testing.assert_close(torch.kron(opt.state[w]["QL.0"], opt.state[w]["QR.0"]), torch.kron(ql, qr))
    assert opt.state["kron"]["balance_counter"] == 0


def test_normalize_grads_makes_kron_invariant_to_gradient_scale():
    finals = []
    for scale in (1.0, 1000.0):
        w = torch.nn.Parameter(torch.ones(4, 3, dtype=torch.float64))
        opt = Kron([w], lr=0.1, normalize_grads=True, preconditioner_update_probability=1.0)
        for g in _grads(5, (4, 3), seed=3, dtype=torch.float64):
            w.grad = scale * g
            opt.step()
        finals.append(w.detach().clone())
    torch.testing.assert_close(finals[0], finals[1], atol=1e-10, rtol=1e-10)


def test_a_blocked_matrix_is_preconditioned_as_independent_blocks_with_slices_of_one_probe():
    grads = _grads(4, (4, 6), seed=2, dtype=torch.float64)
    w = torch.nn.Parameter(torch.zeros(4, 6, dtype=torch.float64))
    opt = Kron([w], lr=0.1, block_size=3, preconditioner_update_probability=1.0)
    for g in grads:
        w.grad = g
        opt.step()
    assert sorted(k for k in opt.state[w] if k.startswith("QL")) == [f"QL.{k}" for k in range(4)]
    assert opt.state[w]["QL.0"].shape == (3, 3) and opt.state[w]["QL.2"].shape == (1, 1)
    assert opt.state[w]["QR.0"].shape == (3, 3)


def test_1d_params_have_one_diagonal_factor():
    b = torch.nn.Parameter(torch.zeros(5))
    opt = Kron([b], lr=0.1, preconditioner_update_probability=1.0)
    for g in _grads(3, (5,)):
        b.grad = g
        opt.step()
    assert set(opt.state[b]) == {"mu", "QR.0"} and opt.state[b]["QR.0"].shape == (5,)


@pytest.fixture
def kron_torch(monkeypatch):
    """kron-torch 0.3.3, run eagerly, with its in-place probe damping of the momentum switched off.

    kron-torch adds the damping noise to the momentum it later preconditions (`G += ...` inside
    _calc_A_and_conjB); Levanter (the study's) does not, and neither do we. Cloning G there is the
    only change.
    """
    import kron_torch.kron as kron_module
    import torch._dynamo

    original = kron_module._calc_A_and_conjB
    monkeypatch.setattr(kron_module, "_calc_A_and_conjB", lambda expr, g, q: original(expr, g.clone(), q))
    # config.patch, not monkeypatch: monkeypatch's undo deletes the config entry, which breaks every
    # later torch.compile in the session
    with torch._dynamo.config.patch(disable=True):
        yield kron_module


def test_matches_kron_torch_step_by_step(kron_torch):
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(6, 4)), torch.nn.Parameter(torch.randn(3, 6)),
            torch.nn.Parameter(torch.randn(6))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    hp = dict(lr=0.02, b1=0.9, preconditioner_update_probability=1.0)
    # kron-torch decays only tensors with ndim >= 2; ours decays by param group.
    opt = Kron([{"params": ours[:2], "weight_decay": 0.1}, {"params": ours[2:], "weight_decay": 0.0}],
               preconditioner_lr=0.1, normalize_grads=False, **hp)
    ref = kron_torch.Kron(theirs, weight_decay=0.1, precond_lr=0.1, precond_init_scale=1.0, **hp)
    torch.manual_seed(SEED)  # kron-torch draws its probes from the global generator
    for step, gs in enumerate(zip(*[_grads(10, p.shape, seed=i) for i, p in enumerate(ours)])):
        for a, b, g in zip(ours, theirs, gs):
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5, msg=f"step {step}")
    torch.testing.assert_close(opt.state[ours[0]]["QL.0"], ref.state[theirs[0]]["Q"][0], atol=1e-5, rtol=1e-4)


def test_the_noise_hook_gives_kron_and_kron_torch_the_same_injected_probes(kron_torch, monkeypatch):
    """Probes from a generator neither draws from (seed 7), injected into ours through `noise` and
    into kron-torch through torch.randn_like, its only draw: the steps match, so the probes alone
    carried the randomness."""
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(6, 4)), torch.nn.Parameter(torch.randn(3, 6)),
            torch.nn.Parameter(torch.randn(6))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    gen = torch.Generator().manual_seed(7)
    probes = [torch.randn(p.shape, generator=gen) for _ in range(20) for p in ours]  # step-major, 20 steps
    mine, their_queue = list(probes), list(probes)
    hp = dict(lr=0.02, b1=0.9, preconditioner_update_probability=1.0)
    opt = Kron([{"params": ours[:2], "weight_decay": 0.1}, {"params": ours[2:], "weight_decay": 0.0}],
               preconditioner_lr=0.1, normalize_grads=False,
               noise=lambda params: [mine.pop(0) for _ in params], **hp)
    ref = kron_torch.Kron(theirs, weight_decay=0.1, precond_lr=0.1, precond_init_scale=1.0, **hp)
    monkeypatch.setattr(torch, "randn_like", lambda g: their_queue.pop(0).to(g.dtype))
    for step, gs in enumerate(zip(*[_grads(20, p.shape, seed=i) for i, p in enumerate(ours)])):
        for a, b, g in zip(ours, theirs, gs):
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5, msg=f"step {step}")
    assert not mine and not their_queue  # every probe used, once per param per step


def test_trains_a_tiny_model():
    model = tiny_model()
    losses = train(model, build("kron", model, block_size=8), range(25))
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("overrides", [
    dict(block_size=8, preconditioner_update_probability=0.5, update_prob_flat_start=0), dict()])
def test_resume_from_a_checkpoint_is_bitwise_identical(overrides):
    assert_resume_is_bitwise("kron", **overrides)


def test_registered_with_complete_defaults_and_loadable_spaces():
    assert_registered("kron")


def test_update_fraction_counts_the_steps_the_schedule_fits():
    # all steps before flat_start fit; far beyond it, one in 1/min_prob (plus the decay's tail)
    assert update_fraction(500, 0.05, 2000) == 1.0
    assert 0.05 <= update_fraction(100_000, 0.05, 0) < 0.06
    # the same count as the optimizer's own schedule
    opt = Kron([torch.nn.Parameter(torch.randn(4, 3))], lr=0.01, update_prob_flat_start=100)
    glob = opt._global(torch.device("cpu"))
    fits = sum(opt._schedule(glob)[0] for _ in range(3000))
    assert fits == round(update_fraction(3000, 0.05, 100) * 3000)
