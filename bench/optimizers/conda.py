"""Conda: Column-Normalized Adam, Adam run in the singular basis of the momentum.

Paper: Wang et al., "Conda: Column-Normalized Adam for Training Large Language Models Faster",
arXiv 2509.24218. Reference checked: the authors' jie040109/Conda (conda_torch/conda.py and its
CondaProjector, proj_type "std", the one their scripts use). For a hidden matrix W (rows x cols):
  m <- beta1 m + (1 - beta1) g
  every update_proj_gap steps (from the first): P = the right singular vectors of m if rows >= cols,
    else its left singular vectors (torch.linalg.svd; a full square basis of the smaller side)
  rotate X -> X P (tall) or P^T X (wide);  v <- beta2 v + (1 - beta2) rot(g)^2
  W <- W - lr sqrt(1 - beta2^t) / (1 - beta1^t) conda_scale rot^-1(rot(m) / (sqrt(v) + eps))
  W <- W (1 - lr wd)
v stays in the old coordinates when P is refreshed, as in the reference. In the rotated basis the
momentum's columns (tall; rows if wide) are orthogonal with norms equal to its singular values, so
the elementwise second moment normalises each singular direction separately.

Parameters: as in the authors' LLaMA script, only the hidden matrices (attention and MLP linears)
are projected; embeddings, the head and norm gains take the same optimizer without the projection
(Adam with the update after weight decay, as the reference, and no conda_scale). Weight decay goes
on hidden matrices and the head (the project's rule; the authors' scripts use 0).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor

from bench.optimizers.base import Optimizer
from bench.optimizers.common import TRAIN_DEFAULTS, decayed_roles
from bench.optimizers.registry import OptimizerDef, register
from bench.roles import MATRIX_ROLES, Role, TaggedParam


def singular_basis(m: Tensor) -> Tensor:
    """The square orthogonal basis of the smaller side of each matrix m[n]: V (as columns) if tall,
    U if wide."""
    u, _, vh = torch.linalg.svd(m, full_matrices=False)
    return vh.mT if m.shape[-2] >= m.shape[-1] else u


def rotate(x: Tensor, basis: Tensor) -> Tensor:
    """Into the basis: X P (tall) or P^T X (wide)."""
    return x @ basis if x.shape[-2] >= x.shape[-1] else basis.mT @ x


def rotate_back(x: Tensor, basis: Tensor) -> Tensor:
    """Out of the basis: X P^T (tall) or P X (wide)."""
    return x @ basis.mT if x.shape[-2] >= x.shape[-1] else basis @ x


class Conda(Optimizer):
    """Conda (see module doc); groups with project=False are plain Adam."""

    def __init__(self, params: Iterable[Any], lr: float, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-8, weight_decay: float = 0.0, update_proj_gap: int = 2000,
                 conda_scale: float = 0.25, project: bool = True) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        update_proj_gap=update_proj_gap, conda_scale=conda_scale, project=project)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["project"] and any(p.ndim != 2 for p in group["params"]):
                raise ValueError("Conda projects 2-D matrices only; give other params a project=False group")

    def update_group(self, params: list[Tensor], group: Mapping[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        states = [self.state[p] for p in params]
        for p, state in zip(params, states):
            if "step" not in state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
        grads = [p.grad for p in params]
        exp_avgs = [s["exp_avg"] for s in states]
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        if group["project"]:
            directions = self._projected(params, states, group)
        else:
            directions = self._adam(grads, exp_avgs, [s["exp_avg_sq"] for s in states], group)
        for state in states:
            state["step"] += 1
        lr, wd = group["lr"], group["weight_decay"]
        scales = [-lr * math.sqrt(1.0 - beta2 ** s["step"]) / (1.0 - beta1 ** s["step"]) for s in states]
        torch._foreach_mul_(directions, scales)
        torch._foreach_add_(params, directions)
        if wd:
            torch._foreach_mul_(params, 1.0 - lr * wd)  # after the update, as the reference

    @staticmethod
    def _adam(grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
              group: Mapping[str, Any]) -> list[Tensor]:
        beta2 = group["betas"][1]
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denom, group["eps"])
        return torch._foreach_div(exp_avgs, denom)

    def _projected(self, params: list[Tensor], states: list[dict], group: Mapping[str, Any]) -> list[Tensor]:
        """Adam in each matrix's singular basis, one batched call per shape."""
        by_shape: dict[tuple, list[int]] = defaultdict(list)
        for i, p in enumerate(params):
            by_shape[(tuple(p.shape), states[i]["step"])].append(i)
        out: dict[int, Tensor] = {}
        beta2 = group["betas"][1]
        for (_, step), idx in by_shape.items():
            m = torch.stack([states[i]["exp_avg"] for i in idx])
            if step % group["update_proj_gap"] == 0:
                for i, basis in zip(idx, singular_basis(m).unbind(0)):
                    states[i]["basis"] = basis.clone()
            basis = torch.stack([states[i]["basis"] for i in idx])
            g = rotate(torch.stack([params[i].grad for i in idx]), basis)
            v = torch.stack([states[i]["exp_avg_sq"] for i in idx]).mul_(beta2)
            v.addcmul_(g, g, value=1.0 - beta2)
            torch._foreach_copy_([states[i]["exp_avg_sq"] for i in idx], list(v.unbind(0)))
            update = rotate_back(rotate(m, basis) / (v.sqrt() + group["eps"]), basis)
            out.update(zip(idx, (update * group["conda_scale"]).unbind(0)))
        return [out[i] for i in range(len(params))]


