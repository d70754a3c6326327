"""Cautious Lion: Lion that skips the coordinates where its signed update disagrees with the gradient.

Paper: Liang, Chen, Liu & Liu, "Cautious Optimizers: Improving Training with One Line of Code"
(arXiv 2411.16085), Algorithm 2 (C-Lion). Reference: kyleliang919/C-Optim c_lion.py (commit
2c0517c4db2e50b56d389ba4803eab1f4b3b8ae3), its update_fn:
    p <- p (1 - lr wd);  u = sign(beta1 m + (1 - beta1) g);  mask = 1[u g > 0]
    p <- p - lr u mask numel / (sum(mask) + 1);  m <- beta2 m + (1 - beta2) g.
The study did not run it and Levanter has none, so there is one version, the authors'. Its defaults
and grids are Lion's (lion.py, lion.json: the study's Lion sweep), the nearest tuned starting point.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from bench.optimizers.adam_moments import decoupled_step, group_tensors
from bench.optimizers.base import Optimizer
from bench.optimizers.common import TRAIN_DEFAULTS, decay_groups
from bench.optimizers.registry import OptimizerDef, register
from bench.roles import Role, TaggedParam


def lion_mask(update: Tensor, grad: Tensor) -> Tensor:
    """1 where update and gradient agree in sign, rescaled by numel / (agreeing + 1); else 0."""
    agree = update * grad > 0
    kept = agree.sum()  # an exact integer count, also for tensors past float32's 2^24
    return agree.to(update.dtype).mul_(agree.numel() / (kept + 1))


class CautiousLion(Optimizer):
    def __init__(self, params: list[dict[str, Any]], lr: float, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    def update_group(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        t = group_tensors(self, params, ("exp_avg",))
        beta1, beta2 = group["betas"]
        exp_avgs = t.buffers["exp_avg"]
        update = torch._foreach_mul(exp_avgs, beta1)  # mul then add, as the reference: same signs
        torch._foreach_add_(update, t.grads, alpha=1.0 - beta1)
        torch._foreach_sign_(update)
        torch._foreach_mul_(update, [lion_mask(u, g) for u, g in zip(update, t.grads)])
        decoupled_step(t.params, update, group["lr"], group["weight_decay"])
        torch._foreach_mul_(exp_avgs, beta2)
        torch._foreach_add_(exp_avgs, t.grads, alpha=1.0 - beta2)


def build(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module | None) -> CautiousLion:
    groups = decay_groups(params, hp["learning_rate"], hp, betas=(hp["beta1"], hp["beta2"]))
    return CautiousLion(groups, lr=hp["learning_rate"])


register(OptimizerDef(
    name="cautious_lion",
    family="sign",
    build=build,
    defaults={**TRAIN_DEFAULTS, "learning_rate": 2e-3, "beta1": 0.9, "beta2": 0.95, "weight_decay": 0.7},
    roles={Role.HIDDEN: "Cautious Lion, decayed", Role.HEAD: "Cautious Lion, decayed",
           Role.EMBEDDING: "Cautious Lion, no decay", Role.NORM: "Cautious Lion, no decay",
           Role.BIAS: "Cautious Lion, no decay"},
    paper="Liang et al., Cautious Optimizers: Improving Training with One Line of Code, arXiv:2411.16085",
    source="ours, following kyleliang919/C-Optim c_lion.py (2c0517c); checked step by step against a "
           "float64 transcription of it",
    notes="not in the study; defaults and grids are Lion's",
))
