"""Adam-mini: Adam with one second-moment scalar per parameter block instead of per entry.

Paper: Zhang et al., "Adam-mini: Use Fewer Learning Rates To Gain More" (arXiv 2406.16793).
Each parameter is viewed as (blocks, block_size); v is an EMA of the block's mean squared gradient:
    m <- b1 m + (1 - b1) g,  v_b <- b2 v_b + (1 - b2) mean_{i in b}(g_i^2),
    p <- p (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v_b / (1 - b2^t)) + eps).
Blocks follow the authors' partition (zyushun/Adam-mini, PyPI adam-mini 1.1.1) and the study's
Levanter `mini`, decided by role and the model's structure, never by shape:
- EMBEDDING, HEAD: one block per token row;
- HIDDEN (and the other MATRIX_ROLES: experts, routers, MLA's latent projections): one block per
  attention head for an attention module's wq and wk (the module gives n_heads; one that lists
  its per-head query/key projections in `head_major_qk`, MLA's wq_up, wk_up, wq_rope, for those),
  one per output neuron (row) for wv, wo, the MLP and expert matrices, routers and latents;
- NORM, BIAS: one block per entry, i.e. plain Adam (Levanter's choice; the authors' package gives a
  norm vector a single block). The step-by-step test against adam-mini 1.1.1 names norms as its
  Adam blocks and adds our head's name to its output names, and then matches on every parameter.

Two variants (the `variant` hyperparameter). `study` (default) is the above. `authors` is PyPI
adam-mini 1.1.1 (adam_mini/adam_mini.py, the authors' release of zyushun/Adam-mini) as it treats a
Llama whose parameters it recognises by name. Read side by side, the package and `study` differ in:
  - norm gains: the package's fall-through branch (every name it does not recognise: norms) keeps
    one v for the whole vector, v <- b2 v + (1 - b2) mean(g^2); `study` one per entry (Adam);
  - arithmetic order: the package divides sqrt(v) by sqrt(1 - b2^t) before adding eps and scales
    m by lr (1 / (1 - b1^t)) / h; `study` adds eps to sqrt(v / (1 - b2^t)) and divides m_hat (optax).
    The same numbers up to rounding; `authors` keeps the package's order.
Alike in both: blocks of embeddings and head (one per token row), wq/wk (one per head: the package
views them as (-1, dim^2 / n_heads), a head for a Llama), wv, wo and MLP matrices (one per row),
biases (Adam); decoupled decay p (1 - lr wd) before the update at the scheduled lr; no clipping in
the optimizer (the train loop's max_grad_norm clips in both). Which params decay is the
`decay_roles` hyperparameter in both variants (DESIGN.md: hyperparameter values stay the user's):
the package decays every param whose name lacks "norm", "ln" and "bias", embeddings included, which
is decay_roles "hidden,head,embedding"; its other defaults (lr 1e-3, betas (0.9, 0.999), eps 1e-8,
no decay) are ours to set too. The package matches names only, so MoE experts, routers and MLA
latents have no rule there; `authors` keeps `study`'s blocks for them (per row; per head for MLA's
head-major q/k projections). The test steps `authors` beside the package itself, its code and sets
unchanged, on our tiny Llama with parameter names it recognises (head -> lm_head, mlp_norm ->
ffn_norm; as ours are, "mlp_norm" would send a norm vector to its per-row branch, which fails).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor

from bench.optimizers.adam_moments import adam_direction, decoupled_step
from bench.optimizers.base import Optimizer
from bench.optimizers.common import TRAIN_DEFAULTS, decay_groups
from bench.optimizers.registry import OptimizerDef, register, variant_of
from bench.roles import MATRIX_ROLES, Role, TaggedParam

QUERY_KEY = ("wq", "wk")  # attention projections whose blocks are heads (bench/model/llama.py names)


def attention_heads(name: str, model: torch.nn.Module | None) -> int | None:
    """n_heads if `name` is the weight of an attention module's wq or wk, else None.

    Viewing that (n_heads * head_dim, in) weight as (n_heads, -1) gives one block per head because
    the attention splits its output features head-major (bench/model/llama.py, Attention._heads).
    """
    if model is None or name.count(".") < 2:
        return None
    owner, _ = name.rsplit(".", 1)
    parent, attr = owner.rsplit(".", 1)
    module = model.get_submodule(parent)
    if attr in getattr(module, "head_major_qk", QUERY_KEY) and hasattr(module, "n_heads"):
        return module.n_heads
    return None


def block_count(tp: TaggedParam, model: torch.nn.Module | None, variant: str = "study") -> int:
    """How many second-moment scalars Adam-mini keeps for this parameter (see module doc)."""
    if tp.role is Role.NORM and variant == "authors":
        return 1  # the package's fall-through branch: one v for the whole gain vector
    if tp.role in (Role.EMBEDDING, Role.HEAD):
        return tp.param.shape[0]
    if tp.role in MATRIX_ROLES:
        return attention_heads(tp.name, model) or tp.param.shape[0]
    return tp.param.numel()


class AdamMini(Optimizer):
    """State per param: exp_avg (param-shaped), exp_avg_sq of shape (blocks, 1), step."""

    later_options = {"variant": "study"}

    def __init__(self, params: list[dict[str, Any]], blocks: Mapping[Tensor, int], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, variant: str = "study") -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                                  "variant": variant})
        for group in self.param_groups:  # v's shape records the partition, so state_dict carries it
            for p in group["params"]:
                if p.numel() % blocks[p]:
                    raise ValueError(f"{blocks[p]} blocks do not divide a param of shape {tuple(p.shape)}")
                self.state[p] = {"step": 0, "exp_avg": torch.zeros_like(p),
                                 "exp_avg_sq": p.new_zeros(blocks[p], 1)}

    def update_group(self, params: list[Tensor], group: dict[str, Any]) -> None:
        states = [self.state[p] for p in params]
        for s in states:
            s["step"] += 1
        vs = [s["exp_avg_sq"] for s in states]
        grads = [p.grad.reshape(v.shape[0], -1) for p, v in zip(params, vs)]
        ms = [s["exp_avg"].view(v.shape[0], -1) for s, v in zip(states, vs)]
        block_sq = [g.square().mean(dim=1, keepdim=True) for g in grads]
        if group["variant"] == "authors":
            _authors_step(params, ms, vs, grads, block_sq, group, states[0]["step"])
            return
        beta1, beta2 = group["betas"]
        update = adam_direction(ms, vs, grads, beta1, beta2, group["eps"], states[0]["step"], block_sq)
        decoupled_step(params, [u.view_as(p) for u, p in zip(update, params)],
                       group["lr"], group["weight_decay"])


def _authors_step(params: list[Tensor], ms: list[Tensor], vs: list[Tensor], grads: list[Tensor],
                  block_sq: list[Tensor], group: Mapping[str, Any], step: int) -> None:
    """adam-mini 1.1.1's order: decay, moments, h = sqrt(v) / sqrt(1 - b2^t) + eps, then
    p -= lr m (1 / (1 - b1^t)) / h."""
    beta1, beta2 = group["betas"]
    lr, wd = group["lr"], group["weight_decay"]
    if wd:
        torch._foreach_mul_(params, 1.0 - lr * wd)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_add_(vs, block_sq, alpha=1.0 - beta2)
    torch._foreach_lerp_(ms, grads, 1.0 - beta1)
    h = torch._foreach_sqrt(vs)
    torch._foreach_div_(h, math.sqrt(1.0 - beta2**step))
    torch._foreach_add_(h, group["eps"])
    scale = torch._foreach_reciprocal(h)
    torch._foreach_mul_(scale, 1.0 / (1.0 - beta1**step))
    update = torch._foreach_mul(ms, scale)
    torch._foreach_mul_(update, lr)
    torch._foreach_sub_(params, [u.view_as(p) for u, p in zip(update, params)])


def build(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module | None) -> AdamMini:
    variant = variant_of(hp)
    groups = decay_groups(params, hp["learning_rate"], hp, betas=(hp["beta1"], hp["beta2"]),
                          eps=hp["epsilon"])
    blocks = {tp.param: block_count(tp, model, variant) for tp in params}
    return AdamMini(groups, blocks, lr=hp["learning_rate"], variant=variant)


register(OptimizerDef(
    name="adam_mini",
    family="adam",
    build=build,
    defaults={**TRAIN_DEFAULTS, "learning_rate": 8e-3, "beta1": 0.9, "beta2": 0.98, "epsilon": 1e-15,
              "weight_decay": 0.1, "variant": "study"},
    added_later=frozenset({"variant"}),
    differences=("norm gains: study one v per entry (Levanter, Adam); authors one v per gain vector "
                 "(adam-mini 1.1.1's fall-through block)",
                 "epsilon: study adds it to sqrt(v_hat) (optax); authors to sqrt(v) / sqrt(1 - b2^t), "
                 "lr / (1 - b1^t) applied after (the same up to rounding)"),
    roles={Role.EMBEDDING: "Adam-mini, one v per token row, no decay",
           Role.HEAD: "Adam-mini, one v per token row, decayed",
           Role.HIDDEN: "Adam-mini, one v per head (wq, wk) or per output neuron, decayed",
           Role.NORM: "Adam (one v per entry; authors: one v per vector), no decay", Role.BIAS: "Adam (one v per entry), no decay"},
    paper="Zhang et al., Adam-mini: Use Fewer Learning Rates To Gain More, arXiv:2406.16793",
    source="own torch implementation of the authors' partition (zyushun/Adam-mini) as run by the "
           "study's Levanter `mini`; matches PyPI adam-mini 1.1.1 step by step (study: the package "
           "told norms are Adam blocks; authors: the package unchanged, 20 steps in fp32)",
    notes="the study's name for it is 'mini' (paper-data Analysis/Results/mini)",
))
