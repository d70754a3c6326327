"""Block partitioning of matrices for the Kronecker-factored preconditioners (SOAP, Kron, COSMOS).

The study's SOAP and Kron (Levanter's src/levanter/optim/{soap,kron}.py, `partition_grads_into_blocks`
with `block_size`) cut each matrix into blocks of at most block_size x block_size and give every
block its own preconditioner. A dimension is cut only where it has a preconditioner (`split`);
blocks run row-major. Levanter then zero-pads every block to a multiple of block_size so blocks stack
in JAX; we do not pad (a padded block's preconditioner sees the padding: zero rows in SOAP's Gram
matrices, noise probes in Kron), which is identical to Levanter wherever a dimension is a multiple
of block_size, as every dimension of the study's models is.

Blocks of different matrices that share a shape are processed together (`by_signature`), one batched
matmul / QR / triangular solve per shape instead of one per block.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Hashable, NamedTuple, Sequence

import torch


def split_sizes(dim: int, block_size: int, split: bool) -> list[int]:
    """Sizes of the pieces `dim` is cut into: full blocks, then the remainder (Levanter's rule)."""
    if not split or block_size <= 0 or dim <= block_size:
        return [dim]
    full, rest = divmod(dim, block_size)
    return [block_size] * full + ([rest] if rest else [])


class Block(NamedTuple):
    rows: slice
    cols: slice

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.stop - self.rows.start, self.cols.stop - self.cols.start


def _slices(sizes: list[int]) -> list[slice]:
    out, start = [], 0
    for size in sizes:
        out.append(slice(start, start + size))
        start += size
    return out


def partition(shape: Sequence[int], block_size: int, split_rows: bool, split_cols: bool) -> list[Block]:
    """The blocks of a (rows, cols) matrix, row-major."""
    rows = _slices(split_sizes(shape[0], block_size, split_rows))
    cols = _slices(split_sizes(shape[1], block_size, split_cols))
    return [Block(r, c) for r in rows for c in cols]


def gather(matrix: torch.Tensor, blocks: list[Block]) -> list[torch.Tensor]:
    """Views of `matrix`, one per block."""
    return [matrix[b.rows, b.cols] for b in blocks]


def assemble(pieces: list[torch.Tensor], blocks: list[Block]) -> torch.Tensor:
    """The matrix whose blocks are `pieces` (a single block is returned as is, no copy)."""
    if len(pieces) == 1:
        return pieces[0]
    rows: dict[int, list[torch.Tensor]] = defaultdict(list)
    for piece, block in zip(pieces, blocks):
        rows[block.rows.start].append(piece)
    return torch.cat([torch.cat(row, dim=1) for _, row in sorted(rows.items())], dim=0)


def by_signature(signatures: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """Indices of equal signatures (e.g. block shape and which sides are preconditioned), in order."""
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, sig in enumerate(signatures):
        groups[sig].append(i)
    return groups
