import pytest
import torch

from bench.model.llama import LlamaModel
from bench.model.scales import get_scale
from bench.roles import Role

pytestmark = pytest.mark.unit


def _model(vocab=64):
    torch.manual_seed(0)
    return LlamaModel(get_scale("cpu-xs"), vocab)


def test_every_parameter_has_a_role_and_hidden_count_matches_the_scale():
    model = _model()
    tagged = model.tagged_parameters()
    assert len(tagged) == len(list(model.parameters()))
    roles = {t.name: t.role for t in tagged}
    assert roles["embed.weight"] == Role.EMBEDDING
    assert roles["head.weight"] == Role.HEAD
    assert roles["norm.weight"] == Role.NORM
    assert roles["layers.0.attn.wq.weight"] == Role.HIDDEN
    assert roles["layers.0.mlp.w_down.weight"] == Role.HIDDEN
    hidden = sum(t.param.numel() for t in tagged if t.role == Role.HIDDEN)
    assert hidden == get_scale("cpu-xs").non_embedding_params  # the shape rule the budgets use


def test_attention_is_causal():
    model = _model()
    x = torch.randint(0, 64, (2, 16))
    y = x.clone()
    y[:, 10:] = (y[:, 10:] + 1) % 64  # change only the future
    with torch.no_grad():
        assert torch.allclose(model(x)[:, :10], model(y)[:, :10], atol=1e-6)
        assert not torch.allclose(model(x)[:, 10:], model(y)[:, 10:])


def test_max_logit_tracking_matches_a_direct_computation():
    model = _model()
    attn = model.layers[0].attn
    attn.track_max_logit = True
    x = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        model(x)
        h = model.layers[0].attn_norm(model.embed(x))
        from bench.model.llama import apply_rotary

        q = apply_rotary(attn._heads(attn.wq(h)), model.rope_cos, model.rope_sin)
        k = apply_rotary(attn._heads(attn.wk(h)), model.rope_cos, model.rope_sin)
        logits = (q @ k.mT) / attn.head_dim**0.5
        mask = torch.ones(12, 12, dtype=torch.bool).tril()
        expected = logits.masked_fill(~mask, -1e9).amax(dim=(0, 2, 3))
    assert attn.max_logit.shape == (attn.n_heads,)
    assert torch.allclose(attn.max_logit, expected, atol=1e-5)


def test_rotary_is_the_half_split_rotation_bitwise_and_depends_on_relative_position_only():
    from bench.model.llama import apply_rotary, rotary_tables

    head_dim, t = 8, 6
    cos, sin = rotary_tables(t, head_dim)
    x = torch.randn(2, 3, t, head_dim, generator=torch.Generator().manual_seed(0))
    angles = torch.outer(torch.arange(t, dtype=torch.float32),
                         1.0 / 10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    x1, x2 = x.chunk(2, dim=-1)
    textbook = torch.cat((x1 * angles.cos() - x2 * angles.sin(), x2 * angles.cos() + x1 * angles.sin()), -1)
    assert torch.equal(apply_rotary(x, cos, sin), textbook)
    # q at position i and k at position j: their product depends on i - j only
    q, k = torch.randn(head_dim), torch.randn(head_dim)
    rq = apply_rotary(q.expand(1, 1, t, head_dim), cos, sin)[0, 0]
    rk = apply_rotary(k.expand(1, 1, t, head_dim), cos, sin)[0, 0]
    assert torch.allclose(rq[3] @ rk[1], rq[5] @ rk[3], atol=1e-5)
