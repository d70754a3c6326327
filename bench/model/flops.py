"""Training FLOPs of a model: the numerator of every throughput and MFU figure."""
from __future__ import annotations

from bench.model.scales import Scale

DEFAULT_VOCAB = 512  # the default tokenizer's (bpe-512) vocabulary


def flops_per_token(scale: Scale, vocab_size: int = DEFAULT_VOCAB) -> float:
    """Training FLOPs per token (Kaplan et al. 2020): 6 x weights (head included) + attention scores.

    The weights are those a token uses (an MoE's router, shared and top_k experts: its active
    count). Attention scores are 6 x layers x seq_len x (query-key width + value width) / 2: hidden
    each for Llama and MoE; MLA's queries and keys have heads x rope_dim more."""
    weights = scale.non_embedding_params + vocab_size * scale.hidden
    if scale.arch == "mla":
        widths = 2 * scale.hidden + scale.heads * scale.rope_dim
        return 6.0 * weights + 3.0 * scale.layers * scale.seq_len * widths
    return 6.0 * weights + 6.0 * scale.layers * scale.seq_len * scale.hidden
