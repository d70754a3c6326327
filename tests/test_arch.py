"""The architectures beside Llama (bench/model/build.py): MLA and MoE. Their parameter counts and
FLOPs against closed forms, the routing and its balancing loss, causality, how a run's choice is
resolved, and that Llama through build_model is bitwise today's LlamaModel."""
import pytest
import torch

from bench.errors import UserError
from bench.model.build import build_model
from bench.model.flops import flops_per_token
from bench.model.llama import LlamaModel, head_loss
from bench.model.moe import MoE, dispatch, expert_loads, load_balancing_loss, route
from bench.model.scales import ARCHES, get_scale, resolve_model
from bench.optimizers import registry
from bench.optimizers.adam_mini import block_count
from bench.optimizers.common import decayed_roles, matrix_decay
from bench.optimizers.muonclip import qk_clip
from bench.roles import MATRIX_ROLES, Role
from bench.run.step import gradients, train_step

VOCAB = 64
TINY = {"name": "tiny", "hidden": 16, "intermediate": 64, "layers": 2, "heads": 2, "seq_len": 16,
        "default_batch": 4}


def shape(arch: str, **options):
    return resolve_model(None, {**TINY, "arch": arch, **options})[0]


def model_of(scale, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(scale, VOCAB)


def matrices(model) -> dict[str, int]:
    """Non-embedding matrix parameter counts by role."""
    out: dict[str, int] = {}
    for t in model.tagged_parameters():
        if t.role in MATRIX_ROLES:
            out[t.role.value] = out.get(t.role.value, 0) + t.param.numel()
    return out


# ---- parameter counts and FLOPs ----

@pytest.mark.unit
@pytest.mark.parametrize("name", ["cpu-xs", "cpu-s"])
def test_llama_counts_are_the_shape_rule(name):
    s = resolve_model(get_scale(name), {})[0]
    h, i, L = s.hidden, s.intermediate, s.layers
    assert s.non_embedding_params == s.total_non_embedding_params == L * (4 * h * h + 3 * h * i)
    assert sum(matrices(model_of(s)).values()) == s.non_embedding_params


@pytest.mark.unit
@pytest.mark.parametrize("name", ["cpu-xs", "cpu-s"])
def test_mla_counts_are_its_projections(name):
    s = resolve_model(get_scale(name), {"arch": "mla"})[0]
    h, i, L, n, d = s.hidden, s.intermediate, s.layers, s.heads, s.head_dim
    qr, kvr, r = s.q_rank, s.kv_rank, s.rope_dim
    # W^DQ, W^UQ, W^QR, W^DKV, W^UK, W^UV, W^KR, W^O, then the SwiGLU
    attention = h * qr + qr * n * d + qr * n * r + h * kvr + kvr * n * d + kvr * n * d + h * r + n * d * h
    assert s.non_embedding_params == s.total_non_embedding_params == L * (attention + 3 * h * i)
    counts = matrices(model_of(s))
    assert sum(counts.values()) == s.non_embedding_params
    assert counts["latent"] == L * (h * qr + qr * n * (d + r) + h * kvr + 2 * kvr * n * d)


@pytest.mark.unit
@pytest.mark.parametrize("name", ["cpu-xs", "cpu-s"])
def test_moe_counts_active_and_total(name):
    s = resolve_model(get_scale(name), {"arch": "moe"})[0]
    h, i, L, E, k = s.hidden, s.intermediate, s.layers, s.experts, s.top_k
    ei, shared = s.expert_intermediate, s.shared_experts
    assert (E, k, shared, ei) == (8, 3, 1, i // 4)  # the defaults: a token's MLP is the dense one's
    expert = 3 * h * ei
    assert s.total_non_embedding_params == L * (4 * h * h + h * E + (E + shared) * expert)
    assert s.non_embedding_params == L * (4 * h * h + h * E + (k + shared) * expert)
    assert (k + shared) * expert == 3 * h * i
    counts = matrices(model_of(s))
    assert sum(counts.values()) == s.total_non_embedding_params
    assert counts == {"hidden": L * (4 * h * h + shared * expert), "router": L * h * E, "expert": L * E * expert}


@pytest.mark.unit
def test_flops_count_active_weights_and_each_attention():
    vocab = 512
    llama = get_scale("cpu-xs")
    h, L, T = llama.hidden, llama.layers, llama.seq_len
    assert flops_per_token(llama, vocab) == 6.0 * (llama.non_embedding_params + vocab * h) + 6.0 * L * T * h
    moe = resolve_model(llama, {"arch": "moe"})[0]
    assert flops_per_token(moe, vocab) == 6.0 * (moe.non_embedding_params + vocab * h) + 6.0 * L * T * h
    mla = resolve_model(llama, {"arch": "mla"})[0]
    scores = 3.0 * L * T * (llama.heads * (mla.head_dim + mla.rope_dim) + h)  # q.k widths + v widths
    assert flops_per_token(mla, vocab) == pytest.approx(6.0 * (mla.non_embedding_params + vocab * h) + scores)


# ---- routing ----

@pytest.mark.unit
def test_each_token_goes_to_top_k_distinct_experts_and_loads_add_up():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(50, 8), dim=-1)
    gates, chosen = route(probs, 3)
    assert all(len(set(row.tolist())) == 3 for row in chosen)
    assert torch.allclose(gates.sum(-1), torch.ones(50))
    assert int(expert_loads(chosen, 8).sum()) == 50 * 3
    assert torch.equal(gates, probs.gather(1, chosen) / probs.gather(1, chosen).sum(-1, keepdim=True))


@pytest.mark.unit
def test_the_balancing_loss_is_its_formula_and_one_when_uniform():
    probs = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.1, 0.6, 0.2, 0.1], [0.5, 0.1, 0.1, 0.3]])
    chosen = torch.tensor([[0, 1], [1, 2], [0, 3]])
    f = torch.tensor([2, 2, 1, 1]) / 6  # share of the 6 token-slots
    p = probs.mean(0)
    assert load_balancing_loss(probs, chosen) == pytest.approx(float(4 * (f * p).sum()))
    uniform = torch.full((8, 4), 0.25)
    balanced = torch.tensor([[0, 1], [2, 3]] * 4)
    assert load_balancing_loss(uniform, balanced) == pytest.approx(1.0)


