"""Parameter roles: what each model weight is, so optimizers never guess from shapes."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch


class Role(str, Enum):
    EMBEDDING = "embedding"  # token embedding table
    HEAD = "head"  # output projection to the vocabulary
    HIDDEN = "hidden"  # 2-D hidden matrices: attention q/k/v/o and MLP (and MoE's shared experts)
    EXPERT = "expert"  # a routed MoE expert's matrices (each sees only its tokens: sparse gradients)
    ROUTER = "router"  # an MoE router (hidden -> experts logits)
    LATENT = "latent"  # MLA's low-rank down projections to its latents and up projections from them
    NORM = "norm"  # RMSNorm gains
    BIAS = "bias"  # biases (the Llama models here have none; kept for user models)


# The 2-D matrices that map activations inside the blocks: what Muon-style optimizers take, and what
# an optimizer that treats HIDDEN specially treats alike. Llama models have only HIDDEN.
MATRIX_ROLES = frozenset({Role.HIDDEN, Role.EXPERT, Role.ROUTER, Role.LATENT})


@dataclass(frozen=True)
class TaggedParam:
    """A model parameter with its qualified name and role."""

    name: str
    param: torch.nn.Parameter
    role: Role


def split_by_role(params: list[TaggedParam], roles: set[Role]) -> tuple[list[TaggedParam], list[TaggedParam]]:
    """Partition params into (those whose role is in `roles`, the rest), order kept."""
    inside = [p for p in params if p.role in roles]
    outside = [p for p in params if p.role not in roles]
    return inside, outside
