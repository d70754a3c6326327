"""RunSpec, everything that decides a run, and RunResult, everything a run reports.

A RunSpec is frozen and validated on construction; its hyperparameters are resolved against the
optimizer's defaults, so an explicit default and an omitted one give the same run. Its run key is a
content hash of the canonical JSON: the same key means the same run.

One rule keeps stored runs findable when an optimizer gains a hyperparameter: a hyperparameter it
declares as added later (`OptimizerDef.keyless_at_default()`: its own `added_later` and the shared
`decay_roles`) is left out of the key while it equals its default, the behaviour the runs made
before it existed had. Set to anything else, it is in the key like every other. The same holds
for `model` (the architecture and shape beside the scale's Llama): empty, it is left out.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Mapping

from bench.errors import UserError
from bench.model import scales
from bench.model.scales import Scale, get_scale
from bench.optimizers import registry
from bench.roles import Role
from bench.run.schedules import SCHEDULES
from bench.study import DEFAULT_EVAL_TOKENS

PRECISIONS = ("fp32", "bf16")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class RunSpec:
    optimizer: str
    scale: str
    ratio: float = 1.0
    hparams: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    data: str = "default"
    eval_data: str = ""  # empty: the held-out split of the training data
    tokenizer: str = "bpe-512"
    precision: str = "fp32"
    device: str = "cpu"
    eval_tokens: int = DEFAULT_EVAL_TOKENS
    # What differs from the scale's Llama (bench.model.scales.resolve_model): the architecture
    # (llama | mla | moe) and its options, and shape fields; a scale outside the ladders (a user's
    # --model file) keeps its whole shape here. Resolved, so an explicit default is the same run.
    model: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        opt = registry.get(self.optimizer)
        scale, model = resolve_shape(self.scale, self.model)
        object.__setattr__(self, "scale", scale.name)
        object.__setattr__(self, "model", model)
        if not (isinstance(self.ratio, (int, float)) and math.isfinite(self.ratio) and self.ratio > 0):
            raise UserError(f"ratio must be a positive number, got {self.ratio!r}")
        object.__setattr__(self, "ratio", float(self.ratio))
        # An unset batch size takes the scale's default (32 sequences on the CPU ladder, the study's
        # 128-256 on the paper ladder).
        overrides = {"train_batch_size": scale.default_batch, **self.hparams}
        object.__setattr__(self, "hparams", resolve_hparams(opt, overrides))
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("device", self.device, DEVICES)
        if not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.eval_tokens, int) or self.eval_tokens < 1:
            raise UserError(f"eval_tokens must be a positive integer, got {self.eval_tokens!r}")

    @cached_property
    def shape(self) -> Scale:
        """The model's shape and architecture: the scale's, with `model` applied."""
        return resolve_shape(self.scale, self.model)[0]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hparams"] = dict(sorted(self.hparams.items()))
        d["model"] = dict(sorted(self.model.items()))
        if not d["model"]:  # the scale's Llama: keys stay those issued before `model` existed
            del d["model"]
        return d

    @property
    def key(self) -> str:
        d = self.to_dict()
        opt = registry.get(self.optimizer)
        d["hparams"] = {k: v for k, v in d["hparams"].items()
                        if not (k in opt.keyless_at_default() and v == opt.defaults[k])}
        if opt.module:  # an out-of-tree optimizer: its name does not say which code it is
            from bench.run.identity import module_digest

            d["optimizer_code"] = module_digest(opt.module)
        canonical = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:20]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        return cls(**d)


def resolve_shape(scale: str, model: Mapping[str, Any]) -> tuple[Scale, dict[str, Any]]:
    """(the shape, the canonical `model`) of a named scale with `model` applied, or of a scale
    outside the ladders, whose `model` holds its whole shape."""
    if not isinstance(model, Mapping):
        raise UserError(f"model must be a mapping of architecture and shape fields, got {model!r}")
    if not model:  # the scale's Llama
        return get_scale(scale), {}
    try:
        base = get_scale(scale)
    except UserError:
        if "hidden" not in model:  # not a whole shape either
            raise
        base = None
    if base is not None:
        return scales.resolve_model(base, model)
    shape, canonical = scales.resolve_model(None, {**model, "name": scale})
    canonical.pop("name", None)
    return shape, canonical


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


# Range checks by hyperparameter name: (test, what it must be).
_RULES = {
    "learning_rate": (lambda v: v > 0, "a positive number"),
    "train_batch_size": (lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
    "warmup": (lambda v: v >= 0, ">= 0 (a fraction below 1, else steps)"),
    "decay": (lambda v: v is None or v >= 0, ">= 0 or None"),
    "min_lr_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "max_grad_norm": (lambda v: v >= 0, ">= 0 (0 turns clipping off)"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "lr_schedule": (lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
    "decay_roles": (lambda v: {n.strip().removeprefix("-") for n in v.split(",") if n.strip()}
                    <= {r.value for r in Role},
                    f"comma-separated role names among {', '.join(r.value for r in Role)}"),
    "ns_steps": (lambda v: v >= 1, "an integer >= 1"),
    "max_precond_dim": (lambda v: v >= 1, "an integer >= 1"),
}
_BETA = (lambda v: 0 <= v < 1, "in [0, 1)")


def resolve_hparams(opt: registry.OptimizerDef, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with `overrides`, each checked for name, type and range."""
    unknown = sorted(set(overrides) - set(opt.defaults))
    if unknown:
        raise UserError(f"unknown hyperparameter {unknown[0]!r} for {opt.name}; "
                        f"known: {', '.join(sorted(opt.defaults))}")
    hp = dict(opt.defaults)
    for name, value in overrides.items():
        hp[name] = _coerce(name, value, opt.defaults[name])
        allowed = opt.allowed(name)
        if allowed is not None and hp[name] not in allowed:
            raise UserError(f"bad value for hyperparameter {name!r}: must be one of {', '.join(map(str, allowed))}")
    return hp


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Match the default's type (an int may stand for a float, 2.0 for an int); check the range."""
    value = _as_type(value, default)
    test, what = _RULES.get(name, _BETA if name.startswith("beta") else (lambda v: True, ""))
    if value is _BAD or not test(value):
        raise UserError(f"bad value for hyperparameter {name!r}: must be {what or type(default).__name__}")
    return value