@pytest.mark.unit
def test_the_model_aux_loss_is_weight_times_the_layers_losses():
    s = shape("moe", aux_loss_weight=0.5)
    model = model_of(s)
    model(torch.randint(0, VOCAB, (2, 16)))
    per_layer = [float(layer.mlp.aux) for layer in model.layers]
    assert all(v >= 1.0 - 1e-6 for v in per_layer)  # uniform routing is the minimum
    assert float(model.aux_loss()) == pytest.approx(0.5 * sum(per_layer))
    assert model.has_aux_loss and not model_of(shape("moe", aux_loss_weight=0)).has_aux_loss


@pytest.mark.unit
def test_sparse_dispatch_equals_running_every_expert():
    torch.manual_seed(0)
    layer = MoE(shape("moe", experts=4, top_k=2, shared_experts=0, expert_intermediate=8))
    x = torch.randn(30, 16)
    probs = torch.softmax(layer.router(x), dim=-1)
    gates, chosen = route(probs, 2)
    dense = torch.stack([e(x) for e in layer.experts], dim=1)  # [N, E, h]
    weights = torch.zeros(30, 4).scatter(1, chosen, gates)
    assert torch.allclose(dispatch(x, chosen, gates, layer.experts), (weights[..., None] * dense).sum(1), atol=1e-6)
    assert torch.equal(layer(x[None])[0], layer(x[None])[0])  # deterministic


