"""Pieces every optimizer module shares: train-loop defaults and the auxiliary AdamW groups."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from bench.roles import Role, TaggedParam

# Defaults of the hyperparameters the train loop consumes (see registry.TRAIN_KEYS). Warmup and decay
# follow the study's (Levanter's) convention: a value < 1 is a fraction of the run's steps, >= 1 a
# step count. decay is the fraction of the run spent decaying (WSD); None decays over the whole run.
TRAIN_DEFAULTS: dict[str, Any] = {
    "learning_rate": 8e-3,
    "warmup": 0.05,
    "lr_schedule": "cosine",
    "decay": None,
    "min_lr_ratio": 0.0,
    "max_grad_norm": 1.0,
    "train_batch_size": 32,
}

# Weight decay goes on matrices that map activations (hidden matrices and the output head), not on
# embeddings, norm gains or biases, as in the study's Levanter default mask.
DECAYED_ROLES = {Role.HIDDEN, Role.HEAD}


def decay_groups(params: list[TaggedParam], lr: float, weight_decay: float,
                 **group_opts: Any) -> list[dict[str, Any]]:
    """Split params into a decayed and a non-decayed param group, dropping empty ones."""
    decayed = [p.param for p in params if p.role in DECAYED_ROLES]
    plain = [p.param for p in params if p.role not in DECAYED_ROLES]
    groups = [
        {"params": decayed, "lr": lr, "weight_decay": weight_decay, **group_opts},
        {"params": plain, "lr": lr, "weight_decay": 0.0, **group_opts},
    ]
    return [g for g in groups if g["params"]]


def adamw_groups(params: list[TaggedParam], hp: Mapping[str, Any], lr: float) -> list[dict[str, Any]]:
    """Param groups for an auxiliary AdamW (Muon-family optimizers hand non-matrix params to it)."""
    return decay_groups(params, lr, hp["weight_decay"], betas=(hp["beta1"], hp["beta2"]),
                        eps=hp["epsilon"])


def fused_available(params: list[TaggedParam]) -> bool:
    """torch's fused AdamW kernels exist for CPU and CUDA float tensors."""
    return all(p.param.device.type in ("cpu", "cuda") and p.param.is_floating_point() for p in params)


def make_adamw(params: list[TaggedParam], hp: Mapping[str, Any], lr: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(adamw_groups(params, hp, lr), fused=fused_available(params))
