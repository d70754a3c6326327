"""PSGD Kron: momentum preconditioned by a learned Kronecker product of triangular factors.

Papers: Li, "Preconditioned Stochastic Gradient Descent", arXiv 1512.04202 (PSGD, its Kronecker
preconditioner and the fitting criterion); the Kron variant as implemented by Li (lixilinx/psgd_torch)
and Evan Walters (evanatyourservice/kron_torch, PyPI `kron-torch`).
Reference checked: the study's Levanter port (src/levanter/optim/kron.py, `scale_by_kron`, itself
from evanatyourservice's psgd_jax) line by line, and kron-torch 0.3.3 (our test matches it step by
step). For each block G of the bias-corrected momentum m (blocks.py), with factors QL, QR (upper
triangular; diagonal for a side longer than 25000 and for 1-D params) and P = QL^T QL (x) QR^T QR:
  if this step updates the preconditioner (see below):
    V ~ N(0, 1);  G~ = G + sqrt(eps_f32) mean|m| V;  A = QL G~ QR^T;  B = QL^-T V QR^-1
    QL <- QL - preconditioner_lr / ||A A^T + B B^T||_lb * triu(A A^T - B B^T) QL   (QR: A^T A, B^T B)
  update = QL^T QL G QR^T QR, clipped to RMS 1.1 per parameter;  W <- W - lr (update + wd W)
(||.||_lb is Li's cheap lower bound of the spectral norm; a diagonal factor uses max |.| and no triu.)
normalize_grads divides each gradient by its norm before the momentum; the factors are rescaled to
equal max-norms every 100 preconditioner updates (Levanter; it leaves P unchanged).

Preconditioner updates follow Levanter's schedule, which is deterministic: the update probability is
p(t) = clip(exp(-0.001 (t - update_prob_flat_start)), preconditioner_update_probability, 1) and the
preconditioner is updated whenever a counter reaches 1/p(t). The only randomness is the probe V, drawn
from the optimizer's own torch.Generator (seeded with a constant) whose state, with the step and
update counters, lives in self.state["kron"] so a checkpoint restores it. The `noise` hook replaces
that draw: noise(params) returns one probe per param (each param's shape), which is how a test steps
Kron beside another implementation on the same probes (tests/optimizers/test_kron.py, kron-torch).

Parameters: the study ran Kron on every parameter (embedding, head, hidden, norm gains). Not
reproduced from Levanter: merge_small_dims (it never triggers at the study's sizes but would
flatten the CPU ladder's matrices into vectors) and the zero padding of blocks (blocks.py).
kron-torch differs from Levanter in three ways `study` follows Levanter on: it preconditions the
probe-damped momentum (an in-place side effect), balances the factors at random (p = 0.01), and
counts the schedule from step 0.

Two variants (the `variant` hyperparameter). `study` (default) is the above. `authors` is kron-torch
0.3.3 (PyPI, evanatyourservice/kron_torch, kron_torch/kron.py), read line by line; where it differs:
  - it preconditions the damped momentum m_hat + sqrt(eps_f32) mean|m_hat| V on the steps that fit
    the factors (its `G += ...` acts on the tensor it then preconditions), not m_hat;
  - it draws a coin every step and rebalances the factors (to the geometric mean of their max-abs
    norms, exp(mean(log))) on a fitting step whose coin is < 0.01, not every 100th fit. Its coin is
    a random.Random(42) of the optimizer's own; ours is the same generator, replayed from the step
    count the checkpoint holds, so a resumed run draws the same coins and the test needs no hook;
  - its schedule (precond_update_prob_schedule, in float32) is p(n) at n = 0, 1, ...: the
    probability of step t is Levanter's of step t - 1;
  - a side longer than 8192 (its max_size_triangular), not 25000, gets a diagonal factor;
  - and, the same up to rounding: the update is clipped by min(1, 1.1 / (rms + 1e-12)) and stepped
    as W - lr (u + wd W).
Alike in both: the factor algebra (A = QL G~ QR^T, B = QL^-T V QR^-1, triu, Li's lower bound, the
diagonal rule), initial factors, bias-corrected momentum, one schedule and one probe per param.
Hyperparameter values stay ours in both (docs/DESIGN.md): the schedule takes
preconditioner_update_probability as its min_prob and update_prob_flat_start as its flat_start;
kron-torch has no normalize_grads (False is its behaviour) and no blocks (partition_grads_into_blocks
False is its whole-matrix factors; with blocks `authors` is its update per block); it decays params
of 2 or more dims, which on a Llama is decay_roles "hidden,head,embedding". Probes come from our
generator in both (kron-torch draws torch.randn_like from the global one); the `noise` hook feeds a
test's probes to ours. merge_dims (3-D and up) is not reproduced: Kron here takes 1-D and 2-D params.
"""
from __future__ import annotations

