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

Differences from the authors' own code (LIONS-EPFL/scion, scion.py, read at a86f93e6; the `authors`
variant below): there each param group takes its own norm's LMO times a radius `scale` (Spectral,
x sqrt(d_out/d_in), for hidden matrices; Sign / d_in for the head; ColNorm or RowNorm for
embeddings; BiasRMS for vectors), its constrained variant shrinks weights as W <- (1 - lr) W
instead of decoupled weight decay, and its `momentum` argument is one minus the usual factor. The
study's Levanter version, reproduced here, keeps Muon's sqrt(max(1, rows/cols)) scale and no
radius, uses plain Signum at a separate learning rate for every non-hidden parameter, and ordinary
decoupled weight decay.

One difference from the study's runs: Levanter clipped (max_grad_norm) only the Signum parameters'
gradients, by their own global norm; here the train loop clips all gradients together.

Two variants (the `variant` hyperparameter). `study` (default) is the update above. `authors` is the
Scion class of LIONS-EPFL/scion scion.py (github.com/LIONS-EPFL/scion at commit
a86f93e67d052068cc83f769ad0b833c867280fc; to f58a393e, the newest we read, only comments changed) in
its constrained default (unconstrained=False). Every param group takes
  B <- (1 - mu) B + mu g,   mu = 1 - (our momentum factor)       (their `momentum` is mu)
  W <- (1 - lr) W - lr * radius * LMO(B)
with its own norm's LMO. Our roles map to their groups as in their untied-embedding nanoGPT
(examples/shallow-nanogpt/model.py, configure_optimizers, scion_mode "Mixed" with
scion_first_layer "ColNorm", same commit), norm gains and biases as in their DeiT and airbench
examples (examples/deit/main_scion.py: the "Auto" group; examples/airbench/airbench_scion.py: norm
params to BiasRMS; both at the hidden radius):
  hidden (all MATRIX_ROLES)  Spectral: NS5(B) * sqrt(d_out / d_in)              x scion_radius
  head (vocab x d)           Sign: sign(B) / d_in                               x scion_head_radius
  embedding (vocab x d)      ColNorm transposed, not normalized: each token's   x scion_embedding_radius
                             row over its RMS across d (+ 1e-8)
  norm gains, biases         BiasRMS: B / (RMS(B) + 1e-8)                       x scion_radius
NS5 is their zeropower_via_newtonschulz5: five quintic steps after dividing by ||B||_F + 1e-7, in
bf16 (scion_epsilon is not used). The radii default to that nanoGPT's (embedding 1, hidden 3, head
10). The hidden groups' momentum is `momentum`, the others' `beta1` (their class takes one per group;
their examples set one for all: equal at our defaults). One learning rate for all groups
(scion_to_signum_lr is not used: the radii set the groups' step sizes); the constrained shrink
replaces weight decay (weight_decay and decay_roles are not used). Their `Scion.init()`, which
re-initialises each weight for its norm, is model initialisation and is not done; their class's
other defaults (lr 1e-3, momentum 1, i.e. none, radius 1) give way to ours. Their class does not
clip gradients (that nanoGPT's script clips at grad_clip, 0 in its runs); the train loop's
max_grad_norm still does.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor

from bench.optimizers.base import Optimizer
from bench.optimizers.common import TRAIN_DEFAULTS, decay_groups, matrix_decay
from bench.optimizers.hybrid import HybridOptimizer
from bench.optimizers.muon import Muon, orthogonalise
from bench.optimizers.newton_schulz import muon_scale
from bench.optimizers.registry import OptimizerDef, register, variant_of
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


# The authors' fixed settings (module doc): zeropower_via_newtonschulz5's steps and epsilon (Spectral's
# default steps), and the epsilon ColNorm and BiasRMS add to the RMS they divide by.
AUTHORS_NS_STEPS = 5
AUTHORS_NS_EPS = 1e-7
AUTHORS_RMS_EPS = 1e-8


def spectral_lmo(bufs: list[Tensor], dtype: torch.dtype) -> list[Tensor]:
    """Spectral (normalized): NS5(B) * sqrt(d_out / d_in)."""
    directions = orthogonalise(bufs, AUTHORS_NS_STEPS, AUTHORS_NS_EPS, dtype=dtype)
    return [d * math.sqrt(d.size(0) / d.size(1)) for d in directions]


def sign_lmo(bufs: list[Tensor], dtype: torch.dtype) -> list[Tensor]:
    """Sign (normalized), for the head: sign(B) / d_in."""
    return [torch.sign(b) / b.size(1) for b in bufs]


def colnorm_lmo(bufs: list[Tensor], dtype: torch.dtype) -> list[Tensor]:
    """ColNorm (transposed, not normalized), for an embedding table (vocab x d): each token's row
    over its RMS. Transposed, the table is the d x vocab map of a one-hot input, whose columns it
    normalises."""
    return [b / (torch.linalg.vector_norm(b, dim=1, keepdim=True) / math.sqrt(b.size(1))
                 + AUTHORS_RMS_EPS) for b in bufs]


def bias_rms_lmo(bufs: list[Tensor], dtype: torch.dtype) -> list[Tensor]:
    """BiasRMS, for vectors: B / (RMS(B) + eps)."""
    return [b / (b.square().mean().sqrt() + AUTHORS_RMS_EPS) for b in bufs]


LMOS: dict[str, Callable[[list[Tensor], torch.dtype], list[Tensor]]] = {
    "spectral": spectral_lmo, "sign": sign_lmo, "colnorm": colnorm_lmo, "bias_rms": bias_rms_lmo}


class AuthorsScion(Optimizer):
    """The `authors` variant (module doc): per group, EMA momentum, then W <- (1 - lr) W - lr *
    radius * LMO(B) with the group's `norm`. `momentum` is the usual factor (theirs is 1 minus it)."""

    ns_working_dtype: torch.dtype = torch.bfloat16  # G.bfloat16() there; tests set fp32 to check the math

    def __init__(self, params: list[dict[str, Any]], lr: float, momentum: float = 0.9) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, norm="spectral", radius=1.0))
        for group in self.param_groups:
            if group["norm"] not in LMOS:
                raise ValueError(f"unknown Scion norm {group['norm']!r}")

    def update_group(self, params: list[Tensor], group: dict[str, Any]) -> None:
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)
        bufs = [self.state[p]["momentum_buffer"] for p in params]
        mu = 1.0 - group["momentum"]  # their `momentum` argument
        torch._foreach_mul_(bufs, 1.0 - mu)
        torch._foreach_add_(bufs, [p.grad for p in params], alpha=mu)
        directions = LMOS[group["norm"]](bufs, self.ns_working_dtype)
        lr = group["lr"]
        torch._foreach_mul_(params, 1.0 - lr)  # the constrained variant: stay in the radius's ball
        torch._foreach_add_(params, directions, alpha=-lr * group["radius"])


