"""Optimizers from outside bench/optimizers/: `module:Class` names and the `optbench.optimizers`
entry points (docs/DESIGN.md, "Your own optimizer").

A `module:Class` name is any torch.optim.Optimizer subclass importable here (the current directory
is on the import path, after everything else). Its hyperparameters are the train loop's, the
class's keyword parameters with their defaults (study names: lr -> learning_rate, eps -> epsilon,
a pair `betas` -> beta1, beta2; torch's execution switches foreach/fused/capturable/differentiable
and non-scalar parameters are left at the class's defaults), `roles` (the parameter roles the class
takes; the rest go to AdamW at lr * muon_to_adam_lr, as the Muon family does) and that AdamW's
beta1, beta2, epsilon, weight_decay where the class has none of its own. Everything that decides a
run is therefore in its spec's hyperparameters, and a Ray worker rebuilds the same optimizer from
the import path alone.

An entry point (group `optbench.optimizers`, its name the optimizer's) points at such a class or at
an OptimizerDef. A space file (search grids, defaults, roles) is `--space FILE`, else
`<module>.json` beside the class's module where there is one.

Importing this module registers nothing (the package imports every module of its folder).
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Mapping

import torch

from bench.errors import UserError
from bench.optimizers.common import TRAIN_DEFAULTS, decay_groups, make_adamw
from bench.optimizers.hybrid import HybridOptimizer
from bench.optimizers.registry import TRAIN_KEYS, OptimizerDef, read_grids
from bench.roles import Role, TaggedParam, split_by_role

ENTRY_POINT_GROUP = "optbench.optimizers"
ALL_ROLES = ",".join(r.value for r in Role)
RENAMED = {"lr": "learning_rate", "eps": "epsilon"}  # the study's names, shared with the auxiliary AdamW
SWITCHES = {"self", "params", "foreach", "fused", "capturable", "differentiable"}  # how torch runs, not what
# The auxiliary AdamW's (adamw.py's defaults); muon_to_adam_lr 1: the same peak lr as the class.
AUX_DEFAULTS = {"muon_to_adam_lr": 1.0, "beta1": 0.9, "beta2": 0.98, "epsilon": 1e-10, "weight_decay": 0.1}
SPACE_KEYS = ("cpu", "paper", "defaults", "roles", "optimizer", "source")


class RoleSets(tuple):
    """The allowed values of `roles` (OptimizerDef.choices): any non-empty set of role names,
    comma-separated in Role order (one spelling, one run key). Held as the rule in words, which is
    what spec.py's error message lists, rather than every one of the 2^n - 1 sets."""

    def __new__(cls) -> "RoleSets":
        return super().__new__(cls, (f"role names comma-separated in the order {ALL_ROLES}",))

    def __contains__(self, value: object) -> bool:
        names = value.split(",") if isinstance(value, str) else []
        return bool(names) and names == [r.value for r in Role if r.value in names]


def load(name: str, space: str | Path | None | bool = None) -> OptimizerDef | None:
    """The optimizer `name` (module:Class, or an entry point's name) with its space file (`space`,
    else the one beside its module; False: none, the class's own defaults); None if `name` is
    neither."""
    if ":" in name:
        return _from_class(name, _import(name), space)
    point = next((ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name), None)
    if point is None:
        return None
    try:
        target = point.load()
    except Exception as e:  # a broken package is its user's one-line error
        raise UserError(f"optimizer {name!r}: entry point {point.value!r} does not load: "
                        f"{type(e).__name__}: {e}") from None
    if isinstance(target, OptimizerDef):
        if missing := [k for k in TRAIN_KEYS if k not in target.defaults]:
            raise UserError(f"optimizer {name!r} ({point.value}): its defaults lack the train keys {missing}")
        opt = replace(target, name=name, module=target.module or point.module)
        return _with_space(opt, read_space(space)) if space else opt
    return _from_class(name, _checked(target, point.value), space)


