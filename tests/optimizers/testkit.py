"""Helpers shared by the optimizer tests: a tiny Llama model trained by the one training step
(bench.run.step, so a test exercises what the train loop runs, the curvature pass included),
checkpoint-resume and registration checks, and plain tagged tensors with hand-set gradients."""
from __future__ import annotations

import copy
from typing import Any

import torch

from bench.model.llama import LlamaModel
from bench.model.scales import Scale
from bench.optimizers.registry import SHARED_ADDED_LATER, TRAIN_KEYS, get
from bench.roles import Role, TaggedParam
from bench.run.step import train_step

TINY = Scale("test-tiny", "cpu", hidden=16, intermediate=32, layers=3, heads=2, seq_len=8, default_batch=4)
VOCAB = 32


def tiny_model(seed: int = 0) -> LlamaModel:
    torch.manual_seed(seed)
    return LlamaModel(TINY, VOCAB)


def batch(step: int) -> torch.Tensor:
    """Sequences following x[t+1] = 5 x[t] + 3 (mod VOCAB) from random starts: learnable."""
    g = torch.Generator().manual_seed(1000 + step)
    cols = [torch.randint(0, VOCAB, (4, 1), generator=g)]
    for _ in range(TINY.seq_len):
        cols.append((5 * cols[-1] + 3) % VOCAB)
    return torch.cat(cols, dim=1)


def train(model: LlamaModel, opt: torch.optim.Optimizer, steps: range, curvature: bool = False) -> list[float]:
    """Train steps `steps` at the learning rates as built; the losses. `curvature`: the optimizer's
    registry entry has needs_curvature_pass."""
    return [train_step(model, opt, batch(step), step, curvature=curvature).item() for step in steps]


def build(name: str, model: LlamaModel, **overrides: Any) -> torch.optim.Optimizer:
    opt_def = get(name)
    return opt_def.build(model.tagged_parameters(), {**opt_def.defaults, **overrides}, model)


def assert_resume_is_bitwise(name: str, **overrides: Any) -> None:
    """8 steps straight vs 3 steps, checkpoint, restore into fresh objects, 5 more steps."""
    curvature = get(name).needs_curvature_pass
    straight = tiny_model()
    opt = build(name, straight, **overrides)
    train(straight, opt, range(3), curvature)
    model_ckpt, opt_ckpt = copy.deepcopy(straight.state_dict()), copy.deepcopy(opt.state_dict())
    train(straight, opt, range(3, 8), curvature)

    resumed = tiny_model(seed=1)  # a different init: everything must come from the checkpoint
    resumed.load_state_dict(model_ckpt)
    opt2 = build(name, resumed, **overrides)
    opt2.load_state_dict(opt_ckpt)
    train(resumed, opt2, range(3, 8), curvature)
    for (n, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{n} differs after resume"


def assert_registered(name: str, own_keys: set[str] | None = None) -> None:
    """The builder runs on the defaults alone and both grids load with keys the defaults know;
    with `own_keys`, the defaults are exactly the train keys, the shared ones (decay_roles) and those."""
    opt_def = get(name)
    if own_keys is not None:
        assert set(opt_def.defaults) == set(TRAIN_KEYS) | SHARED_ADDED_LATER | own_keys
    model = tiny_model()
    opt = opt_def.build(model.tagged_parameters(), dict(opt_def.defaults), model)
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt_def.paper and "arXiv" in opt_def.paper + opt_def.source
    for ladder in ("paper", "cpu"):
        grid = opt_def.space(ladder)
        assert grid and set(grid) <= set(opt_def.defaults), f"{ladder} grid keys {set(grid)}"
        assert all(isinstance(v, list) and v for v in grid.values())
    assert set(opt_def.space("paper")) <= set(opt_def.space("cpu")), "a paper-grid key the CPU ladder skips"


def tagged(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> list[TaggedParam]:
    """Plain parameters: names ending in 'norm' are NORM (not decayed), the rest HIDDEN (decayed)."""
    g = torch.Generator().manual_seed(seed)
    return [TaggedParam(n, torch.nn.Parameter(torch.randn(s, generator=g)),
                        Role.NORM if n.endswith("norm") else Role.HIDDEN) for n, s in shapes.items()]


def random_grads(params: list[TaggedParam], steps: int, seed: int = 1) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(tp.param.shape, generator=g) for tp in params] for _ in range(steps)]


def step_with(opt: torch.optim.Optimizer, params: list[TaggedParam], grads: list[torch.Tensor]) -> None:
    for tp, grad in zip(params, grads):
        tp.param.grad = grad.clone()
    opt.step()
