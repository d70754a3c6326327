"""Drop-Muon: Muon that updates a random subset of layers each step (randomized progressive training).

Paper: Gruntkowska, Maziane, Qu & Richtarik, "Drop-Muon: Update Less, Converge Faster",
arXiv 2510.02239. No public reference code; implemented from the paper's method. Each step samples a
start index s uniformly from the b layers (the paper's Randomized Progressive Training with the
uniform index sampling of its experiments) and updates layers s..b only; the other layers are frozen
(weights, momentum buffers and weight decay untouched). Updated layers take the study's Muon step
(muon.py). So the last layer updates every step and layer i with probability i / b.

Here a "layer" is one transformer block: the HIDDEN matrices grouped by the first numeric component
of their names (layers.3.attn.wq.weight -> layers.3), ordered as the model lists them (input to
output). Embeddings, head and norm gains stay with the auxiliary AdamW and update every step (the
paper's networks have no such split). The paper's wall-clock saving comes from not back-propagating
into frozen layers; the train loop computes every gradient, so only the optimizer's work is saved.

The sampling uses the optimizer's own torch.Generator, seeded from a constant; its state lives in
self.state["sampler"]["rng"] (a dedicated entry, a dict like torch's per-parameter state), so
state_dict() / load_state_dict() restore it and a resumed run draws the same layers as an
uninterrupted one.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from bench.optimizers.common import matrix_decay
from bench.optimizers.hybrid import HybridOptimizer, build_hybrid
from bench.optimizers.muon import AUX_ROLES, MUON_DEFAULTS, Muon
from bench.optimizers.registry import OptimizerDef, register
from bench.roles import Role, TaggedParam

SEED = 2510_02239  # a constant, so every run draws the same layer sequence


def block_layers(hidden: list[TaggedParam]) -> list[list[torch.Tensor]]:
    """Group matrices by the name prefix that ends at the first numeric component, in order."""
    layers: dict[str, list[torch.Tensor]] = {}
    for t in hidden:
        parts = t.name.split(".")
        cut = next((i + 1 for i, part in enumerate(parts) if part.isdigit()), len(parts))
        layers.setdefault(".".join(parts[:cut]), []).append(t.param)
    return list(layers.values())


class DropMuon(Muon):
    """Muon over `layers` (input to output) that updates layers start..end, start uniform."""

    def __init__(self, layers: list[list[torch.Tensor]], lr: float, **muon_options: Any) -> None:
        super().__init__([p for layer in layers for p in layer], lr, **muon_options)
        self.layer_of = {p: i for i, layer in enumerate(layers) for p in layer}
        self.n_layers = len(layers)
        self.generator = torch.Generator().manual_seed(SEED)
        self.state["sampler"] = {"rng": self.generator.get_state()}
        self.start = 0  # the layer the current step starts from

    def draw_start(self) -> int:
        """Sample the first updated layer; the generator state round-trips through self.state."""
        self.generator.set_state(self.state["sampler"]["rng"])
        start = int(torch.randint(self.n_layers, (1,), generator=self.generator))
        # a new dict, not an in-place edit: a state_dict() taken earlier keeps its snapshot
        self.state["sampler"] = {"rng": self.generator.get_state()}
        return start

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        self.start = self.draw_start()
        return super().step(closure)

    def update_group(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        active = [p for p in params if self.layer_of[p] >= self.start]
        if active:
            super().update_group(active, group)


def build(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module) -> HybridOptimizer:
    return build_hybrid(params, hp, lambda hidden: DropMuon(
        block_layers(hidden), lr=hp["learning_rate"], momentum=hp["momentum"],
        weight_decay=matrix_decay(hp, hidden), eps=hp["muon_epsilon"]))


register(OptimizerDef(
    name="drop_muon",
    family="matrix",
    build=build,
    defaults={**MUON_DEFAULTS, "muon_epsilon": 1e-5},
    roles={Role.HIDDEN: "Muon on transformer blocks start..last, start uniform per step; "
                        "frozen blocks untouched", **AUX_ROLES},
    paper="Gruntkowska, Maziane, Qu & Richtarik, Drop-Muon: Update Less, Converge Faster, "
          "arXiv:2510.02239",
    source="ours: muon.py's Muon with the paper's randomized progressive training (uniform start "
           "index); no public reference code",
    schedule="linear",
))
