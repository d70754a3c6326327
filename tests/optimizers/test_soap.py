"""SOAP (bench/optimizers/soap.py): Adam in the eigenbasis of Shampoo's preconditioner."""
import pytest
import torch

from bench.optimizers.registry import get
from bench.optimizers.soap import Soap, eigenbasis, power_qr
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


def _assert_eigenbasis(q: torch.Tensor, gram: torch.Tensor) -> None:
    """q is orthogonal and diagonalises gram with its eigenvalues in descending order."""
    eye = torch.eye(q.shape[0], dtype=q.dtype)
    torch.testing.assert_close(q.T @ q, eye, atol=1e-12, rtol=0)
    descending = torch.linalg.eigvalsh(gram).flip(0)
    torch.testing.assert_close(q.T @ gram @ q, torch.diag(descending), atol=1e-12, rtol=0)


def test_preconditioners_and_eigenbases_match_a_direct_computation_on_a_2x3_problem():
    w = torch.nn.Parameter(torch.zeros(2, 3, dtype=F64))
    opt = Soap([w], lr=0.0, shampoo_beta=0.9, precondition_frequency=1)
    grads = _grads(4, (2, 3))
    _run(opt, w, grads[:1])
    st = opt.state[w]
    left, right = 0.1 * grads[0] @ grads[0].T, 0.1 * grads[0].T @ grads[0]
    torch.testing.assert_close(st["L.0"], left)
    torch.testing.assert_close(st["R.0"], right)
    _assert_eigenbasis(st["QL.0"], left)
    _assert_eigenbasis(st["QR.0"], right)  # rank 1: a 2-D null space, any orthonormal basis of it

    for g in grads[1:]:
        q_left, q_right = st["QL.0"].clone(), st["QR.0"].clone()
        _run(opt, w, [g])
        left, right = 0.9 * left + 0.1 * g @ g.T, 0.9 * right + 0.1 * g.T @ g
        torch.testing.assert_close(st["L.0"], left)
        torch.testing.assert_close(st["R.0"], right)
        for q_old, gram, key in ((q_left, left, "QL.0"), (q_right, right, "QR.0")):
            # one power-iteration step from the old basis, columns by Rayleigh quotient, then QR
            order = torch.argsort(torch.diag(q_old.T @ gram @ q_old), descending=True, stable=True)
            expected = torch.linalg.qr(gram @ q_old[:, order]).Q
            torch.testing.assert_close(st[key], expected)


def test_a_gram_matrix_of_mostly_zero_rows_gets_its_eigenbasis():
    """An embedding block whose tokens a small batch lacks: 16 of 256 rows nonzero. MKL's float64
    eigh fails to converge on some of these on Intel CPUs (1 in these 20 on a Xeon); the eigenbasis
    must still come back, orthonormal and diagonalising, largest eigenvalue first."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        g = torch.zeros(256, 64, dtype=torch.float64)
        g[torch.randperm(256, generator=generator)[:16]] = 1e-2 * torch.randn(16, 64, generator=generator,
                                                                           dtype=torch.float64)
        gram = g @ g.T
        q = eigenbasis(gram)
        torch.testing.assert_close(q.T @ q, torch.eye(256, dtype=torch.float64))
        d = q.T @ gram @ q
        torch.testing.assert_close(d, torch.diag(d.diagonal()), atol=1e-14, rtol=0)
        assert (d.diagonal()[:-1] >= d.diagonal()[1:] - 1e-14).all()


def test_repeated_refreshes_converge_to_the_eigenbasis_of_a_fixed_preconditioner():
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(5, 5, generator=gen, dtype=F64)
    gram = a @ a.T
    q = torch.linalg.qr(torch.randn(5, 5, generator=gen, dtype=F64)).Q
    v = torch.zeros(5, 1, dtype=F64)
    for _ in range(300):
        q, v = power_qr(gram, q, v, dim=-2)
    descending = torch.linalg.eigh(gram).eigenvectors.flip(-1)
    torch.testing.assert_close((q.T @ descending).abs(), torch.eye(5, dtype=F64), atol=1e-6, rtol=0)


def _reference_soap(w0, grads, lr, beta1, beta2, shampoo_beta, eps, wd, freq):
    """The paper's equations written out for one unblocked matrix, float64."""
    w = w0.clone()
    g0 = grads[0]
    left, right = (1 - shampoo_beta) * g0 @ g0.T, (1 - shampoo_beta) * g0.T @ g0
    ql, qr = (torch.linalg.eigh(gram).eigenvectors.flip(-1) for gram in (left, right))
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    for t, g in enumerate(grads[1:], start=1):
        m = beta1 * m + (1 - beta1) * g
        g_rot = ql.T @ g @ qr
        v = beta2 * v + (1 - beta2) * g_rot**2
        u = ql @ ((ql.T @ m @ qr) / (v.sqrt() + eps)) @ qr.T
        w = w * (1 - lr * wd) - lr * (1 - beta2**t) ** 0.5 / (1 - beta1**t) * u
        left = shampoo_beta * left + (1 - shampoo_beta) * g @ g.T
        right = shampoo_beta * right + (1 - shampoo_beta) * g.T @ g
        if t % freq == 0:
            for side in ("left", "right"):
                gram, q = (left, ql) if side == "left" else (right, qr)
                order = torch.argsort(torch.diag(q.T @ gram @ q), descending=True, stable=True)
                q = torch.linalg.qr(gram @ q[:, order]).Q
                v = v[order, :] if side == "left" else v[:, order]
                ql, qr = (q, qr) if side == "left" else (ql, q)
    return w


