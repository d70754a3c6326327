"""What this machine's kernels allow at a scale's own shapes: the yardstick beside `optbench bench`'s
shares of the matmul peak, which is measured on large square products.

- Training: each matrix product of a training step (the forward, input-gradient and weight-gradient
  product of every linear layer and the head) and each layer's attention forward and backward, each
  timed alone with warm caches. The step's model FLOPs over their summed time is the FLOP/s a step of
  this shape would reach if every other op (norms, rotary, SwiGLU, loss, optimizer) were free.
- Newton-Schulz: its batched products alone, per group of same-shape matrices.
A share of peak below the ceiling's is the harness's to win; above it, no implementation of these
shapes gets there on this machine.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable

import torch
import torch.nn.functional as F

from bench.model.flops import flops_per_token
from bench.model.scales import get_scale
from bench.optimizers.newton_schulz import NS_COEFFICIENTS


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    """Best-of wall time of fn() in seconds, after one warm-up call."""
    fn()  # first-call allocations and kernel selection
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _linear_ms(tokens: int, fan_in: int, fan_out: int, repeats: int) -> float:
    """Forward, input gradient and weight gradient of one linear layer over `tokens` rows."""
    x, w, g = torch.randn(tokens, fan_in), torch.randn(fan_out, fan_in), torch.randn(tokens, fan_out)
    products = (lambda: x @ w.T, lambda: g @ w, lambda: g.T @ x)
    return 1000 * sum(best_time(p, repeats) for p in products)


def _attention_ms(batch: int, heads: int, seq: int, head_dim: int, repeats: int) -> float:
    """Causal SDPA forward and backward of one layer."""
    q, k, v = (torch.randn(batch, heads, seq, head_dim, requires_grad=True) for _ in range(3))
    grad = torch.randn(batch, heads, seq, head_dim)
    step = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad)  # noqa: E731
    return 1000 * best_time(step, repeats)


def training_ceiling(scale_name: str, vocab: int, repeats: int = 5) -> dict[str, Any]:
    """The step's products and attention timed alone (module doc); FLOP/s at their summed time."""
    s = get_scale(scale_name)
    tokens = s.default_batch * s.seq_len
    h, i = s.hidden, s.intermediate
    shapes = Counter({(h, h): 4 * s.layers, (h, i): 2 * s.layers, (i, h): s.layers})
    shapes[(h, vocab)] += 1  # the head (added: vocab may equal the MLP width)
    matmul_ms = sum(n * _linear_ms(tokens, *shape, repeats) for shape, n in shapes.items())
    attention_ms = s.layers * _attention_ms(s.default_batch, s.heads, s.seq_len, s.head_dim, repeats)
    ms = matmul_ms + attention_ms
    return {"matmul_ms": matmul_ms, "attention_ms": attention_ms, "ms": ms, "precision": "fp32",
            "flops_per_s": tokens * flops_per_token(s, vocab) / (ms / 1000)}


def newton_schulz_matmuls_ms(shapes: list[tuple[int, int, int, torch.dtype]], steps: int,
                             repeats: int = 10) -> float:
    """Newton-Schulz's products alone: per (batch, rows <= cols, cols, dtype) group, `steps` times
    X X^T, bA + cA^2 and aX + BX, as newton_schulz runs them."""
    a, b, c = NS_COEFFICIENTS
    total = 0.0
    for batch, m, n, dtype in shapes:
        x, gram = torch.randn(batch, m, n).to(dtype), torch.randn(batch, m, m).to(dtype)
        products = (lambda: x @ x.mT, lambda: torch.baddbmm(gram, gram, gram, beta=b, alpha=c),
                    lambda: torch.baddbmm(x, gram, x, beta=a))
        total += steps * sum(best_time(p, repeats) for p in products)
    return 1000 * total
