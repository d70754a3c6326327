"""PSGD Kron (bench/optimizers/kron.py), against direct computations and PyPI kron-torch 0.3.3 (the
study variant with its damping side effect switched off, the authors variant unchanged)."""
import copy
import math
import random

import pytest
import torch

from bench.optimizers.kron import (
    DAMPING,
    SEED,
    Kron,
    _tick,
    authors_update_due,
    norm_lower_bound,
    update_fraction,
    update_probability,
)

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


# -- the `authors` variant: kron-torch 0.3.3 as published ----------------------------------------

# Our hyperparameters in kron-torch's terms: no normalisation or blocks (it has neither), decay on
# every param of 2+ dims (its rule), a flat start of 11 so the schedule skips steps (its n = 12, 14,
# ...) and step 20 fits and balances (random.Random(42)'s 20th draw is < 0.01).
AUTHORS_HP = dict(learning_rate=0.02, beta1=0.9, weight_decay=0.1, normalize_grads=False,
                  preconditioner_lr=0.1, preconditioner_update_probability=0.05, update_prob_flat_start=11,
                  partition_grads_into_blocks=False, decay_roles="hidden,head,embedding")


@pytest.fixture
def eager_kron_torch():
    """kron-torch 0.3.3 unchanged, run eagerly (torch.compile off: the same code, no compiler)."""
    import kron_torch.kron as kron_module
    import torch._dynamo

    with torch._dynamo.config.patch(disable=True):
        yield kron_module


def _beside_kron_torch(kron_module, monkeypatch, variant, steps=20):
    """Step the tiny model with ours (`variant`) and with kron-torch on the same probes, fed to ours
    by `noise` and to kron-torch through torch.randn_like (its only draw, in param order); the largest
    absolute parameter difference, and both optimizers and models."""
    ours_model = tiny_model()
    theirs_model = copy.deepcopy(ours_model)
    names = {p: n for n, p in ours_model.named_parameters()}
    gen = torch.Generator().manual_seed(7)
    probes = [{n: torch.randn(p.shape, generator=gen) for n, p in ours_model.named_parameters()}
              for _ in range(steps)]
    now: dict[str, torch.Tensor] = {}
    ours = build("kron", ours_model, **AUTHORS_HP, variant=variant)
    ours.noise = lambda params: [now[names[p]] for p in params]
    schedule = kron_module.precond_update_prob_schedule(
        min_prob=AUTHORS_HP["preconditioner_update_probability"], flat_start=AUTHORS_HP["update_prob_flat_start"])
    theirs = kron_module.Kron(theirs_model.parameters(), lr=AUTHORS_HP["learning_rate"], b1=AUTHORS_HP["beta1"],
                              weight_decay=AUTHORS_HP["weight_decay"], preconditioner_update_probability=schedule,
                              precond_lr=AUTHORS_HP["preconditioner_lr"], precond_init_scale=1.0)
    queue: list[torch.Tensor] = []
    monkeypatch.setattr(torch, "randn_like", lambda g: queue.pop(0))
    worst = 0.0
    for step in range(steps):
        now.update(probes[step])
        queue[:] = [probes[step][n] for n, _ in theirs_model.named_parameters()]
        train(ours_model, ours, range(step, step + 1))
        train(theirs_model, theirs, range(step, step + 1))
        worst = max(worst, max((a - b).abs().max().item()
                               for a, b in zip(ours_model.parameters(), theirs_model.parameters())))
    return worst, (ours, ours_model), (theirs, theirs_model)


def test_the_authors_variant_matches_unchanged_kron_torch_over_20_steps_in_fp32(eager_kron_torch, monkeypatch):
    worst, (ours, ours_model), (theirs, theirs_model) = _beside_kron_torch(eager_kron_torch, monkeypatch, "authors")
    assert worst < 1e-4
    # the factors too: step 20 rebalanced them in both (a rescale the parameters do not see)
    for (name, a), b in zip(ours_model.named_parameters(), theirs_model.parameters()):
        keys = ("QR.0",) if a.ndim == 1 else ("QL.0", "QR.0")
        for key, q in zip(keys, theirs.state[b]["Q"]):
            torch.testing.assert_close(ours.state[a][key], q, atol=1e-4, rtol=0, msg=f"{name} {key}")


def test_the_20_step_comparison_tells_the_variants_apart(eager_kron_torch, monkeypatch):
    assert _beside_kron_torch(eager_kron_torch, monkeypatch, "study")[0] > 1e-3


def test_the_authors_schedule_is_kron_torchs_counted_from_0(eager_kron_torch):
    """3000 steps of kron-torch's own counter and float32 schedule against ours."""
    schedule = eager_kron_torch.precond_update_prob_schedule(min_prob=0.05, flat_start=100)
    theirs, ours, counter, fits = [], [], 0, 0
    for n in range(3000):
        counter += 1
        due = bool(counter >= 1 / schedule(torch.tensor(float(n))))
        counter = 0 if due else counter
        theirs.append(due)
    for step in range(1, 3001):
        due, fits = authors_update_due(step, fits, 0.05, 100)
        ours.append(due)
    assert ours == theirs
    study = [_tick(step, 0, 0.05, 100)[0] for step in (100, 101)]
    assert study == [True, False] and theirs[100] is True  # study's step 101 is p(101), theirs p(100)


@pytest.mark.parametrize("step,balances", [(18, False), (19, True)])
def test_the_authors_coin_is_replayed_from_the_step_count(step, balances):
    """random.Random(42)'s 20th draw is the first < 0.01: a run resumed at step 19 (a fresh
    optimizer holding only the counters) balances at step 20, as kron-torch's rng would."""
    opt = Kron([torch.nn.Parameter(torch.zeros(3, 2))], lr=0.0, preconditioner_update_probability=1.0,
               variant="authors")
    glob = opt._global(torch.device("cpu"))
    glob["step"] = step
    assert opt._schedule(glob) == (True, balances)
    assert random.Random(SEED).random() > 0.01  # its first draw: nothing to replay at step 0


@pytest.mark.parametrize("variant,left_diagonal", [("study", False), ("authors", True)])
def test_a_side_longer_than_8192_is_diagonal_only_in_the_authors_variant(variant, left_diagonal):
    w = torch.nn.Parameter(torch.zeros(8193, 2))
    opt = Kron([w], lr=0.01, partition_grads_into_blocks=False, variant=variant)
    assert opt._jobs([w], opt.param_groups[0])[0].left_diag is left_diagonal


def test_the_authors_variant_resumes_bitwise():
    assert_resume_is_bitwise("kron", variant="authors", block_size=8, preconditioner_update_probability=0.5,
                             update_prob_flat_start=0)


def test_the_study_default_keeps_its_run_key():
    from bench.optimizers.registry import get
    from bench.run.spec import RunSpec

    assert "variant" in get("kron").added_later and get("kron").defaults["variant"] == "study"
    assert RunSpec("kron", "cpu-xs", 0.05).key == "0b2f2ee8781abc43adca"  # the key before `variant`
