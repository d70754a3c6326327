"""The model of a scale: its architecture's decoder (scale.arch, bench/model/scales.py)."""
from __future__ import annotations

from bench.errors import UserError
from bench.model.llama import LlamaModel
from bench.model.mla import MLAModel
from bench.model.moe import MoEModel
from bench.model.scales import ARCHES, Scale

MODELS: dict[str, type[LlamaModel]] = {m.arch: m for m in (LlamaModel, MLAModel, MoEModel)}


def build_model(scale: Scale, vocab_size: int) -> LlamaModel:
    """A freshly initialised model (from torch's global RNG, as LlamaModel: the same for llama).

    Every model has LlamaModel's interface: trunk, forward, head, norm, layers, tagged_parameters,
    aux_loss (and has_aux_loss: whether the train step adds it)."""
    if scale.arch not in MODELS:
        raise UserError(f"unknown arch {scale.arch!r}; known: {', '.join(ARCHES)}")
    return MODELS[scale.arch](scale, vocab_size)