import math
import random
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import torch
from torch import Tensor

from bench.optimizers.base import Optimizer, run_closure
from bench.optimizers.blocks import Block, Slot, adopt, assemble, by_signature, partition, stacked
from bench.optimizers.common import TRAIN_DEFAULTS, decay_groups
from bench.optimizers.registry import OptimizerDef, register, variant_of
from bench.roles import Role, TaggedParam

MAX_SIZE_TRIANGULAR = 25000  # Levanter's KronConfig default: longer sides get a diagonal factor
AUTHORS_MAX_SIZE_TRIANGULAR = 8192  # kron-torch's default
AUTHORS_BALANCE_PROB = 0.01  # kron-torch's coin: balance on a fitting step when rng.random() < this
AUTHORS_CLIP_EPS = 1e-12  # kron-torch's _clip_update_rms: 1.1 / (rms + 1e-12)
BALANCE_EVERY = 100  # preconditioner updates between factor rebalancings
RMS_CLIP = 1.1  # optax.clip_by_block_rms(1.1) in Levanter's chain
PROB_DECAY = 0.001  # precond_update_prob_schedule's decay
DAMPING = math.sqrt(torch.finfo(torch.float32).eps)
TINY = torch.finfo(torch.float32).tiny
SEED = 42  # the probe generator's seed (a constant: runs differ only by their own seed)
STATE_KEY = "kron"


def update_probability(step: int, min_prob: float, flat_start: int) -> float:
    """Levanter's precond_update_prob_schedule: 1 for `flat_start` steps, then exponential decay."""
    if step <= flat_start:  # exp would give >= 1 (and overflow a float far before flat_start)
        return 1.0
    return min(max(math.exp(-PROB_DECAY * (step - flat_start)), min_prob), 1.0)


def _tick(step: int, counter: int, min_prob: float, flat_start: int) -> tuple[bool, int]:
    """One step of the deterministic schedule: (fit the factors now?, the counter after)."""
    counter += 1
    if counter < 1.0 / update_probability(step, min_prob, flat_start):
        return False, counter
    return True, 0


def authors_update_due(step: int, counter: int, min_prob: float, flat_start: int) -> tuple[bool, int]:
    """kron-torch's schedule step: its float32 p(n) at n = step - 1, counter >= 1 / p fits."""
    f32 = torch.float32
    n = torch.tensor(float(step - 1), dtype=f32)
    decay = torch.tensor(PROB_DECAY, dtype=f32)
    prob = torch.exp(-decay * (n - torch.tensor(float(flat_start), dtype=f32)))
    prob = prob.clamp(min=torch.tensor(min_prob, dtype=f32), max=torch.tensor(1.0, dtype=f32))
    counter += 1
    if counter >= (1 / prob).item():
        return True, 0
    return False, counter


def update_fraction(steps: int, min_prob: float, flat_start: int) -> float:
    """The share of a `steps`-long run's steps that fit the preconditioner factors."""
    counter, updates = 0, 0
    for step in range(1, steps + 1):
        update, counter = _tick(step, counter, min_prob, flat_start)
        updates += update
    return updates / max(1, steps)


