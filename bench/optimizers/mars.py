"""MARS (AdamW variant): Adam on a variance-reduced gradient.

Paper: Yuan, Liu, Wu, Zhou & Gu, "MARS: Unleashing the Power of Variance Reduction for Training
Large Models" (arXiv 2411.10438), MARS-AdamW with the "approximate" correction that reuses the
previous step's gradient. As in the study (Levanter's `scale_by_mars`):
    c = g + gamma * beta1 / (1 - beta1) * (g - g_prev)      (g_prev = 0 on the first step)
    c <- c * min(1, max_grad_norm / (||c||_global + 1e-6))   (skipped when max_grad_norm is 0)
    u = m_hat / (sqrt(v_hat) + eps) with Adam's moments of c;  p <- p (1 - lr wd) - lr u.
Checked against the authors' AGI-Arena/MARS (MARS/optimizers/mars.py). The study differs from it in
two places and we follow the study: c is clipped by its global norm at max_grad_norm (the authors
rescale each tensor's c to norm <= 1), and 1-D params get MARS too (the authors default them to
AdamW). The study's MARS did not clip the raw gradient, so its registry entry's `clips_gradients`
tells the train loop that this optimizer applies max_grad_norm itself.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from bench.optimizers.adam_moments import adam_direction, decoupled_step, group_tensors
from bench.optimizers.base import Optimizer, run_closure
from bench.optimizers.common import TRAIN_DEFAULTS, decay_groups
from bench.optimizers.registry import OptimizerDef, register
from bench.roles import Role, TaggedParam


def clip_global_norm_(tensors: list[Tensor], max_norm: float) -> None:
    """Scale `tensors` in place so their joint L2 norm is at most max_norm (no host sync)."""
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))
    torch._foreach_mul_(tensors, torch.clamp(max_norm / (total + 1e-6), max=1.0))


class Mars(Optimizer):
    def __init__(self, params: list[dict[str, Any]], lr: float, betas: tuple[float, float] = (0.95, 0.99),
                 eps: float = 1e-8, gamma: float = 0.025, weight_decay: float = 0.0,
                 max_grad_norm: float = 1.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "gamma": gamma,
                                  "weight_decay": weight_decay})
        self.max_grad_norm = max_grad_norm  # one global clip over every group, as in the study

    def _corrected(self, group: dict, grads: list[Tensor], prev: list[Tensor]) -> list[Tensor]:
        """c = g + gamma * b1 / (1 - b1) * (g - g_prev); stores g as the next g_prev."""
        beta1 = group["betas"][0]
        c = torch._foreach_sub(grads, prev)
        torch._foreach_mul_(c, group["gamma"] * beta1 / (1.0 - beta1))
        torch._foreach_add_(c, grads)
        torch._foreach_copy_(prev, grads)
        return c

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = run_closure(closure)
        work = []
        for group, params in self.groups_with_grads():  # all groups first: one global clip
            t = group_tensors(self, params, ("exp_avg", "exp_avg_sq", "last_grad"))
            work.append((group, t, self._corrected(group, t.grads, t.buffers["last_grad"])))
        if self.max_grad_norm and work:
            clip_global_norm_([c for _, _, cs in work for c in cs], self.max_grad_norm)
        for group, t, c in work:
            beta1, beta2 = group["betas"]
            update = adam_direction(t.buffers["exp_avg"], t.buffers["exp_avg_sq"], c,
                                    beta1, beta2, group["eps"], t.step)
            decoupled_step(t.params, update, group["lr"], group["weight_decay"])
        return loss


def build(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module | None) -> Mars:
    groups = decay_groups(params, hp["learning_rate"], hp, betas=(hp["beta1"], hp["beta2"]),
                          eps=hp["epsilon"], gamma=hp["gamma"])
    return Mars(groups, lr=hp["learning_rate"], max_grad_norm=hp["max_grad_norm"] or 0.0)


register(OptimizerDef(
    name="mars",
    family="adam",
    build=build,
    defaults={**TRAIN_DEFAULTS, "learning_rate": 1.6e-2, "beta1": 0.9, "beta2": 0.95, "epsilon": 1e-25,
              "gamma": 0.025, "weight_decay": 0.1},
    roles={Role.HIDDEN: "MARS-AdamW, decayed", Role.HEAD: "MARS-AdamW, decayed",
           Role.EMBEDDING: "MARS-AdamW, no decay", Role.NORM: "MARS-AdamW, no decay",
           Role.BIAS: "MARS-AdamW, no decay"},
    paper="Yuan et al., MARS: Unleashing the Power of Variance Reduction for Training Large Models, "
          "arXiv:2411.10438",
    source="own torch implementation of the study's Levanter scale_by_mars; checked against "
           "AGI-Arena/MARS mars.py (mars-adamw, is_approx) and pinned against hand-written equations",
    notes="max_grad_norm clips the corrected gradient c by its global norm inside the optimizer; the "
          "study did not clip the raw gradient, so its entry sets clips_gradients and the "
          "train loop skips its own clip.",
    clips_gradients=True,
))
