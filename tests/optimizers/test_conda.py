"""Conda (bench/optimizers/conda.py): Adam in the singular basis of the momentum."""
import pytest
import torch

from bench.optimizers.conda import Conda
from bench.roles import Role

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


@pytest.mark.parametrize("shape", [(5, 3), (3, 5)])
def test_the_basis_is_the_smaller_sides_singular_basis_of_the_momentum_refreshed_every_gap(shape):
    w = torch.nn.Parameter(torch.zeros(shape, dtype=F64))
    opt = Conda([w], lr=0.01, betas=(0.8, 0.99), update_proj_gap=3)
    m = torch.zeros(shape, dtype=F64)
    for t, g in enumerate(_grads(7, shape)):
        before = opt.state[w]["basis"].clone() if opt.state[w] else None
        _run(opt, w, [g])
        m = 0.8 * m + 0.2 * g
        basis = opt.state[w]["basis"]
        assert basis.shape == (3, 3)
        torch.testing.assert_close(basis.T @ basis, torch.eye(3, dtype=F64))
        if t % 3:
            assert torch.equal(basis, before)
            continue
        # the momentum in this basis has orthogonal columns (tall) / rows (wide): its singular values
        rotated = m @ basis if shape[0] > shape[1] else basis.T @ m
        gram = rotated.T @ rotated if shape[0] > shape[1] else rotated @ rotated.T
        torch.testing.assert_close(gram, torch.diag(torch.linalg.svdvals(m) ** 2), atol=1e-12, rtol=0)


def _reference_conda(w0, grads, lr, beta1, beta2, eps, wd, gap, scale):
    """The authors' update written out (tall matrix: right singular basis), float64."""
    w, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
    basis = None
    for t, g in enumerate(grads):
        m = beta1 * m + (1 - beta1) * g
        if t % gap == 0:
            basis = torch.linalg.svd(m, full_matrices=False).Vh.T
        v = beta2 * v + (1 - beta2) * (g @ basis) ** 2
        u = ((m @ basis) / (v.sqrt() + eps)) @ basis.T * scale
        w = w - lr * (1 - beta2 ** (t + 1)) ** 0.5 / (1 - beta1 ** (t + 1)) * u
        w = w * (1 - lr * wd)
    return w


def test_a_step_matches_a_hand_written_reference_of_the_authors_update():
    hp = dict(lr=0.02, beta1=0.9, beta2=0.95, eps=1e-8, wd=0.1, gap=2, scale=0.25)
    grads = _grads(6, (4, 3), seed=1)
    w0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    w = torch.nn.Parameter(w0.clone())
    opt = Conda([w], lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"],
                weight_decay=hp["wd"], update_proj_gap=hp["gap"], conda_scale=hp["scale"])
    _run(opt, w, grads)
    torch.testing.assert_close(w.detach(), _reference_conda(w0, grads, **hp), atol=1e-12, rtol=0)


def test_the_update_is_equivariant_to_rotations_of_the_projected_side():
    """Conda(R G) = R Conda(G) for orthogonal R acting on the smaller side; Adam's is not."""
    grads = _grads(5, (3, 6), seed=3)
    rot = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(4), dtype=F64)).Q
    finals = []
    for r in (torch.eye(3, dtype=F64), rot):
        w = torch.nn.Parameter(torch.zeros(3, 6, dtype=F64))
        _run(Conda([w], lr=0.1, update_proj_gap=2), w, [r @ g for g in grads])
        finals.append(w.detach())
    torch.testing.assert_close(finals[1], rot @ finals[0], atol=1e-12, rtol=0)
    adam = []
    for r in (torch.eye(3, dtype=F64), rot):
        w = torch.nn.Parameter(torch.zeros(3, 6, dtype=F64))
        _run(torch.optim.Adam([w], lr=0.1), w, [r @ g for g in grads])
        adam.append(w.detach())
    assert not torch.allclose(adam[1], rot @ adam[0], atol=1e-3)


def test_unprojected_groups_are_adam_with_decay_after_the_update():
    grads = _grads(4, (6,), seed=5)
    b = torch.nn.Parameter(torch.ones(6, dtype=F64))
    _run(Conda([b], lr=0.01, betas=(0.9, 0.99), eps=0.0, project=False), b, grads)
    ref = torch.nn.Parameter(torch.ones(6, dtype=F64))
    _run(torch.optim.Adam([ref], lr=0.01, betas=(0.9, 0.99), eps=0.0), ref, grads)
    torch.testing.assert_close(b.detach(), ref.detach(), atol=1e-14, rtol=1e-12)


def test_only_hidden_matrices_are_projected():
    model = tiny_model()
    opt = build("conda", model, weight_decay=0.1)
    roles = {t.param: t.role for t in model.tagged_parameters()}
    for group in opt.param_groups:
        assert all((roles[p] == Role.HIDDEN) == group["project"] for p in group["params"])
        assert all(group["weight_decay"] == 0.0 or roles[p] in (Role.HIDDEN, Role.HEAD)
                   for p in group["params"])


def test_trains_a_tiny_model():
    model = tiny_model()
    losses = train(model, build("conda", model), range(25))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("gap", [2, 100])
def test_resume_from_a_checkpoint_is_bitwise_identical(gap):
    assert_resume_is_bitwise("conda", update_proj_gap=gap)


def test_registered_with_complete_defaults_and_loadable_spaces():
    assert_registered("conda")
