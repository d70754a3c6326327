"""Packaging: `import bench` and `optbench run` leave Ray out (it starts only for sweeps), and the
declared metadata agrees with the pins: every dependency pyproject.toml declares is pinned in
constraints.txt at a version its bound admits, and the declared Pythons are 3.11 to 3.13."""
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = ("3.11", "3.12", "3.13")


def _fresh_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=600)


def _loaded(stdout: str) -> list[str]:
    """The modules the child printed on its last line: those of Ray's package it had imported."""
    return json.loads(stdout.strip().splitlines()[-1])


RAY_MODULES = "print(__import__('json').dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'ray')))"


@pytest.mark.integration
def test_importing_bench_and_its_cli_and_train_loop_leaves_ray_out():
    p = _fresh_python(f"import sys\nimport bench, bench.cli, bench.run.train\nbench.cli.build_parser()\n{RAY_MODULES}")
    assert p.returncode == 0, p.stderr
    assert _loaded(p.stdout) == []


@pytest.mark.integration
def test_a_run_through_the_cli_leaves_ray_out(results_dir, tmp_path):
    # the session's results folder for the tokenizer and token shards (built once), a store of its own
    env = {"OPTBENCH_RESULTS": str(results_dir), "OPTBENCH_STORE": f"sqlite:///{tmp_path / 'store.db'}"}
    args = ["run", "--optimizer", "adamw", "--scale", "cpu-xs", "--ratio", "0.02", "--json"]
    p = _fresh_python(f"import sys\nimport bench.cli\nassert bench.cli.main({args!r}) == 0\n{RAY_MODULES}", env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[0])["status"] == "ok"
    assert _loaded(p.stdout) == []


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _declared() -> list[Requirement]:
    project = _project()
    extras = project.get("optional-dependencies", {})
    return [Requirement(r) for r in [*project["dependencies"], *(r for rs in extras.values() for r in rs)]]


def _pins() -> dict[str, list[Requirement]]:
    """constraints.txt by package name; a package may have one line per environment marker."""
    pins: dict[str, list[Requirement]] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            r = Requirement(line)
            pins.setdefault(canonicalize_name(r.name), []).append(r)
    return pins


@pytest.mark.unit
def test_every_declared_dependency_is_pinned_at_a_version_its_bound_admits():
    pins, wrong = _pins(), []
    for req in _declared():
        lines = pins.get(canonicalize_name(req.name))
        if not lines:
            wrong.append(f"{req.name}: not in constraints.txt")
        for pin in lines or []:
            pinned = [s for s in pin.specifier if s.operator == "=="]
            if len(pinned) != 1 or len(pin.specifier) != 1:
                wrong.append(f"{pin}: constraints.txt pins exactly (==)")
            elif not req.specifier.contains(pinned[0].version, prereleases=True):
                wrong.append(f"{req.name}: pinned {pinned[0].version} but declared {req.specifier}")
        if not req.specifier:
            wrong.append(f"{req.name}: declared without a lower bound")
    assert not wrong, "\n".join(wrong)


@pytest.mark.unit
def test_declared_dependencies_are_lower_bounds_not_pins():
    exact = [str(r) for r in _declared() if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not exact, f"pyproject.toml pins {exact}: pins belong in constraints.txt"


@pytest.mark.unit
def test_the_makefiles_own_pins_agree_with_constraints():
    pins = _pins()
    words = (ROOT / "Makefile").read_text().split()
    named = [Requirement(w) for w in words if "==" in w and w[0].isalpha() and "$" not in w]
    assert named, "the Makefile installs kron-torch by its pin"
    for req in named:
        assert [str(p.specifier) for p in pins[canonicalize_name(req.name)]] == [str(req.specifier)], req


@pytest.mark.unit
def test_python_311_to_313_are_declared():
    project = _project()
    requires = SpecifierSet(project["requires-python"])
    for version in PYTHONS:
        assert requires.contains(f"{version}.0") and requires.contains(f"{version}.20"), version
        assert f"Programming Language :: Python :: {version}" in project["classifiers"]
    assert not requires.contains("3.10.12")