class _Job(NamedTuple):
    """One block of one parameter; a 1-D parameter is one block with only a (diagonal) right factor."""

    param: int
    index: int
    block: Block | None  # None: the whole 1-D parameter
    left_diag: bool | None  # None: no left factor (1-D)
    right_diag: bool
    length: int = 0  # a 1-D parameter's: vectors batch by length (MLA's latent norms are narrower)

    @property
    def signature(self) -> tuple:
        shape = (self.length,) if self.block is None else self.block.shape
        return shape, self.left_diag, self.right_diag


@lru_cache(maxsize=None)
def _layout(shape: tuple[int, ...], block_size: int,
            max_triangular: int = MAX_SIZE_TRIANGULAR) -> tuple[bool, bool, list[Block]]:
    """Which sides of a matrix get diagonal factors, and its blocks (diagonal sides are not cut)."""
    left_diag, right_diag = (d == 1 or d > max_triangular for d in shape)
    return left_diag, right_diag, partition(shape, block_size, not left_diag, not right_diag)


# -- the preconditioner factor algebra, batched over blocks of one signature ------------------

def norm_lower_bound(a: Tensor) -> Tensor:
    """Li's cheap lower bound of the spectral norm of symmetric matrices a[n] (0 for a zero matrix)."""
    max_abs = a.abs().amax(dim=(-2, -1))
    a = a / torch.where(max_abs > 0, max_abs, 1.0)[:, None, None]
    col = (a * a).sum(-2).argmax(-1)  # the column of largest norm
    x = a.gather(-1, col[:, None, None].expand(-1, a.shape[-2], 1)).mT  # [n, 1, k]
    x = x @ a
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(TINY)
    return torch.where(max_abs > 0, max_abs * (x @ a.mT).norm(dim=(-2, -1)), 0.0)


def _left(q: Tensor, x: Tensor, diag: bool) -> Tensor:
    """Q x (Q acting on the rows of x)."""
    return q.unsqueeze(-1) * x if diag else q @ x


def _right_t(x: Tensor, q: Tensor, diag: bool) -> Tensor:
    """x Q^T (Q acting on the columns of x)."""
    return x * q.unsqueeze(-2) if diag else x @ q.mT


def _left_t(q: Tensor, x: Tensor, diag: bool) -> Tensor:
    """Q^T x."""
    return q.unsqueeze(-1) * x if diag else q.mT @ x


def _right(x: Tensor, q: Tensor, diag: bool) -> Tensor:
    """x Q."""
    return x * q.unsqueeze(-2) if diag else x @ q


def _solve_left_t(q: Tensor, x: Tensor, diag: bool) -> Tensor:
    """Q^-T x."""
    return x / q.unsqueeze(-1) if diag else torch.linalg.solve_triangular(q.mT, x, upper=False)


def _solve_right(x: Tensor, q: Tensor, diag: bool) -> Tensor:
    """x Q^-1."""
    return x / q.unsqueeze(-2) if diag else torch.linalg.solve_triangular(q, x, upper=True, left=False)


def _gram(x: Tensor, diag: bool, dim: int) -> Tensor:
    """x x^T (dim -2, the left factor) or x^T x (dim -1); only the diagonal for a diagonal factor."""
    if diag:
        return (x * x).sum(-1 if dim == -2 else -2)
    return x @ x.mT if dim == -2 else x.mT @ x


def _fit(q: Tensor, term_a: Tensor, term_b: Tensor, lr: float, diag: bool) -> Tensor:
    """One step of PSGD's fitting rule for factor q given A-term and B-term."""
    if diag:
        scale = lr / ((term_a + term_b).abs().amax(-1, keepdim=True) + TINY)
        return q - scale * (term_a - term_b) * q
    scale = lr / (norm_lower_bound(term_a + term_b) + TINY)
    return q - scale[:, None, None] * torch.triu(term_a - term_b) @ q


