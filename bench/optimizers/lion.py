"""Lion: the sign of an interpolated momentum, with decoupled weight decay.

Paper: Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023 (arXiv 2302.06675).
    u = sign(beta1 * m + (1 - beta1) * g);  p <- p * (1 - lr * wd) - lr * u;
    m <- beta2 * m + (1 - beta2) * g
As in the study (Levanter's LionConfig: optax.scale_by_lion, add_decayed_weights, scale(-lr)) and
the authors' google/automl lion/lion_pytorch.py (read). Checked step by step against
lucidrains/lion-pytorch (PyPI lion-pytorch 0.2.5, same lr-coupled decay by default) in
tests/optimizers/test_lion.py: bitwise equal.
Every entry of an update is -lr, 0 or +lr (before decay), so Lion wants a smaller lr and a larger
weight decay than AdamW: the study's best 130m/1x config has lr 2e-3 and weight decay 0.7.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from bench.optimizers.adam_moments import decoupled_step, group_tensors
from bench.optimizers.base import Optimizer
from bench.optimizers.common import TRAIN_DEFAULTS, decay_groups
from bench.optimizers.registry import OptimizerDef, register
from bench.roles import Role, TaggedParam


class Lion(Optimizer):
    def __init__(self, params: list[dict[str, Any]], lr: float, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    def update_group(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        t = group_tensors(self, params, ("exp_avg",))
        beta1, beta2 = group["betas"]
        exp_avgs = t.buffers["exp_avg"]
        update = torch._foreach_mul(exp_avgs, beta1)
        torch._foreach_add_(update, t.grads, alpha=1.0 - beta1)
        torch._foreach_sign_(update)
        decoupled_step(t.params, update, group["lr"], group["weight_decay"])
        torch._foreach_mul_(exp_avgs, beta2)
        torch._foreach_add_(exp_avgs, t.grads, alpha=1.0 - beta2)


def build(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module | None) -> Lion:
    groups = decay_groups(params, hp["learning_rate"], hp, betas=(hp["beta1"], hp["beta2"]))
    return Lion(groups, lr=hp["learning_rate"])


register(OptimizerDef(
    name="lion",
    family="sign",
    build=build,
    defaults={**TRAIN_DEFAULTS, "learning_rate": 2e-3, "beta1": 0.9, "beta2": 0.95, "weight_decay": 0.7},
    roles={Role.HIDDEN: "Lion, decayed", Role.HEAD: "Lion, decayed", Role.EMBEDDING: "Lion, no decay",
           Role.NORM: "Lion, no decay", Role.BIAS: "Lion, no decay"},
    paper="Chen et al., Symbolic Discovery of Optimization Algorithms, NeurIPS 2023, arXiv:2302.06675",
    source="own torch implementation of optax.scale_by_lion (the study's Levanter Lion); "
           "matches lion-pytorch 0.2.5 step by step",
))
