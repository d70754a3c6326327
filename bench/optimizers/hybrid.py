"""One optimizer made of several: the Muon family's matrix optimizer plus an auxiliary AdamW.

Muon-style optimizers update only the hidden 2-D matrices (MATRIX_ROLES: HIDDEN, and an MoE's
experts and routers, MLA's latent projections); embeddings, the head and norm gains go
to AdamW at lr * muon_to_adam_lr (the study's convention). The train loop sees one
torch.optim.Optimizer, so `HybridOptimizer` joins the parts:

- `param_groups` is the list of the parts' own group dicts (the same objects), so a LambdaLR-style
  schedule that multiplies every group's lr scales each part and keeps the ratio between them;
- `step()` runs every part, `zero_grad()` clears every part;
- `state_dict()` is in torch's own format ({"state", "param_groups"}), the parts' dicts joined: part
  k's parameter ids are shifted past the earlier parts', and its non-parameter entries (RNG state,
  step counters) are keyed "k:name". `load_state_dict()` splits it back, restores every part and
  relinks the groups;
- `state` is a read-only joined view of the parts' per-parameter state.

Use `build_hybrid(params, hp, make_matrix)`: it hands the matrix params to `make_matrix` and the rest
to the auxiliary AdamW (common.make_adamw at hp["learning_rate"] * hp["muon_to_adam_lr"], with the
study's beta1, beta2, epsilon, weight_decay), dropping a part that would have no params.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Callable

import torch

from bench.optimizers.base import run_closure
from bench.optimizers.common import make_adamw
from bench.roles import MATRIX_ROLES, TaggedParam, split_by_role


class _JoinedState(Mapping):
    """Read-only union of the parts' `state` dicts, looked up live (parts replace theirs on load)."""

    def __init__(self, parts: tuple[torch.optim.Optimizer, ...]) -> None:
        self._parts = parts

    def __getitem__(self, param: torch.Tensor) -> Any:
        for part in self._parts:
            if param in part.state:  # `in`, not [], so the parts' defaultdicts grow no entries
                return part.state[param]
        raise KeyError(param)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for part in self._parts:
            yield from part.state

    def __len__(self) -> int:
        return sum(len(part.state) for part in self._parts)


class HybridOptimizer(torch.optim.Optimizer):
    """Several optimizers over disjoint params, seen by the train loop as one (see module doc)."""

    def __init__(self, *parts: torch.optim.Optimizer) -> None:
        if not parts:
            raise ValueError("HybridOptimizer needs at least one part")
        every = [p for part in parts for g in part.param_groups for p in g["params"]]
        if len({id(p) for p in every}) != len(every):
            raise ValueError("HybridOptimizer parts must not share parameters")
        super().__init__(every, {})  # sets up torch's hook machinery; groups are replaced below
        self.parts = parts
        self.state = _JoinedState(parts)
        self._link_groups()

    def _link_groups(self) -> None:
        self.param_groups = [g for part in self.parts for g in part.param_groups]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = run_closure(closure)
        for part in self.parts:
            part.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        state: dict[Any, Any] = {}
        groups: list[dict[str, Any]] = []
        offset = 0
        for k, part in enumerate(self.parts):
            saved = part.state_dict()
            for key, value in saved["state"].items():
                state[key + offset if isinstance(key, int) else f"{k}:{key}"] = value
            for group in saved["param_groups"]:
                groups.append({**group, "params": [i + offset for i in group["params"]]})
            offset += sum(len(g["params"]) for g in part.param_groups)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        groups, state = state_dict["param_groups"], state_dict["state"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state dict has {len(groups)} param groups, this optimizer "
                             f"{len(self.param_groups)}")
        first_group, offset = 0, 0
        for k, part in enumerate(self.parts):
            mine = groups[first_group:first_group + len(part.param_groups)]
            n = sum(len(g["params"]) for g in mine)
            part_state = {key - offset: v for key, v in state.items()
                          if isinstance(key, int) and offset <= key < offset + n}
            prefix = f"{k}:"
            part_state.update({key[len(prefix):]: v for key, v in state.items()
                               if isinstance(key, str) and key.startswith(prefix)})
            part.load_state_dict({"state": part_state, "param_groups": [
                {**g, "params": [i - offset for i in g["params"]]} for g in mine]})
            first_group, offset = first_group + len(mine), offset + n
        self._link_groups()  # torch's load_state_dict replaces the group dicts

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if hasattr(self, "parts"):  # torch's __init__ calls this once before the parts are linked
            raise RuntimeError("add param groups to one of HybridOptimizer.parts instead")
        super().add_param_group(param_group)


MatrixBuilder = Callable[[list[TaggedParam]], torch.optim.Optimizer]


def build_hybrid(params: list[TaggedParam], hp: Mapping[str, Any],
                 make_matrix: MatrixBuilder) -> HybridOptimizer:
    """MATRIX_ROLES params to `make_matrix(hidden)`, the rest to AdamW at lr * muon_to_adam_lr."""
    hidden, rest = split_by_role(params, set(MATRIX_ROLES))
    parts = []
    if hidden:
        parts.append(make_matrix(hidden))
    if rest:
        parts.append(make_adamw(rest, hp, hp["learning_rate"] * hp["muon_to_adam_lr"]))
    return HybridOptimizer(*parts)
