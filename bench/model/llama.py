"""A Llama-style decoder: RMSNorm, rotary embeddings, SwiGLU MLP, causal SDPA attention, no biases.

Every parameter is tagged with its role (bench/roles.py) by the module that owns it, so optimizers
never guess roles from shapes. Initialisation follows Levanter's Llama (normal, std 0.02).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.model.scales import Scale
from bench.roles import Role, TaggedParam


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)


def rotary_tables(seq_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, D] tables for apply_rotary: (cos, cos) and (-sin, sin) over the two halves of a head."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of each head's features; x is [B, H, T, D].

    (x1 cos - x2 sin, x2 cos + x1 sin) written as x * (cos, cos) + (x2, x1) * (-sin, sin): bitwise
    the same values and gradients in three elementwise ops instead of six (docs/MEASUREMENTS.md)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos[: x.size(-2)].to(x.dtype), sin[: x.size(-2)].to(x.dtype)
    return x * cos + torch.cat((x2, x1), dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.n_heads, self.head_dim = heads, hidden // heads
        self.wq = nn.Linear(hidden, hidden, bias=False)
        self.wk = nn.Linear(hidden, hidden, bias=False)
        self.wv = nn.Linear(hidden, hidden, bias=False)
        self.wo = nn.Linear(hidden, hidden, bias=False)
        # QK-clip (MuonClip) reads the largest pre-softmax logit per head; off by default (it costs
        # an explicit q.k product).
        self.track_max_logit = False
        self.max_logit: torch.Tensor | None = None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        q = apply_rotary(self._heads(self.wq(x)), cos, sin)
        k = apply_rotary(self._heads(self.wk(x)), cos, sin)
        v = self._heads(self.wv(x))
        if self.track_max_logit:
            self.max_logit = self._max_logit(q.detach(), k.detach())
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(x.shape))

    def _max_logit(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return causal_max_logit(q, k, self.head_dim**-0.5)


def causal_max_logit(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Each head's largest causal pre-softmax logit over the batch; q, k are [B, H, T, D]."""
    t = q.size(-2)
    logits = (q @ k.mT) * scale
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    logits = logits.masked_fill(~causal, float("-inf"))
    return logits.amax(dim=(0, 2, 3)).float()


def tagged(linear: nn.Linear, role: Role) -> nn.Linear:
    """`linear` with the role its weight plays (read by tagged_parameters; plain Linears are HIDDEN)."""
    linear.role = role
    return linear


class MLP(nn.Module):
    """SwiGLU: w_down(silu(w_gate x) * w_up x). `role`: its matrices' (MoE experts are MLPs too)."""

    def __init__(self, hidden: int, intermediate: int, role: Role = Role.HIDDEN):
        super().__init__()
        self.w_gate = nn.Linear(hidden, intermediate, bias=False)
        self.w_up = nn.Linear(hidden, intermediate, bias=False)
        self.w_down = nn.Linear(intermediate, hidden, bias=False)
        if role is not Role.HIDDEN:
            for linear in (self.w_gate, self.w_up, self.w_down):
                tagged(linear, role)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


Layer = Callable[[Scale], nn.Module]


class Block(nn.Module):
    """Pre-norm residual block; `attention` / `mlp` replace Llama's (MLA's attention, an MoE layer)."""

    def __init__(self, scale: Scale, attention: Layer | None = None, mlp: Layer | None = None):
        super().__init__()
        self.attn_norm = RMSNorm(scale.hidden)
        self.attn = attention(scale) if attention else Attention(scale.hidden, scale.heads)
        self.mlp_norm = RMSNorm(scale.hidden)
        self.mlp = mlp(scale) if mlp else MLP(scale.hidden, scale.intermediate)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class LlamaModel(nn.Module):
    """The decoder. Other architectures (bench/model/build.py) subclass it and replace `make_block`
    (and `rotary_dim`); parameters are created and initialised in the same order for all."""

    arch = "llama"  # the Scale.arch this class builds
    has_aux_loss = False  # whether aux_loss() is a training term (bench/run/step.py adds it then)

    def __init__(self, scale: Scale, vocab_size: int):
        if scale.arch != self.arch:  # never a Llama silently in place of the scale's architecture
            raise ValueError(f"{type(self).__name__} builds arch {self.arch}, the scale is {scale.arch}: "
                             "use bench.model.build.build_model")
        super().__init__()
        self.scale, self.vocab_size = scale, vocab_size
        self.embed = nn.Embedding(vocab_size, scale.hidden)
        self.layers = nn.ModuleList(self.make_block(scale) for _ in range(scale.layers))
        self.norm = RMSNorm(scale.hidden)
        self.head = nn.Linear(scale.hidden, vocab_size, bias=False)
        cos, sin = rotary_tables(scale.seq_len, self.rotary_dim(scale))
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)

    def make_block(self, scale: Scale) -> nn.Module:
        return Block(scale)

    def rotary_dim(self, scale: Scale) -> int:
        """The width the rotary tables turn: the whole head here."""
        return scale.head_dim

    def aux_loss(self) -> torch.Tensor:
        """The weighted auxiliary training loss of the last forward: none for a dense model."""
        return self.embed.weight.new_zeros(())

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def trunk(self, tokens: torch.Tensor) -> torch.Tensor:
        """The last block's output (before the final norm and the head)."""
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, self.rope_cos, self.rope_sin)
        return x

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.trunk(tokens)))

    def tagged_parameters(self) -> list[TaggedParam]:
        """Every parameter with its role; the roles come from the owning module's type (the output
        head is a Linear too, so it is recognised by identity)."""
        tagged = []
        for mod_name, module in self.named_modules():
            for p_name, param in module.named_parameters(recurse=False):
                name = f"{mod_name}.{p_name}" if mod_name else p_name
                role = Role.HEAD if module is self.head else _role(module, p_name)
                tagged.append(TaggedParam(name, param, role))
        return tagged


def _role(module: nn.Module, p_name: str) -> Role:
    if p_name == "bias":
        return Role.BIAS
    if isinstance(module, nn.Embedding):
        return Role.EMBEDDING
    if isinstance(module, RMSNorm):
        return Role.NORM
    if isinstance(module, nn.Linear):
        return getattr(module, "role", Role.HIDDEN)
    raise ValueError(f"no role for parameter {p_name} of {type(module).__name__}")


def head_loss(model: LlamaModel, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy from the trunk's output, with logits in fp32. A function of its
    own so it can be compiled apart from the blocks: compiled, the fp32 copy of the logits is fused
    away (at 0.1B with a 128k vocabulary on an H200: 1.27x the tokens/s, half the peak memory)."""
    logits = model.head(model.norm(hidden))
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def compile_model(model: LlamaModel):
    """Compile each block in place (they share one compiled graph, so this takes seconds where the
    whole unrolled model takes minutes), and return the compiled head_loss."""
    for layer in model.layers:
        layer.compile()
    return torch.compile(head_loss)