def _balance(ql: Tensor, qr: Tensor) -> tuple[Tensor, Tensor]:
    """Rescale two factors to the geometric mean of their max-abs norms (their product is kept)."""
    nl, nr = ql.abs().flatten(1).amax(-1), qr.abs().flatten(1).amax(-1)
    mean = (nl * nr).sqrt()
    shape = (-1,) + (1,) * (ql.ndim - 1)
    return ql * (mean / nl).view(shape), qr * (mean / nr).view((-1,) + (1,) * (qr.ndim - 1))


def _balance_authors(ql: Tensor, qr: Tensor) -> tuple[Tensor, Tensor]:
    """kron-torch's _balance_Q: the same rescale, the mean taken as exp(mean(log))."""
    norms = torch.stack([ql.abs().flatten(1).amax(-1), qr.abs().flatten(1).amax(-1)])
    scale = norms.log().mean(0).exp() / norms
    return ql * scale[0].view((-1,) + (1,) * (ql.ndim - 1)), qr * scale[1].view((-1,) + (1,) * (qr.ndim - 1))


def _max_triangular(group: Mapping[str, Any]) -> int:
    return AUTHORS_MAX_SIZE_TRIANGULAR if group["variant"] == "authors" else MAX_SIZE_TRIANGULAR


class Kron(Optimizer):
    """PSGD Kron (see module doc)."""

    later_options = {"variant": "study"}

    def __init__(self, params: Iterable[Any], lr: float, b1: float = 0.9, weight_decay: float = 0.0,
                 normalize_grads: bool = False, preconditioner_update_probability: float = 0.05,
                 update_prob_flat_start: int = 500, preconditioner_lr: float = 0.1,
                 preconditioner_init_scale: float = 1.0, block_size: int = 256,
                 partition_grads_into_blocks: bool = True,
                 noise: Callable[[list[Tensor]], list[Tensor]] | None = None, variant: str = "study") -> None:
        defaults = dict(lr=lr, b1=b1, weight_decay=weight_decay, normalize_grads=normalize_grads,
                        preconditioner_update_probability=preconditioner_update_probability,
                        update_prob_flat_start=update_prob_flat_start, preconditioner_lr=preconditioner_lr,
                        preconditioner_init_scale=preconditioner_init_scale, block_size=block_size,
                        partition_grads_into_blocks=partition_grads_into_blocks, variant=variant)
        super().__init__(params, defaults)
        self.noise = noise  # the probe hook (module doc); not state: a checkpoint never holds it
        self._coin: tuple[random.Random, int] | None = None  # authors: the coin and its draws so far

    def _global(self, device: torch.device) -> dict[str, Any]:
        if STATE_KEY not in self.state:
            gen = torch.Generator(device=device).manual_seed(SEED)
            self.state[STATE_KEY] = {"step": 0, "update_counter": 0, "balance_counter": 0,
                                     "rng": gen.get_state()}
        return self.state[STATE_KEY]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = run_closure(closure)
        groups = list(self.groups_with_grads())  # one schedule and generator across the groups
        if not groups:
            return loss
        glob = self._global(groups[0][1][0].device)
        update, balance = self._schedule(glob)
        gen = torch.Generator(device=groups[0][1][0].device)
        gen.set_state(glob["rng"])
        for group, params in groups:
            self._update_group(params, group, glob["step"], gen if update else None, balance)
        glob["rng"] = gen.get_state()
        return loss

    def _schedule(self, glob: dict[str, Any]) -> tuple[bool, bool]:
        """Advance the counters: does this step fit the factors, and rebalance them first?"""
        if self.param_groups[0]["variant"] == "authors":
            return self._authors_schedule(glob)
        glob["step"] += 1
        first = self.param_groups[0]  # one schedule for all params, as both references
        update, glob["update_counter"] = _tick(glob["step"], glob["update_counter"],
                                               first["preconditioner_update_probability"],
                                               first["update_prob_flat_start"])
        if not update:
            return False, False
        glob["balance_counter"] += 1
        if glob["balance_counter"] < BALANCE_EVERY:
            return True, False
        glob["balance_counter"] = 0
        return True, True

    def _authors_schedule(self, glob: dict[str, Any]) -> tuple[bool, bool]:
        """kron-torch's: its float32 schedule counted from 0, and a coin drawn every step."""
        coin = self._coin_after(glob["step"]).random()
        glob["step"] += 1
        self._coin = (self._coin[0], glob["step"])
        first = self.param_groups[0]
        update, glob["update_counter"] = authors_update_due(glob["step"], glob["update_counter"],
                                                            first["preconditioner_update_probability"],
                                                            first["update_prob_flat_start"])
        return update, update and coin < AUTHORS_BALANCE_PROB

    def _coin_after(self, draws: int) -> random.Random:
        """kron-torch's random.Random(42), positioned after `draws` draws (replayed after a resume)."""
        if self._coin is None or self._coin[1] != draws:
            rng = random.Random(SEED)
            for _ in range(draws):
                rng.random()
            self._coin = (rng, draws)
        return self._coin[0]

    # -- per group ----------------------------------------------------------------------------

    def _jobs(self, params: list[Tensor], group: Mapping[str, Any]) -> list[_Job]:
        size = group["block_size"] if group["partition_grads_into_blocks"] else 0
        jobs = []
        for i, p in enumerate(params):
            if p.ndim == 1:
                jobs.append(_Job(i, 0, None, None, True, p.numel()))
            elif p.ndim == 2:
                left_diag, right_diag, blocks = _layout(tuple(p.shape), size, _max_triangular(group))
                jobs += [_Job(i, k, b, left_diag, right_diag) for k, b in enumerate(blocks)]
            else:
                raise ValueError("Kron here handles 1-D and 2-D parameters")
        return jobs

    def _init_state(self, params: list[Tensor], jobs: list[_Job], group: Mapping[str, Any]) -> None:
        """Zero momentum and factors scale^(1/ndim) * identity (ones for a diagonal factor)."""
        for p in params:
            if "mu" not in self.state[p]:
                self.state[p]["mu"] = torch.zeros_like(p)
        init = group["preconditioner_init_scale"]
        for j in jobs:
            p, state = params[j.param], self.state[params[j.param]]
            if f"QR.{j.index}" in state:
                continue
            if j.block is None:
                state["QR.0"] = torch.full_like(p, init)
                continue
            for key, size, diag in (("QL", j.block.shape[0], j.left_diag),
                                    ("QR", j.block.shape[1], j.right_diag)):
                eye = torch.ones(size, dtype=p.dtype, device=p.device) if diag else \
                    torch.eye(size, dtype=p.dtype, device=p.device)
                state[f"{key}.{j.index}"] = init**0.5 * eye

    def _update_group(self, params: list[Tensor], group: Mapping[str, Any], step: int,
                      gen: torch.Generator | None, balance: bool) -> None:
        jobs = self._jobs(params, group)
        self._init_state(params, jobs, group)
        grads = [p.grad for p in params]
        if group["normalize_grads"]:
            norms = torch._foreach_norm(grads)
            torch._foreach_add_(norms, 1e-16)
            grads = torch._foreach_div(grads, norms)
        moms = [self.state[p]["mu"] for p in params]
        torch._foreach_lerp_(moms, grads, 1.0 - group["b1"])
        debiased = torch._foreach_div(moms, 1.0 - group["b1"] ** step)
        probes = damping = None
        if gen is not None:  # probes in param order, so blocking and grouping never change them
            probes = self.noise(params) if self.noise else [
                torch.randn(p.shape, generator=gen, dtype=p.dtype, device=gen.device).to(p.device) for p in params]
            damping = [DAMPING * m.abs().mean() for m in debiased]

        pieces: dict[int, dict[int, Tensor]] = {i: {} for i in range(len(params))}
        for idx in by_signature([j.signature for j in jobs]).values():
            batch = [jobs[i] for i in idx]
            for j, u in zip(batch, self._precondition(params, batch, group, debiased, probes,
                                                      damping, balance)):
                pieces[j.param][j.index] = u
        updates = [self._assemble(p, pieces[i], group) for i, p in enumerate(params)]
        self._apply(params, updates, group)

    def _assemble(self, p: Tensor, blocks: dict[int, Tensor], group: Mapping[str, Any]) -> Tensor:
        if p.ndim == 1:
            return blocks[0]
        size = group["block_size"] if group["partition_grads_into_blocks"] else 0
        layout = _layout(tuple(p.shape), size, _max_triangular(group))[2]
        return assemble([blocks[k] for k in range(len(layout))], layout)

    @staticmethod
    def _apply(params: list[Tensor], updates: list[Tensor], group: Mapping[str, Any]) -> None:
        """Clip each update to RMS 1.1, then W <- W - lr (u + wd W)."""
        if group["variant"] == "authors":
            _apply_authors(params, updates, group)
            return
        denom = torch._foreach_norm(updates)  # -> max(1, rms / 1.1), all on the device
        torch._foreach_mul_(denom, [1.0 / (RMS_CLIP * math.sqrt(u.numel())) for u in updates])
        torch._foreach_clamp_min_(denom, 1.0)
        updates = torch._foreach_div(updates, denom)
        lr, wd = group["lr"], group["weight_decay"]
        if wd:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        torch._foreach_add_(params, updates, alpha=-lr)

    # -- per signature: blocks of one shape, batched ----------------------------------------------

    def _precondition(self, params: list[Tensor], jobs: list[_Job], group: Mapping[str, Any],
                      debiased: list[Tensor], probes: list[Tensor] | None, damping: list[Tensor] | None,
                      balance: bool) -> list[Tensor]:
        """Fit (maybe) and apply the factors of blocks of one signature; 1-D params are [1, n]
        blocks with only a right (diagonal) factor."""
        vector = jobs[0].block is None

        def blocks(tensors: list[Tensor]) -> Tensor:
            if vector:
                return torch.stack([tensors[j.param] for j in jobs]).unsqueeze(-2)
            return torch.stack([tensors[j.param][j.block.rows, j.block.cols] for j in jobs])

        def factors(key: str) -> list[Slot]:
            return [(self.state[params[j.param]], f"{key}.{j.index}") for j in jobs]

        ld, rd = jobs[0].left_diag, jobs[0].right_diag
        g = blocks(debiased)
        ql = None if vector else stacked(factors("QL"))
        qr = stacked(factors("QR"))
        authors = group["variant"] == "authors"
        if balance and ql is not None:
            ql, qr = (_balance_authors if authors else _balance)(ql, qr)
        if probes is not None:
            v = blocks(probes)
            a = g + torch.stack([damping[j.param] for j in jobs]).view(-1, 1, 1) * v
            if authors:  # kron-torch preconditions the damped momentum too
                g = a
            b = v
            if ql is not None:
                a, b = _left(ql, a, ld), _solve_left_t(ql, b, ld)
            a, b = _right_t(a, qr, rd), _solve_right(b, qr, rd)
            lr = group["preconditioner_lr"]
            if ql is not None:
                ql = _fit(ql, _gram(a, ld, -2), _gram(b, ld, -2), lr, ld)
            qr = _fit(qr, _gram(a, rd, -1), _gram(b, rd, -1), lr, rd)
        if probes is not None or balance:  # new factors: the blocks' state becomes their slices
            for key, q in (("QL", ql), ("QR", qr)):
                if q is not None:
                    adopt(factors(key), q)
        pre = g if ql is None else _left_t(ql, _left(ql, g, ld), ld)  # QL^T QL G
        pre = _right(_right_t(pre, qr, rd), qr, rd)  # ... QR^T QR
        return [u.squeeze(0) if vector else u for u in pre.unbind(0)]


