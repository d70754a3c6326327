"""Scion: hidden matrices step along the spectral-norm LMO (Newton-Schulz), the rest along Signum.

Paper: Pethick, Xie, Antonakopoulos, Zhu, Silveti-Falls, Cevher, "Training Deep Learning Models with
Norm-Constrained LMOs", ICML 2025 (arXiv 2502.07529).

The update is the one the study ran (Wen et al., arXiv 2509.02046): Levanter's ScionConfig
(stanford-crfm/levanter src/levanter/optim/scion.py at 9af9cf88, which we read line by line), with
the study's hyperparameter names:
  hidden:  B <- momentum * B + (1 - momentum) * g
           W <- W * (1 - lr * weight_decay) - lr * sqrt(max(1, rows/cols)) * NS10(B)
  rest:    M <- beta1 * M + (1 - beta1) * g
           W <- W * (1 - lr_s * wd) - lr_s * sign(M),   lr_s = lr * scion_to_signum_lr
NS10 is ten quintic Newton-Schulz steps after dividing by ||B||_F + scion_epsilon (Levanter's
backend_steps default, which the study kept); wd is weight_decay on the head and 0 on embeddings
and norm gains (Levanter's default decay mask).
Momentum is the plain EMA, no Nesterov.

Differences from the authors' own code (LIONS-EPFL/scion, scion.py, read at a86f93e6): there each
param group takes its own norm's LMO times a radius `scale` (Spectral, x sqrt(d_out/d_in), for
hidden matrices; Sign / d_in for the head; ColNorm or RowNorm for embeddings; BiasRMS for vectors),
its constrained variant shrinks weights as W <- (1 - lr) W instead of decoupled weight decay, and
its `momentum` argument is one minus the usual factor. The study's Levanter version, reproduced
here, keeps Muon's sqrt(max(1, rows/cols)) scale and no radius, uses plain Signum at a separate
learning rate for every non-hidden parameter, and ordinary decoupled weight decay.

One difference from the study's runs: Levanter clipped (max_grad_norm) only the Signum parameters'
gradients, by their own global norm; here the train loop clips all gradients together.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from bench.optimizers.base import Optimizer
from bench.optimizers.common import TRAIN_DEFAULTS, decay_groups, matrix_decay
from bench.optimizers.hybrid import HybridOptimizer
from bench.optimizers.muon import Muon, orthogonalise
from bench.optimizers.newton_schulz import muon_scale
from bench.optimizers.registry import OptimizerDef, register
from bench.roles import MATRIX_ROLES, Role, TaggedParam, split_by_role

# Levanter's ScionConfig.backend_steps; the study never changed it (Muon uses 5).
NS_STEPS = 10


class ScionSpectral(Muon):
    """Scion's hidden-matrix part: EMA momentum, then the spectral LMO (Newton-Schulz, Muon's scale)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.95,
                 weight_decay: float = 0.0, eps: float = 1e-8, ns_steps: int = NS_STEPS) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, eps=eps,
                         ns_steps=ns_steps)

    def update_group(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        bufs = self._buffers(params)
        torch._foreach_lerp_(bufs, [p.grad for p in params], 1.0 - group["momentum"])
        directions = orthogonalise(bufs, group["ns_steps"], group["eps"])
        lr, wd = group["lr"], group["weight_decay"]
        if wd:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        for p, d in zip(params, directions):
            p.add_(d, alpha=-lr * muon_scale(p.shape))


class Signum(Optimizer):
    """Sign of an EMA momentum with decoupled weight decay (Bernstein et al. 2018, arXiv 1802.04434)."""

    def __init__(self, params: Iterable[Any], lr: float, beta: float = 0.9,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay))

    def update_group(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)
        bufs = [self.state[p]["momentum_buffer"] for p in params]
        torch._foreach_lerp_(bufs, [p.grad for p in params], 1.0 - group["beta"])
        lr, wd = group["lr"], group["weight_decay"]
        if wd:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        torch._foreach_add_(params, torch._foreach_sign(bufs), alpha=-lr)


def build(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module) -> HybridOptimizer:
    hidden, rest = split_by_role(params, set(MATRIX_ROLES))
    parts: list[torch.optim.Optimizer] = []
    if hidden:
        parts.append(ScionSpectral([t.param for t in hidden], lr=hp["learning_rate"],
                                   momentum=hp["momentum"], weight_decay=matrix_decay(hp, hidden),
                                   eps=hp["scion_epsilon"]))
    if rest:
        signum_lr = hp["learning_rate"] * hp["scion_to_signum_lr"]
        parts.append(Signum(decay_groups(rest, signum_lr, hp, beta=hp["beta1"]),
                            lr=signum_lr, beta=hp["beta1"]))
    return HybridOptimizer(*parts)


register(OptimizerDef(
    name="scion",
    family="matrix",
    build=build,
    # The study's best 130m / 1x config (Analysis/Results/scion/130m/1/result.json) for Scion's own
    # keys; learning rate and batch for the CPU ladder.
    defaults={**TRAIN_DEFAULTS, "learning_rate": 0.032, "warmup": 0.0, "lr_schedule": "linear",
              "decay": 0.8, "min_lr_ratio": 0.0, "max_grad_norm": 1.0,
              "momentum": 0.95, "beta1": 0.95, "scion_epsilon": 1e-15, "scion_to_signum_lr": 0.2,
              "weight_decay": 0.1},
    roles={Role.HIDDEN: "spectral LMO: EMA momentum, Newton-Schulz 10, x sqrt(max(1, rows/cols)), "
                        "decayed",
           Role.HEAD: "Signum at lr * scion_to_signum_lr, decayed",
           Role.EMBEDDING: "Signum at lr * scion_to_signum_lr, no decay",
           Role.NORM: "Signum at lr * scion_to_signum_lr, no decay",
           Role.BIAS: "Signum at lr * scion_to_signum_lr, no decay"},
    paper="Pethick et al., Training Deep Learning Models with Norm-Constrained LMOs, ICML 2025, "
          "arXiv:2502.07529",
    source="ours, following Levanter's ScionConfig (the study's); checked against a float64 "
           "reference of its equations; differences from LIONS-EPFL/scion in the module docstring",
    schedule="linear",
    notes="Levanter clipped only the Signum group's gradients; here the train loop clips all",
))
