"""Nesterov momentum in the two forms the Muon family uses (shared by muon, normuon, drop_muon, ...).

Both give the same direction up to a positive factor (1 - beta), which Newton-Schulz removes except
through its normalisation epsilon, so they differ only where that epsilon matters:

- `nesterov_sum`: B <- beta B + g, update g + beta B. KellerJordan's 2024 Muon and Levanter's
  scale_with_muon (the study's Muon, marin-community/levanter src/levanter/optim/muon.py).
- `nesterov_ema`: M <- beta M + (1 - beta) g, update (1 - beta) g + beta M. KellerJordan/Muon's
  current muon.py, torch.optim.Muon and NorMuon's reference code (zichongli5/NorMuon).

Both update the buffers in place with torch._foreach ops and return new update tensors.
"""
from __future__ import annotations

import torch


def nesterov_sum(grads: list[torch.Tensor], bufs: list[torch.Tensor], beta: float) -> list[torch.Tensor]:
    torch._foreach_mul_(bufs, beta)
    torch._foreach_add_(bufs, grads)
    return torch._foreach_add(grads, bufs, alpha=beta)


def nesterov_ema(grads: list[torch.Tensor], bufs: list[torch.Tensor], beta: float) -> list[torch.Tensor]:
    torch._foreach_lerp_(bufs, grads, 1.0 - beta)
    return torch._foreach_lerp(grads, bufs, beta)