def _apply_authors(params: list[Tensor], updates: list[Tensor], group: Mapping[str, Any]) -> None:
    """kron-torch's order: u *= min(1, 1.1 / (rms + 1e-12)), then W <- W - lr (u + wd W)."""
    rms = [u.square().mean().sqrt().add(AUTHORS_CLIP_EPS) for u in updates]
    updates = [u * torch.clamp(RMS_CLIP / r, max=1.0) for u, r in zip(updates, rms)]
    if group["weight_decay"]:
        torch._foreach_add_(updates, params, alpha=group["weight_decay"])
    torch._foreach_add_(params, updates, alpha=-group["lr"])


def build(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module) -> Kron:
    variant = variant_of(hp)
    groups = decay_groups(params, hp["learning_rate"], hp)
    return Kron(groups, lr=hp["learning_rate"], b1=hp["beta1"], normalize_grads=hp["normalize_grads"],
                preconditioner_update_probability=hp["preconditioner_update_probability"],
                update_prob_flat_start=hp["update_prob_flat_start"],
                preconditioner_lr=hp["preconditioner_lr"],
                preconditioner_init_scale=hp["preconditioner_init_scale"],
                block_size=hp["block_size"], partition_grads_into_blocks=hp["partition_grads_into_blocks"],
                variant=variant)


