"""Cautious AdamW: AdamW that skips the coordinates where its update disagrees with the gradient.

Paper: Liang, Chen, Liu & Liu, "Cautious Optimizers: Improving Training with One Line of Code"
(arXiv 2411.16085). With u = m_hat / (sqrt(v_hat) + eps) the AdamW direction (optax's
scale_by_adam, as in the study's Levanter `scale_by_cautious`):
    mask = 1[u * g > 0];  u_c = u * mask * numel / (sum(mask) + 1);  p <- p (1 - lr wd) - lr u_c.
The rescale numel / (sum + 1) is the authors' original one (kyleliang919/C-Optim, c_adamw.py, read
through copies of it: the repository's own files were not in the reference index; its later code
divides by clamp(mean(mask), 1e-3)). The study's Levanter divides by mean(mask) + eps, which differs
only by the +1: a relative 1/sum(mask), negligible for matrices, a few percent on small norm vectors.
Weight decay is not masked, as in both references.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from bench.optimizers.adam_moments import adam_direction, decoupled_step, group_tensors
from bench.optimizers.base import Optimizer
from bench.optimizers.common import TRAIN_DEFAULTS, decay_groups
from bench.optimizers.registry import OptimizerDef, register
from bench.roles import Role, TaggedParam


def cautious_mask(update: Tensor, grad: Tensor) -> Tensor:
    """1 where update and gradient agree in sign, rescaled by numel / (agreeing + 1); else 0."""
    agree = update * grad > 0
    kept = agree.sum()  # an exact integer count, also for tensors past float32's 2^24
    return agree.to(update.dtype).mul_(agree.numel() / (kept + 1))


class CautiousAdamW(Optimizer):
    def __init__(self, params: list[dict[str, Any]], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    def update_group(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        t = group_tensors(self, params, ("exp_avg", "exp_avg_sq"))
        beta1, beta2 = group["betas"]
        update = adam_direction(t.buffers["exp_avg"], t.buffers["exp_avg_sq"], t.grads,
                                beta1, beta2, group["eps"], t.step)
        torch._foreach_mul_(update, [cautious_mask(u, g) for u, g in zip(update, t.grads)])
        decoupled_step(t.params, update, group["lr"], group["weight_decay"])


def build(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module | None) -> CautiousAdamW:
    groups = decay_groups(params, hp["learning_rate"], hp["weight_decay"], betas=(hp["beta1"], hp["beta2"]),
                          eps=hp["epsilon"])
    return CautiousAdamW(groups, lr=hp["learning_rate"])


register(OptimizerDef(
    name="cautious",
    family="adam",
    build=build,
    defaults={**TRAIN_DEFAULTS, "learning_rate": 8e-3, "beta1": 0.95, "beta2": 0.98, "epsilon": 1e-15,
              "weight_decay": 0.1},
    roles={Role.HIDDEN: "Cautious AdamW, decayed", Role.HEAD: "Cautious AdamW, decayed",
           Role.EMBEDDING: "Cautious AdamW, no decay", Role.NORM: "Cautious AdamW, no decay",
           Role.BIAS: "Cautious AdamW, no decay"},
    paper="Liang et al., Cautious Optimizers: Improving Training with One Line of Code, arXiv:2411.16085",
    source="own torch implementation of the study's Levanter scale_by_cautious with the authors' "
           "(kyleliang919/C-Optim) mask rescale numel/(sum+1); pinned against hand-written equations",
))
