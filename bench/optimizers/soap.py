"""SOAP: Adam in the eigenbasis of Shampoo's preconditioner (the study's "soape", registry name soap).

Paper: Vyas et al., "SOAP: Improving and Stabilizing Shampoo using Adam", arXiv 2409.11321.
Reference checked: nikhilvyas/SOAP (soap.py, the authors' code) and the study's Levanter port
(src/levanter/optim/soap.py, `scale_by_soap`). Per block G of a matrix (blocks: blocks.py):
  L <- shampoo_beta L + (1 - shampoo_beta) G G^T,   R <- shampoo_beta R + (1 - shampoo_beta) G^T G
  G' = QL^T G QR,  v <- beta2 v + (1 - beta2) G'^2,  m <- beta1 m + (1 - beta1) G
  U = QL ((QL^T m QR) / (sqrt(v) + epsilon)) QR^T,   W <- W (1 - lr wd) - lr sqrt(1-beta2^t)/(1-beta1^t) U
QL, QR start as the eigenvectors of L, R (torch.linalg.eigh, descending eigenvalues) from the first
gradient, which is used for nothing else (that step changes no weights). Every
`precondition_frequency` steps, after L and R take the step's gradient, each basis is refreshed by
one power-iteration step and a QR decomposition, columns sorted by estimated eigenvalue, and v's
entries permuted to follow them (the reference's get_orthogonal_matrix_QR). eigh/QR never run
between refreshes.

Where the two references differ, the `study` variant (the default) follows the authors' unless
said otherwise: the bias correction counts the moment updates (Levanter's counts the skipped first
step too) and the refresh uses L, R after this step's gradient (Levanter's uses the previous ones).
Like both, m is kept in the original basis (Levanter; the authors' code re-rotates a rotated m, the
same numbers up to rounding) and the first step is skipped. Where `study` and `authors` differ:
  - weight decay: `study` decays before the update, W (1 - lr wd) - lr s U, as Levanter's chain
    (add_decayed_weights after scale_by_soap, so the decay reads the old weights); `authors` decays
    after it, (W - lr s U)(1 - lr wd), as nikhilvyas/SOAP's step (p.add_ then p.add_(p, -lr wd));
  - `max_precond_dim` (default 10000, a vocabulary): `study` preconditions a side only if it is
    < max_precond_dim (Levanter's _get_preconditioner_types: `s >= max_precond_dim` is unrotated);
    `authors` if it is <= max_precond_dim (their `sh > max_precond_dim` leaves a side unrotated).
The authors' code has no blocks: with partition_grads_into_blocks=False (or blocks as large as the
matrix) `authors` is their update; with blocks it is their update per block.
Code read: nikhilvyas/SOAP soap.py at a1e553530fde97d0e6b307d7c82ac6d38b072340; stanford-crfm/levanter
src/levanter/optim/soap.py at 1fe50e5bebd422cdf7cb2b023a6e0da56a773200.

Parameters: the study ran SOAP on every parameter. A side larger than max_precond_dim (a
vocabulary) gets no preconditioner, in both references. 1-D parameters (norm gains) take plain
Adam with the same bias correction, as the authors' default (precondition_1d=False); Levanter instead
preconditions them with a full 1-D Gram matrix (in both variants we follow the authors here).
Levanter's merge_small_dims (which would flatten the CPU ladder's small matrices into vectors; it
never triggers at the study's sizes) is not reproduced.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Iterable, Mapping, NamedTuple

import torch
from torch import Tensor

from bench.optimizers.base import Optimizer
from bench.optimizers.blocks import Block, Slot, adopt, assemble, by_signature, partition, stacked
from bench.optimizers.common import TRAIN_DEFAULTS, decay_groups
from bench.optimizers.registry import OptimizerDef, register, variant_of
from bench.roles import Role, TaggedParam


class _Job(NamedTuple):
    """One block of one matrix: param index, block index, where it lies, which sides rotate."""

    param: int
    index: int
    block: Block
    left: bool
    right: bool

    @property
    def signature(self) -> tuple:
        return self.block.shape, self.left, self.right


@lru_cache(maxsize=None)
def _blocks(shape: tuple[int, ...], block_size: int, max_dim: int, inclusive: bool) -> tuple[bool, bool, list[Block]]:
    """Which sides rotate and the blocks. A side rotates below max_dim, or at it when `inclusive`
    (the authors' comparison; the study's is strict)."""
    left, right = ((side <= max_dim) if inclusive else (side < max_dim) for side in shape)
    return left, right, partition(shape, block_size, left, right)


def _layout(shape: tuple[int, ...], group: Mapping[str, Any]) -> tuple[bool, bool, list[Block]]:
    size = group["block_size"] if group["partition_grads_into_blocks"] else 0
    return _blocks(shape, size, group["max_precond_dim"], group["variant"] == "authors")


def _rotate(x: Tensor, ql: Tensor | None, qr: Tensor | None) -> Tensor:
    """Into the eigenbasis: QL^T X QR."""
    if ql is not None:
        x = ql.mT @ x
    return x if qr is None else x @ qr


def _rotate_back(x: Tensor, ql: Tensor | None, qr: Tensor | None) -> Tensor:
    """Out of the eigenbasis: QL X QR^T."""
    if ql is not None:
        x = ql @ x
    return x if qr is None else x @ qr.mT


def eigenbasis(gram: Tensor) -> Tensor:
    """Eigenvectors of symmetric `gram` (batched) as columns, largest eigenvalue first (computed in
    float64, returned in gram's dtype). Where LAPACK does not converge (MKL on Intel CPUs, for a
    Gram matrix of mostly zero rows: an embedding block whose tokens a small batch lacks), again
    with 1e-30 I added, as the authors' get_orthogonal_matrix always adds: in float64 that moves
    only diagonal entries below about 1e-14, so a matrix that converged is never touched."""
    gram64 = gram.double()
    try:
        vectors = torch.linalg.eigh(gram64).eigenvectors
    except torch.linalg.LinAlgError:
        eye = torch.eye(gram.shape[-1], dtype=torch.float64, device=gram.device)
        vectors = torch.linalg.eigh(gram64 + 1e-30 * eye).eigenvectors
    return vectors.flip(-1).to(gram.dtype)


def power_qr(gram: Tensor, q: Tensor, v: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """One power-iteration step from basis `q`, orthonormalised by QR (batched).

    q's columns are first sorted by their Rayleigh quotients diag(q^T gram q), largest first, and
    the second moment `v` is permuted the same way along `dim` (-2 for L, -1 for R).
    """
    gq = gram @ q
    order = (q * gq).sum(-2).argsort(dim=-1, descending=True, stable=True)
    gq = gq.gather(-1, order.unsqueeze(-2).expand_as(gq))
    index = order.unsqueeze(-1) if dim == -2 else order.unsqueeze(-2)
    q_new = torch.linalg.householder_product(*torch.geqrf(gq))  # QR's Q, without forming R
    return q_new, v.gather(dim, index.expand_as(v))


class Soap(Optimizer):
    """SOAP (see module doc). 1-D params and matrices too large on both sides take Adam."""

    later_options = {"max_precond_dim": 10000, "variant": "study"}

    def __init__(self, params: Iterable[Any], lr: float, betas: tuple[float, float] = (0.95, 0.98),
                 shampoo_beta: float = 0.95, eps: float = 1e-15, weight_decay: float = 0.0,
                 precondition_frequency: int = 1, block_size: int = 256,
                 partition_grads_into_blocks: bool = True, max_precond_dim: int = 10000,
                 variant: str = "study") -> None:
        defaults = dict(lr=lr, betas=betas, shampoo_beta=shampoo_beta, eps=eps,
                        weight_decay=weight_decay, precondition_frequency=precondition_frequency,
                        block_size=block_size, partition_grads_into_blocks=partition_grads_into_blocks,
                        max_precond_dim=max_precond_dim, variant=variant)
        super().__init__(params, defaults)

    def update_group(self, params: list[Tensor], group: dict[str, Any]) -> None:
        fresh = [p for p in params if "step" not in self.state[p]]
        ready = [p for p in params if "step" in self.state[p]]
        if fresh:
            self._init_state(fresh, group)
        if ready:
            self._update(ready, group)

    # -- bookkeeping -------------------------------------------------------------------------

    def _jobs(self, params: list[Tensor], group: Mapping[str, Any]) -> list[_Job]:
        """Every rotated block of every matrix in `params` (Adam-only params have none)."""
        jobs = []
        for i, p in enumerate(params):
            if p.ndim != 2:
                continue
            left, right, blocks = _layout(tuple(p.shape), group)
            if left or right:
                jobs += [_Job(i, k, b, left, right) for k, b in enumerate(blocks)]
        return jobs

    def _slots(self, params: list[Tensor], jobs: list[_Job], key: str) -> list[Slot]:
        """Where the blocks' state `key` lives (e.g. "L" -> L.0, L.1, ...; blocks.py)."""
        return [(self.state[params[j.param]], f"{key}.{j.index}") for j in jobs]

    # -- first step: the preconditioners and their eigenbases, no update -----------------------

    def _init_state(self, params: list[Tensor], group: Mapping[str, Any]) -> None:
        for p in params:
            state = self.state[p]
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        jobs = self._jobs(params, group)
        for idx in by_signature([j.signature for j in jobs]).values():
            batch = [jobs[i] for i in idx]
            g = torch.stack([params[j.param].grad[j.block.rows, j.block.cols] for j in batch])
            sides = (("L", batch[0].left, lambda: g @ g.mT), ("R", batch[0].right, lambda: g.mT @ g))
            for key, on, outer in sides:
                if on:
                    gram = (1.0 - group["shampoo_beta"]) * outer()  # lerp from zero
                    adopt(self._slots(params, batch, key), gram)
                    adopt(self._slots(params, batch, f"Q{key}"), eigenbasis(gram))

    # -- later steps ---------------------------------------------------------------------------

    def _update(self, params: list[Tensor], group: Mapping[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        states = [self.state[p] for p in params]
        for state in states:
            state["step"] += 1
        exp_avgs = [s["exp_avg"] for s in states]
        torch._foreach_lerp_(exp_avgs, [p.grad for p in params], 1.0 - beta1)

        updates: list[Tensor | None] = [None] * len(params)
        jobs = self._jobs(params, group)
        pieces: dict[int, dict[int, Tensor]] = {j.param: {} for j in jobs}
        for idx in by_signature([j.signature for j in jobs]).values():
            batch = [jobs[i] for i in idx]
            for j, u in zip(batch, self._precondition(params, batch, group)):
                pieces[j.param][j.index] = u
        for i, blocks in pieces.items():
            layout = _layout(tuple(params[i].shape), group)[2]
            updates[i] = assemble([blocks[k] for k in range(len(layout))], layout)
        self._adam(params, updates, group)

        lr, wd = group["lr"], group["weight_decay"]
        decay_first = group["variant"] == "study"  # the authors decay after the update
        if wd and decay_first:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        scales = [-lr * math.sqrt(1.0 - beta2 ** s["step"]) / (1.0 - beta1 ** s["step"]) for s in states]
        torch._foreach_mul_(updates, scales)
        torch._foreach_add_(params, updates)
        if wd and not decay_first:
            torch._foreach_mul_(params, 1.0 - lr * wd)

    def _adam(self, params: list[Tensor], updates: list[Tensor | None], group: Mapping[str, Any]) -> None:
        """Plain Adam direction m / (sqrt(v) + eps) for the params no block covers."""
        idx = [i for i, u in enumerate(updates) if u is None]
        if not idx:
            return
        grads = [params[i].grad for i in idx]
        sqs = [self.state[params[i]]["exp_avg_sq"] for i in idx]
        torch._foreach_mul_(sqs, group["betas"][1])
        torch._foreach_addcmul_(sqs, grads, grads, value=1.0 - group["betas"][1])
        denom = torch._foreach_sqrt(sqs)
        torch._foreach_add_(denom, group["eps"])
        for i, u in zip(idx, torch._foreach_div([self.state[params[i]]["exp_avg"] for i in idx], denom)):
            updates[i] = u

    def _precondition(self, params: list[Tensor], jobs: list[_Job], group: Mapping[str, Any]) -> list[Tensor]:
        """Adam in the eigenbasis for blocks of one shape, batched; updates L, R, v and the bases."""
        _, beta2 = group["betas"]
        views = [(self.state[params[j.param]], j.block) for j in jobs]
        g = torch.stack([params[j.param].grad[j.block.rows, j.block.cols] for j in jobs])
        m = torch.stack([s["exp_avg"][b.rows, b.cols] for s, b in views])
        v_targets = [s["exp_avg_sq"][b.rows, b.cols] for s, b in views]
        v = torch.stack(v_targets)
        left, right = jobs[0].left, jobs[0].right
        ql = stacked(self._slots(params, jobs, "QL")) if left else None
        qr = stacked(self._slots(params, jobs, "QR")) if right else None

        g_rot = _rotate(g, ql, qr)
        v.mul_(beta2).addcmul_(g_rot, g_rot, value=1.0 - beta2)
        update = _rotate_back(_rotate(m, ql, qr) / (v.sqrt() + group["eps"]), ql, qr)

        refresh = self.state[params[jobs[0].param]]["step"] % group["precondition_frequency"] == 0
        for key, q, outer, dim in (("L", ql, lambda: g @ g.mT, -2), ("R", qr, lambda: g.mT @ g, -1)):
            if q is None:
                continue
            gram = stacked(self._slots(params, jobs, key)).lerp_(outer(), 1.0 - group["shampoo_beta"])
            if refresh:
                q, v = power_qr(gram, q, v, dim)
                adopt(self._slots(params, jobs, f"Q{key}"), q)
        torch._foreach_copy_(v_targets, list(v.unbind(0)))  # v is slices of exp_avg_sq: copied back
        return list(update.unbind(0))


def build(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module) -> Soap:
    groups = decay_groups(params, hp["learning_rate"], hp)
    return Soap(groups, lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]),
                shampoo_beta=hp["shampoo_beta"], eps=hp["epsilon"],
                precondition_frequency=hp["precondition_frequency"], block_size=hp["block_size"],
                partition_grads_into_blocks=hp["partition_grads_into_blocks"],
                max_precond_dim=hp["max_precond_dim"], variant=variant_of(hp))


