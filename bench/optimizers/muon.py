"""Muon: Nesterov momentum orthogonalised by Newton-Schulz, for hidden matrices; AdamW for the rest.

Papers: Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024,
kellerjordan.github.io/posts/muon); Liu et al., "Muon is Scalable for LLM Training" (arXiv 2502.16982)
for decoupled weight decay on Muon's matrices.

The update is the study's (Wen et al., arXiv 2509.02046), i.e. Levanter's scale_with_muon
(marin-community/levanter, src/levanter/optim/muon.py), which we checked line by line:
  B <- momentum * B + g;  U = g + momentum * B                     (Nesterov, sum form)
  O = NewtonSchulz5(U / (||U||_F + muon_epsilon))                  (quintic 3.4445, -4.7750, 2.0315)
  W <- W * (1 - lr * weight_decay) - lr * sqrt(max(1, rows/cols)) * O
Embeddings, the head and norm gains go to AdamW at lr * muon_to_adam_lr (hybrid.py). One known
difference: Levanter's Muon applies max_grad_norm to the AdamW part's gradients only, while optbench's
train loop clips all gradients together.

torch.optim.Muon (torch 2.13) was checked and not used: its momentum is the EMA form (equal up to the
factor 1 - momentum, which changes how muon_epsilon, a study hyperparameter, acts), it always runs
Newton-Schulz in bf16 (slower than fp32 below 64-wide matrices on CPU) and one matrix at a time; its
"original" adjust_lr_fn is the same sqrt(max(1, rows/cols)) scale. Here the working dtype is bf16 on
CUDA and for CPU matrices 64 wide or more (ns_dtype), fp32 below, and same-shape matrices share one
batched Newton-Schulz call.

Two variants (the `variant` hyperparameter). `study` (default) is the update above. `authors` is
KellerJordan/Muon muon.py (github.com/KellerJordan/Muon at commit
857d1adc159e098212f828d927460782d3da59e9), SingleDeviceMuonWithAuxAdam's Muon groups (muon_update):
  M <- lerp(M, g, 1 - momentum);  U = lerp(g, M, momentum)        (Nesterov, EMA form)
  O = NewtonSchulz5(U / (||U||_F + 1e-7)) in bf16                  (same quintic, 5 steps)
  W <- W * (1 - lr * weight_decay) - lr * max(1, rows/cols)**0.5 * O
Against Levanter's scale_with_muon (re-read at marin-community/levanter
174f6034d5af2bbeb0689df4a3e6100a01a7e32e) it differs in the momentum form, in the Newton-Schulz
epsilon (fixed 1e-7 there; muon_epsilon is not used) and in always running Newton-Schulz in bf16
(ns_dtype keeps CPU matrices under 64 wide in fp32). The shape scale, the coefficients, the step
count and the decay placement (decoupled, at the scheduled lr, before the update) are the same. For the other parameters their
MuonWithAuxAdam's adam_update is Adam with bias correction and eps outside sqrt(v_hat), decay
p *= 1 - lr * wd first: torch's AdamW, which both variants keep (the same update up to fp32
rounding). Its hyperparameter values are not unambiguous (its defaults betas (0.9, 0.95), eps 1e-10,
lr 3e-4, no decay; its example betas (0.8, 0.95) and per-group lrs 0.22 head, 0.6 embeddings, 0.04
scalars), so both variants keep ours: beta1, beta2, epsilon, lr * muon_to_adam_lr and the head
decayed. Neither their Muon nor their Adam clips gradients; the train loop's max_grad_norm still does.

`Muon` is the matrix optimizer the Muon family builds on: subclasses override `update_group` (which
matrices update this step) and `_direction` (what is done after orthogonalisation).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping

import torch

from bench.optimizers.base import Optimizer
from bench.optimizers.common import TRAIN_DEFAULTS, matrix_decay
from bench.optimizers.hybrid import HybridOptimizer, build_hybrid
from bench.optimizers.momentum import nesterov_ema, nesterov_sum
from bench.optimizers.newton_schulz import muon_scale, newton_schulz, ns_dtype
from bench.optimizers.registry import OptimizerDef, register, variant_of
from bench.roles import Role, TaggedParam


def _by_shape(tensors: list[torch.Tensor]) -> dict[torch.Size, list[int]]:
    groups: dict[torch.Size, list[int]] = defaultdict(list)
    for i, t in enumerate(tensors):
        groups[t.shape].append(i)
    return groups


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x with its longer side last (a view): a matrix and its transpose orthogonalise alike."""
    return x.mT if x.size(-2) > x.size(-1) else x