@pytest.mark.unit
def test_an_expert_with_no_tokens_gets_a_zero_gradient_not_none():
    layer = MoE(shape("moe", experts=4, top_k=1, shared_experts=0))
    x = torch.randn(5, 16)
    chosen = torch.zeros(5, 1, dtype=torch.long)
    dispatch(x, chosen, torch.ones(5, 1), layer.experts).sum().backward()
    grads = [e.w_up.weight.grad for e in layer.experts]
    assert all(g is not None for g in grads) and all(float(g.abs().sum()) == 0 for g in grads[1:])


# ---- causality, roles, the train step ----

@pytest.mark.unit
@pytest.mark.parametrize("arch", ARCHES)
def test_later_tokens_do_not_change_earlier_outputs(arch):
    model = model_of(shape(arch))
    tokens = torch.randint(0, VOCAB, (2, 16))
    changed = tokens.clone()
    changed[:, 9:] = (changed[:, 9:] + 7) % VOCAB
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.allclose(a[:, :9], b[:, :9], atol=1e-6)
    assert not torch.allclose(a[:, 9:], b[:, 9:])


@pytest.mark.unit
def test_roles_of_the_new_parameters():
    roles = {t.name: t.role for t in model_of(shape("moe")).tagged_parameters()}
    assert roles["layers.0.mlp.router.weight"] is Role.ROUTER
    assert roles["layers.0.mlp.experts.3.w_down.weight"] is Role.EXPERT
    assert roles["layers.0.mlp.shared.w_up.weight"] is Role.HIDDEN
    roles = {t.name: t.role for t in model_of(shape("mla")).tagged_parameters()}
    for name in ("wq_down", "wq_up", "wq_rope", "wkv_down", "wk_up", "wv_up"):
        assert roles[f"layers.1.attn.{name}.weight"] is Role.LATENT
    assert roles["layers.1.attn.wk_rope.weight"] is Role.HIDDEN and roles["layers.1.attn.wo.weight"] is Role.HIDDEN
    assert roles["layers.1.attn.kv_norm.weight"] is Role.NORM


@pytest.mark.unit
def test_the_step_backpropagates_the_aux_loss_and_reports_the_lm_loss():
    s = shape("moe", aux_loss_weight=1.0)
    tokens = torch.randint(0, VOCAB, (4, 17))
    x, y = tokens[:, :-1], tokens[:, 1:]
    with_aux, without = model_of(s), model_of(s)
    without.has_aux_loss = False
    reported = gradients(with_aux, head_loss, x, y)
    assert torch.equal(reported, gradients(without, head_loss, x, y))  # the LM loss either way
    g_aux, g_lm = with_aux.layers[0].mlp.router.weight.grad, without.layers[0].mlp.router.weight.grad
    assert not torch.allclose(g_aux, g_lm)


@pytest.mark.unit
def test_llama_through_build_model_is_bitwise_llama_model():
    s = get_scale("cpu-xs")
    torch.manual_seed(3)
    old = LlamaModel(s, VOCAB)
    new = model_of(resolve_model(s, {"arch": "llama"})[0], seed=3)
    assert type(new) is LlamaModel and not new.has_aux_loss
    assert [(t.name, t.role) for t in old.tagged_parameters()] == [(t.name, t.role) for t in new.tagged_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))
    torch.manual_seed(3)  # and the init consumes the RNG alike
    LlamaModel(s, VOCAB)
    after_old = torch.rand(())
    torch.manual_seed(3)
    build_model(s, VOCAB)
    assert torch.equal(after_old, torch.rand(()))
    tokens = torch.randint(0, VOCAB, (2, 32))
    assert torch.equal(old(tokens), new(tokens))


# ---- optimizers on the new roles ----

