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

Two variants (the `variant` hyperparameter). `study` (default) is the above. `authors` is AGI-Arena/MARS
at commit 4831e28eba863a4e69d7e9474ff8e73bc1b410fe (MARS/optimizers/mars.py, update_fn and MARS.step
with its defaults mars_type "mars-adamw", is_approx True, amsgrad False, optimize_1d False), with
the raw-gradient clip of its training script (MARS/train_mars.py: clip_grad_norm_ at grad_clip, 1.0):
    g <- g * min(1, max_grad_norm / (||g||_global + 1e-6))   (the script's clip; off at 0)
  for a param of exactly 2 dims:
    c = g + gamma * (b1 / (1 - b1)) * (g - g_prev);  c <- c / ||c|| if ||c|| > 1   (per tensor)
    m, v: Adam's moments of c;  p <- p - lr (wd p + m / ((sqrt(v) / sqrt(1 - b2^t) + eps) (1 - b1^t)))
  for any other param (norm gains, biases): AdamW on g with the class's fixed 1-D settings,
    betas (0.9, 0.95), lr lr * lr_1d / learning_rate with lr_1d 3e-3 (a peak of 3e-3 on our
    schedule), and weight decay weight_decay_1d 0.1 whatever its group's (its 1-D branch reads
    weight_decay_1d only), epsilon ours;
  g_prev is the clipped raw gradient (its state["last_grad"] = grad).
Its epsilon placement is Adam's m_hat / (sqrt(v_hat) + eps) in other words: the same as `study` up to
rounding. Its other defaults (lr 3e-3, betas (0.95, 0.99), eps 1e-8, no decay) are ours to set, as
are which 2-D params decay (its nanoGPT groups decay Linear weights, not embeddings: decay_roles'
default "hidden,head").
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from bench.optimizers.adam_moments import adam_direction, decoupled_step, group_tensors
from bench.optimizers.base import Optimizer, run_closure
from bench.optimizers.common import TRAIN_DEFAULTS, decay_groups
from bench.optimizers.registry import OptimizerDef, register, variant_of
from bench.roles import Role, TaggedParam

# The authors' fixed settings (module doc): their per-tensor bound on c and the AdamW of 1-D params.
AUTHORS_C_MAX_NORM = 1.0
AUTHORS_LR_1D = 3e-3
AUTHORS_BETAS_1D = (0.9, 0.95)
AUTHORS_WEIGHT_DECAY_1D = 0.1
BUFFERS = ("exp_avg", "exp_avg_sq", "last_grad")


def clip_global_norm_(tensors: list[Tensor], max_norm: float) -> None:
    """Scale `tensors` in place so their joint L2 norm is at most max_norm (no host sync)."""
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))
    torch._foreach_mul_(tensors, torch.clamp(max_norm / (total + 1e-6), max=1.0))


def _authors_adam_step(params: list[Tensor], m: list[Tensor], v: list[Tensor], lr: float, wd: float,
                       betas: tuple[float, float], eps: float, step: int) -> None:
    """The authors' Adam step on updated moments: p -= lr (wd p + m / ((sqrt(v) / sqrt(bc2) + eps) bc1))."""
    denom = torch._foreach_sqrt(v)
    torch._foreach_mul_(denom, 1.0 / math.sqrt(1.0 - betas[1] ** step))
    torch._foreach_add_(denom, eps)
    torch._foreach_mul_(denom, 1.0 - betas[0] ** step)
    update = torch._foreach_div(m, denom)
    if wd:
        torch._foreach_add_(update, params, alpha=wd)
    torch._foreach_add_(params, update, alpha=-lr)


def pick(xs: list[Tensor], idx: list[int]) -> list[Tensor]:
    return [xs[i] for i in idx]


def _moments_(m: list[Tensor], v: list[Tensor], x: list[Tensor], betas: tuple[float, float]) -> None:
    """m <- b1 m + (1 - b1) x, v <- b2 v + (1 - b2) x^2, in the authors' mul/add form."""
    torch._foreach_mul_(m, betas[0])
    torch._foreach_add_(m, x, alpha=1.0 - betas[0])
    torch._foreach_mul_(v, betas[1])
    torch._foreach_addcmul_(v, x, x, value=1.0 - betas[1])


