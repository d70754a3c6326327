"""Cautious AdamW: AdamW that skips the coordinates where its update disagrees with the gradient.

Paper: Liang, Chen, Liu & Liu, "Cautious Optimizers: Improving Training with One Line of Code"
(arXiv 2411.16085). Two variants (the `variant` hyperparameter):

`study` (default), the study's Levanter `scale_by_cautious` (stanford-crfm/levanter
src/levanter/optim/cautious.py at 03d0240df5197ca998b206b01c9d2921d280b370), then
add_decayed_weights and scale(-lr). With u = m_hat / (sqrt(v_hat) + eps) (optax's scale_by_adam):
    mask = 1[u * g > 0];  u_c = u * mask / (mean(mask) + eps);  p <- p (1 - lr wd) - lr u_c,
eps being Adam's epsilon.

`authors`, kyleliang919/C-Optim c_adamw.py's per-parameter step (commit
2c0517c4db2e50b56d389ba4803eab1f4b3b8ae3; correct_bias=True):
    p <- p (1 - lr wd);  m, v as Adam;  mask = 1[m * g > 0] / max(mean(1[m * g > 0]), 1e-3)
    p <- p - lr sqrt(1 - beta2^t) / (1 - beta1^t) * (m * mask) / (sqrt(v) + eps),
epsilon added to the uncorrected sqrt(v), as torch's Adam. (Its earlier rescale numel / (sum + 1),
kept there as a comment, is Cautious Lion's: cautious_lion.py.)

The two masks are the same coordinates (m_hat / (sqrt(v_hat) + eps) has m's sign); the rescales
differ only where few coordinates agree. Weight decay is never masked, in both sources.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor

from bench.optimizers.adam_moments import adam_direction, decoupled_step, group_tensors
from bench.optimizers.base import Optimizer
from bench.optimizers.common import TRAIN_DEFAULTS, decay_groups
from bench.optimizers.registry import OptimizerDef, register, variant_of
from bench.roles import Role, TaggedParam

AUTHORS_MIN_MEAN = 1e-3  # C-Optim's clamp of the mask's mean


def cautious_mask(update: Tensor, grad: Tensor, eps: float, variant: str) -> Tensor:
    """1 where update and gradient agree in sign, else 0, divided by the mask's mean plus eps
    (`study`, Levanter) or by the mean clamped at 1e-3 (`authors`, C-Optim)."""
    agree = (update * grad > 0).to(update.dtype)
    mean = agree.mean()
    return agree.div_(mean + eps if variant == "study" else mean.clamp(min=AUTHORS_MIN_MEAN))


class CautiousAdamW(Optimizer):
    later_options = {"variant": "study"}

    def __init__(self, params: list[dict[str, Any]], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, variant: str = "study") -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                                  "variant": variant})

    def update_group(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        t = group_tensors(self, params, ("exp_avg", "exp_avg_sq"))
        if group["variant"] == "authors":
            self._authors_step(t, group)
            return
        beta1, beta2 = group["betas"]
        update = adam_direction(t.buffers["exp_avg"], t.buffers["exp_avg_sq"], t.grads,
                                beta1, beta2, group["eps"], t.step)
        torch._foreach_mul_(update, [cautious_mask(u, g, group["eps"], "study") for u, g in zip(update, t.grads)])
        decoupled_step(t.params, update, group["lr"], group["weight_decay"])

    @staticmethod
    def _authors_step(t: Any, group: Mapping[str, Any]) -> None:
        """C-Optim's order: decay, moments, the masked m over sqrt(v) + eps at a bias-corrected lr."""
        beta1, beta2 = group["betas"]
        lr, wd = group["lr"], group["weight_decay"]
        if wd:
            torch._foreach_mul_(t.params, 1.0 - lr * wd)
        exp_avgs, exp_avg_sqs = t.buffers["exp_avg"], t.buffers["exp_avg_sq"]
        torch._foreach_lerp_(exp_avgs, t.grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, t.grads, t.grads, value=1.0 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denom, group["eps"])
        masked = torch._foreach_mul(exp_avgs, [cautious_mask(m, g, 0.0, "authors")
                                               for m, g in zip(exp_avgs, t.grads)])
        size = lr * math.sqrt(1.0 - beta2**t.step) / (1.0 - beta1**t.step)
        torch._foreach_addcdiv_(t.params, masked, denom, value=-size)


def build(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module | None) -> CautiousAdamW:
    groups = decay_groups(params, hp["learning_rate"], hp, betas=(hp["beta1"], hp["beta2"]),
                          eps=hp["epsilon"])
    return CautiousAdamW(groups, lr=hp["learning_rate"], variant=variant_of(hp))


register(OptimizerDef(
    name="cautious",
    family="adam",
    build=build,
    defaults={**TRAIN_DEFAULTS, "learning_rate": 8e-3, "beta1": 0.95, "beta2": 0.98, "epsilon": 1e-15,
              "weight_decay": 0.1, "variant": "study"},
    added_later=frozenset({"variant"}),
    differences=("mask rescale: study 1/(mean + epsilon) (Levanter), authors 1/max(mean, 1e-3)",
                 "epsilon: study adds it to sqrt(v_hat) (optax), authors to sqrt(v), bias correction in the lr"),
    roles={Role.HIDDEN: "Cautious AdamW, decayed", Role.HEAD: "Cautious AdamW, decayed",
           Role.EMBEDDING: "Cautious AdamW, no decay", Role.NORM: "Cautious AdamW, no decay",
           Role.BIAS: "Cautious AdamW, no decay"},
    paper="Liang et al., Cautious Optimizers: Improving Training with One Line of Code, arXiv:2411.16085",
    source="ours: study = Levanter scale_by_cautious (levanter 03d0240); authors = kyleliang919/C-Optim "
           "c_adamw.py (2c0517c); each checked step by step against a float64 transcription",
))
