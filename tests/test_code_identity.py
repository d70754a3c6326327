"""Code identity (bench/run/identity.py): a result is served only to the code that produced it.

The finding this reproduces: a run's key hashed only its spec, so after a fix to an optimizer
`run`, `sweep` and `analyze` kept serving its old losses as if new. Here a copy of the code tree is
edited the ways a developer edits it, and `optbench run` on the copy is asked for the same run each
time: a comment does not re-train, a real change does (keeping the old row), a change declared a
refactor (`optbench code accept`) does not, a bump does."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import identity

REPO = Path(__file__).resolve().parents[1]
RUN = ["run", "--optimizer", "lion", "--scale", "cpu-xs", "--ratio", "0.05", "--threads", "2"]
SIGN = "        torch._foreach_sign_(update)\n"


@pytest.mark.unit
def test_the_committed_code_is_declared():
    """Every part's source is accepted for its declared version: a change made without
    `optbench code accept` (a refactor) or `optbench code bump` (new results) fails here."""
    changed = [f"{part} ({identity.part_version(part)})" for part in identity.parts()
               if "+" in identity.part_version(part)]
    assert not changed, ("changed since declared: " + ", ".join(changed) + "; run `optbench code accept "
                         "PART` if its results stay the same, `optbench code bump PART` if they change")


@pytest.mark.unit
def test_an_optimizer_part_is_its_module_and_the_optimizer_modules_it_imports():
    names = {p.name for p in identity.part_sources("normuon")}
    assert {"normuon.py", "muon.py", "newton_schulz.py", "hybrid.py", "base.py"} <= names
    assert "registry.py" not in names and "soap.py" not in names
    assert "train.py" in {p.name for p in identity.part_sources(identity.HARNESS)}


@pytest.fixture
def tree(tmp_path, results_dir):
    """A copy of the code, and how to run `optbench` on it against one store."""
    root = tmp_path / "tree"
    for package in ("bench", "sweeps", "analysis"):
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    store = f"sqlite:///{tmp_path / 'store.db'}"
    env = {"PATH": "/usr/bin:/bin", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "OPTBENCH_RESULTS": str(tmp_path / "results"), "OPTBENCH_CACHE": str(results_dir / "cache"),
           "PYTHONPATH": str(root)}

    def optbench(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "bench.cli", *args, "--store", store], cwd=root,
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    def code(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "bench.cli", "code", *args], cwd=root, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    return root / "bench" / "optimizers" / "lion.py", optbench, code


def _loss(done: subprocess.CompletedProcess) -> float:
    return float(done.stdout.split("eval loss")[1].split()[0])


@pytest.mark.system
def test_a_changed_optimizer_retrains_and_a_declared_refactor_does_not(tree):
    lion, optbench, code = tree
    original = lion.read_text()
    first = optbench(*RUN)
    assert "stored in" in first.stdout and "optimizer v1, harness v1" in first.stdout

    lion.write_text(original.replace(SIGN, "        # a comment, and a docstring below\n" + SIGN)
                    .replace('"""', '"""Edited. ', 1))
    assert "already in" in optbench(*RUN).stdout  # comments and docs are not code

    assert SIGN in original
    lion.write_text(original.replace(SIGN, SIGN + "        torch._foreach_mul_(update, 0.5)\n"))
    assert "CHANGED since declared" in code("show", "lion")
    changed = optbench(*RUN)
    assert "re-trained    the stored result came from other code (optimizer v1, harness v1)" in changed.stdout
    assert "stored in" in changed.stdout and _loss(changed) != _loss(first)
    rows = [json.loads(line) for line in optbench("runs", "--json").stdout.splitlines()]
    assert sorted(r["state"] for r in rows) == ["served", "stale"]  # the old row is kept

    lion.write_text(original.replace("exp_avgs", "momenta"))  # a refactor: same numbers
    assert "+" in code("show", "lion").split()[1]
    assert "accepted as v1" in code("accept", "lion")
    again = optbench(*RUN)
    assert "already in" in again.stdout and _loss(again) == _loss(first)

    assert "now v2" in code("bump", "lion")
    bumped = optbench(*RUN)
    assert "re-trained" in bumped.stdout and "optimizer v2" in bumped.stdout
    assert _loss(bumped) == _loss(first)  # the same math, trained again under its new version
