"""The optimizer registry: each optimizer module registers one OptimizerDef here.

Adding an optimizer is one new module under bench/optimizers/ that calls `register(...)`; the
package imports every module in the folder, so nothing else is edited. Optimizers from outside the
folder (`module:Class` names, `optbench.optimizers` entry points) are built on first use
(external.py) and cached here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from bench.errors import UserError
from bench.roles import Role, TaggedParam

# Hyperparameters the train loop consumes (names follow the study's configs). Every optimizer
# accepts them; its own `defaults` add the rest.
TRAIN_KEYS = ("learning_rate", "warmup", "lr_schedule", "decay", "min_lr_ratio", "max_grad_norm",
              "train_batch_size")

SPACES_DIR = Path(__file__).resolve().parent  # <name>.json beside <name>.py
SHIPPED_KEYS = ("cpu", "paper", "optimizer", "source")  # what a shipped <name>.json may hold

# The values of the `variant` hyperparameter of an optimizer whose two sources differ: the study's
# (Levanter) semantics, the default, or its authors' published code (docs/DESIGN.md, "Variants").
VARIANTS = ("study", "authors")

# Hyperparameters every optimizer gained after run keys were first issued (common.TRAIN_DEFAULTS):
# like an optimizer's own `added_later`, left out of a run key while at their defaults.
SHARED_ADDED_LATER = frozenset({"decay_roles"})

Builder = Callable[[list[TaggedParam], Mapping[str, Any], torch.nn.Module], torch.optim.Optimizer]


@dataclass(frozen=True)
class OptimizerDef:
    """Everything optbench knows about one optimizer.

    build(params, hp, model) returns a torch optimizer whose param groups carry their peak `lr`
    (the train loop scales every group by the schedule's multiplier). `defaults` lists every
    hyperparameter the optimizer accepts, train keys included, with its default value. The model
    is passed for optimizers that read or change it (Adam-mini's partition, MuonClip's attention).

    What the train loop does differently for it: `clips_gradients`, the optimizer applies
    max_grad_norm itself (MARS clips its corrected gradient), so the loop does not clip;
    `needs_curvature_pass`, the loop calls its `curvature_step` (base.Optimizer) before each step's
    forward/backward (Sophia's Hessian estimate).

    `differences`: for an optimizer with a `variant` hyperparameter, how its `authors` variant
    differs from `study`, one short line each (`optbench optimizers` lists them). `added_later`:
    hyperparameters added after run keys were first issued; a run key leaves each out while it
    equals its default, so the runs stored before it existed keep their keys (bench/run/spec.py).
    """

    name: str
    family: str  # "adam", "sign", "matrix", "second-order"
    build: Builder
    defaults: Mapping[str, Any]
    roles: Mapping[Role, str]  # what it does with each parameter role, in words
    paper: str  # citation: authors, title, arXiv id
    source: str  # where the implementation comes from and what it was checked against
    schedule: str = "cosine"  # the default lr_schedule family
    notes: str = ""
    clips_gradients: bool = False
    needs_curvature_pass: bool = False
    differences: tuple[str, ...] = ()
    added_later: frozenset[str] = frozenset()
    choices: Mapping[str, tuple] = field(default_factory=dict)  # a named hyperparameter's allowed values
    # Out-of-tree optimizers (external.py): the module holding its code (bench/run/identity.py
    # digests it), and its search grids by ladder from its space file (None: <name>.json here).
    module: str = ""
    grids: Mapping[str, Mapping[str, list]] | None = None

    def allowed(self, name: str) -> tuple | None:
        """The values hyperparameter `name` may take, where they are a fixed set (spec.py checks)."""
        return VARIANTS if name == "variant" else self.choices.get(name)

    def keyless_at_default(self) -> frozenset[str]:
        """The hyperparameters a run key leaves out while they equal their defaults (spec.py)."""
        return self.added_later | (SHARED_ADDED_LATER & set(self.defaults))

    def space(self, ladder: str = "cpu") -> dict[str, list]:
        """The search grid for `ladder` ("cpu" or "paper") from <name>.json beside its module."""
        if self.grids is not None:
            if ladder not in self.grids:
                raise UserError(f"optimizer {self.name!r} has no {ladder!r} search grid (give one with --space)")
            return dict(self.grids[ladder])
        path = SPACES_DIR / f"{self.name}.json"
        if not path.exists():
            raise UserError(f"no search space file for optimizer {self.name!r}: {path}")
        grid = read_grids(path, SHIPPED_KEYS).get(ladder)
        if not grid:
            raise UserError(f"search space file {path} has no {ladder!r} grid")
        return grid


def read_grids(path: str | Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object in the file at `path`, its keys among `keys` and its "cpu" and "paper" grids
    each {hyperparameter: [values]} (a space file, or a sweep's amendment of a shipped grid)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise UserError(f"space file {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"space file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"space file {path}: expected a JSON object with keys among {', '.join(keys)}")
    if unknown := sorted(set(data) - set(keys)):
        raise UserError(f"space file {path}: unknown key {unknown[0]!r}; known: {', '.join(keys)}")
    for ladder in ("cpu", "paper"):
        grid = data.get(ladder, {})
        if not (isinstance(grid, dict) and all(isinstance(v, list) and v for v in grid.values())):
            raise UserError(f"space file {path}: {ladder!r} must map hyperparameters to non-empty lists of values")
    return data


_REGISTRY: dict[str, OptimizerDef] = {}
_OUTSIDE: dict[str, OptimizerDef] = {}  # module:Class and entry-point optimizers, built on first use


def register(opt: OptimizerDef) -> OptimizerDef:
    if opt.name in _REGISTRY:
        raise ValueError(f"optimizer {opt.name!r} registered twice")
    missing = [k for k in TRAIN_KEYS if k not in opt.defaults]
    if missing:
        raise ValueError(f"optimizer {opt.name!r} defaults lack train keys {missing}")
    if bool(opt.differences) != (opt.defaults.get("variant") == VARIANTS[0]):
        raise ValueError(f"optimizer {opt.name!r}: a variant (default {VARIANTS[0]!r}) needs its differences")
    if not opt.added_later <= set(opt.defaults):
        raise ValueError(f"optimizer {opt.name!r}: added_later names unknown hyperparameters")
    _REGISTRY[opt.name] = opt
    return opt


def get(name: str) -> OptimizerDef:
    from bench import optimizers  # noqa: F401  (imports every module, filling the registry)

    if name in _REGISTRY:
        return _REGISTRY[name]
    if name not in _OUTSIDE:
        from bench.optimizers import external

        found = external.load(name)
        if found is None:
            known = sorted({*_REGISTRY, *external.entry_point_names()})
            raise UserError(f"unknown optimizer {name!r}; known: {', '.join(known)}, or module:Class "
                            "(a torch.optim.Optimizer subclass)")
        _OUTSIDE[name] = found
    return _OUTSIDE[name]


def with_space(name: str, path: str) -> OptimizerDef:
    """Out-of-tree optimizer `name` with the space file at `path` (not yet in use: `use`)."""
    from bench.optimizers import external

    if get(name).module == "":
        raise UserError(f"--space is for your own optimizers (module:Class or entry points); {name!r} "
                        f"keeps bench/optimizers/{name}.json (a sweep amends its grid: --space {name}=FILE)")
    return external.load(name, path)


def bare(name: str) -> OptimizerDef:
    """Optimizer `name` without a space file: its own defaults, which say each value's type."""
    from bench.optimizers import external

    return get(name) if get(name).module == "" else external.load(name, False)


def use(opt: OptimizerDef) -> None:
    """Use `opt` (with_space's) for its name from now on, in this process."""
    _OUTSIDE[opt.name] = opt


def forget_outside() -> None:
    """Drop the out-of-tree optimizers built so far (tests; a changed module is imported anew)."""
    _OUTSIDE.clear()


def all_optimizers() -> list[OptimizerDef]:
    """The shipped optimizers and those installed packages register (entry points)."""
    from bench import optimizers  # noqa: F401
    from bench.optimizers.external import entry_point_names

    return [*(_REGISTRY[k] for k in sorted(_REGISTRY)),
            *(get(n) for n in entry_point_names() if n not in _REGISTRY)]


def variant_of(hp: Mapping[str, Any]) -> str:
    """hp's `variant`, checked (a builder's first call, so a bad value is the user's error)."""
    value = hp["variant"]
    if value not in VARIANTS:
        raise UserError(f"bad value for hyperparameter 'variant': must be one of {', '.join(VARIANTS)}")
    return value
