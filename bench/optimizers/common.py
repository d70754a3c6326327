"""Pieces every optimizer module shares: train-loop defaults and the auxiliary AdamW groups."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from bench.errors import UserError
from bench.roles import MATRIX_ROLES, Role, TaggedParam

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
    "decay_roles": "hidden,head",  # not the loop's: every optimizer's, see decayed_roles
}

def decayed_roles(hp: Mapping[str, Any]) -> set[Role]:
    """The roles weight decay applies to: `decay_roles`, comma-separated role names. The default
    "hidden,head" is the study's Levanter mask (matrices that map activations: not embeddings, norm
    gains or biases); the authors' references mostly decay every parameter ("hidden,head,embedding,
    norm,bias"); "" decays nothing.

    "hidden" names every hidden matrix (MATRIX_ROLES: MoE experts and routers, MLA's latent
    projections too), since those roles split what Llama models call hidden: so the default keeps
    its meaning, decaying what the Levanter mask would on any architecture, and llama runs are
    unchanged. A name with a leading "-" is taken out after the others are added ("hidden,head,
    -router": every matrix but the routers)."""
    names = [n.strip() for n in hp["decay_roles"].split(",") if n.strip()]
    known = {r.value: r for r in Role}
    if any(n.removeprefix("-") not in known for n in names):
        raise UserError(f"bad value for hyperparameter 'decay_roles': role names among {', '.join(known)}"
                        " (a leading - takes one out)")
    roles = set().union(*(_family(known[n]) for n in names if not n.startswith("-")))
    return roles.difference(*(_family(known[n[1:]]) for n in names if n.startswith("-")))


def _family(role: Role) -> set[Role]:
    return set(MATRIX_ROLES) if role is Role.HIDDEN else {role}


def decay_of(hp: Mapping[str, Any], role: Role) -> float:
    """The weight decay of params of `role`: weight_decay if the role is decayed, else 0."""
    return hp["weight_decay"] if role in decayed_roles(hp) else 0.0


def matrix_decay(hp: Mapping[str, Any], params: list[TaggedParam]) -> float:
    """The one weight decay of a matrix optimizer's params (those of MATRIX_ROLES, which it decays
    alike): weight_decay if decay_roles decays them, 0 if it decays none, else the user's error."""
    decayed = {p.role in decayed_roles(hp) for p in params}
    if len(decayed) > 1:
        raise UserError("bad value for hyperparameter 'decay_roles': this optimizer decays all its "
                        f"matrices ({', '.join(sorted({p.role.value for p in params}))}) alike; name all or none")
    return hp["weight_decay"] if decayed == {True} else 0.0


def decay_groups(params: list[TaggedParam], lr: float, hp: Mapping[str, Any],
                 **group_opts: Any) -> list[dict[str, Any]]:
    """Split params into a decayed (weight_decay, roles in decay_roles) and a non-decayed param
    group, dropping empty ones."""
    roles = decayed_roles(hp)
    decayed = [p.param for p in params if p.role in roles]
    plain = [p.param for p in params if p.role not in roles]
    groups = [
        {"params": decayed, "lr": lr, "weight_decay": hp["weight_decay"], **group_opts},
        {"params": plain, "lr": lr, "weight_decay": 0.0, **group_opts},
    ]
    return [g for g in groups if g["params"]]


def adamw_groups(params: list[TaggedParam], hp: Mapping[str, Any], lr: float) -> list[dict[str, Any]]:
    """Param groups for an auxiliary AdamW (Muon-family optimizers hand non-matrix params to it)."""
    return decay_groups(params, lr, hp, betas=(hp["beta1"], hp["beta2"]),
                        eps=hp["epsilon"])


def fused_available(params: list[TaggedParam]) -> bool:
    """torch's fused AdamW kernels exist for CPU and CUDA float tensors."""
    return all(p.param.device.type in ("cpu", "cuda") and p.param.is_floating_point() for p in params)


def make_adamw(params: list[TaggedParam], hp: Mapping[str, Any], lr: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(adamw_groups(params, hp, lr), fused=fused_available(params))