def orthogonalise(updates: list[torch.Tensor], steps: int, eps: float,
                  dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Newton-Schulz on every matrix in ns_dtype's working precision (or `dtype`), one batched call
    per shape up to transposition (a Llama block's up and down projections share one: 1.1x faster
    at cpu-l; the same result up to fp32 rounding, bitwise in bf16)."""
    wide = [_wide(u) for u in updates]
    out: dict[int, torch.Tensor] = {}
    for idx in _by_shape(wide).values():
        stacked = torch.stack([wide[i] for i in idx])
        orthogonal = newton_schulz(stacked, steps=steps, eps=eps, dtype=dtype or ns_dtype(stacked))
        out.update((i, o.mT if wide[i] is not updates[i] else o) for i, o in zip(idx, orthogonal))
    return [out[i] for i in range(len(updates))]


class Muon(Optimizer):
    """Muon for 2-D matrices (see module doc). `ema` picks the EMA momentum form (momentum.py)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.95,
                 weight_decay: float = 0.0, eps: float = 1e-7, ns_steps: int = 5,
                 ema: bool = False) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eps=eps,
                        ns_steps=ns_steps, ema=ema)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if any(p.ndim != 2 for p in group["params"]):
                raise ValueError("Muon updates 2-D matrices only; give other params to AdamW")

    def _direction(self, params: list[torch.Tensor], updates: list[torch.Tensor],
                   group: dict[str, Any]) -> list[torch.Tensor]:
        """The step direction of each matrix before the shape scale and learning rate."""
        return orthogonalise(updates, group["ns_steps"], group["eps"])

    def _buffers(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)
        return [self.state[p]["momentum_buffer"] for p in params]

    def update_group(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        nesterov = nesterov_ema if group["ema"] else nesterov_sum
        updates = nesterov([p.grad for p in params], self._buffers(params), group["momentum"])
        directions = self._direction(params, updates, group)
        lr, wd = group["lr"], group["weight_decay"]
        if wd:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        for shape, idx in _by_shape(params).items():
            torch._foreach_add_([params[i] for i in idx], [directions[i] for i in idx],
                                alpha=-lr * muon_scale(shape))


class AuthorsMuon(Muon):
    """The `authors` variant (module doc): KellerJordan/Muon's muon_update, EMA Nesterov momentum,
    Newton-Schulz epsilon 1e-7 and bf16 working precision for every matrix."""

    NS_EPS = 1e-7  # zeropower_via_newtonschulz5's
    ns_working_dtype: torch.dtype = torch.bfloat16  # G.bfloat16() there; tests set fp32 to check the math

    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.95,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, eps=self.NS_EPS,
                         ema=True)

    def _direction(self, params: list[torch.Tensor], updates: list[torch.Tensor],
                   group: dict[str, Any]) -> list[torch.Tensor]:
        return orthogonalise(updates, group["ns_steps"], group["eps"], dtype=self.ns_working_dtype)


# The Muon family's shared defaults: the study's best 130m / 1x Muon config
# (Analysis/Results/muon/130m/1/result.json) with the CPU ladder's learning rate. muon_to_adam_lr is
# 0.3, not that file's 0.2: 0.3 won in the study's other Phase I regimes, and on the CPU ladder Muon
# was best at lr 4e-2 with the auxiliary AdamW at 1.2e-2 (docs/MEASUREMENTS.md).
MUON_DEFAULTS: dict[str, Any] = {
    **TRAIN_DEFAULTS, "learning_rate": 0.04, "warmup": 0.0, "lr_schedule": "linear", "decay": 0.8,
    "min_lr_ratio": 0.0, "max_grad_norm": 1.0,
    "momentum": 0.95, "weight_decay": 0.1, "muon_to_adam_lr": 0.3,
    "beta1": 0.8, "beta2": 0.98, "epsilon": 1e-15,
}

AUX_ROLES = {Role.HEAD: "AdamW at lr * muon_to_adam_lr, decayed",
             Role.EMBEDDING: "AdamW at lr * muon_to_adam_lr, no decay",
             Role.NORM: "AdamW at lr * muon_to_adam_lr, no decay",
             Role.BIAS: "AdamW at lr * muon_to_adam_lr, no decay"}


def build(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module) -> HybridOptimizer:
    if variant_of(hp) == "authors":
        return build_hybrid(params, hp, lambda hidden: AuthorsMuon(
            [t.param for t in hidden], lr=hp["learning_rate"], momentum=hp["momentum"],
            weight_decay=matrix_decay(hp, hidden)))
    return build_hybrid(params, hp, lambda hidden: Muon(
        [t.param for t in hidden], lr=hp["learning_rate"], momentum=hp["momentum"],
        weight_decay=matrix_decay(hp, hidden), eps=hp["muon_epsilon"]))


register(OptimizerDef(
    name="muon",
    family="matrix",
    build=build,
    defaults={**MUON_DEFAULTS, "muon_epsilon": 1e-5, "variant": "study"},
    added_later=frozenset({"variant"}),
    differences=("momentum: study sum form B = mB + g, U = g + mB (Levanter); authors EMA form "
                 "M = lerp(M, g, 1 - m), U = lerp(g, M, m)",
                 "Newton-Schulz epsilon: study muon_epsilon (1e-5); authors fixed 1e-7 (muon_epsilon unused)",
                 "Newton-Schulz precision: study fp32 for CPU matrices under 64 wide, else bf16; authors "
                 "bf16 always"),
    roles={Role.HIDDEN: "Muon: Nesterov, Newton-Schulz 5, x sqrt(max(1, rows/cols)), decayed",
           **AUX_ROLES},
    paper="Jordan et al., Muon: An optimizer for hidden layers in neural networks, 2024 "
          "(kellerjordan.github.io/posts/muon); Liu et al., Muon is Scalable for LLM Training, "
          "arXiv:2502.16982",
    source="ours: study = Levanter's scale_with_muon (the study's), checked against a float64 "
           "reference of its equations and torch.optim.Muon; authors = KellerJordan/Muon muon.py "
           "(857d1ad), checked step by step against a float64 transcription",
    schedule="linear",
    notes="muon_to_adam_lr default 0.3 (the study's 130m/1x best is 0.2; see module)",
))
