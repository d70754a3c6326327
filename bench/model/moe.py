"""Mixture-of-Experts decoder: the Llama decoder with each MLP replaced by routed SwiGLU experts.

Sources: Shazeer et al., "Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts
Layer" (arXiv 1701.06538), top-k softmax routing; Fedus et al., "Switch Transformers" (arXiv
2101.03961), the load-balancing loss; Dai et al., "DeepSeekMoE" (arXiv 2401.06066), fine-grained
experts and shared (always-on) experts.

Per layer: a router (Role.ROUTER, hidden -> experts) gives softmax probabilities p; each token goes
to its top_k experts, whose outputs are summed with the chosen probabilities renormalised to sum 1
(so the routed part starts at the scale of one dense MLP); the shared experts are one SwiGLU of
width shared_experts * expert_intermediate (as DeepSeekMoE implements them; Role.HIDDEN, since
every token uses them). Every routed expert is its own SwiGLU (Role.EXPERT), so each matrix is a
separate 2-D parameter that any matrix optimizer takes unchanged. The auxiliary loss per layer is
Switch's E * sum_e f_e P_e (f_e: share of the token-slots routed to e, P_e: mean router probability
of e), 1 for uniform routing; the model's aux_loss() is aux_loss_weight x its sum over layers.

Dispatch is sparse and deterministic: token-slots are stably sorted by expert, each expert runs on
its tokens (index_select), and the outputs go back to their slots through the inverse permutation
and are summed over the k slots in a fixed order (no scatter-add races). An expert given no tokens
still runs on an empty batch, so its weights get a zero gradient rather than none.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.model.llama import MLP, Block, LlamaModel, tagged
from bench.model.scales import Scale
from bench.roles import Role


def route(probs: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(gates [N, k] summing to 1 per token, chosen experts [N, k]) from router probabilities [N, E]."""
    top, chosen = probs.topk(top_k, dim=-1)
    return top / top.sum(dim=-1, keepdim=True), chosen


def expert_loads(chosen: torch.Tensor, experts: int) -> torch.Tensor:
    """Token-slots routed to each expert: [E], summing to N * k."""
    return torch.bincount(chosen.flatten(), minlength=experts)


def load_balancing_loss(probs: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Switch Transformer's E * sum_e f_e P_e (f from the hard choices, so gradients flow through P)."""
    n_experts = probs.size(-1)
    f = expert_loads(chosen, n_experts).to(probs.dtype) / chosen.numel()
    return n_experts * (f * probs.mean(dim=0)).sum()


def dispatch(x: torch.Tensor, chosen: torch.Tensor, gates: torch.Tensor, experts: nn.ModuleList) -> torch.Tensor:
    """sum_j gates[n, j] * experts[chosen[n, j]](x[n]) for tokens x [N, h] (module doc)."""
    n, k = chosen.shape
    order = torch.argsort(chosen.flatten(), stable=True)  # token-slots grouped by expert
    counts = expert_loads(chosen, len(experts)).tolist()
    outs = [expert(x.index_select(0, slots // k)) for expert, slots in zip(experts, order.split(counts))]
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    per_slot = torch.cat(outs).index_select(0, inverse).view(n, k, -1)
    return (per_slot * gates.unsqueeze(-1).to(per_slot.dtype)).sum(dim=1)


class MoE(nn.Module):
    """Routed and shared SwiGLU experts in place of the MLP; `aux` is the last forward's loss."""

    def __init__(self, scale: Scale):
        super().__init__()
        h, width = scale.hidden, scale.expert_intermediate
        self.top_k = scale.top_k
        self.router = tagged(nn.Linear(h, scale.experts, bias=False), Role.ROUTER)
        self.experts = nn.ModuleList(MLP(h, width, Role.EXPERT) for _ in range(scale.experts))
        self.shared = MLP(h, width * scale.shared_experts) if scale.shared_experts else None
        self.aux: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.size(-1))
        probs = F.softmax(self.router(flat), dim=-1, dtype=torch.float32)
        gates, chosen = route(probs, self.top_k)
        self.aux = load_balancing_loss(probs, chosen)
        out = dispatch(flat, chosen, gates, self.experts)
        if self.shared is not None:
            out = out + self.shared(flat)
        return out.view_as(x)


class MoEModel(LlamaModel):
    """The Llama decoder with MoE layers; aux_loss() is added to the training loss (step.py)."""

    arch = "moe"

    def __init__(self, scale: Scale, vocab_size: int):
        super().__init__(scale, vocab_size)
        self.has_aux_loss = scale.aux_loss_weight > 0

    def make_block(self, scale: Scale) -> nn.Module:
        return Block(scale, mlp=MoE)

    def aux_loss(self) -> torch.Tensor:
        losses = [layer.mlp.aux for layer in self.layers if layer.mlp.aux is not None]
        if not losses:
            return super().aux_loss()
        return self.scale.aux_loss_weight * torch.stack(losses).sum()
