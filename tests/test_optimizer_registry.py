"""Every registered optimizer, on the real model: trains, checkpoints exactly, is fully described."""
import copy

import pytest
import torch

from bench.model.llama import LlamaModel
from bench.model.scales import get_scale
from bench.optimizers.registry import TRAIN_KEYS, all_optimizers
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


@pytest.mark.system  # a whole run per optimizer: ~8 s each
@pytest.mark.parametrize("name", NAMES)
def test_trains_the_smallest_scale_well_below_unigram_at_defaults(name):
    r = run(RunSpec(name, "cpu-xs", 0.5, {}), RunOptions(threads=2))
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
