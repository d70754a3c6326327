"""COSMOS: SOAP-style Adam on the leading eigensubspace of G^T G, Muon on the rest.

Paper: Liu et al., "COSMOS: A Hybrid Adaptive Optimizer for Memory-Efficient Training of LLMs",
arXiv 2502.17410. Reference checked: the authors' lliu606/COSMOS, COSMOS_optim.py (the class
`COSMOS`, their current version). For a hidden matrix W (rows x cols) with gradient g and a
rank-r basis P (cols x r) of the columns' second moment:
  m <- beta1 m + g                                         (sum form, as the reference)
  step 1: P = top-r eigenvectors of g^T g,  S = (1 - beta2) P^T g^T g P
  later:  P' = QR(beta2 P S + (1 - beta2) g^T g P)
          S <- beta2 (P^T P')^T S (P^T P') + (1 - beta2) (g P')^T (g P')
  v <- beta2 v + (1 - beta2) (g P')^2                        (rows x r)
  h = (g + beta1 m) / (1 + beta1 (1 - beta1^t) / (1 - beta1))  (normalised Nesterov momentum)
  A = [(h P') / (sqrt(v / (1 - beta2^t)) + eps)] P'^T          (Adam in the subspace: SOAP's part)
  B = NS5(h - h P' P'^T), scaled to unit Frobenius norm         (Muon on the rest; newton_schulz.py)
  U = A + gamma sqrt(rows cols) B;   W <- W (1 - lr wd) - lr lr_ratio sqrt(rows cols) U / ||U||_F
so every hidden matrix moves by RMS lr * lr_ratio per step. The paper writes m as an EMA with
bias correction and no Nesterov term; we follow the code. Newton-Schulz runs in bf16 on CUDA (as
the reference) and for CPU matrices 64 wide or more (newton_schulz.ns_dtype); r is capped at cols (the reference fails
for cols < r).

Parameters: COSMOS for the hidden matrices; embeddings, the head and norm gains take AdamW at
learning_rate (the reference's own Adam for them is AdamW with beta1 0.9). The reference routes by
shape (2-D with at most 10000 rows); we route by role.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor

from bench.optimizers.base import Optimizer
from bench.optimizers.common import TRAIN_DEFAULTS, make_adamw, matrix_decay
from bench.optimizers.hybrid import HybridOptimizer
from bench.optimizers.newton_schulz import newton_schulz, ns_dtype
from bench.optimizers.registry import OptimizerDef, register
from bench.optimizers.soap import eigenbasis
from bench.roles import MATRIX_ROLES, Role, TaggedParam, split_by_role


def _qr(x: Tensor) -> Tensor:
    """QR's Q, without forming R."""
    return torch.linalg.householder_product(*torch.geqrf(x))


