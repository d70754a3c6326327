"""Sophia-H (bench/optimizers/sophia.py): the clip bound |dp| <= lr, Hutchinson's estimator of the
Hessian diagonal, SophiaG's Gauss-Newton-Bartlett estimator of the Gauss-Newton diagonal, the public
curvature entry, the study's update equations, the curvature schedule, checkpoint resume (probe RNG
included) and registration."""
import pytest
import torch

from bench.errors import UserError
from bench.optimizers.registry import get
from bench.optimizers.sophia import batch_gnb, batch_hutchinson, gaussian_probes, hessian_vector
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
    assert_registered("sophia", {"beta1", "beta2", "epsilon", "gamma", "weight_decay", "update_interval",
                                 "hessian_estimator", "variant"})


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


class _Bigram(torch.nn.Module):
    """Logits = a row of one table per input token: the Jacobian of a token's logits selects a row."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(0.7 * torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(5),
                                                          dtype=torch.float64))

    def forward(self, x):
        return self.table[x]


@pytest.mark.usefixtures("one_thread")  # 10^4 tiny backward passes: threads only add overhead
def test_gauss_newton_bartlett_estimates_the_gauss_newton_diagonal():
    """E[B g^ * g^] over labels sampled from the model is diag of the Gauss-Newton matrix of the mean
    loss: here (1/N) sum over tokens t with input k of p_t,j (1 - p_t,j) for table[k, j]."""
    vocab = 4
    model = _Bigram(vocab)
    x = torch.tensor([[0, 1, 2, 1, 3, 0], [2, 2, 0, 1, 1, 3]])
    probs = model.table.detach().softmax(-1)
    inputs = x[:, :-1].reshape(-1)
    exact = torch.zeros(vocab, vocab, dtype=torch.float64)
    exact.index_add_(0, inputs, probs[inputs] * (1 - probs[inputs]))
    exact /= inputs.numel()
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([batch_gnb(model, x, [model.table], gen)[0] for _ in range(10000)])
    # each draw is about exact * chi-square(1): relative standard error sqrt(2 / 10^4) = 1.4%
    torch.testing.assert_close(draws.mean(0), exact, rtol=0.1, atol=0)


def test_micro_batched_gnb_is_the_whole_batch_estimate():
    model = tiny_model().double()
    x = torch.cat([batch(0), batch(1)])[:6]
    params = list(model.parameters())
    whole = batch_gnb(model, x, params, torch.Generator().manual_seed(0))
    # the same sampled labels: one draw per token, in row order, whatever the chunks
    split = batch_gnb(model, x, params, torch.Generator().manual_seed(0), micro_batch=3)
    for a, b in zip(whole, split):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_update_curvature_takes_estimates_into_the_hessian_ema():
    params = tagged({"w": (3, 2), "norm": (2,)})
    opt = get("sophia").build(params, {**get("sophia").defaults, **HP}, None)
    first, second = random_grads(params, 2)
    opt.update_curvature(first)
    opt.update_curvature(second)
    for tp, a, b in zip(params, first, second):
        expected = HP["beta2"] * (1 - HP["beta2"]) * a + (1 - HP["beta2"]) * b
        torch.testing.assert_close(opt.state[tp.param]["hessian"], expected)


@pytest.mark.parametrize("estimator,function", [("hutchinson", batch_hutchinson), ("gnb", batch_gnb)])
def test_the_estimator_is_selectable(estimator, function):
    opt = build("sophia", tiny_model(), hessian_estimator=estimator)
    assert opt.estimate is function


def test_an_unknown_estimator_is_the_users_error():
    with pytest.raises(UserError, match="hessian_estimator"):
        build("sophia", tiny_model(), hessian_estimator="fisher")


def test_sophia_g_trains_a_tiny_model_and_resumes_bitwise():
    model = tiny_model()
    losses = train(model, build("sophia", model, hessian_estimator="gnb", update_interval=2), range(25),
                   curvature=True)
    assert losses[-1] < 0.7 * losses[0]
    assert_resume_is_bitwise("sophia", hessian_estimator="gnb", update_interval=2)


def _sophia_g(params, grad_steps, hess_grads, learning_rate, beta1, beta2, rho, bs, weight_decay, eps=1e-15):
    """Liuhong99/Sophia sophia.py (commit a7e157229b71d58cf995d32854f1be15c265b350) in float64:
    update_hessian (h <- b2 h + (1 - b2) g^ * g^) before the steps that have a g^, then
    _single_tensor_sophiag with step(bs=bs)."""
    ws = [tp.param.detach().double() for tp in params]
    ms = [torch.zeros_like(w) for w in ws]
    hs = [torch.zeros_like(w) for w in ws]
    for t, grads in enumerate(grad_steps):
        for i, (tp, g) in enumerate(zip(params, grads)):
            if hess_grads[t] is not None:
                hg = hess_grads[t][i].double()
                hs[i] = hs[i] * beta2 + hg * hg * (1 - beta2)
            ws[i] = ws[i] * (1 - learning_rate * (weight_decay if tp.role is Role.HIDDEN else 0.0))
            ms[i] = ms[i] * beta1 + g.double() * (1 - beta1)
            ratio = (ms[i].abs() / (rho * bs * hs[i] + eps)).clamp(None, 1)
            ws[i] = ws[i] - learning_rate * ms[i].sign() * ratio
    return ws


def test_the_authors_variant_matches_sophia_g_over_20_steps_in_fp32():
    """Our h holds B g^ * g^ (batch_gnb), theirs g^ * g^ with B in the step: the same update. The
    curvature is driven through update_curvature every other step, as their update_hessian."""
    params = tagged({"w": (5, 4), "norm": (4,)})
    bs = 64
    hp = {**HP, "gamma": 0.04, "epsilon": 1e-15, "variant": "authors"}
    opt = get("sophia").build(params, {**get("sophia").defaults, **hp}, None)
    grad_steps = random_grads(params, 20)
    hess = random_grads(params, 20, seed=9)
    hess_grads = [[0.05 * g for g in hess[t]] if t % 2 == 0 else None for t in range(20)]
    expected = _sophia_g(params, grad_steps, hess_grads, HP["learning_rate"], HP["beta1"], HP["beta2"],
                         rho=0.04, bs=bs, weight_decay=HP["weight_decay"])
    for grads, hg in zip(grad_steps, hess_grads):
        if hg is not None:
            opt.update_curvature([bs * g * g for g in hg])
        step_with(opt, params, grads)
    for tp, w in zip(params, expected):
        assert (tp.param.double() - w).abs().max() < 1e-4, tp.name


def test_the_20_step_comparison_tells_the_sophia_variants_apart():
    params = tagged({"w": (5, 4), "norm": (4,)})
    hp = {**get("sophia").defaults, **HP, "gamma": 0.04, "epsilon": 1e-15}
    runs = []
    for variant in ("study", "authors"):
        ps = tagged({"w": (5, 4), "norm": (4,)})
        opt = get("sophia").build(ps, {**hp, "variant": variant}, None)
        for t, grads in enumerate(random_grads(params, 20)):
            if t % 2 == 0:
                opt.update_curvature([64 * 0.0025 * g * g for g in random_grads(params, 1, seed=t)[0]])
            step_with(opt, ps, grads)
        runs.append(ps)
    assert max((a.param - b.param).abs().max() for a, b in zip(*runs)) > 5e-4  # 5x the tolerance
