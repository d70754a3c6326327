"""Every registered optimizer, on the real model: trains, checkpoints exactly, is fully described
(its variants and their differences too)."""
import argparse
import copy
import json

import pytest
import torch

from bench.cli.run import cmd_optimizers
from bench.errors import UserError
from bench.model.llama import LlamaModel
from bench.model.scales import get_scale
from bench.optimizers.registry import TRAIN_KEYS, VARIANTS, all_optimizers
from bench.roles import Role
from bench.run.spec import RunSpec
from bench.run.step import train_step
from bench.run.train import RunOptions, run

NAMES = [o.name for o in all_optimizers()]
STUDY = {"adamw", "nadamw", "mars", "cautious", "lion", "adam_mini", "muon", "scion", "kron", "soap", "sophia"}
NEWER = {"normuon", "auon", "conda", "muonclip"}


@pytest.mark.integration
def test_the_studys_eleven_and_the_required_newer_optimizers_are_registered():
    assert STUDY | NEWER <= set(NAMES)


@pytest.mark.integration
@pytest.mark.parametrize("name", NAMES)
def test_registration_is_complete(name):
    opt = next(o for o in all_optimizers() if o.name == name)
    assert set(TRAIN_KEYS) <= set(opt.defaults)
    assert "arXiv" in opt.paper or "http" in opt.paper
    assert opt.source and opt.family
    assert set(opt.roles) >= {Role.HIDDEN, Role.EMBEDDING, Role.HEAD, Role.NORM}
    grid = opt.space("cpu")
    assert grid and set(grid) <= set(opt.defaults), f"grid keys not hyperparameters: {set(grid) - set(opt.defaults)}"
    RunSpec(name, "cpu-xs", 1, {})  # defaults pass validation


# Lion, Cautious Lion, Kron and Sophia end at 0.80-0.91 x unigram at 0.25x (docs/MEASUREMENTS.md),
# and all four well below it at 0.5x; every other optimizer is checked at the cheaper budget, for CI's time.
LATE_STARTERS = {"lion", "cautious_lion", "kron", "sophia"}


@pytest.mark.system  # a whole run per optimizer: 5-15 s each
@pytest.mark.parametrize("name", NAMES)
def test_trains_the_smallest_scale_well_below_unigram_at_defaults(name):
    r = run(RunSpec(name, "cpu-xs", 0.5 if name in LATE_STARTERS else 0.25, {}), RunOptions(threads=2))
    assert r.status == "ok", r.reason
    assert r.final_loss < 0.8 * r.unigram_loss, (r.final_loss, r.unigram_loss)


def _steps(model, opt, batches, first, curvature):
    for step, x in enumerate(batches, start=first):
        train_step(model, opt, x, step, curvature=curvature)


@pytest.mark.integration
@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_restore_continues_bitwise(name):
    opt_def = next(o for o in all_optimizers() if o.name == name)
    hp = RunSpec(name, "cpu-xs", 1, {}).hparams
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 64, (4, 33), generator=gen) for _ in range(6)]

    def fresh():
        torch.manual_seed(0)
        model = LlamaModel(get_scale("cpu-xs"), 64)
        return model, opt_def.build(model.tagged_parameters(), hp, model)

    curvature = opt_def.needs_curvature_pass
    model, opt = fresh()
    _steps(model, opt, batches[:3], 0, curvature)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    _steps(model, opt, batches[3:], 3, curvature)

    model2, opt2 = fresh()
    model2.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    _steps(model2, opt2, batches[3:], 3, curvature)
    for (n, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), f"{name}: {n} differs after restore"


@pytest.mark.unit
@pytest.mark.parametrize("name", NAMES)
def test_an_optimizer_with_variants_defaults_to_the_study_and_lists_its_differences(name):
    opt = next(o for o in all_optimizers() if o.name == name)
    assert ("variant" in opt.defaults) == bool(opt.differences)
    if opt.differences:
        assert opt.defaults["variant"] == VARIANTS[0] == "study"
        assert all(line and "\n" not in line for line in opt.differences)
    assert opt.added_later <= set(opt.defaults)