class Cosmos(Optimizer):
    """COSMOS for 2-D matrices (see module doc)."""

    def __init__(self, params: Iterable[Any], lr: float, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, weight_decay: float = 0.0, rank: int = 64, gamma: float = 0.2,
                 lr_ratio: float = 0.1) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, rank=rank,
                        gamma=gamma, lr_ratio=lr_ratio)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if any(p.ndim != 2 for p in group["params"]):
                raise ValueError("COSMOS updates 2-D matrices only; give other params to AdamW")

    def update_group(self, params: list[Tensor], group: dict[str, Any]) -> None:
        by_shape: dict[tuple, list[Tensor]] = defaultdict(list)
        for p in params:
            by_shape[(tuple(p.shape), self.state[p].get("step", 0))].append(p)
        for same in by_shape.values():
            self._update(same, group)

    def _update(self, params: list[Tensor], group: Mapping[str, Any]) -> None:
        """One batched step for matrices of one shape (and one step count)."""
        beta1, beta2 = group["betas"]
        rows, cols = params[0].shape
        rank = min(group["rank"], cols)
        states = [self.state[p] for p in params]
        first = "step" not in states[0]
        for p, state in zip(params, states):
            if first:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = p.new_zeros(rows, rank)
            state["step"] += 1
        t = states[0]["step"]
        g = torch.stack([p.grad for p in params])
        m = torch.stack([s["exp_avg"] for s in states]).mul_(beta1).add_(g)
        basis, gram = self._subspace(g, states, beta2, rank, first)
        gp = g @ basis
        v = torch.stack([s["exp_avg_sq"] for s in states]).mul_(beta2).addcmul_(gp, gp, value=1.0 - beta2)
        for key, stacked in (("exp_avg", m), ("exp_avg_sq", v), ("basis", basis), ("gram", gram)):
            torch._foreach_copy_([s[key] for s in states], list(stacked.unbind(0)))

        h = (g + beta1 * m) / (1.0 + beta1 * (1.0 - beta1**t) / (1.0 - beta1))
        hp = h @ basis
        adam = (hp / ((v / (1.0 - beta2**t)).sqrt() + group["eps"])) @ basis.mT
        rest = h - hp @ basis.mT
        muon = newton_schulz(rest, steps=5, dtype=ns_dtype(rest))
        muon = muon / (muon.norm(dim=(-2, -1), keepdim=True) + group["eps"])
        size = math.sqrt(rows * cols)
        update = adam + group["gamma"] * size * muon
        update = update / (update.norm(dim=(-2, -1), keepdim=True) + group["eps"])

        lr, wd = group["lr"], group["weight_decay"]
        if wd:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        torch._foreach_add_(params, list(update.unbind(0)), alpha=-lr * group["lr_ratio"] * size)

    @staticmethod
    def _subspace(g: Tensor, states: list[dict], beta2: float, rank: int,
                  first: bool) -> tuple[Tensor, Tensor]:
        """The rank-r basis P of the EMA of g^T g by one power-iteration step with QR, and S = P^T (.) P."""
        if first:
            basis = eigenbasis(g.mT @ g)[..., :rank].contiguous()
            gp = g @ basis
            for s, b in zip(states, basis.unbind(0)):
                s["basis"], s["gram"] = b.clone(), torch.zeros(rank, rank, dtype=b.dtype, device=b.device)
            return basis, (1.0 - beta2) * gp.mT @ gp
        old = torch.stack([s["basis"] for s in states])
        gram = torch.stack([s["gram"] for s in states])
        basis = _qr(beta2 * old @ gram + (1.0 - beta2) * g.mT @ (g @ old))
        turn = old.mT @ basis
        gp = g @ basis
        return basis, beta2 * turn.mT @ gram @ turn + (1.0 - beta2) * gp.mT @ gp


def build(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module) -> HybridOptimizer:
    hidden, rest = split_by_role(params, set(MATRIX_ROLES))
    parts = []
    if hidden:
        parts.append(Cosmos([t.param for t in hidden], lr=hp["learning_rate"],
                            betas=(hp["beta1"], hp["beta2"]), eps=hp["epsilon"],
                            weight_decay=matrix_decay(hp, hidden), rank=hp["rank"], gamma=hp["gamma"],
                            lr_ratio=hp["lr_ratio"]))
    if rest:
        parts.append(make_adamw(rest, hp, hp["learning_rate"]))
    return HybridOptimizer(*parts)


register(OptimizerDef(
    name="cosmos",
    family="matrix",
    build=build,
    # The authors' defaults (betas (0.9, 0.95) as their README's, eps, gamma 0.2, no weight decay);
    # rank scaled to the CPU ladder's 32-128 wide matrices; warmup and batch for the CPU ladder, and
    # learning rate and lr_ratio from cpu-xs at 1x: eval loss 3.315 at (0.008, 0.1), 3.118 at
    # (0.008, 0.5), 3.141 at (0.008, 1.0), 3.095 at (0.016, 0.5).
    defaults={**TRAIN_DEFAULTS, "learning_rate": 0.016, "warmup": 0.05,
              "beta1": 0.9, "beta2": 0.95, "epsilon": 1e-8, "weight_decay": 0.0,
              "rank": 16, "gamma": 0.2, "lr_ratio": 0.5},
    roles={Role.HIDDEN: "COSMOS: Adam on a rank-r eigensubspace + Muon on the rest, RMS lr*lr_ratio",
           Role.HEAD: "AdamW at learning_rate, decayed", Role.EMBEDDING: "AdamW, no decay",
           Role.NORM: "AdamW, no decay", Role.BIAS: "AdamW, no decay"},
    paper="Liu et al., COSMOS: A Hybrid Adaptive Optimizer for Memory-Efficient Training of LLMs, "
          "arXiv:2502.17410",
    source="ours, following the authors' lliu606/COSMOS COSMOS_optim.py; checked against a float64 "
           "reference of its equations",
    notes="hidden matrices move by RMS learning_rate * lr_ratio; the rest is AdamW at learning_rate",
))
