"""Helpers shared by the Muon-family optimizer tests: a tiny Llama model and short training runs."""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from bench.model.llama import LlamaModel
from bench.model.scales import Scale
from bench.optimizers.registry import get

TINY = Scale("test-tiny", "cpu", hidden=16, intermediate=32, layers=3, heads=2, seq_len=8,
             default_batch=4)
VOCAB = 32


def tiny_model(seed: int = 0) -> LlamaModel:
    torch.manual_seed(seed)
    return LlamaModel(TINY, VOCAB)


def batch(step: int) -> torch.Tensor:
    """Sequences that follow x[t+1] = 5 x[t] + 3 (mod VOCAB) from random starts: learnable."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randint(0, VOCAB, (4, 1), generator=g)
    cols = [x]
    for _ in range(TINY.seq_len):
        cols.append((5 * cols[-1] + 3) % VOCAB)
    return torch.cat(cols, dim=1)


def train(model: LlamaModel, opt: torch.optim.Optimizer, steps: range) -> list[float]:
    losses = []
    for step in steps:
        x = batch(step)
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
    """Train 6 steps straight vs 3 steps, checkpoint, restore into fresh objects, 3 more steps."""
    straight = tiny_model()
    opt = build(name, straight, **overrides)
    train(straight, opt, range(3))
    model_ckpt = copy.deepcopy(straight.state_dict())
    opt_ckpt = copy.deepcopy(opt.state_dict())
    train(straight, opt, range(3, 6))

    resumed = tiny_model(seed=1)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(model_ckpt)
    opt2 = build(name, resumed, **overrides)
    opt2.load_state_dict(opt_ckpt)
    train(resumed, opt2, range(3, 6))
    for (n, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{n} differs after resume"


def assert_registered(name: str) -> None:
    """Defaults are complete (the builder runs on them alone) and both grids load and are covered."""
    opt_def = get(name)
    model = tiny_model()
    opt = opt_def.build(model.tagged_parameters(), dict(opt_def.defaults), model)
    assert isinstance(opt, torch.optim.Optimizer)
    for ladder in ("paper", "cpu"):
        grid = opt_def.space(ladder)
        assert grid, f"empty {ladder} grid"
        unknown = set(grid) - set(opt_def.defaults)
        assert not unknown, f"{ladder} grid has keys the defaults lack: {unknown}"
        assert all(isinstance(v, list) and v for v in grid.values())
