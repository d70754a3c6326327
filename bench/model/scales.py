"""Model scales: the study's paper ladder (exact shapes) and a CPU ladder for laptops and CI.

Both use one shape rule: a Llama-style decoder with MLP width i and hidden width h; the
non-embedding parameter count is layers * (4*h*h + 3*h*i), the number the Chinchilla budget uses
(20 tokens per non-embedding parameter at ratio 1).
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.errors import UserError
from bench.study import CPU_BATCH, PAPER_SEQ_LEN, TOKENS_PER_PARAM


@dataclass(frozen=True)
class Scale:
    name: str
    ladder: str  # "paper" or "cpu"
    hidden: int
    intermediate: int
    layers: int
    heads: int
    seq_len: int
    default_batch: int  # sequences per optimizer step
    paper_name: str = ""  # the study's folder name (130m, ...)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def non_embedding_params(self) -> int:
        h, i = self.hidden, self.intermediate
        return self.layers * (4 * h * h + 3 * h * i)

    def tokens(self, ratio: float) -> int:
        """Training tokens of a `ratio` x Chinchilla budget."""
        return int(ratio * TOKENS_PER_PARAM * self.non_embedding_params)

    def steps(self, ratio: float, batch_size: int) -> int:
        return max(1, self.tokens(ratio) // (batch_size * self.seq_len))


# The study's models: 32 layers, kv heads = heads, sequence length 4096 (docs/PROTOCOL.md).
_PAPER = [
    Scale("0.1B", "paper", 512, 2048, 32, 8, PAPER_SEQ_LEN, 128, "130m"),
    Scale("0.3B", "paper", 768, 3072, 32, 12, PAPER_SEQ_LEN, 128, "300m"),
    Scale("0.5B", "paper", 1024, 4096, 32, 16, PAPER_SEQ_LEN, 128, "520m"),
    Scale("1.2B", "paper", 1536, 6144, 32, 24, PAPER_SEQ_LEN, 256, "1.2b"),
]

# The CPU ladder keeps the paper's i = 4h and head_dim 16, and spans 9x (xs to m) and 16x (xs to l) in
# non-embedding parameters.
# Batch 32 x 128 tokens gives about 320 optimizer steps at 1x on the smallest scale (the study's runs
# had thousands; runs of ~100 steps are dominated by the first steps, see docs/MEASUREMENTS.md).
_CPU = [
    Scale("cpu-xs", "cpu", 32, 128, 4, 2, 128, CPU_BATCH),
    Scale("cpu-s", "cpu", 64, 256, 4, 4, 128, CPU_BATCH),
    Scale("cpu-m", "cpu", 96, 384, 4, 6, 128, CPU_BATCH),
    Scale("cpu-l", "cpu", 128, 512, 4, 8, 128, CPU_BATCH),
]

SCALES: dict[str, Scale] = {s.name: s for s in _PAPER + _CPU}
# The study's own names are accepted too (130m etc.), and case does not matter.
_ALIASES = {s.paper_name: s.name for s in _PAPER} | {s.name.lower(): s.name for s in _PAPER + _CPU}


def get_scale(name: str) -> Scale:
    key = _ALIASES.get(name.lower(), name)
    if key not in SCALES:
        raise UserError(f"unknown scale {name!r}; known: {', '.join(SCALES)}")
    return SCALES[key]