@pytest.mark.parametrize("freq", [1, 2])
def test_a_step_matches_a_hand_written_reference_of_the_paper_equations(freq):
    hp = dict(lr=0.05, beta1=0.9, beta2=0.95, shampoo_beta=0.8, eps=1e-8, wd=0.1)
    grads = _grads(7, (4, 3), seed=1)
    w0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    w = torch.nn.Parameter(w0.clone())
    opt = Soap([w], lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), shampoo_beta=hp["shampoo_beta"],
               eps=hp["eps"], weight_decay=hp["wd"], precondition_frequency=freq)
    _run(opt, w, grads)
    torch.testing.assert_close(w.detach(), _reference_soap(w0, grads, freq=freq, **hp), atol=1e-12, rtol=0)


def test_with_the_basis_held_at_identity_soap_is_adamw():
    grads = _grads(6, (3, 4), seed=4)
    w = torch.nn.Parameter(torch.ones(3, 4, dtype=F64))
    opt = Soap([w], lr=0.01, betas=(0.9, 0.99), eps=0.0, weight_decay=0.1, precondition_frequency=10**9)
    _run(opt, w, grads[:1])  # the first gradient only sets up the bases
    opt.state[w]["QL.0"] = torch.eye(3, dtype=F64)
    opt.state[w]["QR.0"] = torch.eye(4, dtype=F64)
    ref = torch.nn.Parameter(torch.ones(3, 4, dtype=F64))
    adamw = torch.optim.AdamW([ref], lr=0.01, betas=(0.9, 0.99), eps=0.0, weight_decay=0.1)
    for g in grads[1:]:
        _run(opt, w, [g])
        _run(adamw, ref, [g])
        torch.testing.assert_close(w.detach(), ref.detach(), atol=1e-14, rtol=1e-12)


def test_1d_params_take_adam_after_the_skipped_first_step():
    grads = _grads(5, (6,), seed=5)
    b = torch.nn.Parameter(torch.ones(6, dtype=F64))
    opt = Soap([b], lr=0.01, betas=(0.9, 0.99), eps=0.0, weight_decay=0.0)
    ref = torch.nn.Parameter(torch.ones(6, dtype=F64))
    adam = torch.optim.Adam([ref], lr=0.01, betas=(0.9, 0.99), eps=0.0)
    _run(opt, b, grads[:1])
    assert torch.equal(b.detach(), torch.ones(6, dtype=F64))
    _run(opt, b, grads[1:])
    _run(adam, ref, grads[1:])
    torch.testing.assert_close(b.detach(), ref.detach(), atol=1e-14, rtol=1e-12)


