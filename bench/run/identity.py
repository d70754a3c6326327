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
"""
from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from bench.errors import UserError

BENCH = Path(__file__).resolve().parents[1]
VERSIONS_FILE = BENCH / "code_versions.json"
HARNESS = "harness"
# What decides a run's numbers besides its optimizer (relative to bench/; folders mean every module).
HARNESS_SOURCES = ("model", "data", "run/spec.py", "run/step.py", "run/train.py", "run/schedules.py",
                   "run/checkpoint.py", "roles.py", "study.py", "optimizers/registry.py")
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


@lru_cache(maxsize=None)
def source_digest(part: str) -> str:
    """12 hex digits over the syntax trees (docstrings left out) of the part's modules."""
    h = hashlib.sha256()
    for path in part_sources(part):
        h.update(path.relative_to(BENCH).as_posix().encode() + b"\0" + _module(path).digest + b"\0")
    return h.hexdigest()[:12]


class _Module(NamedTuple):
    digest: bytes  # of its syntax tree without docstrings
    imports: tuple[str, ...]  # the optimizer modules it imports


@lru_cache(maxsize=None)  # modules are shared by many parts: each is parsed once
def _module(path: Path) -> _Module:
    tree = ast.parse(path.read_text(), str(path))
    imports = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imports.append(node.module)
        elif isinstance(node, ast.Import):
            imports += [a.name for a in node.names]
    inside = tuple(m for m in imports if m.startswith(_OPTIMIZERS_PACKAGE + "."))
    return _Module(hashlib.sha256(ast.dump(_without_docstrings(tree)).encode()).digest(), inside)


def part_sources(part: str) -> list[Path]:
    """The module files of a part, sorted."""
    if part == HARNESS:
        paths = [p for name in HARNESS_SOURCES
                 for p in ((BENCH / name).glob("*.py") if (BENCH / name).is_dir() else [BENCH / name])]
        return sorted(paths)
    from bench.optimizers import registry

    module = registry.get(part).build.__module__
    return sorted(_module_path(m) for m in _optimizer_modules(module))


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
            todo += _module(_module_path(name)).imports
    return seen


def _module_path(module: str) -> Path:
    return BENCH.joinpath(*module.split(".")[1:]).with_suffix(".py")


def _without_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree
