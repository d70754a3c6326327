"""Model scales: the study's paper ladder (exact shapes) and a CPU ladder for laptops and CI.

Both use one shape rule: a Llama-style decoder with MLP width i and hidden width h; the
non-embedding parameter count is layers * (4*h*h + 3*h*i), the number the Chinchilla budget uses
(20 tokens per non-embedding parameter at ratio 1).

A scale can also be another architecture at that shape (`arch`, bench/model/build.py): "mla"
(latent attention, bench/model/mla.py) or "moe" (routed experts, bench/model/moe.py), with their
options; `resolve_model` applies a run's choice to a scale, or makes a shape of the user's own. The
budget of an MoE counts its ACTIVE parameters (those one token uses), so it trains on the tokens of
a dense model of the same compute per token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

from bench.errors import UserError
from bench.study import CPU_BATCH, PAPER_SEQ_LEN, TOKENS_PER_PARAM


@dataclass(frozen=True)
class Scale:
    name: str
    ladder: str  # "paper" or "cpu"
    hidden: int
    intermediate: int
    layers: int
    heads: int
    seq_len: int
    default_batch: int  # sequences per optimizer step
    paper_name: str = ""  # the study's folder name (130m, ...)
    arch: str = "llama"  # one of ARCHES; the options of the other architectures stay 0
    # moe: routed experts, how many a token goes to, always-on experts, each expert's MLP width, the
    # weight of the load-balancing loss
    experts: int = 0
    top_k: int = 0
    shared_experts: int = 0
    expert_intermediate: int = 0
    aux_loss_weight: float = 0.0
    # mla: the query and key-value latent widths, the decoupled rotary dims per head
    q_rank: int = 0
    kv_rank: int = 0
    rope_dim: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def non_embedding_params(self) -> int:
        """The matrices one token uses (norm gains not counted): the Chinchilla budget's count."""
        if self.arch == "moe":
            return self._moe_params(self.top_k)
        return self.total_non_embedding_params

    @property
    def total_non_embedding_params(self) -> int:
        """Every non-embedding matrix, all experts included."""
        h, i = self.hidden, self.intermediate
        if self.arch == "moe":
            return self._moe_params(self.experts)
        if self.arch == "mla":
            return self.layers * (self.mla_attention_params + 3 * h * i)
        return self.layers * (4 * h * h + 3 * h * i)

    def _moe_params(self, routed: int) -> int:
        """Attention, router and `routed` + the shared experts' SwiGLU matrices, per layer."""
        h = self.hidden
        experts = 3 * h * self.expert_intermediate * (routed + self.shared_experts)
        return self.layers * (4 * h * h + h * self.experts + experts)

    @property
    def mla_attention_params(self) -> int:
        """One MLA layer's matrices: W^DQ, W^UQ, W^QR, W^DKV, W^UK, W^UV, W^KR, W^O (mla.py)."""
        h, qr, kvr, r = self.hidden, self.q_rank, self.kv_rank, self.rope_dim
        return h * qr + qr * (h + self.heads * r) + h * kvr + 2 * kvr * h + h * r + h * h

    def tokens(self, ratio: float) -> int:
        """Training tokens of a `ratio` x Chinchilla budget."""
        return int(ratio * TOKENS_PER_PARAM * self.non_embedding_params)

    def steps(self, ratio: float, batch_size: int) -> int:
        return max(1, self.tokens(ratio) // (batch_size * self.seq_len))


# The study's models: 32 layers, kv heads = heads, sequence length 4096 (docs/PROTOCOL.md).
_PAPER = [
    Scale("0.1B", "paper", 512, 2048, 32, 8, PAPER_SEQ_LEN, 128, "130m"),
    Scale("0.3B", "paper", 768, 3072, 32, 12, PAPER_SEQ_LEN, 128, "300m"),
    Scale("0.5B", "paper", 1024, 4096, 32, 16, PAPER_SEQ_LEN, 128, "520m"),
    Scale("1.2B", "paper", 1536, 6144, 32, 24, PAPER_SEQ_LEN, 256, "1.2b"),
]

# The CPU ladder keeps the paper's i = 4h and head_dim 16, and spans 9x (xs to m) and 16x (xs to l) in
# non-embedding parameters.
# Batch 32 x 128 tokens gives about 320 optimizer steps at 1x on the smallest scale (the study's runs
# had thousands; runs of ~100 steps are dominated by the first steps, see docs/MEASUREMENTS.md).
_CPU = [
    Scale("cpu-xs", "cpu", 32, 128, 4, 2, 128, CPU_BATCH),
    Scale("cpu-s", "cpu", 64, 256, 4, 4, 128, CPU_BATCH),
    Scale("cpu-m", "cpu", 96, 384, 4, 6, 128, CPU_BATCH),
    Scale("cpu-l", "cpu", 128, 512, 4, 8, 128, CPU_BATCH),
]

SCALES: dict[str, Scale] = {s.name: s for s in _PAPER + _CPU}
# The study's own names are accepted too (130m etc.), and case does not matter.
_ALIASES = {s.paper_name: s.name for s in _PAPER} | {s.name.lower(): s.name for s in _PAPER + _CPU}


def get_scale(name: str) -> Scale:
    key = _ALIASES.get(name.lower(), name)
    if key not in SCALES:
        raise UserError(f"unknown scale {name!r}; known: {', '.join(SCALES)}")
    return SCALES[key]


# ---- architectures and shapes of a run (RunSpec.model) ----

ARCHES = ("llama", "mla", "moe")
SHAPE_FIELDS = ("hidden", "intermediate", "layers", "heads", "seq_len", "default_batch")
ARCH_OPTIONS: dict[str, tuple[str, ...]] = {
    "llama": (),
    "mla": ("q_rank", "kv_rank", "rope_dim"),
    "moe": ("experts", "top_k", "shared_experts", "expert_intermediate", "aux_loss_weight"),
}
_OPTION_ARCH = {o: a for a, opts in ARCH_OPTIONS.items() for o in opts}


def arch_defaults(shape: Scale, arch: str, chosen: Mapping[str, Any]) -> dict[str, Any]:
    """An architecture's options at a shape, where the run (`chosen`) leaves them out.

    moe: 8 experts, top-3 routing plus 1 shared expert, each expert intermediate // (top_k +
    shared_experts) wide (i/4 on both ladders), so a token's MLP matrices are the dense model's
    (DeepSeekMoE's fine-grained and shared experts); aux_loss_weight 0.01 (Switch Transformer's).
    mla: DeepSeek-V2's d_c = 4 d_h, d_c' = 12 d_h and d_h^R = d_h / 2, with the latents capped at
    hidden/2 and 3 hidden/4 so they compress at the CPU ladder's widths too (cpu-xs: 24 / 16 / 8).
    """
    if arch == "moe":
        out = {"experts": 8, "top_k": 3, "shared_experts": 1, "aux_loss_weight": 0.01, **chosen}
        active = _positive_int("top_k", out["top_k"]) + _positive_int("shared_experts", out["shared_experts"], 0)
        return {"expert_intermediate": shape.intermediate // active, **out}
    if arch == "mla":
        d, h = shape.head_dim, shape.hidden
        return {"q_rank": min(12 * d, 3 * h // 4), "kv_rank": min(4 * d, h // 2),
                "rope_dim": max(2, d // 4 * 2), **chosen}
    return {}


def resolve_model(base: Scale | None, overrides: Mapping[str, Any]) -> tuple[Scale, dict[str, Any]]:
    """(the effective Scale, the canonical choice) of `overrides` applied to `base`.

    overrides: "arch", that architecture's options (ARCH_OPTIONS; those left out take arch_defaults
    at the effective shape) and SHAPE_FIELDS. base None: a shape of the user's own, which needs
    "name" and every shape field (ladder "custom"). The canonical dict is what differs from plain
    Llama at base's shape: changed shape fields, and "arch" with all its options unless llama (base
    None: everything, name included). Bad input is a UserError of one line.
    """
    if not isinstance(overrides, Mapping):
        raise UserError(f"a model choice must be a mapping of fields, got {overrides!r}")
    given, custom = dict(overrides), base is None
    _check_keys(given, custom)
    if base is None:
        base = _custom_base(given)
    arch = given.pop("arch", base.arch)
    if arch not in ARCHES:
        raise UserError(f"unknown arch {arch!r}; known: {', '.join(ARCHES)}")
    for key in given:
        if key in _OPTION_ARCH and _OPTION_ARCH[key] != arch:
            raise UserError(f"model option {key!r} is for arch {_OPTION_ARCH[key]}, not {arch}")
    shape = replace(base, **{k: _positive_int(k, given[k]) for k in SHAPE_FIELDS if k in given})
    if shape.hidden % shape.heads:
        raise UserError(f"heads {shape.heads} do not divide hidden {shape.hidden}")
    kept = {o: getattr(base, o) for o in ARCH_OPTIONS[arch] if base.arch == arch}
    chosen = {**kept, **{o: given[o] for o in ARCH_OPTIONS[arch] if o in given}}
    options = _checked_options(shape, arch, arch_defaults(shape, arch, chosen))
    cleared = {o: 0 for o in _OPTION_ARCH} | {"aux_loss_weight": 0.0}
    scale = replace(shape, **{**cleared, "arch": arch, **options})
    return scale, _canonical(None if custom else base, scale)


def _check_keys(given: dict[str, Any], custom: bool) -> None:
    known = ("arch", *SHAPE_FIELDS, *_OPTION_ARCH) + (("name",) if custom else ())
    for key in given:
        if key not in known:
            raise UserError(f"unknown model field {key!r}; known: {', '.join(known)}")


def _custom_base(given: dict[str, Any]) -> Scale:
    missing = [k for k in ("name", *SHAPE_FIELDS) if k not in given]
    if missing:
        raise UserError(f"a model of its own needs name and {', '.join(SHAPE_FIELDS)}; missing: "
                        f"{', '.join(missing)}")
    name = given.pop("name")
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"a model's name must be a non-empty string, got {name!r}")
    shape = {k: _positive_int(k, given.pop(k)) for k in SHAPE_FIELDS}
    return Scale(name, "custom", **shape)


def _positive_int(key: str, value: Any, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UserError(f"model field {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _checked_options(shape: Scale, arch: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options, type- and range-checked: the one-line UserError names the first bad one."""
    if arch != "mla" and shape.head_dim % 2:
        raise UserError(f"head_dim {shape.head_dim} (hidden {shape.hidden} / heads {shape.heads}) must "
                        "be even: rotary embeddings turn pairs of features")
    out: dict[str, Any] = {}
    for key in ARCH_OPTIONS[arch]:  # in this order, so a top_k too large is named before its effects
        value = options[key]
        if key == "aux_loss_weight":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not (
                    math.isfinite(value) and value >= 0):
                raise UserError(f"model option 'aux_loss_weight' must be a number >= 0, got {value!r}")
            out[key] = float(value)
        else:
            out[key] = _positive_int(key, value, minimum=0 if key == "shared_experts" else 1)
        if key == "top_k" and value > out["experts"]:
            raise UserError(f"top_k {value} must be at most experts {out['experts']}")
    if arch == "mla" and out["rope_dim"] % 2:
        raise UserError(f"rope_dim {out['rope_dim']} must be even: rotary embeddings turn pairs of features")
    return out


def _canonical(base: Scale | None, scale: Scale) -> dict[str, Any]:
    """What differs from plain Llama at base's shape (base None: the whole shape and name)."""
    if base is None:
        out: dict[str, Any] = {"name": scale.name, **{k: getattr(scale, k) for k in SHAPE_FIELDS}}
    else:
        out = {k: getattr(scale, k) for k in SHAPE_FIELDS if getattr(scale, k) != getattr(base, k)}
    if scale.arch != "llama":
        out |= {"arch": scale.arch, **{o: getattr(scale, o) for o in ARCH_OPTIONS[scale.arch]}}
    return out
