"""MARS (bench/optimizers/mars.py): with gamma = 0 and no clipping it is AdamW, the study's update
equations with the global clip of the corrected gradient, the authors variant beside a float64
transcription of AGI-Arena/MARS, checkpoint resume and registration."""
import math

import pytest
import torch

from bench.optimizers.common import make_adamw
from bench.optimizers.registry import get
from bench.roles import Role

from .testkit import assert_registered, assert_resume_is_bitwise, random_grads, step_with, tagged

pytestmark = pytest.mark.integration

SHAPES = {"w": (5, 4), "v": (3, 4), "norm": (4,)}
HP = {"learning_rate": 1e-2, "beta1": 0.9, "beta2": 0.95, "epsilon": 1e-8, "gamma": 0.025,
      "weight_decay": 0.1, "max_grad_norm": 1.0}


def _mars(params, **overrides):
    return get("mars").build(params, {**get("mars").defaults, **HP, **overrides}, None)


def _levanter_mars(params, grad_steps, learning_rate, beta1, beta2, epsilon, gamma, weight_decay,
                   max_grad_norm):
    """Levanter's scale_by_mars + add_decayed_weights + scale(-lr), in float64."""
    ws = [tp.param.detach().double() for tp in params]
    ms, vs, prev = ([torch.zeros_like(w) for w in ws] for _ in range(3))
    for t, grads in enumerate(grad_steps, start=1):
        gs = [g.double() for g in grads]
        cs = [g + gamma * beta1 / (1 - beta1) * (g - p) for g, p in zip(gs, prev)]
        if max_grad_norm:
            norm = torch.sqrt(sum((c * c).sum() for c in cs))
            cs = [c * min(1.0, max_grad_norm / (norm.item() + 1e-6)) for c in cs]
        for i, (tp, c) in enumerate(zip(params, cs)):
            ms[i] = beta1 * ms[i] + (1 - beta1) * c
            vs[i] = beta2 * vs[i] + (1 - beta2) * c * c
            u = (ms[i] / (1 - beta1**t)) / ((vs[i] / (1 - beta2**t)).sqrt() + epsilon)
            decay = weight_decay if tp.role is Role.HIDDEN else 0.0
            ws[i] = ws[i] - learning_rate * (u + decay * ws[i])
        prev = gs
    return ws


def _run(params, grad_steps, **overrides):
    opt = _mars(params, **overrides)
    for grads in grad_steps:
        step_with(opt, params, grads)


def test_without_correction_and_clipping_it_is_adamw():
    params, twins = tagged(SHAPES), tagged(SHAPES)
    grad_steps = random_grads(params, 5)
    _run(params, grad_steps, gamma=0.0, max_grad_norm=0.0)
    adamw = make_adamw(twins, {**HP, "weight_decay": 0.1, "decay_roles": "hidden,head"}, HP["learning_rate"])
    for grads in grad_steps:
        step_with(adamw, twins, grads)
    for a, b in zip(params, twins):
        torch.testing.assert_close(a.param, b.param, rtol=1e-5, atol=1e-6)


def test_matches_the_study_equations_with_the_corrected_gradient_clipped():
    params = tagged(SHAPES)
    grad_steps = [[3 * g for g in grads] for grads in random_grads(params, 6)]  # norms ~ 15: clipped
    expected = _levanter_mars(params, grad_steps, **HP)
    _run(params, grad_steps)
    for tp, w in zip(params, expected):
        torch.testing.assert_close(tp.param.double(), w, rtol=1e-5, atol=1e-6)


def test_matches_the_study_equations_without_clipping():
    params = tagged(SHAPES)
    grad_steps = random_grads(params, 6)
    expected = _levanter_mars(params, grad_steps, **{**HP, "gamma": 0.1, "max_grad_norm": 0.0})
    _run(params, grad_steps, gamma=0.1, max_grad_norm=0.0)
    for tp, w in zip(params, expected):
        torch.testing.assert_close(tp.param.double(), w, rtol=1e-5, atol=1e-6)


def test_tells_the_train_loop_it_clips_gradients_itself():
    assert get("mars").clips_gradients is True


def test_resume_from_checkpoint_is_bitwise():
    assert_resume_is_bitwise("mars")


def test_registered_with_complete_defaults_and_space():
    assert_registered("mars", {"beta1", "beta2", "epsilon", "gamma", "weight_decay", "variant"})


# -- the `authors` variant -----------------------------------------------------------------------

AUTHORS_SHAPES = {"w": (5, 4), "v": (3, 4), "norm": (4,), "gain_norm": (3,)}


