"""MuonClip (bench/optimizers/muonclip.py): QK-clip scales exactly the heads above tau by the
right factor, the optimizer is Muon followed by the clip, checkpoint resume and registration."""
import math

import pytest
import torch

from bench.model.llama import Attention, rotary_tables
from bench.optimizers.muonclip import attention_modules, qk_clip

from .testkit import assert_registered, assert_resume_is_bitwise, build, tiny_model, train

pytestmark = pytest.mark.integration

TAU = 100.0


def _hot_attention() -> tuple[Attention, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Two heads on one input; head 0's W_q is scaled up so its logits exceed TAU, head 1's not."""
    torch.manual_seed(0)
    attn = Attention(hidden=16, heads=2)
    with torch.no_grad():
        attn.wq.weight[:8].mul_(60.0)
        attn.wk.weight[:8].mul_(60.0)
    attn.track_max_logit = True
    x = torch.randn(2, 8, 16)
    return attn, x, rotary_tables(8, 8)


def test_clip_scales_only_heads_above_tau_by_sqrt_tau_over_max_logit():
    attn, x, (cos, sin) = _hot_attention()
    attn(x, cos, sin)
    s_max = attn.max_logit.clone()
    assert s_max[0] > TAU > s_max[1]
    before = {n: p.detach().clone() for n, p in attn.named_parameters()}
    qk_clip(attn, TAU)
    factor = math.sqrt(TAU / s_max[0].item())
    for name in ("wq.weight", "wk.weight"):
        after = dict(attn.named_parameters())[name].detach()
        torch.testing.assert_close(after[:8], before[name][:8] * factor, rtol=1e-6, atol=0)
        assert torch.equal(after[8:], before[name][8:])  # the head below tau: bitwise untouched
    for name in ("wv.weight", "wo.weight"):
        assert torch.equal(dict(attn.named_parameters())[name], before[name])
    attn(x, cos, sin)  # the clipped head's largest logit is now exactly tau
    torch.testing.assert_close(attn.max_logit, torch.stack([torch.tensor(TAU), s_max[1]]),
                               rtol=1e-5, atol=0)


def test_builder_turns_on_logit_tracking_and_step_is_muon_then_clip():
    tau = 1e-3  # below the tiny model's logits, so every head is clipped
    clipped_model, muon_model = tiny_model(), tiny_model()
    clipped = build("muonclip", clipped_model, qk_clip_tau=tau)
    plain = build("muon", muon_model)
    attns = attention_modules(clipped_model)
    assert len(attns) == 3 and all(a.track_max_logit for a in attns)
    train(clipped_model, clipped, range(1))
    train(muon_model, plain, range(1))
    for a_clip, a_muon in zip(attns, attention_modules(muon_model)):
        assert (a_clip.max_logit > tau).all()
        a_muon.max_logit = a_clip.max_logit
        qk_clip(a_muon, tau)
    for (n, a), b in zip(clipped_model.state_dict().items(), muon_model.state_dict().values()):
        assert torch.equal(a, b), n


def test_trains_a_tiny_model():
    model = tiny_model()
    losses = train(model, build("muonclip", model), range(30))
    assert losses[-1] < 0.5 * losses[0]


def test_resume_from_checkpoint_is_bitwise():
    assert_resume_is_bitwise("muonclip", qk_clip_tau=1e-3)


def test_registered_with_complete_defaults_and_loadable_space():
    assert_registered("muonclip")