def build(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module) -> Conda:
    """Hidden matrices projected; the rest plain Adam; decay on the roles in decay_roles."""
    groups = []
    decayed = decayed_roles(hp)
    for project in (True, False):
        for want in (True, False):
            ps = [t.param for t in params
                  if (t.role in MATRIX_ROLES) == project and (t.role in decayed) == want]
            if ps:
                groups.append({"params": ps, "project": project,
                               "weight_decay": hp["weight_decay"] if want else 0.0})
    return Conda(groups, lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]), eps=hp["epsilon"],
                 update_proj_gap=hp["update_proj_gap"], conda_scale=hp["conda_scale"])


register(OptimizerDef(
    name="conda",
    family="matrix",
    build=build,
    # The authors' LLaMA settings (betas, epsilon, conda_scale, weight decay 0, 10% warmup); batch
    # and update_proj_gap for the CPU ladder (see the notes), and its learning rate: 0.04 was best
    # of 0.005 / 0.01 / 0.02 / 0.04 on cpu-xs at 1x (eval loss 3.423 / 3.318 / 3.225 / 3.203).
    defaults={**TRAIN_DEFAULTS, "learning_rate": 0.04, "warmup": 0.1,
              "beta1": 0.9, "beta2": 0.99, "epsilon": 1e-8, "weight_decay": 0.0,
              "update_proj_gap": 100, "conda_scale": 0.25},
    roles={Role.HIDDEN: "Conda: Adam in the momentum's singular basis, x conda_scale, decayed",
           Role.HEAD: "Adam (same optimizer, no projection), decayed",
           Role.EMBEDDING: "Adam (no projection), no decay", Role.NORM: "Adam (no projection), no decay",
           Role.BIAS: "Adam (no projection), no decay"},
    paper="Wang et al., Conda: Column-Normalized Adam for Training Large Language Models Faster, "
          "arXiv:2509.24218",
    source="ours, following the authors' jie040109/Conda (conda_torch, proj_type 'std'); checked "
           "against a float64 reference of its equations",
    notes="update_proj_gap default 100 (the authors' 2000 is for 10k-100k-step runs; the CPU "
          "ladder's runs have 300-1300 steps)",
))
