"""Code identity: which version of the code produced a result.

Every result carries two code versions: its optimizer's (the optimizer's module and the shared
optimizer modules it imports) and the harness's (model, data, spec, step, train loop and
evaluation). A stored result whose versions differ from the current code's is stale.

A version is declared, not a raw file hash: bench/code_versions.json gives each part a version
number and the source digests accepted for it. A digest is over each module's syntax tree without
docstrings, so comments, formatting and docs never change it. Code whose digest is accepted runs
as "v<N>"; code changed since its declaration runs as "v<N>+<digest>" and so never matches a result
of v<N>. A developer then declares the change with `optbench code`: `accept` (a refactor: results
stay valid, the digest joins v<N>) or `bump` (results change: v<N+1>, older results go stale).
tests/test_code_identity.py keeps the committed code declared.

An optimizer from outside bench/ (a `module:Class` name or an entry point, bench/optimizers/
external.py) is versioned the same way from its module's source, wherever that lives, with the
bench modules that build it: undeclared, it runs as "v0+<digest>". Its run key also holds its own
module's digest (`module_digest`, bench/run/spec.py): its name alone does not say which code it is.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from bench.errors import UserError

BENCH = Path(__file__).resolve().parents[1]
VERSIONS_FILE = BENCH / "code_versions.json"
HARNESS = "harness"
# What decides a run's numbers besides its optimizer (relative to bench/; folders mean every module).
HARNESS_SOURCES = ("model", "data", "run/spec.py", "run/step.py", "run/train.py", "run/distributed.py",
                   "run/schedules.py", "run/checkpoint.py", "roles.py", "study.py", "optimizers/registry.py")
_OPTIMIZERS_PACKAGE = "bench.optimizers"
_NOT_OPTIMIZER_CODE = {"bench.optimizers.registry"}  # harness: it says how every optimizer is built


@dataclass(frozen=True)
class CodeVersion:
    """The code versions behind a result: its optimizer's and the harness's."""

    optimizer: str
    harness: str

    def as_dict(self) -> dict[str, str]:
        return {"optimizer": self.optimizer, "harness": self.harness}


def current(optimizer: str) -> CodeVersion:
    """The code version a run of `optimizer` gets from the code as it is now."""
    return CodeVersion(part_version(optimizer), part_version(HARNESS))


def part_version(part: str) -> str:
    declared = declarations().get(part)
    digest = source_digest(part)
    if declared is None:  # an optimizer nobody declared yet (your own): its digest is its version
        return f"v0+{digest}"
    return f"v{declared['version']}" if digest in declared["accepted"] else f"v{declared['version']}+{digest}"


def source_digest(part: str) -> str:
    """12 hex digits over the syntax trees (docstrings left out) of the part's modules."""
    return _digest(tuple((source_label(p), p, _stamp(p)) for p in part_sources(part)))


@lru_cache(maxsize=None)
def _digest(sources: tuple[tuple[str, Path, tuple[int, int]], ...]) -> str:
    h = hashlib.sha256()
    for label, path, stamp in sources:
        h.update(label.encode() + b"\0" + _module(path, stamp).digest + b"\0")
    return h.hexdigest()[:12]


def module_digest(module: str) -> str:
    """12 hex digits over the syntax tree (docstrings left out) of one module, found anywhere."""
    path = _module_path(module)
    return _module(path, _stamp(path)).digest.hex()[:12]


def source_label(path: Path) -> str:
    """A module file as digests and `optbench code` name it: relative to bench/, else its file name
    (an out-of-tree module's digest does not depend on where it is installed)."""
    return path.relative_to(BENCH).as_posix() if path.is_relative_to(BENCH) else path.name


def _stamp(path: Path) -> tuple[int, int]:
    """What tells a changed file from the one parsed before (the caches' key)."""
    st = path.stat()
    return st.st_mtime_ns, st.st_size


class _Module(NamedTuple):
    digest: bytes  # of its syntax tree without docstrings
    imports: tuple[str, ...]  # the optimizer modules it imports


