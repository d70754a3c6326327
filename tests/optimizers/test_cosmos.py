"""COSMOS (bench/optimizers/cosmos.py): Adam on a leading eigensubspace, Muon on the rest."""
import math

import pytest
import torch

from bench.optimizers.cosmos import Cosmos
from bench.optimizers.newton_schulz import newton_schulz

from .testkit import assert_registered, assert_resume_is_bitwise, build, tiny_model, train

# tiny matrices: one thread avoids OpenMP oversubscription on busy CI cores
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


F64 = torch.float64


def _grads(n: int, shape: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=F64) for _ in range(n)]


def _run(opt: torch.optim.Optimizer, param: torch.Tensor, grads: list[torch.Tensor]) -> None:
    for g in grads:
        param.grad = g.clone()
        opt.step()


def _projector(basis: torch.Tensor) -> torch.Tensor:
    return basis @ basis.T


def test_the_subspace_tracks_the_leading_eigenvectors_of_the_second_moment_by_power_iteration():
    w = torch.nn.Parameter(torch.zeros(6, 5, dtype=F64))
    opt = Cosmos([w], lr=0.01, betas=(0.9, 0.8), rank=2)
    grads = _grads(4, (6, 5))
    _run(opt, w, grads[:1])
    st = opt.state[w]
    evals, evecs = torch.linalg.eigh(grads[0].T @ grads[0])
    torch.testing.assert_close(_projector(st["basis"]), _projector(evecs[:, -2:]))  # top-2 span
    for g in grads[1:]:
        old, s_old = st["basis"].clone(), st["gram"].clone()
        _run(opt, w, [g])
        # the paper's form: P = QR(b2 P S + (1 - b2) g^T g P), S = P^T (b2 P S P^T + (1 - b2) g^T g) P
        expected = torch.linalg.qr(0.8 * old @ s_old + 0.2 * g.T @ g @ old).Q
        torch.testing.assert_close(_projector(st["basis"]), _projector(expected))
        second = 0.8 * old @ s_old @ old.T + 0.2 * g.T @ g
        p = st["basis"]
        torch.testing.assert_close(st["gram"], p.T @ second @ p)


def test_every_update_has_rms_lr_times_lr_ratio():
    w = torch.nn.Parameter(torch.zeros(8, 6, dtype=F64))
    opt = Cosmos([w], lr=0.03, lr_ratio=0.5, rank=2)
    for g in _grads(4, (8, 6), seed=1):
        before = w.detach().clone()
        _run(opt, w, [g])
        rms = (w.detach() - before).square().mean().sqrt()
        torch.testing.assert_close(rms, torch.tensor(0.015, dtype=F64))


def _reference_cosmos(grads, lr, beta1, beta2, eps, rank, gamma, ratio):
    """The authors' COSMOS_optim.py update written out for one matrix, float64."""
    rows, cols = grads[0].shape
    w, m, v = torch.zeros(rows, cols, dtype=F64), torch.zeros(rows, cols, dtype=F64), None
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + g
        if t == 1:
            p = torch.linalg.eigh(g.T @ g).eigenvectors.flip(-1)[:, :rank]
            s = (1 - beta2) * p.T @ g.T @ g @ p
            v = torch.zeros(rows, rank, dtype=F64)
        else:
            new = torch.linalg.qr(beta2 * p @ s + (1 - beta2) * g.T @ (g @ p)).Q
            turn = p.T @ new
            p = new
            s = beta2 * turn.T @ s @ turn + (1 - beta2) * (g @ p).T @ (g @ p)
        v = beta2 * v + (1 - beta2) * (g @ p) ** 2
        h = (g + beta1 * m) / (1 + beta1 * (1 - beta1**t) / (1 - beta1))
        a = ((h @ p) / ((v / (1 - beta2**t)).sqrt() + eps)) @ p.T
        b = newton_schulz(h - h @ p @ p.T, steps=5)
        b = b / (b.norm() + eps)
        u = a + gamma * math.sqrt(rows * cols) * b
        w = w - lr * ratio * math.sqrt(rows * cols) * u / (u.norm() + eps)
    return w


def test_a_step_matches_a_hand_written_reference_of_the_authors_update():
    hp = dict(lr=0.05, beta1=0.9, beta2=0.95, eps=1e-8, rank=2, gamma=0.2, ratio=0.1)
    grads = _grads(5, (5, 4), seed=2)
    w = torch.nn.Parameter(torch.zeros(5, 4, dtype=F64))
    opt = Cosmos([w], lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"], rank=hp["rank"],
                 gamma=hp["gamma"], lr_ratio=hp["ratio"])
    _run(opt, w, grads)
    torch.testing.assert_close(w.detach(), _reference_cosmos(grads, **hp), atol=1e-12, rtol=0)


def test_the_subspace_part_is_adam_and_the_rest_is_orthogonalised():
    """Split the update by the basis: inside span(P) it is Adam's direction, outside it is
    Newton-Schulz-orthogonalised (singular values near 1 after rescaling)."""
    g = _grads(1, (12, 8), seed=3)[0]
    w = torch.nn.Parameter(torch.zeros(12, 8, dtype=F64))
    opt = Cosmos([w], lr=1.0, betas=(0.0, 0.0), eps=0.0, rank=3, gamma=1.0)
    _run(opt, w, [g])
    p = opt.state[w]["basis"]
    update = -w.detach()
    inside = update @ p  # Adam with beta = 0 in the basis: sign(g P)
    torch.testing.assert_close(inside / inside.abs().max(), torch.sign(g @ p))
    outside = update - update @ p @ p.T
    muon = newton_schulz(g - g @ p @ p.T, steps=5)
    torch.testing.assert_close(outside / outside.norm(), muon / muon.norm())
    sv = torch.linalg.svdvals(muon)[:5]  # the residual has rank 8 - 3: NS5 flattens its spectrum
    assert sv.min() > 0.5 and sv.max() < 1.3


def test_full_rank_leaves_nothing_for_muon():
    w = torch.nn.Parameter(torch.zeros(5, 3, dtype=F64))
    opt = Cosmos([w], lr=0.1, rank=64)
    _run(opt, w, _grads(3, (5, 3), seed=4))
    assert opt.state[w]["basis"].shape == (3, 3)
    assert torch.isfinite(w).all()


def test_trains_a_tiny_model():
    model = tiny_model()
    losses = train(model, build("cosmos", model, rank=4, learning_rate=0.02), range(25))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("rank", [4, 64])
def test_resume_from_a_checkpoint_is_bitwise_identical(rank):
    assert_resume_is_bitwise("cosmos", rank=rank)


def test_registered_with_complete_defaults_and_loadable_spaces():
    assert_registered("cosmos")
