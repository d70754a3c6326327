"""Your own optimizer (bench/optimizers/external.py): `module:Class` names, space files, entry
points, its identity, bad input as one line with exit code 2, and the README's example end to end."""
import argparse
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.cli.run import cmd_optimizers
from bench.errors import UserError
from bench.model.llama import LlamaModel
from bench.model.scales import get_scale
from bench.optimizers import registry
from bench.optimizers.hybrid import HybridOptimizer
from bench.roles import Role
from bench.run import identity
from bench.run.spec import RunSpec
from bench.run.train import RunOptions, run
from sweeps.grid import load_grid, use_space

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "examples.sgd_momentum:SGDMomentum"
SPACE = ROOT / "examples" / "sgd_momentum.json"
# The README's "Benchmark your optimizer" sweep, word for word (tested below).
README_SWEEP = ("optbench sweep --scale cpu-xs --ratios 0.1,0.2,0.4 --optimizers adamw,examples.sgd_momentum:"
                "SGDMomentum --space examples/sgd_momentum.json --max-trials 2 --workers 2 --threads 1 --yes")

MODULE = '''
import torch

class Plain(torch.optim.Optimizer):
    """{doc}"""

    def __init__(self, params, lr=0.05, scale=1.0):
        super().__init__(params, dict(lr=lr, scale=scale))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"] * group["scale"])
'''


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Each test builds out-of-tree optimizers anew (a space installed by one stays in its test)."""
    monkeypatch.syspath_prepend(str(ROOT))
    registry.forget_outside()
    yield
    registry.forget_outside()


def _module(tmp_path, monkeypatch, name, doc="A plain SGD.", body=MODULE):
    path = tmp_path / f"{name}.py"
    path.write_text(body.format(doc=doc))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return path


@pytest.mark.integration
def test_a_torch_optimizer_by_import_path_trains_a_real_short_run(one_thread):
    spec = RunSpec("torch.optim:SGD", "cpu-xs", 0.02, {"learning_rate": 0.1, "momentum": 0.9})
    result = run(spec, RunOptions(threads=1, progress=False))
    assert result.status == "ok" and result.steps > 1 and math.isfinite(result.final_loss)
    assert result.final_loss < math.log(512)  # it learned something: below a uniform guess
    assert result.code["optimizer"].startswith("v0+")  # undeclared: its digest is its version
    assert result.spec["optimizer"] == "torch.optim:SGD"


@pytest.mark.unit
def test_its_hyperparameters_are_the_train_keys_and_the_class_keywords():
    sgd = registry.get("torch.optim:SGD")
    assert set(registry.TRAIN_KEYS) <= set(sgd.defaults)
    assert sgd.defaults["learning_rate"] == 1e-3  # SGD's own lr default, under the study's name
    assert sgd.defaults["momentum"] == 0.0 and isinstance(sgd.defaults["momentum"], float)
    assert not {"params", "lr", "foreach", "fused", "differentiable"} & set(sgd.defaults)
    assert sgd.defaults["roles"] == ",".join(r.value for r in Role)
    adam = registry.get("torch.optim:Adam")
    assert (adam.defaults["beta1"], adam.defaults["beta2"], adam.defaults["epsilon"]) == (0.9, 0.999, 1e-8)
    assert registry.get("torch.optim:SGD") is sgd  # built once


@pytest.mark.unit
def test_the_key_holds_the_modules_fingerprint_and_follows_its_code(tmp_path, monkeypatch):
    _module(tmp_path, monkeypatch, "plain_opt_a")
    first = RunSpec("plain_opt_a:Plain", "cpu-xs", 0.02)
    key, version = first.key, identity.current("plain_opt_a:Plain").optimizer

    def again(**source):  # the module as changed, imported anew
        _module(tmp_path, monkeypatch, "plain_opt_a", **source)
        registry.forget_outside()
        return RunSpec("plain_opt_a:Plain", "cpu-xs", 0.02)

    assert again(doc="Only the docstring changed.").key == key  # docs are not code
    changed = again(body=MODULE.replace('alpha=-group["lr"]', 'alpha=-2 * group["lr"]'))
    assert changed.key != key and changed.hparams == first.hparams
    assert identity.current("plain_opt_a:Plain").optimizer != version
    # the same code elsewhere under another name is another optimizer: the name is in the key too
    _module(tmp_path, monkeypatch, "plain_opt_b")
    assert RunSpec("plain_opt_b:Plain", "cpu-xs", 0.02).key not in (key, changed.key)
    assert RunSpec("adamw", "cpu-xs", 0.02).key == RunSpec("adamw", "cpu-xs", 0.02).key


@pytest.mark.unit
def test_the_space_files_roles_send_hidden_to_the_class_and_the_rest_to_adamw():
    use_space(EXAMPLE, str(SPACE))
    spec = RunSpec(EXAMPLE, "cpu-xs", 0.02)
    hp = spec.hparams
    assert hp["roles"] == "hidden" and hp["learning_rate"] == 0.1 and hp["muon_to_adam_lr"] == 0.1
    model = LlamaModel(get_scale("cpu-xs"), 512)
    tagged = model.tagged_parameters()
    opt = registry.get(EXAMPLE).build(tagged, hp, model)
    assert isinstance(opt, HybridOptimizer)
    mine, adamw = opt.parts
    assert type(mine).__name__ == "SGDMomentum" and isinstance(adamw, torch.optim.AdamW)
    hidden = {id(t.param) for t in tagged if t.role == Role.HIDDEN}
    assert {id(p) for g in mine.param_groups for p in g["params"]} == hidden
    assert {id(p) for g in adamw.param_groups for p in g["params"]} == {id(t.param) for t in tagged} - hidden
    assert {g["lr"] for g in mine.param_groups} == {0.1}
    assert [g["lr"] for g in adamw.param_groups] == pytest.approx([0.1 * 0.1] * len(adamw.param_groups))
    # a worker gets the spec alone: from the import path it rebuilds the same run
    registry.forget_outside()
    rebuilt = RunSpec.from_dict(spec.to_dict())
    assert rebuilt.key == spec.key and rebuilt.hparams == hp


@pytest.mark.unit
def test_the_space_file_gives_the_grid_and_every_role_by_default():
    with pytest.raises(UserError, match="no 'cpu' search grid"):
        load_grid("torch.optim:SGD", "cpu")
    # a space file beside the class's module is its space without --space
    assert load_grid(EXAMPLE, "cpu")["learning_rate"] == [0.025, 0.05, 0.1, 0.2, 0.4]
    assert registry.get(EXAMPLE).defaults["roles"] == "hidden"
    opt = registry.get("torch.optim:SGD").build(LlamaModel(get_scale("cpu-xs"), 512).tagged_parameters(),
                                                RunSpec("torch.optim:SGD", "cpu-xs").hparams, None)
    assert isinstance(opt, torch.optim.SGD)  # every role to the class: no AdamW beside it
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0}


@pytest.mark.integration
def test_a_package_registers_optimizers_by_entry_point(tmp_path, monkeypatch, capsys):
    """A real installed distribution (dist-info on sys.path), read by importlib.metadata."""
    _module(tmp_path, monkeypatch, "ep_plain_opt")
    (tmp_path / "ep_plain_opt.json").write_text(json.dumps(
        {"defaults": {"scale": 0.5}, "roles": ["hidden", "head"], "cpu": {"learning_rate": [0.01, 0.1]}}))
    (tmp_path / "ep_def_opt.py").write_text(textwrap.dedent('''
        from bench.optimizers.common import TRAIN_DEFAULTS
        from bench.optimizers.registry import OptimizerDef
        import torch

        PLAIN = OptimizerDef(name="whatever", family="sign", defaults=dict(TRAIN_DEFAULTS), roles={},
                             build=lambda params, hp, model: torch.optim.SGD(
                                 [t.param for t in params], lr=hp["learning_rate"]),
                             paper="none", source="a test")
    '''))
    dist = tmp_path / "optbench_plain-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: optbench-plain\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[optbench.optimizers]\nplain = ep_plain_opt:Plain\nplaindef = ep_def_opt:PLAIN\n")

    plain = registry.get("plain")
    assert plain.defaults["scale"] == 0.5 and plain.defaults["roles"] == "head,hidden"
    assert plain.space("cpu") == {"learning_rate": [0.01, 0.1]}  # the space file beside its module
    assert {"plain", "plaindef"} <= {o.name for o in registry.all_optimizers()}
    assert registry.get("plaindef").name == "plaindef" and registry.get("plaindef").module == "ep_def_opt"
    spec = RunSpec("plain", "cpu-xs", 0.02)
    assert spec.key != RunSpec("ep_plain_opt:Plain", "cpu-xs", 0.02, dict(spec.hparams)).key
    assert identity.current("plain").optimizer.startswith("v0+")
    assert cmd_optimizers(argparse.Namespace(json=True)) == 0
    listed = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert listed["plain"]["grid"] == {"learning_rate": [0.01, 0.1]}
    result = run(RunSpec("plaindef", "cpu-xs", 0.02), RunOptions(threads=1, progress=False))
    assert result.status == "ok"


def _space(tmp_path, **fields):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"cpu": {"learning_rate": [0.05, 0.1]}, **fields}))
    return str(path)


@pytest.mark.integration
@pytest.mark.parametrize("optimizer, space, message", [
    ("nosuch_module_xyz:Opt", None, "module 'nosuch_module_xyz' does not import"),
    ("torch.optim:NoSuch", None, "module 'torch.optim' has no 'NoSuch'"),
    ("torch.nn:Linear", None, "is not a torch.optim.Optimizer subclass"),
    ("adamw", {}, "--space is for your own optimizers"),
    (EXAMPLE, {"grids": {}}, "unknown key 'grids'"),
    (EXAMPLE, {"cpu": {"learning_rate": 0.1}}, "'cpu' must map hyperparameters to non-empty lists"),
    (EXAMPLE, {"cpu": {"learning_rate": [-0.1, 0.1]}}, "'learning_rate': must be a positive number"),
    (EXAMPLE, {"defaults": {"beta1": 1.0}}, "'beta1': must be in [0, 1)"),
    (EXAMPLE, {"defaults": {"momentum": "high"}}, "'momentum': must be float"),
    (EXAMPLE, {"cpu": {"nesterov": [1]}}, "'nesterov': must be bool"),
    (EXAMPLE, {"defaults": {"lr_typo": 1}}, "unknown hyperparameter 'lr_typo'"),
    (EXAMPLE, {"roles": ["hidden", "mlp"]}, "unknown role 'mlp'"),
    (EXAMPLE, {"roles": []}, "'roles' must be a non-empty list"),
])
def test_bad_input_is_one_line_exit_code_2_and_stores_nothing(optimizer, space, message, tmp_path, capsys):
    store = tmp_path / "store.db"
    args = ["--optimizer", optimizer, "--scale", "cpu-xs", "--ratio", "0.02", "--store", f"sqlite:///{store}"]
    if space is not None:
        args += ["--space", _space(tmp_path, **space)]
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not store.exists()


@pytest.mark.integration
def test_a_sweep_takes_the_space_of_its_one_optimizer_of_your_own(tmp_path, capsys):
    store = tmp_path / "store.db"
    sweep = ["sweep", "--scale", "cpu-xs", "--ratios", "0.1", "--store", f"sqlite:///{store}", "--dry-run"]
    bad = _space(tmp_path, cpu={"learning_rate": [0.1, 0]}, defaults={"momentum": 0.9})
    assert main([*sweep, "--optimizers", f"adamw,{EXAMPLE}", "--space", bad]) == 2
    err = capsys.readouterr().err
    assert "(cpu grid)" in err and err.count("\n") == 1
    assert main([*sweep, "--optimizers", "adamw", "--space", str(SPACE)]) == 2
    assert "name its optimizer" in capsys.readouterr().err
    assert main([*sweep, "--optimizers", "adamw,torch.optim:SGD"]) == 2  # no grid of its own
    assert "no 'cpu' search grid" in capsys.readouterr().err


@pytest.mark.system
def test_the_readme_example_ends_in_a_speedup_table_with_its_row(tmp_path, results_dir):
    assert README_SWEEP in (ROOT / "README.md").read_text()
    env = {**os.environ, "OPTBENCH_RESULTS": str(tmp_path), "OPTBENCH_CACHE": str(results_dir / "cache")}
    env.pop("OPTBENCH_STORE", None)
    bin_dir = Path(sys.executable).parent
    start = time.perf_counter()
    done = subprocess.run([str(bin_dir / "optbench"), *README_SWEEP.split()[1:]], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout.split("Speedup over AdamW")[1]
    row = next(line for line in table.splitlines() if line.startswith(EXAMPLE))
    assert len(row.split()) >= 4 and all(c[0].isdigit() for c in row.split()[1:4]), row  # 3 ratios
    print(f"README example: {time.perf_counter() - start:.0f} s to the speedup table")
