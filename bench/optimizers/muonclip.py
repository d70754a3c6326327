"""MuonClip: Muon plus QK-clip, which caps each attention head's largest pre-softmax logit.

Paper: Kimi Team, "Kimi K2: Open Agentic Intelligence", arXiv 2507.20534 (MuonClip, Algorithm 1);
also J. Su, "QK-Clip" (kexue.fm/archives/11126). No public reference code; implemented from the
paper's equations. After each optimizer step, for every attention head h whose largest logit
S_max^h = max q.k / sqrt(head_dim) over the step's batch exceeds tau, the head's rows of W_q and W_k
are both multiplied by sqrt(tau / S_max^h), so the head's logits shrink by tau / S_max^h; other heads
are untouched. (That is K2's per-head rule for standard multi-head attention; K2's MLA-specific
handling of the shared rotary key does not arise here, and kv heads = heads in our models.)
The Muon step itself is the study's (muon.py), not K2's RMS-matched 0.2 * sqrt(max(rows, cols)).

The builder switches on `track_max_logit` in every attention module of the model, so each forward
records `max_logit` [n_heads]; the clip reads the value of the last forward before `step()` (the
last micro-batch when gradients are accumulated). At the CPU ladder's scales logits rarely reach
K2's tau = 100, so there MuonClip usually equals Muon unless tau is lowered.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from bench.optimizers.common import decay_of
from bench.optimizers.hybrid import HybridOptimizer, build_hybrid
from bench.optimizers.muon import AUX_ROLES, MUON_DEFAULTS, Muon
from bench.optimizers.registry import OptimizerDef, register
from bench.roles import Role, TaggedParam


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The model's attention modules: those exposing the contract's `track_max_logit`."""
    return [m for m in model.modules() if hasattr(m, "track_max_logit")]


@torch.no_grad()
def qk_clip(attn: nn.Module, tau: float) -> None:
    """Scale the W_q and W_k rows of every head whose max logit exceeds tau by sqrt(tau / S_max)."""
    s_max = attn.max_logit
    if s_max is None:  # no forward has run yet
        return
    factor = torch.where(s_max > tau, (tau / s_max).sqrt(), torch.ones_like(s_max))
    for weight in (attn.wq.weight, attn.wk.weight):
        heads = weight.view(attn.n_heads, attn.head_dim, weight.size(-1))
        heads.mul_(factor.to(weight.dtype)[:, None, None])


class MuonClip(Muon):
    """The study's Muon step, then QK-clip on `attention` (module doc)."""

    def __init__(self, params: Iterable[torch.Tensor], attention: list[nn.Module], tau: float,
                 **muon_options: Any) -> None:
        super().__init__(params, **muon_options)
        for attn in attention:
            for weight in (attn.wq.weight, attn.wk.weight):
                if weight.size(0) != attn.n_heads * attn.head_dim:
                    raise ValueError("QK-clip needs wq and wk with n_heads * head_dim rows")
            attn.track_max_logit = True
        self.attention = attention
        self.tau = tau

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = super().step(closure)
        for attn in self.attention:
            qk_clip(attn, self.tau)
        return loss


def build(params: list[TaggedParam], hp: Mapping[str, Any], model: nn.Module) -> HybridOptimizer:
    return build_hybrid(params, hp, lambda hidden: MuonClip(
        [t.param for t in hidden], attention_modules(model), hp["qk_clip_tau"],
        lr=hp["learning_rate"], momentum=hp["momentum"], weight_decay=decay_of(hp, Role.HIDDEN),
        eps=hp["muon_epsilon"]))


register(OptimizerDef(
    name="muonclip",
    family="matrix",
    build=build,
    defaults={**MUON_DEFAULTS, "muon_epsilon": 1e-5, "qk_clip_tau": 100.0},
    roles={Role.HIDDEN: "Muon as in muon.py, then QK-clip of W_q / W_k per head, decayed",
           **AUX_ROLES},
    paper="Kimi Team, Kimi K2: Open Agentic Intelligence, arXiv:2507.20534",
    source="ours: muon.py's Muon plus QK-clip from the K2 paper's equations (no public reference "
           "code); checked against a direct computation of the per-head factors",
    schedule="linear",
))