def entry_point_names() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def _import(name: str) -> type:
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise UserError(f"bad optimizer {name!r}: expected module:Class, e.g. torch.optim:SGD")
    if os.getcwd() not in sys.path:  # `optbench` is a script: its directory, not the cwd, is on the path
        sys.path.append(os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as e:
        raise UserError(f"optimizer {name!r}: module {module_name!r} does not import: "
                        f"{type(e).__name__}: {e}") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UserError(f"optimizer {name!r}: module {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    return _checked(target, name)


def _checked(target: Any, name: str) -> type:
    if not (inspect.isclass(target) and issubclass(target, torch.optim.Optimizer)
            and target is not torch.optim.Optimizer):
        raise UserError(f"optimizer {name!r} is not a torch.optim.Optimizer subclass")
    return target


def _from_class(name: str, cls: type, space: str | Path | None) -> OptimizerDef:
    params = class_hparams(cls, name)
    module = sys.modules.get(cls.__module__)
    opt = OptimizerDef(
        name=name, family="yours", build=_builder(cls, params),
        defaults={**TRAIN_DEFAULTS, **AUX_DEFAULTS, "roles": ALL_ROLES,
                  **{hp: v for names in params.values() for hp, v in names}},
        roles=_roles_said(cls, ALL_ROLES),
        paper=(inspect.getdoc(cls) or "").partition("\n")[0] or f"your own optimizer {name}",
        source=f"{cls.__module__}:{cls.__qualname__} ({getattr(module, '__file__', '?')})",
        module=cls.__module__, choices={"roles": RoleSets()}, grids={})
    beside = Path(getattr(module, "__file__", "") or "").with_suffix(".json")
    space = space if space is not None else (beside if beside.is_file() else None)
    return _with_space(opt, read_space(space), cls) if space else opt


def class_hparams(cls: type, name: str) -> dict[str, list[tuple[str, Any]]]:
    """The class's keyword parameters that are hyperparameters: param -> [(hyperparameter, default)]."""
    out = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in SWITCHES or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            if p.name == "lr":  # the train loop's default learning rate
                out["lr"] = [("learning_rate", TRAIN_DEFAULTS["learning_rate"])]
                continue
            raise UserError(f"optimizer {name!r}: parameter {p.name!r} has no default; give it one")
        if p.name == "betas" and isinstance(p.default, tuple) and len(p.default) == 2:
            out["betas"] = [("beta1", float(p.default[0])), ("beta2", float(p.default[1]))]
        elif p.default is None or isinstance(p.default, (bool, int, float, str)):
            out[p.name] = [(RENAMED.get(p.name, p.name), _typed(p))]
    return out


def _typed(p: inspect.Parameter) -> Any:
    """An int default of a float parameter (torch's `momentum=0`) as a float: 0.9 must be a value."""
    floaty = isinstance(p.default, int) and not isinstance(p.default, bool) and "float" in str(p.annotation)
    return float(p.default) if floaty else p.default


def _builder(cls: type, params: Mapping[str, list[tuple[str, Any]]]):
    def build(tagged: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module) -> torch.optim.Optimizer:
        roles = {Role(r) for r in hp["roles"].split(",")}
        mine, rest = split_by_role(tagged, roles)
        kwargs = {p: tuple(hp[k] for k, _ in names) if p == "betas" else hp[names[0][0]]
                  for p, names in params.items()}
        parts = []
        if mine:  # a class that takes weight_decay gets it per role (decay_roles), as every optimizer
            groups = (decay_groups(mine, hp["learning_rate"], hp) if "weight_decay" in params
                      else [{"params": [t.param for t in mine], "lr": hp["learning_rate"]}])
            parts.append(cls(groups, **kwargs))
        if rest:
            parts.append(make_adamw(rest, hp, hp["learning_rate"] * hp["muon_to_adam_lr"]))
        return parts[0] if not rest else HybridOptimizer(*parts)
    return build


def _roles_said(cls: type, roles: str) -> dict[Role, str]:
    mine = set(roles.split(","))
    return {r: cls.__name__ if r.value in mine else "AdamW at lr * muon_to_adam_lr" for r in Role}


def read_space(path: str | Path) -> dict[str, Any]:
    """A space file, checked for its shape: {"cpu": grid, "paper": grid, "defaults": {...},
    "roles": [...], "optimizer"/"source": notes}, each grid {hyperparameter: [values]}."""
    data = read_grids(path, SPACE_KEYS)
    if not isinstance(data.get("defaults", {}), dict):
        raise UserError(f"space file {path}: 'defaults' must map hyperparameters to values")
    roles = data.get("roles", [r.value for r in Role])
    known = [r.value for r in Role]
    if not (isinstance(roles, list) and roles and all(isinstance(r, str) for r in roles)):
        raise UserError(f"space file {path}: 'roles' must be a non-empty list of role names ({', '.join(known)})")
    if bad := [r for r in roles if r not in known]:
        raise UserError(f"space file {path}: unknown role {bad[0]!r}; roles: {', '.join(known)}")
    return {**data, "path": str(path), "roles": ",".join(r for r in known if r in roles)}


def _with_space(opt: OptimizerDef, space: Mapping[str, Any], cls: type | None = None) -> OptimizerDef:
    """`opt` with the space's defaults, roles and grids (names checked; values: sweeps.grid)."""
    where = f"space file {space['path']}"
    defaults = dict(space.get("defaults", {}))
    if cls is not None:
        defaults["roles"] = space["roles"]
    elif "roles" in space and space["roles"] != ALL_ROLES:
        raise UserError(f"{where}: 'roles' is for optimizer classes; {opt.name} is an OptimizerDef")
    grids = {ladder: space[ladder] for ladder in ("cpu", "paper") if ladder in space}
    for key in [*defaults, *(k for grid in grids.values() for k in grid)]:
        if key not in opt.defaults:
            raise UserError(f"{where}: unknown hyperparameter {key!r} for {opt.name}; "
                            f"known: {', '.join(sorted(opt.defaults))}")
    said = _roles_said(cls, defaults["roles"]) if cls is not None else opt.roles
    return replace(opt, defaults={**opt.defaults, **defaults}, grids=grids, roles=said,
                   notes=f"search space: {space['path']}")
