"""Search grids: an optimizer's grid on a ladder, a start point snapped onto it, and the order in
which a coordinate sweep visits the hyperparameters (the ones that matter most first).

A config is a dict over the grid's keys only; every other hyperparameter keeps the optimizer's
default when the config becomes a RunSpec.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from analysis.cells import config_key
from bench.errors import UserError
from bench.optimizers import registry
from bench.run.spec import resolve_hparams

Config = dict[str, Any]


def load_grid(optimizer: str, ladder: str) -> dict[str, list]:
    """The grid of `optimizer` for `ladder` ("cpu" or "paper"), from <name>.json beside its optimizer module."""
    grid = {key: list(values) for key, values in registry.get(optimizer).space(ladder).items()}
    use_space(optimizer)  # a space of the user's own: its values checked before any trial
    return grid


def use_spaces(spaces: list[str], optimizers: list[str]) -> None:
    """`--space [NAME=]FILE`s of a sweep over `optimizers`: a FILE without NAME is for the one
    optimizer among them from outside bench/optimizers/."""
    for item in spaces:
        name, sep, path = item.partition("=")
        if not sep:
            own = [n for n in optimizers if registry.get(n).module]
            if len(own) != 1:
                raise UserError(f"--space {item}: name its optimizer, NAME=FILE (your own optimizers "
                                f"here: {', '.join(own) or 'none'})")
            name, path = own[0], item
        use_space(name, path)


def use_space(optimizer: str, path: str | None = None) -> None:
    """Give out-of-tree `optimizer` the space file at `path` (--space) for this process, once its
    values pass the RunSpec's checks (types, ranges: a bad one fails now, not a trial mid-sweep);
    without `path`, check the space it has."""
    opt = registry.with_space(optimizer, path) if path else registry.get(optimizer)
    if not opt.module:
        return
    where = opt.notes if opt.notes.startswith("search space:") else f"optimizer {optimizer}"
    own = registry.bare(optimizer)  # its defaults without the space's: the types values must have
    for ladder, grid in (opt.grids or {}).items():
        for key, values in grid.items():
            for value in values:
                _checked(own, {key: value}, f"{where} ({ladder} grid)")
    _checked(own, dict(opt.defaults), where)
    if path:
        registry.use(opt)


def _checked(opt: registry.OptimizerDef, values: dict[str, Any], where: str) -> None:
    try:
        resolve_hparams(opt, values)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def snap_config(hparams: Mapping[str, Any], grid: Mapping[str, list]) -> Config:
    """The grid keys of `hparams`, each moved to its nearest grid value."""
    return {key: snap(hparams[key], choices) for key, choices in grid.items() if key in hparams}


def snap(value: Any, choices: list) -> Any:
    """The grid value equal to `value`, else the nearest number (log scale for positive numbers);
    a non-number that is not on the grid stays as it is (a coordinate sweep still tries it)."""
    for choice in choices:
        if _same(choice, value):
            return choice
    numbers = [c for c in choices if _is_number(c)]
    if not (_is_number(value) and numbers):
        return value
    log = value > 0 and all(c > 0 for c in numbers)
    return min(numbers, key=lambda c: abs(math.log(c / value)) if log else abs(c - value))


def importance_order(keys) -> list[str]:
    """Learning rate first, then auxiliary learning rates, decay, schedule, momenta, the rest,
    clipping and batch; epsilons last (the study found them nearly always irrelevant)."""
    return sorted(keys, key=lambda k: (_rank(k), k))


def centre_out(choices: list, current: Any) -> list:
    """The grid values nearest the current one first (current, below, above, ...), so a small
    budget spends its runs around the baseline; an off-grid current value comes first."""
    index = next((i for i, c in enumerate(choices) if _same(c, current)), None)
    if index is None:
        return [current, *choices]
    order = sorted(range(len(choices)), key=lambda i: (abs(i - index), i > index))
    return [choices[i] for i in order]


def unique_configs(configs: list[Config]) -> list[Config]:
    """`configs` without repeats, first occurrence kept."""
    ids: set[str] = set()
    out = []
    for c in configs:
        if config_key(c) not in ids:
            ids.add(config_key(c))
            out.append(c)
    return out


def _rank(key: str) -> int:
    if key == "learning_rate":
        return 0
    if key.endswith("_lr"):
        return 1
    if key == "weight_decay":
        return 2
    if key in ("warmup", "decay"):
        return 3
    if "epsilon" in key:
        return 7
    if key in ("max_grad_norm", "train_batch_size"):
        return 6
    if "beta" in key or key == "momentum":
        return 4
    return 5


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _same(a: Any, b: Any) -> bool:
    """Equal and both bool or both not (True == 1 in Python, but not on a grid)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b