_BAD = object()


def _as_type(value: Any, default: Any) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        return value if isinstance(value, bool) else _BAD
    if isinstance(default, int):
        return int(value) if number and float(value).is_integer() else _BAD
    if isinstance(default, float) or default is None:
        if value is None and default is None:
            return None
        return float(value) if number and math.isfinite(value) else _BAD
    return value if isinstance(value, type(default)) else _BAD


@dataclass
class RunResult:
    run_key: str
    spec: dict[str, Any]
    status: str  # ok | diverged | failed (results) | error (the environment's: bench.run.failures)
    final_loss: float | None  # end-of-budget held-out loss, nats/token
    reason: str = ""
    bits_per_byte: float | None = None
    loss_by_frequency: dict[str, float] = field(default_factory=dict)  # frequent / middle / rare
    unigram_loss: float | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, train loss)
    # (step, held-out loss on a share of the eval tokens: bench.run.train.CURVE_POINTS), the last at the end
    eval_curve: list[tuple[int, float]] = field(default_factory=list)
    lr_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, lr / each group's peak lr)
    tokens: int = 0
    steps: int = 0
    epochs: float = 0.0
    wall_time_s: float = 0.0
    tokens_per_s: float = 0.0
    flops: float = 0.0
    peak_memory_bytes: int = 0
    optimizer_state_bytes: int = 0
    optimizer_step_ms: float = 0.0
    non_embedding_params: int = 0
    threads: int = 0  # torch threads used (bitwise results hold at a fixed thread count)
    micro_batch: int = 0  # sequences per forward/backward (0: the whole batch)
    compiled: bool = False  # the blocks and the loss head ran through torch.compile
    procs: int = 1  # processes the run was spread over (torch.distributed)
    parallel: str = ""  # with procs > 1: ddp | fsdp
    node: str = ""  # the Ray node that ran it ("" outside Ray)
    hardware: str = ""  # the CPU's or GPU's model name (bench.run.hardware)
    resumed_at: int = 0  # the step a checkpoint let it resume from (0: trained from the start)
    roles: dict[str, str] = field(default_factory=dict)  # parameter name -> role
    code: dict[str, str] = field(default_factory=dict)  # code versions (bench.run.identity)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunResult":
        d = dict(d)
        for name in ("curve", "eval_curve", "lr_curve"):
            d[name] = [tuple(p) for p in d.get(name, [])]
        return cls(**d)