def authors_groups(params: list[TaggedParam], hp: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Their param groups for our roles (module doc): norm, radius and momentum by role."""
    def norm_of(role: Role) -> str:
        if role in MATRIX_ROLES:
            return "spectral"
        return {Role.HEAD: "sign", Role.EMBEDDING: "colnorm"}.get(role, "bias_rms")

    radius = {"spectral": hp["scion_radius"], "sign": hp["scion_head_radius"],
              "colnorm": hp["scion_embedding_radius"], "bias_rms": hp["scion_radius"]}
    groups: dict[str, list[torch.Tensor]] = {}
    for t in params:
        groups.setdefault(norm_of(t.role), []).append(t.param)
    return [{"params": ps, "norm": norm, "radius": radius[norm], "lr": hp["learning_rate"],
             "momentum": hp["momentum"] if norm == "spectral" else hp["beta1"]}
            for norm, ps in groups.items()]


def build(params: list[TaggedParam], hp: Mapping[str, Any],
          model: torch.nn.Module) -> HybridOptimizer | AuthorsScion:
    if variant_of(hp) == "authors":
        return AuthorsScion(authors_groups(params, hp), lr=hp["learning_rate"])
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
              "weight_decay": 0.1, "variant": "study",
              # the authors variant's radii: their untied nanoGPT's (module doc)
              "scion_radius": 3.0, "scion_head_radius": 10.0, "scion_embedding_radius": 1.0},
    added_later=frozenset({"variant", "scion_radius", "scion_head_radius", "scion_embedding_radius"}),
    differences=("LMO per role: study Newton-Schulz x sqrt(max(1, rows/cols)) for matrices, Signum for the "
                 "rest; authors Spectral x sqrt(d_out/d_in) (hidden), Sign / d_in (head), ColNorm "
                 "(embedding), BiasRMS (gains), each times its radius (scion_*radius)",
                 "step size: study lr for matrices, lr * scion_to_signum_lr for the rest; authors lr times "
                 "the group's radius",
                 "weight decay: study decoupled, weight_decay on decay_roles; authors W <- (1 - lr) W on "
                 "every parameter (their constrained Scion; weight_decay unused)",
                 "Newton-Schulz: study 10 steps, epsilon scion_epsilon, fp32 on CPU under 64 wide; authors "
                 "5 steps, epsilon 1e-7, bf16"),
    roles={Role.HIDDEN: "spectral LMO: EMA momentum, Newton-Schulz 10, x sqrt(max(1, rows/cols)), "
                        "decayed (authors: Spectral NS5 x sqrt(d_out/d_in) x scion_radius)",
           Role.HEAD: "Signum at lr * scion_to_signum_lr, decayed (authors: Sign / d_in x scion_head_radius)",
           Role.EMBEDDING: "Signum at lr * scion_to_signum_lr, no decay (authors: ColNorm per token x "
                           "scion_embedding_radius)",
           Role.NORM: "Signum at lr * scion_to_signum_lr, no decay (authors: BiasRMS x scion_radius)",
           Role.BIAS: "Signum at lr * scion_to_signum_lr, no decay (authors: BiasRMS x scion_radius)"},
    paper="Pethick et al., Training Deep Learning Models with Norm-Constrained LMOs, ICML 2025, "
          "arXiv:2502.07529",
    source="ours: study = Levanter's ScionConfig (the study's), checked against a float64 reference of "
           "its equations; authors = LIONS-EPFL/scion scion.py (a86f93e), checked step by step against "
           "a float64 transcription",
    schedule="linear",
    notes="Levanter clipped only the Signum group's gradients; here the train loop clips all",
))