class Mars(Optimizer):
    later_options = {"variant": "study"}

    def __init__(self, params: list[dict[str, Any]], lr: float, betas: tuple[float, float] = (0.95, 0.99),
                 eps: float = 1e-8, gamma: float = 0.025, weight_decay: float = 0.0,
                 max_grad_norm: float = 1.0, variant: str = "study") -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "gamma": gamma,
                                  "weight_decay": weight_decay, "variant": variant})
        self.max_grad_norm = max_grad_norm  # one global clip over every group, as in the study
        # authors: 1-D params step at lr * lr_1d / (the constructor's lr), as their MARS.__init__
        self.lr_1d_factor = AUTHORS_LR_1D / lr if lr else 0.0

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
        if self.param_groups[0]["variant"] == "authors":
            self._authors_step()
            return loss
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

    def _authors_step(self) -> None:
        """The `authors` variant (module doc): their script's raw clip, then per param group MARS for
        2-D params and their fixed AdamW for the rest."""
        work = [(group, group_tensors(self, params, BUFFERS)) for group, params in self.groups_with_grads()]
        grads = [[g.clone() for g in t.grads] for _, t in work]  # clipped copies: p.grad stays the loop's
        if self.max_grad_norm and work:
            clip_global_norm_([g for gs in grads for g in gs], self.max_grad_norm)
        for (group, t), gs in zip(work, grads):
            matrix = [i for i, p in enumerate(t.params) if p.ndim == 2]
            other = [i for i, p in enumerate(t.params) if p.ndim != 2]
            if matrix:
                self._authors_matrices(pick(t.params, matrix), pick(gs, matrix),
                                       {k: pick(b, matrix) for k, b in t.buffers.items()}, group, t.step)
            if other:
                m, v = pick(t.buffers["exp_avg"], other), pick(t.buffers["exp_avg_sq"], other)
                _moments_(m, v, pick(gs, other), AUTHORS_BETAS_1D)
                _authors_adam_step(pick(t.params, other), m, v, group["lr"] * self.lr_1d_factor,
                                   AUTHORS_WEIGHT_DECAY_1D, AUTHORS_BETAS_1D, group["eps"], t.step)
            torch._foreach_copy_(t.buffers["last_grad"], gs)

    @staticmethod
    def _authors_matrices(params: list[Tensor], grads: list[Tensor], buffers: dict[str, list[Tensor]],
                          group: Mapping[str, Any], step: int) -> None:
        """Their update_fn for 2-D params: c, each c scaled to norm <= 1, Adam on c, decay in the step."""
        beta1 = group["betas"][0]
        c = torch._foreach_sub(grads, buffers["last_grad"])
        torch._foreach_mul_(c, group["gamma"] * (beta1 / (1.0 - beta1)))
        torch._foreach_add_(c, grads)
        torch._foreach_div_(c, [n.clamp(min=AUTHORS_C_MAX_NORM) for n in torch._foreach_norm(c)])
        _moments_(buffers["exp_avg"], buffers["exp_avg_sq"], c, group["betas"])
        _authors_adam_step(params, buffers["exp_avg"], buffers["exp_avg_sq"], group["lr"],
                           group["weight_decay"], group["betas"], group["eps"], step)


def build(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module | None) -> Mars:
    variant = variant_of(hp)
    groups = decay_groups(params, hp["learning_rate"], hp, betas=(hp["beta1"], hp["beta2"]),
                          eps=hp["epsilon"], gamma=hp["gamma"])
    return Mars(groups, lr=hp["learning_rate"], max_grad_norm=hp["max_grad_norm"] or 0.0, variant=variant)


register(OptimizerDef(
    name="mars",
    family="adam",
    build=build,
    defaults={**TRAIN_DEFAULTS, "learning_rate": 1.6e-2, "beta1": 0.9, "beta2": 0.95, "epsilon": 1e-25,
              "gamma": 0.025, "weight_decay": 0.1, "variant": "study"},
    added_later=frozenset({"variant"}),
    differences=("clipping: study clips c by its global norm at max_grad_norm; authors clips the raw gradient "
                 "so (their train script), then each tensor's c to norm <= 1",
                 "1-D params: study MARS; authors AdamW on the gradient at their fixed lr_1d 3e-3 (peak), "
                 "betas (0.9, 0.95), weight decay 0.1 (decay_roles not read)",
                 "which params take MARS: study all; authors exactly 2-D ones"),
    roles={Role.HIDDEN: "MARS-AdamW, decayed", Role.HEAD: "MARS-AdamW, decayed",
           Role.EMBEDDING: "MARS-AdamW, no decay",
           Role.NORM: "MARS-AdamW, no decay (authors: AdamW at lr_1d 3e-3, decay 0.1)",
           Role.BIAS: "MARS-AdamW, no decay (authors: AdamW at lr_1d 3e-3, decay 0.1)"},
    paper="Yuan et al., MARS: Unleashing the Power of Variance Reduction for Training Large Models, "
          "arXiv:2411.10438",
    source="own torch implementation of the study's Levanter scale_by_mars; checked against "
           "AGI-Arena/MARS mars.py (mars-adamw, is_approx) and pinned against hand-written equations; "
           "authors = AGI-Arena/MARS mars.py and train_mars.py (4831e28), checked step by step against a "
           "float64 transcription",
    notes="max_grad_norm clips the corrected gradient c by its global norm inside the optimizer; the "
          "study did not clip the raw gradient, so its entry sets clips_gradients and the "
          "train loop skips its own clip.",
    clips_gradients=True,
))