def test_a_blocked_matrix_is_updated_as_independent_blocks():
    """block_size 2 on a 4x5 matrix: blocks 2x2, 2x2, 2x1 per row pair; each its own SOAP."""
    grads = _grads(5, (4, 5), seed=6)
    w = torch.nn.Parameter(torch.zeros(4, 5, dtype=F64))
    opt = Soap([w], lr=0.1, block_size=2, eps=1e-8, precondition_frequency=2)
    _run(opt, w, grads)
    for rows in (slice(0, 2), slice(2, 4)):
        for cols in (slice(0, 2), slice(2, 4), slice(4, 5)):
            part = torch.nn.Parameter(torch.zeros(2, cols.stop - cols.start, dtype=F64))
            alone = Soap([part], lr=0.1, block_size=2, eps=1e-8, precondition_frequency=2)
            _run(alone, part, [g[rows, cols] for g in grads])
            torch.testing.assert_close(w.detach()[rows, cols], part.detach(), atol=1e-12, rtol=0)
    assert sorted(k for k in opt.state[w] if k.startswith("QL")) == [f"QL.{k}" for k in range(6)]


def test_same_shaped_blocks_share_stacks_updated_in_place_between_steps():
    a, b = (torch.nn.Parameter(torch.zeros(3, 4)) for _ in range(2))
    opt = Soap([a, b], lr=0.01)
    for step in range(3):  # the first builds the state
        a.grad, b.grad = torch.randn(3, 4), torch.randn(3, 4)
        opt.step()
        left = opt.state[a]["L.0"]._base
        assert left is not None and opt.state[b]["L.0"]._base is left
        if step == 1:
            kept = left.data_ptr()
    assert left.data_ptr() == kept  # L took the step's gradient in place, no copy


def test_a_vocabulary_sized_side_gets_no_preconditioner():
    w = torch.nn.Parameter(torch.zeros(10000, 2))
    opt = Soap([w], lr=0.01)
    _run(opt, w, [torch.randn(10000, 2) for _ in range(2)])
    assert {"R.0", "QR.0"} <= set(opt.state[w]) and not {"L.0", "QL.0"} & set(opt.state[w])
    assert opt.state[w]["QR.0"].shape == (2, 2)


