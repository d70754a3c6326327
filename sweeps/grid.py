"""Search grids: an optimizer's grid on a ladder, a start point snapped onto it, and the order in
which a coordinate sweep visits the hyperparameters (the ones that matter most first).

A config is a dict over the grid's keys only; every other hyperparameter keeps the optimizer's
default when the config becomes a RunSpec.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Mapping

from analysis.cells import config_key
from bench.errors import UserError
from bench.optimizers import registry
from bench.optimizers.registry import read_grids
from bench.run.spec import resolve_hparams

Config = dict[str, Any]
AMENDMENT_KEYS = ("cpu", "paper", "start", "source")
# shipped optimizer -> its --space amendment in this process: grid keys by ladder, "start", "label"
_AMENDED: dict[str, dict[str, Any]] = {}


def load_grid(optimizer: str, ladder: str) -> dict[str, list]:
    """The grid of `optimizer` for `ladder` ("cpu" or "paper"), from <name>.json beside its optimizer
    module, with the keys a --space amendment names replaced."""
    grid = {key: list(values) for key, values in registry.get(optimizer).space(ladder).items()}
    grid.update(_AMENDED.get(optimizer, {}).get(ladder, {}))
    use_space(optimizer)  # a space of the user's own: its values checked before any trial
    return grid


def start_point(optimizer: str, hparams: Mapping[str, Any], grid: Mapping[str, list]) -> Config:
    """Where a search of `optimizer` begins: `hparams` (its defaults), with an amendment's "start"
    values over them, snapped onto `grid`."""
    return snap_config({**hparams, **_AMENDED.get(optimizer, {}).get("start", {})}, grid)


def space_label(optimizer: str) -> str:
    """A short digest of `optimizer`'s grid amendment ("" for none): its searches' Optuna studies
    carry it, so a search on another grid never resumes this one's."""
    return _AMENDED.get(optimizer, {}).get("label", "")


def use_spaces(spaces: list[str], optimizers: list[str]) -> None:
    """`--space [NAME=]FILE`s of a sweep over `optimizers`: a FILE without NAME is for the one
    optimizer among them from outside bench/optimizers/; NAME=FILE for a shipped optimizer amends
    its grid (amend_grid)."""
    _AMENDED.clear()
    for item in spaces:
        name, sep, path = item.partition("=")
        if not sep:
            own = [n for n in optimizers if registry.get(n).module]
            if len(own) != 1:
                raise UserError(f"--space {item}: name its optimizer, NAME=FILE (your own optimizers "
                                f"here: {', '.join(own) or 'none'})")
            name, path = own[0], item
        if registry.get(name).module:
            use_space(name, path)
        else:
            amend_grid(name, path)


def amend_grid(optimizer: str, path: str) -> None:
    """Amend shipped `optimizer`'s grids for this process from the file at `path`: {"cpu": {key:
    [values]}, "paper": {...}, "start": {key: value}, "source": notes}. A key it lists replaces that
    key's values (or adds the key); "start" moves where a search begins. Its runs keep the
    optimizer's own defaults for every key not in a config, so they stay what their keys say."""
    data = read_grids(path, AMENDMENT_KEYS)
    where = f"--space {optimizer}={path}"
    opt = registry.get(optimizer)
    for ladder in ("cpu", "paper"):
        for key, values in data.get(ladder, {}).items():
            for value in values:
                _checked(opt, {_known(opt, key, where): value}, f"{where} ({ladder} grid)")
    start = data.get("start", {})
    if not isinstance(start, dict):
        raise UserError(f"{where}: 'start' must map hyperparameters to values")
    _checked(opt, {_known(opt, k, where): v for k, v in start.items()}, f"{where} (start)")
    on_grid = {k for ladder in ("cpu", "paper") for k in (*opt.space(ladder), *data.get(ladder, {}))}
    if off := sorted(set(start) - on_grid):
        raise UserError(f"{where}: start {off[0]!r} is on none of {optimizer}'s grids (a search sets grid keys only)")
    kept = {k: data[k] for k in ("cpu", "paper", "start") if k in data}
    digest = hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:8]
    _AMENDED[optimizer] = {**kept, "label": digest, "path": path}


def amended_optimizers() -> list[str]:
    return sorted(_AMENDED)


def amendments() -> list[str]:
    """One line per amended grid in this process, for a sweep's plan."""
    lines = []
    for name, amended in _AMENDED.items():
        keys = sorted({k for ladder in ("cpu", "paper") for k in amended.get(ladder, {})})
        start = ", ".join(f"{k}={v}" for k, v in amended.get("start", {}).items())
        lines.append(f"{name}: grid amended by {amended['path']} ({', '.join(keys) or 'no keys'}"
                     f"{'; start ' + start if start else ''}); Optuna studies .../space-{amended['label']}")
    return lines


def _known(opt: registry.OptimizerDef, key: str, where: str) -> str:
    if key not in opt.defaults:
        raise UserError(f"{where}: unknown hyperparameter {key!r} for {opt.name}; "
                        f"known: {', '.join(sorted(opt.defaults))}")
    return key


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
