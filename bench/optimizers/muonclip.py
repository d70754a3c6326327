"""MuonClip: Muon plus QK-clip, which caps each attention head's largest pre-softmax logit.

Paper: Kimi Team, "Kimi K2: Open Agentic Intelligence", arXiv 2507.20534 (MuonClip, Algorithm 1);
also J. Su, "QK-Clip" (kexue.fm/archives/11126). No public reference code; implemented from the
paper's equations. After each optimizer step, for every attention head h whose largest logit
S_max^h = max q.k / sqrt(head_dim) over the step's batch exceeds tau, the head's rows of W_q and W_k
are both multiplied by sqrt(gamma), gamma = tau / S_max^h, so the head's logits shrink by gamma;
other heads are untouched. That is K2's per-head rule for standard multi-head attention (kv heads =
heads in our models). An attention module can name its own per-head projections and powers of
gamma in `qk_clip_powers`: MLA's (bench/model/mla.py) follows K2's MLA rule, sqrt(gamma) on the
head-specific q_C and k_C, gamma on the head-specific rotary q_R, the shared rotary key untouched.
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

from bench.optimizers.common import matrix_decay
from bench.optimizers.hybrid import HybridOptimizer, build_hybrid
from bench.optimizers.muon import AUX_ROLES, MUON_DEFAULTS, Muon
from bench.optimizers.registry import OptimizerDef, register
from bench.roles import Role, TaggedParam

LLAMA_POWERS = {"wq": 0.5, "wk": 0.5}  # the contract's default: wq and wk, sqrt(gamma) each


def clip_powers(attn: nn.Module) -> dict[str, float]:
    """{projection name: power of gamma} of an attention module (module doc)."""
    return getattr(attn, "qk_clip_powers", LLAMA_POWERS)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The model's attention modules: those exposing the contract's `track_max_logit`."""
    return [m for m in model.modules() if hasattr(m, "track_max_logit")]


@torch.no_grad()
def qk_clip(attn: nn.Module, tau: float) -> None:
    """Scale the W_q and W_k rows of every head whose max logit exceeds tau by sqrt(tau / S_max)
    (or, for a module's own clip_powers, by (tau / S_max)^power)."""
    s_max = attn.max_logit
    if s_max is None:  # no forward has run yet
        return
    gamma = torch.where(s_max > tau, tau / s_max, torch.ones_like(s_max))
    for name, power in clip_powers(attn).items():
        factor = gamma.sqrt() if power == 0.5 else gamma.pow(power)
        weight = getattr(attn, name).weight
        heads = weight.view(attn.n_heads, -1, weight.size(-1))
        heads.mul_(factor.to(weight.dtype)[:, None, None])


class MuonClip(Muon):
    """The study's Muon step, then QK-clip on `attention` (module doc)."""

    def __init__(self, params: Iterable[torch.Tensor], attention: list[nn.Module], tau: float,
                 **muon_options: Any) -> None:
        super().__init__(params, **muon_options)
        for attn in attention:
            for name in clip_powers(attn):
                if getattr(attn, name).weight.size(0) % attn.n_heads:
                    raise ValueError(f"QK-clip needs {name} rows that split into n_heads heads")
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
        lr=hp["learning_rate"], momentum=hp["momentum"], weight_decay=matrix_decay(hp, hidden),
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