@pytest.mark.unit
def test_a_bad_variant_is_the_users_error():
    model = LlamaModel(get_scale("cpu-xs"), 64)
    soap = next(o for o in all_optimizers() if o.name == "soap")
    with pytest.raises(UserError, match="variant"):
        soap.build(model.tagged_parameters(), {**soap.defaults, "variant": "levanter"}, model)


@pytest.mark.unit
def test_optbench_optimizers_lists_each_variant_and_its_differences(capsys):
    cmd_optimizers(argparse.Namespace(json=True))
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["soap"]["variants"] == ["study", "authors"] and rows["lion"]["variants"] == []
    assert any("max_precond_dim" in line for line in rows["soap"]["differences"])
    cmd_optimizers(argparse.Namespace(json=False))
    text = capsys.readouterr().out
    assert "variants: study | authors (default study)" in text and "1/max(mean, 1e-3)" in text


def _built(name, hp_overrides):
    opt_def = next(o for o in all_optimizers() if o.name == name)
    hp = {**RunSpec(name, "cpu-xs", 1, {}).hparams, **hp_overrides}
    torch.manual_seed(0)
    model = LlamaModel(get_scale("cpu-xs"), 64)
    return opt_def, model, opt_def.build(model.tagged_parameters(), hp, model)


def _decay_by_role(name, hp_overrides):
    """{role: the set of weight decays its params' groups carry}."""
    _, model, opt = _built(name, hp_overrides)
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    out = {}
    for t in model.tagged_parameters():
        out.setdefault(t.role, set()).add(decay[id(t.param)])
    return out


def _trained(name, hp_overrides):
    opt_def, model, opt = _built(name, hp_overrides)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 64, (4, 33), generator=gen) for _ in range(3)]
    _steps(model, opt, batches, 0, opt_def.needs_curvature_pass)
    return {t.name: t.param.detach().clone() for t in model.tagged_parameters()}


@pytest.mark.integration
@pytest.mark.parametrize("name", NAMES)
def test_decay_roles_picks_the_decayed_parameters(name):
    """The default decays hidden matrices and the head (the study's mask), all roles all, "" nothing:
    then weight_decay changes nothing (no optimizer decays a role behind its groups' back; the same
    grouping both times, as Kron draws its probes in group order)."""
    assert _decay_by_role(name, {"weight_decay": 0.5}) == {
        Role.HIDDEN: {0.5}, Role.HEAD: {0.5}, Role.EMBEDDING: {0.0}, Role.NORM: {0.0}}
    everything = _decay_by_role(name, {"weight_decay": 0.5, "decay_roles": "hidden,head,embedding,norm,bias"})
    assert set().union(*everything.values()) == {0.5}
    undecayed = _trained(name, {"weight_decay": 0.0, "decay_roles": ""})
    nothing = _trained(name, {"weight_decay": 0.5, "decay_roles": ""})
    for n, w in undecayed.items():
        torch.testing.assert_close(nothing[n], w, rtol=0, atol=1e-6, msg=n)


@pytest.mark.unit
def test_an_unknown_role_in_decay_roles_is_the_users_error():
    model = LlamaModel(get_scale("cpu-xs"), 64)
    adamw = next(o for o in all_optimizers() if o.name == "adamw")
    with pytest.raises(UserError, match="decay_roles"):
        adamw.build(model.tagged_parameters(), {**adamw.defaults, "decay_roles": "hidden,gains"}, model)


@pytest.mark.unit
def test_importing_every_module_registers_no_outside_optimizer_and_builds_one_on_demand():
    """external.py is imported with the rest of the folder (registering nothing); a module:Class
    name is built on first use, cached, never listed (tests/test_external_optimizer.py: the rest)."""
    from bench.optimizers import registry

    shipped = [o for o in all_optimizers() if o.module == ""]
    assert {o.name for o in shipped} == set(NAMES) - {o.name for o in all_optimizers() if o.module}
    assert not any(":" in name for name in NAMES)
    sgd = registry.get("torch.optim:SGD")
    assert sgd is registry.get("torch.optim:SGD") and sgd.module == "torch.optim.sgd"
    assert sgd.name not in {o.name for o in all_optimizers()}
    assert registry.get("adamw") is next(o for o in shipped if o.name == "adamw")
