"""Adam-mini (bench/optimizers/adam_mini.py): one second-moment scalar per block (blocks from roles
and the model's attention modules), the paper's equations, PyPI adam-mini step by step (the study
variant beside the package told our choices, the authors variant beside the package unchanged),
checkpoint resume and registration."""
import copy

import pytest
import torch
from adam_mini import Adam_mini

from bench.optimizers.registry import get
from bench.roles import Role, TaggedParam
from bench.run.spec import RunSpec

from .testkit import (
    TINY,
    VOCAB,
    assert_registered,
    assert_resume_is_bitwise,
    build,
    random_grads,
    step_with,
    tiny_model,
    train,
)

pytestmark = pytest.mark.integration

HP = {"learning_rate": 1e-2, "beta1": 0.9, "beta2": 0.95, "epsilon": 1e-8, "weight_decay": 0.1}


def test_one_second_moment_scalar_per_block():
    model = tiny_model()
    opt = build("adam_mini", model)
    expected_blocks = {
        "embed.weight": VOCAB,  # one per token
        "head.weight": VOCAB,
        "layers.0.attn.wq.weight": TINY.heads,  # one per head
        "layers.1.attn.wk.weight": TINY.heads,
        "layers.0.attn.wv.weight": TINY.hidden,  # one per output neuron
        "layers.1.attn.wo.weight": TINY.hidden,
        "layers.0.mlp.w_up.weight": TINY.intermediate,
        "layers.1.mlp.w_down.weight": TINY.hidden,
        "layers.0.attn_norm.weight": TINY.hidden,  # one per entry (plain Adam)
        "norm.weight": TINY.hidden,
    }
    params = dict(model.named_parameters())
    for name, blocks in expected_blocks.items():
        assert opt.state[params[name]]["exp_avg_sq"].shape == (blocks, 1), name
    train(model, opt, range(2))
    wq = params["layers.0.attn.wq.weight"]  # after steps, v still has one entry per head
    assert opt.state[wq]["exp_avg_sq"].shape == (TINY.heads, 1)


def _mini_reference(w0, grad_steps, blocks, learning_rate, beta1, beta2, epsilon, weight_decay):
    """The paper's Algorithm 1 for one matrix split into `blocks` row groups, in float64."""
    w = w0.double()
    m = torch.zeros_like(w)
    v = torch.zeros(blocks, 1, dtype=torch.float64)
    for t, g in enumerate(grad_steps, start=1):
        g = g.double()
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g.reshape(blocks, -1).square().mean(dim=1, keepdim=True)
        u = (m / (1 - beta1**t)).reshape(blocks, -1) / ((v / (1 - beta2**t)).sqrt() + epsilon)
        w = w - learning_rate * (u.reshape(w.shape) + weight_decay * w)
    return w


def test_matches_the_paper_equations_per_row_and_per_head():
    model = tiny_model()
    wq = model.layers[0].attn.wq.weight  # per head: TINY.heads blocks
    w_up = model.layers[0].mlp.w_up.weight  # per output neuron
    params = [TaggedParam("layers.0.attn.wq.weight", wq, Role.HIDDEN),
              TaggedParam("layers.0.mlp.w_up.weight", w_up, Role.HIDDEN)]
    w0 = [tp.param.detach().clone() for tp in params]
    grad_steps = random_grads(params, 5)
    opt = get("adam_mini").build(params, {**get("adam_mini").defaults, **HP}, model)
    for grads in grad_steps:
        step_with(opt, params, grads)
    for i, blocks in enumerate((TINY.heads, TINY.intermediate)):
        expected = _mini_reference(w0[i], [gs[i] for gs in grad_steps], blocks, **HP)
        torch.testing.assert_close(params[i].param.double(), expected, rtol=1e-5, atol=1e-6)


def _authors_adam_mini(model, hp):
    """PyPI adam-mini 1.1.1 on our parameter names: the head is named 'head' (not one of its output
    names), the study treats norms as plain Adam blocks, and embeddings are not decayed (role rule)."""
    opt = Adam_mini(model.named_parameters(), lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]),
                    eps=hp["epsilon"], weight_decay=hp["weight_decay"], dim=TINY.hidden, n_heads=TINY.heads,
                    verbose=False)
    opt.output_names.add("head")
    opt.adam_block_names.add("norm")
    for group in opt.param_groups:
        if group["name"].startswith("embed"):
            group["weight_decay"] = 0.0
    return opt