register(OptimizerDef(
    name="kron",
    family="matrix",
    build=build,
    # The study's best 130m / 1x config (Analysis/Results/kron/130m/1/result.json) for Kron's own
    # keys; warmup and batch for the CPU ladder, and its learning rate: 0.008 was best of
    # 0.004 / 0.008 / 0.016 on cpu-xs at 1x (eval loss 3.353 / 3.206 / 3.268).
    defaults={**TRAIN_DEFAULTS, "learning_rate": 0.008, "warmup": 0.05,
              "beta1": 0.95, "weight_decay": 0.7, "normalize_grads": True,
              "preconditioner_update_probability": 0.05, "update_prob_flat_start": 2000,
              "preconditioner_lr": 0.2, "preconditioner_init_scale": 1.0,
              "block_size": 256, "partition_grads_into_blocks": True, "variant": "study"},
    added_later=frozenset({"variant"}),
    differences=("momentum preconditioned: study m_hat (Levanter); authors m_hat plus the probe damping on "
                 "fitting steps (kron-torch's in-place G +=)",
                 "factor balancing: study every 100th fit; authors on a fit whose coin (random.Random(42), "
                 "one draw a step) is < 0.01",
                 "update schedule: study p(t) at step t; authors p(t - 1) in float32 (counted from 0)",
                 "diagonal factors: study for sides > 25000 (Levanter); authors > 8192 (kron-torch)",
                 "clip and decay arithmetic: authors min(1, 1.1 / (rms + 1e-12)) and W - lr (u + wd W) "
                 "(the same up to rounding)"),
    roles={Role.HIDDEN: "Kron per block, decayed", Role.HEAD: "Kron per block, decayed",
           Role.EMBEDDING: "Kron per block (a side > 25000 diagonal), no decay",
           Role.NORM: "Kron with a diagonal factor, no decay", Role.BIAS: "Kron diagonal, no decay"},
    paper="Li, Preconditioned Stochastic Gradient Descent, arXiv:1512.04202 (PSGD Kron as in "
          "lixilinx/psgd_torch and evanatyourservice/kron_torch)",
    source="ours, following the study's Levanter scale_by_kron; matched step by step against "
           "kron-torch 0.3.3 (study: its damping side effect switched off; authors: unchanged, 20 steps "
           "in fp32)",
))
