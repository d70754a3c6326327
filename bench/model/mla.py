"""Multi-head Latent Attention (MLA): the Llama decoder with DeepSeek-V2's attention.

Source: DeepSeek-AI, "DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language
Model" (arXiv 2405.04434), section 2.1, equations (9)-(19). With d_h = hidden / heads and
d_h^R = rope_dim, for each token h_t:
    c_Q = RMSNorm(W^DQ h_t)                  [q_rank]     query latent
    q_C = W^UQ c_Q,  q_R = RoPE(W^QR c_Q)    [heads x d_h], [heads x d_h^R]
    c_KV = RMSNorm(W^DKV h_t)                [kv_rank]    key-value latent (what inference caches)
    k_C = W^UK c_KV, v = W^UV c_KV           [heads x d_h] each
    k_R = RoPE(W^KR h_t)                     [d_h^R], one rotary key shared by every head
    q = [q_C; q_R], k = [k_C; k_R], causal softmax(q k / sqrt(d_h + d_h^R)) v, then W^O.
The RMSNorms on the latents are the paper's released model's (q_a_layernorm, kv_a_layernorm). Each
W is its own matrix as the paper writes them (its code fuses W^DKV with W^KR and W^UK with W^UV):
one matrix per function, as the Llama attention here has separate wq, wk, wv. Roles: the down and
up projections of the latents are Role.LATENT; W^KR (from the hidden state) and W^O are HIDDEN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.model.llama import Block, LlamaModel, RMSNorm, apply_rotary, causal_max_logit, tagged
from bench.model.scales import Scale
from bench.roles import Role


def _latent(n_in: int, n_out: int) -> nn.Linear:
    return tagged(nn.Linear(n_in, n_out, bias=False), Role.LATENT)


class LatentAttention(nn.Module):
    # Projections whose output rows are per-head query/key features, head-major: Adam-mini gives
    # them one block per head. QK-clip (MuonClip) scales them per head by gamma^power, K2's rule for
    # MLA (arXiv 2507.20534): sqrt(gamma) on q_C and k_C, gamma on q_R, the shared k_R untouched.
    head_major_qk = ("wq_up", "wk_up", "wq_rope")
    qk_clip_powers = {"wq_up": 0.5, "wk_up": 0.5, "wq_rope": 1.0}

    def __init__(self, scale: Scale):
        super().__init__()
        h, n, r = scale.hidden, scale.heads, scale.rope_dim
        self.n_heads, self.head_dim, self.rope_dim = n, scale.head_dim, r
        self.wq_down = _latent(h, scale.q_rank)
        self.q_norm = RMSNorm(scale.q_rank)
        self.wq_up = _latent(scale.q_rank, h)
        self.wq_rope = _latent(scale.q_rank, n * r)
        self.wkv_down = _latent(h, scale.kv_rank)
        self.kv_norm = RMSNorm(scale.kv_rank)
        self.wk_up = _latent(scale.kv_rank, h)
        self.wv_up = _latent(scale.kv_rank, h)
        self.wk_rope = nn.Linear(h, r, bias=False)
        self.wo = nn.Linear(h, h, bias=False)
        self.track_max_logit = False  # as the Llama attention's (MuonClip)
        self.max_logit: torch.Tensor | None = None

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        n = self.n_heads
        c_q = self.q_norm(self.wq_down(x))
        q_rope = apply_rotary(self._heads(self.wq_rope(c_q), n), cos, sin)
        q = torch.cat((self._heads(self.wq_up(c_q), n), q_rope), dim=-1)
        c_kv = self.kv_norm(self.wkv_down(x))
        k_nope = self._heads(self.wk_up(c_kv), n)
        k_rope = apply_rotary(self._heads(self.wk_rope(x), 1), cos, sin).expand(-1, n, -1, -1)
        k = torch.cat((k_nope, k_rope), dim=-1)
        v = self._heads(self.wv_up(c_kv), n)
        if self.track_max_logit:
            self.max_logit = causal_max_logit(q.detach(), k.detach(), q.size(-1) ** -0.5)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # scale 1/sqrt(d_h + d_h^R)
        return self.wo(y.transpose(1, 2).reshape(x.shape))


class MLAModel(LlamaModel):
    """The Llama decoder with latent attention; the rotary tables turn rope_dim features."""

    arch = "mla"

    def make_block(self, scale: Scale) -> nn.Module:
        return Block(scale, attention=LatentAttention)

    def rotary_dim(self, scale: Scale) -> int:
        return scale.rope_dim
