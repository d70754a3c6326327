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
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from bench.optimizers.common import TRAIN_DEFAULTS, decay_groups
from bench.optimizers.registry import OptimizerDef, register
from bench.roles import Role, TaggedParam

# psi = inf turns off torch's momentum warm-up schedule, leaving optax's constant beta1 (see above).
CONSTANT_MOMENTUM = float("inf")


def build(params: list[TaggedParam], hp: Mapping[str, Any],
          model: torch.nn.Module | None) -> torch.optim.NAdam:
    groups = decay_groups(params, hp["learning_rate"], hp, betas=(hp["beta1"], hp["beta2"]),
                          eps=hp["epsilon"], momentum_decay=CONSTANT_MOMENTUM, decoupled_weight_decay=True)
    return torch.optim.NAdam(groups, lr=hp["learning_rate"])


register(OptimizerDef(
    name="nadamw",
    family="adam",
    build=build,
    defaults={**TRAIN_DEFAULTS, "learning_rate": 8e-3, "beta1": 0.95, "beta2": 0.98, "epsilon": 1e-25,
              "weight_decay": 0.1},
    roles={Role.HIDDEN: "NAdamW, decayed", Role.HEAD: "NAdamW, decayed", Role.EMBEDDING: "NAdamW, no decay",
           Role.NORM: "NAdamW, no decay", Role.BIAS: "NAdamW, no decay"},
    paper="Dozat, Incorporating Nesterov Momentum into Adam, ICLR 2016 workshop (no arXiv id); "
          "decoupled decay: Loshchilov & Hutter, arXiv:1711.05101",
    source="torch.optim.NAdam(decoupled_weight_decay=True, momentum_decay=inf), checked against "
           "optax.scale_by_adam(nesterov=True) equations (the study's Levanter NAdamW)",
))
