"""AuON: Muon's momentum with the Newton-Schulz step replaced by a linear-time cosh-RMS normalisation.

Paper: Dipan Maity, "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates" (arXiv
2509.24320, v1 2025; later versions retitled "... to Orthogonal Momentum Updates").
Reference code: ryyzn9/AuON, read at two commits: Auon_Adam_train.py (c87b8625), the training script
whose `auon` optimizer is the update below, and auon/optimizer.py (bba2e822), whose HybridAuON has
the Newton-Schulz-then-cosh structure of the hybrid.

For each hidden matrix (Nesterov momentum in the EMA form, as the reference's lerp calls):
  M <- beta M + (1 - beta) g,   V = (1 - beta) g + beta M
  hybrid only: V <- NS_k(V)                        (k = ns_steps quintic Newton-Schulz steps, default 1)
  G = V / (||V||_F + 1e-7)
  U = G / (sqrt(mean(cosh(G)^2)) + 1e-8)           (the cosh "brake": large entries shrink the step)
  W <- W * (1 - lr * weight_decay) - lr * sqrt(max(1, rows/cols)) * U
Embeddings, the head and norm gains go to AdamW at lr * muon_to_adam_lr (hybrid.py), as in the
reference training script (which uses AdamW at 0.1 x AuON's learning rate).

U has Frobenius norm just under 1, where Muon's update has about sqrt(min(rows, cols)), so AuON's
learning rates are larger than Muon's (the reference uses 0.08-0.24).

Differences from the later package code (auon/optimizer.py): it scales G by gamma = 1.5 inside cosh,
divides the raw (un-normalised) momentum V rather than G by the cosh RMS, drops the
sqrt(max(1, rows/cols)) factor and defaults HybridAuON to 5 Newton-Schulz steps. We follow the
training script (normalised G, no gamma, shape factor), which is also how a third-party summary of
the paper states the update (junaidaliop.github.io/zij/math/auon; of the paper itself we could read
only the abstract), and the abstract's single Newton-Schulz step for the hybrid.

auon_hybrid's `ns_steps` (default 1, the abstract's; the package's HybridAuON defaults to 5) is a
hyperparameter so either can be run; 5 alone does not make the package's update, which also differs
in the three ways above, so there is no `authors` variant yet and the default stays 1.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from bench.errors import UserError
from bench.optimizers.common import matrix_decay
from bench.optimizers.hybrid import HybridOptimizer, build_hybrid
from bench.optimizers.muon import AUX_ROLES, MUON_DEFAULTS, Muon, orthogonalise
from bench.optimizers.registry import OptimizerDef, register
from bench.roles import Role, TaggedParam

NORM_EPS = 1e-7  # Frobenius normalisation (and the hybrid's Newton-Schulz normalisation)
RMS_EPS = 1e-8  # the cosh-RMS denominator


def cosh_rms_normalise(v: torch.Tensor) -> torch.Tensor:
    """AuON's map: normalise by the Frobenius norm, then divide by the RMS of cosh of the entries."""
    g = v / (v.norm() + NORM_EPS)
    return g / (torch.cosh(g).square().mean().sqrt() + RMS_EPS)


class AuON(Muon):
    """AuON for 2-D matrices; ns_steps=1 is Hybrid-AuON, 0 the linear-time AuON (see module doc)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.95,
                 weight_decay: float = 0.0, ns_steps: int = 0) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, eps=NORM_EPS,
                         ns_steps=ns_steps, ema=True)

    def _direction(self, params: list[torch.Tensor], updates: list[torch.Tensor],
                   group: dict[str, Any]) -> list[torch.Tensor]:
        if group["ns_steps"]:
            updates = orthogonalise(updates, group["ns_steps"], group["eps"])
        return [cosh_rms_normalise(u) for u in updates]


def _build(params: list[TaggedParam], hp: Mapping[str, Any], ns_steps: int) -> HybridOptimizer:
    return build_hybrid(params, hp, lambda hidden: AuON(
        [t.param for t in hidden], lr=hp["learning_rate"], momentum=hp["momentum"],
        weight_decay=matrix_decay(hp, hidden), ns_steps=ns_steps))


def build_auon(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module) -> HybridOptimizer:
    return _build(params, hp, ns_steps=0)


def build_hybrid_auon(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module) -> HybridOptimizer:
    if hp["ns_steps"] < 1:  # 0 would be plain auon, registered on its own
        raise UserError("bad value for hyperparameter 'ns_steps': must be a positive integer")
    return _build(params, hp, ns_steps=hp["ns_steps"])


# The Muon family's defaults (the study's Muon, so the auxiliary AdamW is the same across the
# family) with AuON's own step sizes, tuned on cpu-xs at 1x: lr 0.03-0.12 with the auxiliary AdamW at
# 1.2e-2 gave 3.27-3.29, lr 0.12 with it at 2.4e-2 gave 3.26 (lr 0.24 and 0.48 were worse).
AUON_DEFAULTS: dict[str, Any] = {**MUON_DEFAULTS, "learning_rate": 0.12, "muon_to_adam_lr": 0.2}

PAPER = ("Maity, AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates, 2025, "
         "arXiv:2509.24320")
SOURCE = ("ours, following ryyzn9/AuON (Auon_Adam_train.py; auon/optimizer.py HybridAuON) and the "
          "paper v1; checked against a float64 reference of the equations")

register(OptimizerDef(
    name="auon",
    family="matrix",
    build=build_auon,
    defaults=AUON_DEFAULTS,
    roles={Role.HIDDEN: "AuON: Nesterov EMA momentum, Frobenius-normalised, / RMS(cosh), "
                        "x sqrt(max(1, rows/cols)), decayed", **AUX_ROLES},
    paper=PAPER,
    source=SOURCE,
    schedule="linear",
))

register(OptimizerDef(
    name="auon_hybrid",
    family="matrix",
    build=build_hybrid_auon,
    defaults={**AUON_DEFAULTS, "ns_steps": 1},
    added_later=frozenset({"ns_steps"}),
    roles={Role.HIDDEN: "Hybrid-AuON: as auon with ns_steps Newton-Schulz steps before the cosh-RMS "
                        "normalisation", **AUX_ROLES},
    paper=PAPER,
    source=SOURCE,
    schedule="linear",
))