def test_matches_pypi_adam_mini_step_by_step():
    ours_model = tiny_model()
    theirs_model = copy.deepcopy(ours_model)
    ours = build("adam_mini", ours_model, **HP)
    theirs = _authors_adam_mini(theirs_model, HP)
    for step in range(6):
        train(ours_model, ours, range(step, step + 1))
        train(theirs_model, theirs, range(step, step + 1))
        for (n, a), b in zip(ours_model.named_parameters(), theirs_model.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{n} differs at step {step}")


def test_resume_from_checkpoint_is_bitwise():
    assert_resume_is_bitwise("adam_mini")


def test_registered_with_complete_defaults_and_space():
    assert_registered("adam_mini", {"beta1", "beta2", "epsilon", "weight_decay", "variant"})


# -- the `authors` variant ---------------------------------------------------------------------

# Names adam-mini 1.1.1 recognises for the two of ours it does not: our head is its output layer
# ("lm_head"); "mlp_norm" holds "mlp", which would send a norm vector to its per-row branch.
PACKAGE_NAMES = (("head.", "lm_head."), ("mlp_norm", "ffn_norm"))
AUTHORS_HP = {**HP, "decay_roles": "hidden,head,embedding"}  # the package decays all but norms, biases


def _package_name(name):
    for ours, theirs in PACKAGE_NAMES:
        name = theirs + name.removeprefix(ours) if name.startswith(ours) else name.replace(ours, theirs)
    return name


def _unchanged_package(model, hp):
    """PyPI adam-mini 1.1.1 as published: its name sets and groups untouched."""
    named = [(_package_name(n), p) for n, p in model.named_parameters()]
    return Adam_mini(named, lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]), eps=hp["epsilon"],
                     weight_decay=hp["weight_decay"], dim=TINY.hidden, n_heads=TINY.heads, verbose=False)


def test_the_package_sees_our_tiny_llama_as_a_llama():
    """Every name lands in the package branch the module doc says (no fall-through but norms)."""
    opt = _unchanged_package(tiny_model(), AUTHORS_HP)
    names = [g["name"] for g in opt.param_groups]
    assert "lm_head.weight" in names and all("mlp_norm" not in n for n in names)
    recognised = opt.embd_names | opt.output_names | opt.wqk_names | opt.wv_names | opt.mlp_names \
        | opt.attn_proj_names
    for group in opt.param_groups:
        assert any(k in group["name"] for k in recognised) != group["name"].endswith("norm.weight")
        assert (group["weight_decay"] == 0) == group["name"].endswith("norm.weight"), group["name"]


def _max_error_beside_the_package(variant, steps=20):
    ours_model = tiny_model()
    theirs_model = copy.deepcopy(ours_model)
    ours = build("adam_mini", ours_model, **AUTHORS_HP, variant=variant)
    theirs = _unchanged_package(theirs_model, AUTHORS_HP)
    worst = 0.0
    for step in range(steps):
        train(ours_model, ours, range(step, step + 1))
        train(theirs_model, theirs, range(step, step + 1))
        for a, b in zip(ours_model.parameters(), theirs_model.parameters()):
            worst = max(worst, (a - b).abs().max().item())
    return worst


def test_the_authors_variant_matches_the_unchanged_package_over_20_steps_in_fp32():
    assert _max_error_beside_the_package("authors") < 1e-4


def test_the_20_step_comparison_tells_the_variants_apart():
    assert _max_error_beside_the_package("study") > 1e-3


def test_the_authors_variant_keeps_one_v_per_norm_vector():
    model = tiny_model()
    opt = build("adam_mini", model, variant="authors")
    params = dict(model.named_parameters())
    assert opt.state[params["norm.weight"]]["exp_avg_sq"].shape == (1, 1)
    assert opt.state[params["layers.0.attn.wq.weight"]]["exp_avg_sq"].shape == (TINY.heads, 1)
    assert opt.state[params["head.weight"]]["exp_avg_sq"].shape == (VOCAB, 1)


def test_the_authors_variant_resumes_bitwise():
    assert_resume_is_bitwise("adam_mini", variant="authors")


def test_the_study_default_keeps_its_run_key():
    assert "variant" in get("adam_mini").added_later
    assert RunSpec("adam_mini", "cpu-xs", 0.05).key == "82a9fd5c421099042d0e"  # the key before `variant`
