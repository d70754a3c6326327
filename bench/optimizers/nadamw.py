"""NAdamW: Adam with Dozat's Nesterov momentum and decoupled weight decay.

Paper: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop (openreview
OM0jvwB8jIp57ZJjtNEZ; no arXiv id); decoupled decay from Loshchilov & Hutter (arXiv 1711.05101).
The study's NAdamW is Levanter's AdamConfig(nesterov=True), i.e. optax.scale_by_adam(nesterov=True):
    m <- b1 m + (1 - b1) g,  v <- b2 v + (1 - b2) g^2,
    m_hat = b1 m / (1 - b1^(t+1)) + (1 - b1) g / (1 - b1^t),  v_hat = v / (1 - b2^t),
    p <- p (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps).
Implementation: torch.optim.NAdam(decoupled_weight_decay=True). Torch's NAdam warms its momentum
coefficient up as mu_t = b1 (1 - 0.5 * 0.96^(t psi)) (psi = momentum_decay, 4e-3 by default);
optax has a constant b1. With psi = inf, 0.96^(t psi) = 0 and mu_t = b1 for every t >= 1, which
makes torch's update exactly the equations above (pinned against them in
tests/optimizers/test_nadamw.py).

Two variants (the `variant` hyperparameter). `study` (default) is the above. `authors` is the NAdamW of
AlgoPerf (Dahl et al., "Benchmarking Neural Network Training Algorithms", arXiv 2306.07179), which
named NAdamW: mlcommons/algorithmic-efficiency at commit 2c90454fc05d5bdf3598b0c7651e611f132a7060,
algorithms/baselines/external_tuning/pytorch_nadamw_full_budget.py (class NAdamW, function nadamw;
its jax_nadamw_full_budget.py scale_by_nadam is the same formula):
    p <- p (1 - lr wd);  m <- b1 m + (1 - b1) g,  v <- b2 v + (1 - b2) g^2,
    p <- p - lr / (1 - b1^t) * (b1 m + (1 - b1) g) / (sqrt(v) / sqrt(1 - b2^t) + eps).
It differs from `study` in one place: the Nesterov term b1 m is bias-corrected by 1 - b1^t there and
by 1 - b1^(t+1) in optax (and in Dozat's own code), so that term is larger early on by
(1 - b1^(t+1)) / (1 - b1^t): for b1 = 0.95 x1.95 at step 1 (the whole step x1.31), x1.03 at step 20,
under 0.2% from step 66. Decay placement, epsilon placement and the second moment are the same.
Their other settings are ours to set: eps (their baseline fixes 1e-8; ours is `epsilon`), betas, and
which params decay (they decay all: decay_roles).
Their script's optional grad_clip is the train loop's max_grad_norm.

Dozat's own code (tdozat/Optimization tensorflow/nadam.py at 702c7aca2b1034e618ff98c99da8931c0ce081e8)
was read too: its bias-corrected momentum schedule gives exactly the study's m_hat; it differs only in
putting eps inside the square root, sqrt(v_hat + eps), and in updating the embedding rows of a
sparse gradient lazily. No `variant` follows it: the study's m_hat is his.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from bench.optimizers.adam_moments import decoupled_step, group_tensors
from bench.optimizers.base import Optimizer
from bench.optimizers.common import TRAIN_DEFAULTS, decay_groups
from bench.optimizers.registry import OptimizerDef, register, variant_of
from bench.roles import Role, TaggedParam

# psi = inf turns off torch's momentum warm-up schedule, leaving optax's constant beta1 (see above).
CONSTANT_MOMENTUM = float("inf")


class AuthorsNAdamW(Optimizer):
    """The `authors` variant (module doc): AlgoPerf's NAdamW."""

    def __init__(self, params: list[dict[str, Any]], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def update_group(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        t = group_tensors(self, params, ("exp_avg", "exp_avg_sq"))
        (beta1, beta2), m, v = group["betas"], t.buffers["exp_avg"], t.buffers["exp_avg_sq"]
        torch._foreach_lerp_(m, t.grads, 1.0 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, t.grads, t.grads, value=1.0 - beta2)
        nesterov = torch._foreach_mul(m, beta1)  # a copy: theirs adds into m and undoes it after
        torch._foreach_add_(nesterov, t.grads, alpha=1.0 - beta1)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, math.sqrt(1.0 - beta2**t.step))
        torch._foreach_add_(denom, group["eps"])
        update = torch._foreach_div(nesterov, denom)
        torch._foreach_div_(update, 1.0 - beta1**t.step)  # b1^t, not optax's b1^(t+1), on b1 m
        decoupled_step(t.params, update, group["lr"], group["weight_decay"])


def build(params: list[TaggedParam], hp: Mapping[str, Any],
          model: torch.nn.Module | None) -> torch.optim.Optimizer:
    if variant_of(hp) == "authors":
        groups = decay_groups(params, hp["learning_rate"], hp, betas=(hp["beta1"], hp["beta2"]),
                              eps=hp["epsilon"])
        return AuthorsNAdamW(groups, lr=hp["learning_rate"])
    groups = decay_groups(params, hp["learning_rate"], hp, betas=(hp["beta1"], hp["beta2"]),
                          eps=hp["epsilon"], momentum_decay=CONSTANT_MOMENTUM, decoupled_weight_decay=True)
    return torch.optim.NAdam(groups, lr=hp["learning_rate"])


register(OptimizerDef(
    name="nadamw",
    family="adam",
    build=build,
    defaults={**TRAIN_DEFAULTS, "learning_rate": 8e-3, "beta1": 0.95, "beta2": 0.98, "epsilon": 1e-25,
              "weight_decay": 0.1, "variant": "study"},
    added_later=frozenset({"variant"}),
    differences=("Nesterov bias correction: study b1 m / (1 - b1^(t+1)) + (1 - b1) g / (1 - b1^t) (optax, "
                 "Dozat); authors (b1 m + (1 - b1) g) / (1 - b1^t) (AlgoPerf NAdamW)",),
    roles={Role.HIDDEN: "NAdamW, decayed", Role.HEAD: "NAdamW, decayed", Role.EMBEDDING: "NAdamW, no decay",
           Role.NORM: "NAdamW, no decay", Role.BIAS: "NAdamW, no decay"},
    paper="Dozat, Incorporating Nesterov Momentum into Adam, ICLR 2016 workshop (no arXiv id); "
          "decoupled decay: Loshchilov & Hutter, arXiv:1711.05101",
    source="torch.optim.NAdam(decoupled_weight_decay=True, momentum_decay=inf), checked against "
           "optax.scale_by_adam(nesterov=True) equations (the study's Levanter NAdamW); authors = "
           "AlgoPerf's NAdamW (mlcommons/algorithmic-efficiency 2c90454), checked step by step against a "
           "float64 transcription",
))
