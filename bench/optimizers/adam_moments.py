"""Shared pieces of the elementwise Adam/sign family (Lion, Cautious, MARS, Adam-mini, Sophia).

The study ran these optimizers as optax chains in Levanter: a `scale_by_*` transform, then
`add_decayed_weights(wd)`, then `scale(-lr)`. The pieces here are that chain in torch:

- `group_tensors`: a param group's params that have grads (base.Optimizer.update_group's), their
  grads, named state buffers (zeros on first use) and the group's step count after this step (a Python int in each param's
  state, so torch's state_dict carries it and step() never syncs with the device);
- `adam_direction`: optax's `scale_by_adam` direction m_hat / (sqrt(v_hat) + eps), updating the
  moments in place; Adam-mini passes block-averaged squared gradients for v;
- `decoupled_step`: p <- p * (1 - lr * wd) - lr * u (add_decayed_weights, then scale(-lr)).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class GroupTensors(NamedTuple):
    params: list[Tensor]
    grads: list[Tensor]
    buffers: dict[str, list[Tensor]]
    step: int


def group_tensors(opt: torch.optim.Optimizer, params: list[Tensor], names: tuple[str, ...]) -> GroupTensors:
    """`params` (a group's, with grads), their grads and state buffers `names`; advances the step."""
    buffers: dict[str, list[Tensor]] = {name: [] for name in names}
    step = 0
    for p in params:
        state = opt.state[p]
        for name in names:
            if name not in state:
                state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
            buffers[name].append(state[name])
        state["step"] = step = state.get("step", 0) + 1
    return GroupTensors(params, [p.grad for p in params], buffers, step)


def adam_direction(exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor], grads: list[Tensor],
                   beta1: float, beta2: float, eps: float, step: int,
                   sq_grads: list[Tensor] | None = None) -> list[Tensor]:
    """Update m and v in place and return m_hat / (sqrt(v_hat) + eps) (bias-corrected, as optax).

    `sq_grads` replaces grad**2 in v's update (Adam-mini's block means); v then broadcasts.
    """
    if sq_grads is None:
        sq_grads = torch._foreach_mul(grads, grads)
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_add_(exp_avg_sqs, sq_grads, alpha=1.0 - beta2)
    denom = torch._foreach_div(exp_avg_sqs, 1.0 - beta2**step)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)
    direction = torch._foreach_div(exp_avgs, 1.0 - beta1**step)
    return torch._foreach_div(direction, denom)


def decoupled_step(params: list[Tensor], updates: list[Tensor], lr: float, weight_decay: float) -> None:
    """p <- p * (1 - lr * wd) - lr * u: decoupled weight decay at the scheduled lr, as in AdamW."""
    if weight_decay:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_add_(params, updates, alpha=-lr)