@pytest.mark.unit
def test_hidden_in_decay_roles_names_every_matrix_and_a_minus_takes_one_out():
    assert decayed_roles({"decay_roles": "hidden,head"}) == set(MATRIX_ROLES) | {Role.HEAD}
    assert decayed_roles({"decay_roles": "hidden,-router"}) == set(MATRIX_ROLES) - {Role.ROUTER}
    assert decayed_roles({"decay_roles": "expert"}) == {Role.EXPERT}
    with pytest.raises(UserError, match="decay_roles"):
        decayed_roles({"decay_roles": "-gains"})
    params = model_of(shape("moe")).tagged_parameters()
    matrix = [t for t in params if t.role in MATRIX_ROLES]
    assert matrix_decay({"decay_roles": "hidden,head", "weight_decay": 0.1}, matrix) == 0.1
    assert matrix_decay({"decay_roles": "head", "weight_decay": 0.1}, matrix) == 0.0
    with pytest.raises(UserError, match="alike"):
        matrix_decay({"decay_roles": "hidden,-router", "weight_decay": 0.1}, matrix)


@pytest.mark.unit
def test_adam_mini_gives_mla_query_key_projections_one_block_per_head():
    model = model_of(shape("mla"))
    blocks = {t.name: block_count(t, model) for t in model.tagged_parameters()}
    for name in ("wq_up", "wk_up", "wq_rope"):
        assert blocks[f"layers.0.attn.{name}.weight"] == 2
    assert blocks["layers.0.attn.wkv_down.weight"] == shape("mla").kv_rank  # one per row
    moe = model_of(shape("moe"))
    blocks = {t.name: block_count(t, moe) for t in moe.tagged_parameters()}
    assert blocks["layers.0.mlp.router.weight"] == 8 and blocks["layers.0.mlp.experts.0.w_up.weight"] == 16


@pytest.mark.unit
def test_qk_clip_on_mla_follows_k2s_rule():
    model = model_of(shape("mla"))
    attn = model.layers[0].attn
    attn.track_max_logit = True
    with torch.no_grad():
        model(torch.randint(0, VOCAB, (2, 16)))
    before = {n: getattr(attn, n).weight.clone() for n in ("wq_up", "wk_up", "wq_rope", "wk_rope")}
    tau = float(attn.max_logit.min()) / 4  # every head clipped
    gamma = tau / attn.max_logit
    qk_clip(attn, tau)
    for name, power in (("wq_up", 0.5), ("wk_up", 0.5), ("wq_rope", 1.0)):
        expected = before[name].view(2, -1) * gamma.pow(power)[:, None]  # rows are head-major
        assert torch.allclose(getattr(attn, name).weight.view(2, -1), expected, rtol=1e-6)
    assert torch.equal(attn.wk_rope.weight, before["wk_rope"])  # the shared rotary key


@pytest.mark.integration
@pytest.mark.parametrize("arch", ["mla", "moe"])
def test_every_optimizer_builds_and_steps_on_the_new_architectures(arch):
    tokens = torch.randint(0, VOCAB, (4, 17))
    for opt in registry.all_optimizers():
        model = model_of(shape(arch))
        optimizer = opt.build(model.tagged_parameters(), dict(opt.defaults), model)
        before = [p.detach().clone() for p in model.parameters()]
        for step in range(2):  # SOAP's first step only sets up its bases
            loss = train_step(model, optimizer, tokens, step, curvature=opt.needs_curvature_pass)
            assert torch.isfinite(loss), opt.name
        changed = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
        assert changed > 0, opt.name


# ---- resolving a run's choice ----

@pytest.mark.unit
def test_resolve_gives_the_canonical_choice():
    xs = get_scale("cpu-xs")
    assert resolve_model(xs, {}) == (xs, {})
    assert resolve_model(xs, {"arch": "llama"}) == (xs, {})
    moe, canonical = resolve_model(xs, {"arch": "moe"})
    assert canonical == {"arch": "moe", "experts": 8, "top_k": 3, "shared_experts": 1,
                         "expert_intermediate": 32, "aux_loss_weight": 0.01}
    assert resolve_model(xs, canonical) == (moe, canonical)
    deeper, canonical = resolve_model(xs, {"layers": 6, "arch": "mla", "rope_dim": 4})
    assert canonical == {"layers": 6, "arch": "mla", "q_rank": 24, "kv_rank": 16, "rope_dim": 4}
    assert (deeper.name, deeper.layers, deeper.ladder) == ("cpu-xs", 6, "cpu")
    # options left out follow the others: two routed and no shared experts share out the MLP width
    assert resolve_model(xs, {"arch": "moe", "top_k": 2, "shared_experts": 0})[0].expert_intermediate == 64
    custom, canonical = resolve_model(None, TINY)
    assert custom.ladder == "custom" and canonical == TINY


