"""Training FLOPs of a model: the numerator of every throughput and MFU figure."""
from __future__ import annotations

from bench.model.scales import Scale

DEFAULT_VOCAB = 512  # the default tokenizer's (bpe-512) vocabulary


def flops_per_token(scale: Scale, vocab_size: int = DEFAULT_VOCAB) -> float:
    """Training FLOPs per token (Kaplan et al. 2020): 6 x weights (head included) + attention scores."""
    weights = scale.non_embedding_params + vocab_size * scale.hidden
    return 6.0 * weights + 6.0 * scale.layers * scale.seq_len * scale.hidden
