"""The optimizer contract optbench's own optimizers share: torch.optim's closure convention and the
loop over param groups, written once, and the train loop's optional curvature hook.

A subclass implements `update_group(params, group)`, called once per param group with the params
that have a gradient (groups without any are skipped). One that needs a pass of its own before each
step's forward/backward (Sophia's Hessian estimate) overrides `curvature_step` and says so in its
registry entry (`OptimizerDef.needs_curvature_pass`), which is what the train loop reads.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from torch import Tensor


def run_closure(closure: Callable[[], float] | None) -> float | None:
    """torch.optim's closure convention: re-evaluate the loss with grad enabled."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class Optimizer(torch.optim.Optimizer):
    """A torch optimizer whose step updates each param group with gradients through `update_group`.

    `later_options`: group options added after checkpoints were written without them, with the value
    that reproduces how those ran; a loaded state dict that lacks one gets it (torch's convention).
    """

    later_options: dict[str, Any] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for name, value in self.later_options.items():
                group.setdefault(name, value)

    def groups_with_grads(self) -> Iterator[tuple[dict[str, Any], list[Tensor]]]:
        """(group, its params that have a gradient) for each group that has any."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                yield group, params

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = run_closure(closure)
        for group, params in self.groups_with_grads():
            self.update_group(params, group)
        return loss

    def update_group(self, params: list[Tensor], group: dict[str, Any]) -> None:
        raise NotImplementedError

    def curvature_step(self, step: int, model: torch.nn.Module, x: Tensor, micro_batch: int = 0) -> None:
        """Before step `step`'s forward/backward on inputs x: nothing, unless the optimizer needs it."""