def test_eigh_runs_once_and_qr_only_at_the_preconditioning_frequency(monkeypatch):
    calls = {"eigh": 0, "geqrf": 0}
    for module, name in ((torch.linalg, "eigh"), (torch, "geqrf")):
        real = getattr(module, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    w = torch.nn.Parameter(torch.zeros(3, 4))
    opt = Soap([w], lr=0.01, precondition_frequency=3)
    _run(opt, w, [torch.randn(3, 4) for _ in range(7)])  # init, then steps 1..6: refresh at 3 and 6
    assert calls == {"eigh": 2, "geqrf": 4}  # one (batched) eigh per side at init; QR per side per refresh


def test_trains_a_tiny_model():
    model = tiny_model()
    losses = train(model, build("soap", model, block_size=8), range(25))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("overrides", [dict(block_size=8, precondition_frequency=2), dict()])
def test_resume_from_a_checkpoint_is_bitwise_identical(overrides):
    assert_resume_is_bitwise("soap", **overrides)


def test_registered_with_complete_defaults_and_loadable_spaces():
    assert_registered("soap")


# -- the `authors` variant ---------------------------------------------------------------------

def _authors_soap(ws, grads, lr, beta1, beta2, shampoo_beta, eps, wd, freq, max_dim):
    """nikhilvyas/SOAP soap.py (commit a1e553530fde97d0e6b307d7c82ac6d38b072340) transcribed for
    2-D and 1-D tensors in float64, defaults (correct_bias, precondition_1d=False, no merge_dims,
    no normalize_grads): m in the rotated basis, re-rotated at each refresh; eigh of GG + 1e-30 I;
    a side > max_dim unrotated; decay after the update. `wd` is a list, one per tensor."""
    ws = [w.clone() for w in ws]
    states = [{} for _ in ws]

    def project(x, qs, back=False):
        for q in qs:  # tensordot over dim 0 then cycle the dims, as their project/project_back
            x = x.permute(*range(1, x.ndim), 0) if q is None else torch.tensordot(x, q, dims=[[0], [1 if back else 0]])
        return x

    def update_preconditioner(g, st):
        if st["Q"] is not None:
            st["m"] = project(st["m"], st["Q"], back=True)
        for i, gg in enumerate(st["GG"]):
            if gg is not None:
                outer = g @ g.T if i == 0 else g.T @ g
                st["GG"][i] = gg + (1 - shampoo_beta) * (outer - gg)
        if st["Q"] is None:
            st["Q"] = [None if gg is None else torch.linalg.eigh(gg + 1e-30 * torch.eye(len(gg), dtype=gg.dtype))[1].flip(1)
                       for gg in st["GG"]]
        if st["step"] > 0 and st["step"] % freq == 0:
            qs = []
            for i, (gg, q) in enumerate(zip(st["GG"], st["Q"])):
                if gg is None:
                    qs.append(None)
                    continue
                order = torch.argsort(torch.diag(q.T @ gg @ q), descending=True)
                st["v"] = st["v"].index_select(i, order)
                qs.append(torch.linalg.qr(gg @ q[:, order])[0])
            st["Q"] = qs
        if st["step"] > 0:
            st["m"] = project(st["m"], st["Q"])

    for step_grads in grads:
        for k, (g, st) in enumerate(zip(step_grads, states)):
            g = g.double()
            if not st:
                st.update(step=0, m=torch.zeros_like(g), v=torch.zeros_like(g), Q=None)
                st["GG"] = [None] if g.ndim == 1 else [torch.zeros(n, n, dtype=g.dtype) if n <= max_dim else None
                                                       for n in g.shape]
                update_preconditioner(g, st)
                continue
            g_rot = project(g, st["Q"])
            st["step"] += 1
            st["m"] = beta1 * st["m"] + (1 - beta1) * g_rot
            st["v"] = beta2 * st["v"] + (1 - beta2) * g_rot**2
            size = lr * (1 - beta2 ** st["step"]) ** 0.5 / (1 - beta1 ** st["step"])
            ws[k] = ws[k] - size * project(st["m"] / (st["v"].sqrt() + eps), st["Q"], back=True)
            ws[k] = ws[k] - lr * wd[k] * ws[k]
            update_preconditioner(g, st)
    return ws


def test_the_authors_variant_matches_their_code_over_20_steps_in_fp32():
    """Square and wide matrices (full-rank Gram matrices: eigh's basis is unique), a side of exactly
    max_precond_dim (rotated by the authors) beside one above it, a norm gain; no blocks."""
    params = tagged({"w": (5, 5), "wide": (4, 6), "norm": (6,)})
    hp = dict(learning_rate=0.01, beta1=0.9, beta2=0.95, shampoo_beta=0.9, epsilon=1e-8, weight_decay=0.1,
              precondition_frequency=2, partition_grads_into_blocks=False, max_precond_dim=4,
              variant="authors")
    opt = get("soap").build(params, {**get("soap").defaults, **hp}, None)
    grad_steps = random_grads(params, 21)  # the first sets up the bases, 20 update steps follow
    expected = _authors_soap([tp.param.detach().double() for tp in params], grad_steps, lr=0.01, beta1=0.9,
                             beta2=0.95, shampoo_beta=0.9, eps=1e-8, freq=2, max_dim=4,
                             wd=[0.0 if tp.role is Role.NORM else 0.1 for tp in params])
    for grads in grad_steps:
        step_with(opt, params, grads)
    assert {"L.0", "QL.0"} <= set(opt.state[params[1].param]) and "R.0" not in opt.state[params[1].param]
    for tp, w in zip(params, expected):
        assert (tp.param.double() - w).abs().max() < 1e-4, tp.name


@pytest.mark.parametrize("variant", ["study", "authors"])
def test_weight_decay_reads_the_old_weights_in_study_and_the_updated_ones_in_authors(variant):
    grads = _grads(2, (3, 3), seed=7)
    w0 = torch.randn(3, 3, generator=torch.Generator().manual_seed(8), dtype=F64)
    moved = {}
    for wd in (0.0, 0.1):
        w = torch.nn.Parameter(w0.clone())
        _run(Soap([w], lr=0.05, eps=1e-8, weight_decay=wd, variant=variant), w, grads)
        moved[wd] = w.detach()
    step = moved[0.0] - w0  # the update alone
    expected = w0 * (1 - 0.005) + step if variant == "study" else (w0 + step) * (1 - 0.005)
    torch.testing.assert_close(moved[0.1], expected, atol=1e-14, rtol=0)


@pytest.mark.parametrize("variant,rotated", [("study", False), ("authors", True)])
def test_a_side_of_exactly_max_precond_dim_is_rotated_only_by_the_authors(variant, rotated):
    w = torch.nn.Parameter(torch.zeros(6, 2))
    opt = Soap([w], lr=0.01, max_precond_dim=6, variant=variant)
    _run(opt, w, [torch.randn(6, 2) for _ in range(2)])
    assert ("QL.0" in opt.state[w]) is rotated and "QR.0" in opt.state[w]
