"""What one trial spread over N GPUs sends per optimizer step, and how long the links take to carry it.

The volumes follow bench/run/distributed.py as it communicates, in fp32 (the master copy, its
gradients and FSDP's shards are fp32; autocast changes only the compute), with P parameters:
- ddp: one all-reduce of every gradient per step;
- fsdp: per micro-batch, FSDP2 all-gathers the parameters for the forward, the blocks' again for the
  backward (resharded in between; the root's, embeddings, head and final norm, stay gathered), and
  reduce-scatters the gradients; per step, the full gradients are gathered into the master copy
  and each owner broadcasts its new parameters (not for optimizers stepped on every rank,
  bench.run.distributed.REPLICATED).
Time follows NCCL's bus-bandwidth model: an all-reduce of S bytes takes 2(N-1)/N x S / B, an
all-gather or a reduce-scatter (N-1)/N x S / B, a broadcast S / B, where B is the slowest link the
ring crosses: the GPU's own (NVLink, or PCIe) within a node of GPUS_PER_NODE, INTER_NODE_BYTES_S
across nodes. Nothing is counted as overlapped with compute (the all-reduce waits for the whole
backward; FSDP2's prefetch hides some of its gathers), and the links run at their datasheet rates,
of which NCCL reaches most but not all.
"""
from __future__ import annotations

import math

FP32 = 4
GPUS_PER_NODE = 8  # an HGX/DGX board; a trial over more GPUs spans nodes
INTER_NODE_BYTES_S = 50e9  # one 400 Gb/s InfiniBand NDR port per GPU, each way (DGX H100's design)


def bus_bytes(params: int, in_blocks: int, procs: int, parallel: str, micro_batches: int,
              replicated: bool = False) -> float:
    """Bytes per optimizer step in bus-bandwidth terms (the module doc), `params` in all, `in_blocks`
    of them in the transformer blocks: each GPU's link carries them once, so the step's
    communication lasts bus_bytes / B."""
    if procs <= 1:
        return 0.0
    share = (procs - 1) / procs
    if parallel == "ddp":
        return 2 * share * FP32 * params
    per_micro_batch = 2 * params + in_blocks  # forward gather, reduce-scatter; the blocks' backward gather
    gathered = (micro_batches * per_micro_batch + params) * share  # + the full gradients, once
    return FP32 * (gathered + (0 if replicated else params))


def link_bytes_s(own: float | None, procs: int) -> float:
    """The slowest link a trial's ring crosses, bytes/s each way: the GPU's own (`own`, None when
    unknown) within a node, InfiniBand across nodes; NaN when unknown."""
    if own is None:
        return math.nan
    return min(own, INTER_NODE_BYTES_S) if procs > GPUS_PER_NODE else own


def link_name(procs: int) -> str:
    return "InfiniBand across nodes" if procs > GPUS_PER_NODE else "within a node"
