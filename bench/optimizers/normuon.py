"""NorMuon: Muon plus a per-neuron (row) second-moment normalisation after orthogonalisation.

Paper: Li, Liu, Liang, Chen & Zhao, "NorMuon: Making Muon more efficient and scalable",
arXiv 2510.05491. Implementation: ours, following the authors' reference code line by line
(zichongli5/NorMuon, normuon.py, normuon_update / SingleDeviceNorMuonWithAuxAdam):
  M <- lerp(M, g, 1 - momentum);  U = lerp(g, M, momentum)          (Nesterov, EMA form)
  O = NewtonSchulz5(U)                                              (eps 1e-7)
  v <- lerp(v, mean_over_columns(O * O), 1 - normuon_beta2)         (one scalar per row / neuron)
  O' = O / (sqrt(v) + 1e-10);  O' *= ||O||_F / (||O'||_F + 1e-10)   (same Frobenius norm as O)
  W <- W * (1 - lr * weight_decay) - lr * sqrt(max(1, rows/cols)) * O'
Rows are output neurons (nn.Linear weights are [out, in]). Differences from the reference: Newton-
Schulz runs in bf16 on CUDA (as there) and on CPU from 64-wide matrices up (fp32 below: faster
there), batched over same-shape matrices. The
hyperparameter `normuon_beta2` is the reference's `beta2` (renamed: `beta2` is the auxiliary AdamW's
in the study's naming). The authors' README says Muon's settings carry over and only lr and weight
decay usually need tuning, so the defaults are Muon's (muon.MUON_DEFAULTS).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from bench.optimizers.common import matrix_decay
from bench.optimizers.hybrid import HybridOptimizer, build_hybrid
from bench.optimizers.muon import AUX_ROLES, MUON_DEFAULTS, Muon
from bench.optimizers.registry import OptimizerDef, register
from bench.roles import Role, TaggedParam

NORM_EPS = 1e-10  # the reference's guard in both divisions


def normalise_rows(o: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Divide each row of `o` by sqrt(v_row), then restore o's Frobenius norm."""
    scaled = o / (v.sqrt() + NORM_EPS)
    return scaled * (o.norm() / (scaled.norm() + NORM_EPS))


class NorMuon(Muon):
    """Muon (EMA Nesterov form) whose orthogonalised update is normalised per row (module doc)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.95,
                 beta2: float = 0.95, weight_decay: float = 0.0, ns_steps: int = 5) -> None:
        super().__init__(params, lr, momentum=momentum, weight_decay=weight_decay, eps=1e-7,
                         ns_steps=ns_steps, ema=True)
        self.defaults["beta2"] = beta2
        for group in self.param_groups:
            group.setdefault("beta2", beta2)

    def _direction(self, params: list[torch.Tensor], updates: list[torch.Tensor],
                   group: dict[str, Any]) -> list[torch.Tensor]:
        ortho = super()._direction(params, updates, group)
        for p in params:
            if "second_momentum_buffer" not in self.state[p]:
                self.state[p]["second_momentum_buffer"] = torch.zeros_like(p[:, :1])
        second = [self.state[p]["second_momentum_buffer"] for p in params]
        row_mean_sq = [o.square().mean(dim=-1, keepdim=True) for o in ortho]
        torch._foreach_lerp_(second, row_mean_sq, 1.0 - group["beta2"])
        return [normalise_rows(o, v) for o, v in zip(ortho, second)]


def build(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module) -> HybridOptimizer:
    return build_hybrid(params, hp, lambda hidden: NorMuon(
        [t.param for t in hidden], lr=hp["learning_rate"], momentum=hp["momentum"],
        beta2=hp["normuon_beta2"], weight_decay=matrix_decay(hp, hidden)))


register(OptimizerDef(
    name="normuon",
    family="matrix",
    build=build,
    defaults={**MUON_DEFAULTS, "normuon_beta2": 0.95},
    roles={Role.HIDDEN: "NorMuon: Muon + per-row second-moment normalisation, decayed", **AUX_ROLES},
    paper="Li, Liu, Liang, Chen & Zhao, NorMuon: Making Muon more efficient and scalable, "
          "arXiv:2510.05491",
    source="ours, following zichongli5/NorMuon normuon.py (normuon_update); checked against a "
           "float64 transcription of it",
    schedule="linear",
))