@lru_cache(maxsize=None)  # modules are shared by many parts: each is parsed once per version
def _module(path: Path, stamp: tuple[int, int]) -> _Module:
    tree = ast.parse(path.read_text(), str(path))
    imports = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imports.append(node.module)
        elif isinstance(node, ast.Import):
            imports += [a.name for a in node.names]
    inside = tuple(m for m in imports if m.startswith(_OPTIMIZERS_PACKAGE + "."))
    return _Module(hashlib.sha256(_dump(_without_docstrings(tree)).encode()).digest(), inside)


def part_sources(part: str) -> list[Path]:
    """The module files of a part, sorted."""
    if part == HARNESS:
        paths = [p for name in HARNESS_SOURCES
                 for p in ((BENCH / name).glob("*.py") if (BENCH / name).is_dir() else [BENCH / name])]
        return sorted(paths)
    from bench.optimizers import registry

    opt = registry.get(part)
    modules = _optimizer_modules(opt.build.__module__) | (_optimizer_modules(opt.module) if opt.module else set())
    return sorted(_module_path(m) for m in modules)


def parts() -> list[str]:
    """The harness, then every registered optimizer."""
    from bench.optimizers import registry

    return [HARNESS, *(o.name for o in registry.all_optimizers())]


@lru_cache(maxsize=None)
def declarations() -> dict[str, dict]:
    """bench/code_versions.json: part -> {"version": N, "accepted": [digest, ...]}."""
    try:
        return json.loads(VERSIONS_FILE.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as e:
        raise UserError(f"{VERSIONS_FILE} is not valid JSON: {e}") from None


def declare(names: list[str], bump: bool) -> list[str]:
    """Accept the current source of each part for its version (bump: under a new version);
    returns one line per part on what changed."""
    table = {k: dict(v) for k, v in declarations().items()}
    lines = []
    for name in names:
        digest = source_digest(name)
        entry = table.get(name, {"version": 0, "accepted": []})
        if name not in table:
            entry = {"version": 1, "accepted": [digest]}
            lines.append(f"{name}: declared v1")
        elif bump:
            entry = {"version": entry["version"] + 1, "accepted": [digest]}
            lines.append(f"{name}: now v{entry['version']} (its results before are stale)")
        elif digest not in entry["accepted"]:
            entry = {**entry, "accepted": [*entry["accepted"], digest]}
            lines.append(f"{name}: source {digest} accepted as v{entry['version']} (its results stay current)")
        else:
            lines.append(f"{name}: v{entry['version']}, unchanged")
        table[name] = entry
    rows = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(table.items())]
    VERSIONS_FILE.write_text("{\n" + ",\n".join(rows) + "\n}\n")  # one part per line: short diffs
    declarations.cache_clear()
    return lines


def _optimizer_modules(module: str) -> set[str]:
    """`module` and the optimizer modules it imports, transitively."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name not in seen and name not in _NOT_OPTIMIZER_CODE:
            seen.add(name)
            path = _module_path(name)
            todo += _module(path, _stamp(path)).imports
    return seen


def _module_path(module: str) -> Path:
    if module.startswith(_OPTIMIZERS_PACKAGE + "."):
        return BENCH.joinpath(*module.split(".")[1:]).with_suffix(".py")
    loaded = sys.modules.get(module)  # an out-of-tree optimizer's module: imported by the registry
    spec = None if loaded is not None else importlib.util.find_spec(module)
    file = getattr(loaded, "__file__", None) or (spec.origin if spec else None)
    if not file or not file.endswith(".py"):
        raise UserError(f"optimizer module {module!r} has no Python source to version")
    return Path(file).resolve()


def _without_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _dump(node: object) -> str:
    """A syntax tree as text, the same on every Python from 3.11 (ast.dump is not: 3.12 adds
    type_params=[], 3.13 leaves empty fields out), so no interpreter makes results stale."""
    if isinstance(node, ast.AST):
        fields = ((name, getattr(node, name, None)) for name in node._fields)
        return f"{type(node).__name__}(" + ",".join(f"{name}={_dump(value)}" for name, value in fields
                                                 if value is not None and value != []) + ")"
    if isinstance(node, list):
        return "[" + ",".join(_dump(item) for item in node) + "]"
    return repr(node)
