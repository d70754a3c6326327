"""Block partitioning of matrices for the Kronecker-factored preconditioners (SOAP, Kron, COSMOS).

The study's SOAP and Kron (Levanter's src/levanter/optim/{soap,kron}.py, `partition_grads_into_blocks`
with `block_size`) cut each matrix into blocks of at most block_size x block_size and give every
block its own preconditioner. A dimension is cut only where it has a preconditioner (`split`);
blocks run row-major. Levanter then zero-pads every block to a multiple of block_size so blocks stack
in JAX; we do not pad (a padded block's preconditioner sees the padding: zero rows in SOAP's Gram
matrices, noise probes in Kron), which is identical to Levanter wherever a dimension is a multiple
of block_size, as every dimension of the study's models is.

Blocks of different matrices that share a shape are processed together (`by_signature`), one batched
matmul / QR / triangular solve per shape instead of one per block. Their per-block state tensors stay
slices of one stack (`stacked`, `adopt`), so a step reads and updates the stack in place instead of
stacking copies and copying them back (a third of SOAP's step at cpu-l). The state's keys and shapes
are unchanged, so are checkpoints.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Hashable, NamedTuple, Sequence

import torch

# one block's state tensor: the parameter's state dict and the key in it (e.g. "QL.1")
Slot = tuple[dict[str, Any], str]


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


def stacked(slots: Sequence[Slot]) -> torch.Tensor:
    """The slots' tensors as one [n, ...] stack, to read or update in place. It is the tensor they
    are already slices of (left so by `adopt`); otherwise (fresh state, a checkpoint just loaded,
    other blocks in the batch) they are stacked once and adopted."""
    tensors = [state[key] for state, key in slots]
    base = tensors[0]._base
    if base is not None and base.shape[0] == len(tensors) and base.is_contiguous():
        step = base[0].numel() * base.element_size()
        if all(t._base is base and t.data_ptr() == base.data_ptr() + i * step for i, t in enumerate(tensors)):
            return base
    return adopt(slots, torch.stack(tensors))


def adopt(slots: Sequence[Slot], stack: torch.Tensor) -> torch.Tensor:
    """Make each slot's tensor its slice of `stack` (no copy); returns `stack`."""
    for (state, key), view in zip(slots, stack.unbind(0)):
        state[key] = view
    return stack
