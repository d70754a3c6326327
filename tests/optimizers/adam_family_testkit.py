"""Helpers shared by the Adam/sign-family optimizer tests (nadamw, mars, cautious, lion, adam_mini,
sophia): a tiny Llama model, short training runs that call `curvature_step` where an optimizer has
one, checkpoint-resume and registration checks, and plain tagged tensors with hand-set gradients."""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from bench.model.llama import LlamaModel
from bench.model.scales import Scale
from bench.optimizers.registry import TRAIN_KEYS, get
from bench.roles import Role, TaggedParam

TINY = Scale("test-tiny", "cpu", hidden=16, intermediate=32, layers=2, heads=2, seq_len=8, default_batch=4)
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


def train(model: LlamaModel, opt: torch.optim.Optimizer, steps: range) -> list[float]:
    losses = []
    for step in steps:
        x = batch(step)
        if hasattr(opt, "curvature_step"):
            opt.curvature_step(step, model, x)
        loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def build(name: str, model: LlamaModel, **overrides: Any) -> torch.optim.Optimizer:
    opt_def = get(name)
    return opt_def.build(model.tagged_parameters(), {**opt_def.defaults, **overrides}, model)


def assert_resume_is_bitwise(name: str, **overrides: Any) -> None:
    """8 steps straight vs 3 steps, checkpoint, restore into fresh objects, 5 more steps."""
    straight = tiny_model()
    opt = build(name, straight, **overrides)
    train(straight, opt, range(3))
    model_ckpt, opt_ckpt = copy.deepcopy(straight.state_dict()), copy.deepcopy(opt.state_dict())
    train(straight, opt, range(3, 8))

    resumed = tiny_model(seed=1)  # a different init: everything must come from the checkpoint
    resumed.load_state_dict(model_ckpt)
    opt2 = build(name, resumed, **overrides)
    opt2.load_state_dict(opt_ckpt)
    train(resumed, opt2, range(3, 8))
    for (n, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{n} differs after resume"


def assert_registered(name: str, own_keys: set[str]) -> None:
    """Defaults list the train keys and the optimizer's own keys, the builder runs on them alone,
    and both grids load with keys the defaults know."""
    opt_def = get(name)
    assert set(opt_def.defaults) == set(TRAIN_KEYS) | own_keys
    model = tiny_model()
    opt = opt_def.build(model.tagged_parameters(), dict(opt_def.defaults), model)
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt_def.paper and "arXiv" in opt_def.paper + opt_def.source
    for ladder in ("paper", "cpu"):
        grid = opt_def.space(ladder)
        assert grid and set(grid) <= set(opt_def.defaults), f"{ladder} grid keys {set(grid)}"
        assert all(isinstance(v, list) and v for v in grid.values())
    assert set(opt_def.space("cpu")) == set(opt_def.space("paper"))


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