def _agi_arena_mars(params, grad_steps, learning_rate, beta1, beta2, epsilon, gamma, weight_decay,
                    max_grad_norm):
    """AGI-Arena/MARS at 4831e28eba863a4e69d7e9474ff8e73bc1b410fe, in float64: MARS/train_mars.py's
    clip_grad_norm_ of the raw gradients at grad_clip, then MARS/optimizers/mars.py's MARS.step with
    mars_type "mars-adamw", is_approx, optimize_1d False (update_fn: MARS for 2-D params, AdamW with
    lr_1d 3e-3, betas_1d (0.9, 0.95), weight_decay_1d 0.1 for the others). Written from the equations
    read there, at a constant lr; decay by our role rule for 2-D params (NORM not decayed)."""
    ws = [tp.param.detach().double() for tp in params]
    ms, vs, last = ([torch.zeros_like(w) for w in ws] for _ in range(3))
    lr_1d = 3e-3
    for t, grads in enumerate(grad_steps, start=1):
        gs = [g.double() for g in grads]
        if max_grad_norm:  # torch.nn.utils.clip_grad_norm_
            total = torch.sqrt(sum((g * g).sum() for g in gs))
            gs = [g * min(1.0, max_grad_norm / (total.item() + 1e-6)) for g in gs]
        for i, (tp, g) in enumerate(zip(params, gs)):
            if g.ndim == 2:
                b1, b2, lr, wd = beta1, beta2, learning_rate, weight_decay if tp.role is Role.HIDDEN else 0.0
                x = g + gamma * beta1 / (1 - beta1) * (g - last[i])
                norm = torch.linalg.vector_norm(x)
                x = x / norm if norm > 1 else x
            else:
                # lr * lr_1d_factor, the factor lr_1d / lr taken from the constructor's lr
                (b1, b2), lr, wd, x = (0.9, 0.95), learning_rate * (lr_1d / learning_rate), 0.1, g
            ms[i] = b1 * ms[i] + (1 - b1) * x
            vs[i] = b2 * vs[i] + (1 - b2) * x * x
            denominator = (vs[i].sqrt() / math.sqrt(1 - b2**t) + epsilon) * (1 - b1**t)
            ws[i] = ws[i] - lr * (wd * ws[i] + ms[i] / denominator)
            last[i] = g
    return ws


def _authors_grad_steps(params, steps=20):
    """Gradients of norms from ~0.1 to ~15: steps with no clip, the raw clip only, and both clips."""
    scales = [0.03, 3.0, 0.1, 1.0, 0.3]
    return [[scales[s % 5] * g for g in grads] for s, grads in enumerate(random_grads(params, steps))]


def _max_error_beside_agi_arena(variant):
    """Raw clip at 2: each matrix's c then often lies above norm 1 (the per-tensor bound acts)."""
    params = tagged(AUTHORS_SHAPES)
    grad_steps = _authors_grad_steps(params)
    expected = _agi_arena_mars(params, grad_steps, **{**HP, "max_grad_norm": 2.0})
    _run(params, grad_steps, variant=variant, max_grad_norm=2.0)
    return max((tp.param.double() - w).abs().max().item() for tp, w in zip(params, expected))


def test_the_authors_variant_matches_a_float64_transcription_of_agi_arena_mars_over_20_steps():
    assert _max_error_beside_agi_arena("authors") < 1e-4


def test_the_20_step_comparison_tells_the_variants_apart():
    assert _max_error_beside_agi_arena("study") > 1e-3


def test_the_authors_variant_scales_each_corrected_gradient_to_norm_one_at_most():
    """One 2-D param, no raw clip, gamma 0: c = g, so m after one step is (1 - b1) g / max(1, ||g||)."""
    for scale, expected_norm in ((0.5, 0.5), (4.0, 1.0)):
        params = tagged({"w": (3, 3)})
        opt = _mars(params, variant="authors", gamma=0.0, max_grad_norm=0.0)
        g = torch.randn(3, 3, generator=torch.Generator().manual_seed(0))
        step_with(opt, params, [scale * g / g.norm()])
        m = opt.state[params[0].param]["exp_avg"]
        assert m.norm().item() == pytest.approx((1 - HP["beta1"]) * expected_norm, rel=1e-6)


def test_the_authors_variant_resumes_bitwise():
    assert_resume_is_bitwise("mars", variant="authors")


def test_the_study_default_keeps_its_run_key():
    from bench.run.spec import RunSpec

    assert "variant" in get("mars").added_later and get("mars").defaults["variant"] == "study"
    assert RunSpec("mars", "cpu-xs", 0.05).key == "b11f674612a664cbf34a"  # the key before `variant`