@pytest.mark.parametrize("overrides, message", [
    ({"colour": "red"}, "colour"),
    ({"arch": "rnn"}, "arch"),
    ({"heads": 3}, "heads 3 do not divide hidden 32"),
    ({"hidden": 0}, "hidden"),
    ({"layers": 2.5}, "layers"),
    ({"seq_len": True}, "seq_len"),
    ({"heads": 32}, "even"),  # head_dim 1: rotary needs pairs
    ({"experts": 4}, "for arch moe"),
    ({"arch": "mla", "top_k": 2}, "for arch moe, not mla"),
    ({"arch": "moe", "top_k": 9}, "top_k 9 must be at most experts 8"),
    ({"arch": "moe", "top_k": 0}, "top_k"),
    ({"arch": "moe", "experts": -1}, "experts"),
    ({"arch": "moe", "shared_experts": -1}, "shared_experts"),
    ({"arch": "moe", "expert_intermediate": 0}, "expert_intermediate"),
    ({"arch": "moe", "aux_loss_weight": -0.1}, "aux_loss_weight"),
    ({"arch": "moe", "aux_loss_weight": float("nan")}, "aux_loss_weight"),
    ({"arch": "mla", "rope_dim": 3}, "rope_dim 3 must be even"),
    ({"arch": "mla", "kv_rank": 0}, "kv_rank"),
    ({"name": "x"}, "name"),
])
@pytest.mark.unit
def test_bad_choices_are_one_line_user_errors(overrides, message):
    with pytest.raises(UserError, match=message) as e:
        resolve_model(get_scale("cpu-xs"), overrides)
    assert "\n" not in str(e.value)


@pytest.mark.unit
def test_a_shape_of_its_own_needs_every_field():
    with pytest.raises(UserError, match="missing: heads"):
        resolve_model(None, {k: v for k, v in TINY.items() if k != "heads"})
    with pytest.raises(UserError, match="name"):
        resolve_model(None, {**TINY, "name": ""})
    with pytest.raises(UserError, match="mapping"):
        resolve_model(None, ["hidden"])


# ---- real runs ----

SYSTEM_RATIO = 0.25  # ~80 steps of cpu-xs: Llama at this budget ends near 0.7 x unigram with AdamW
# One of each kind, for CI's time (~10-15 s a run): every optimizer was measured once
# (docs/MEASUREMENTS.md): lion, cautious_lion, kron and sophia stop at 0.80-0.91 x unigram at 0.25x
# on llama too, and all pass at 0.5x.
SYSTEM_OPTIMIZERS = ("adamw", "muon", "soap")


@pytest.mark.system
@pytest.mark.parametrize("optimizer", SYSTEM_OPTIMIZERS)
@pytest.mark.parametrize("arch", ["mla", "moe"])
def test_every_optimizer_trains_the_architecture_well_below_unigram(arch, optimizer):
    from bench.run.spec import RunSpec
    from bench.run.train import RunOptions, run

    spec = RunSpec(optimizer, "cpu-xs", SYSTEM_RATIO, model={"arch": arch}, eval_tokens=32768)
    assert spec.shape.arch == arch
    r = run(spec, RunOptions(threads=1))
    assert r.status == "ok", r.reason
    assert r.final_loss < 0.8 * r.unigram_loss, f"final / unigram loss {r.final_loss / r.unigram_loss:.3f}"