register(OptimizerDef(
    name="soap",
    family="matrix",
    build=build,
    # The study's best 130m / 1x config (Analysis/Results/soape/130m/1/result.json) for SOAP's own
    # keys; warmup and batch for the CPU ladder, and its learning rate: 0.032 was best of
    # 0.008 / 0.016 / 0.032 / 0.064 on cpu-xs at 1x (eval loss 3.384 / 3.216 / 3.164 / 3.165).
    defaults={**TRAIN_DEFAULTS, "learning_rate": 0.032, "warmup": 0.05,
              "beta1": 0.95, "beta2": 0.98, "shampoo_beta": 0.95, "epsilon": 1e-15,
              "precondition_frequency": 1, "block_size": 256, "partition_grads_into_blocks": True,
              "weight_decay": 0.1, "max_precond_dim": 10000, "variant": "study"},
    added_later=frozenset({"max_precond_dim", "variant"}),
    differences=("weight decay: study before the update (Levanter), authors after it",
                 "a side of exactly max_precond_dim: study leaves it unrotated, authors rotates it"),
    roles={Role.HIDDEN: "SOAP per block, decayed", Role.HEAD: "SOAP per block, decayed",
           Role.EMBEDDING: "SOAP per block (a side above max_precond_dim unrotated), no decay",
           Role.NORM: "Adam (SOAP's 1-D default), no decay", Role.BIAS: "Adam, no decay"},
    paper="Vyas et al., SOAP: Improving and Stabilizing Shampoo using Adam, arXiv:2409.11321",
    source="ours, following nikhilvyas/SOAP soap.py (a1e5535) and the study's Levanter scale_by_soap; "
           "checked against eigh/QR computed directly, torch.optim.AdamW in a fixed basis and (authors) "
           "a float64 transcription of soap.py",
    notes="the study's data calls it 'soape'; 1-D params take Adam (Levanter preconditions them)",
))
