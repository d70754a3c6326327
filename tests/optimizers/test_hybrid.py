"""HybridOptimizer: several optimizers seen by the train loop as one (bench/optimizers/hybrid.py)."""
import copy

import pytest
import torch

from bench.optimizers.hybrid import HybridOptimizer, build_hybrid
from bench.roles import Role, TaggedParam

pytestmark = pytest.mark.unit


def _params(seed: int = 0) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    torch.manual_seed(seed)
    return torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(4))


def _hybrid(a: torch.Tensor, b: torch.Tensor) -> HybridOptimizer:
    return HybridOptimizer(torch.optim.SGD([a], lr=0.1, momentum=0.9),
                           torch.optim.AdamW([b], lr=0.01))


def _run(opt: HybridOptimizer, a: torch.Tensor, b: torch.Tensor, steps: range,
         sched: torch.optim.lr_scheduler.LRScheduler | None = None) -> None:
    for t in steps:
        ((a * (t + 1)).square().sum() + (b - t).square().sum()).backward()
        opt.step()
        opt.zero_grad()
        if sched is not None:
            sched.step()


def test_param_groups_are_the_parts_groups_so_a_schedule_scales_all_and_keeps_ratios():
    a, b = _params()
    opt = _hybrid(a, b)
    assert opt.param_groups[0] is opt.parts[0].param_groups[0]
    assert opt.param_groups[1] is opt.parts[1].param_groups[0]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 ** t)
    _run(opt, a, b, range(3), sched)
    assert opt.parts[0].param_groups[0]["lr"] == 0.1 * 0.5 ** 3
    assert opt.parts[1].param_groups[0]["lr"] == 0.01 * 0.5 ** 3


def test_step_and_zero_grad_reach_every_part():
    a, b = _params()
    a0, b0 = a.detach().clone(), b.detach().clone()
    opt = _hybrid(a, b)
    _run(opt, a, b, range(1))
    assert not torch.equal(a, a0) and not torch.equal(b, b0)
    assert a.grad is None and b.grad is None
    assert set(opt.state) == {a, b} and "momentum_buffer" in opt.state[a] and "exp_avg" in opt.state[b]


def test_state_dict_round_trip_continues_bitwise_and_relinks_groups():
    a, b = _params()
    opt = _hybrid(a, b)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (t + 1))
    _run(opt, a, b, range(3), sched)
    saved, saved_sched = copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict())
    params_at_3 = a.detach().clone(), b.detach().clone()
    _run(opt, a, b, range(3, 6), sched)

    a2, b2 = (torch.nn.Parameter(t.clone()) for t in params_at_3)
    opt2 = _hybrid(a2, b2)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda t: 1.0 / (t + 1))
    opt2.load_state_dict(saved)
    sched2.load_state_dict(saved_sched)
    assert all(g is pg for g, pg in zip(opt2.param_groups, [g for p in opt2.parts for g in p.param_groups]))
    _run(opt2, a2, b2, range(3, 6), sched2)
    assert torch.equal(a, a2) and torch.equal(b, b2)


def test_rejects_shared_params_and_direct_param_groups():
    a, b = _params()
    with pytest.raises(ValueError):
        HybridOptimizer(torch.optim.SGD([a], lr=0.1), torch.optim.SGD([a, b], lr=0.1))
    with pytest.raises(RuntimeError):
        _hybrid(a, b).add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))]})


def test_build_hybrid_gives_hidden_to_the_matrix_part_and_the_rest_to_adamw_at_the_ratio():
    tagged = [TaggedParam("w", torch.nn.Parameter(torch.randn(4, 4)), Role.HIDDEN),
              TaggedParam("head", torch.nn.Parameter(torch.randn(5, 4)), Role.HEAD),
              TaggedParam("gain", torch.nn.Parameter(torch.ones(4)), Role.NORM)]
    hp = {"learning_rate": 0.04, "muon_to_adam_lr": 0.3, "beta1": 0.8, "beta2": 0.98,
          "epsilon": 1e-15, "weight_decay": 0.1, "decay_roles": "hidden,head"}
    opt = build_hybrid(tagged, hp, lambda hidden: torch.optim.SGD([t.param for t in hidden], lr=0.04))
    matrix, aux = opt.parts
    assert matrix.param_groups[0]["params"] == [tagged[0].param]
    assert isinstance(aux, torch.optim.AdamW)
    decayed, plain = aux.param_groups
    assert decayed["params"] == [tagged[1].param] and decayed["weight_decay"] == 0.1
    assert plain["params"] == [tagged[2].param] and plain["weight_decay"] == 0.0
    assert decayed["lr"] == plain["lr"] == 0.04 * 0.3
    assert decayed["betas"] == (0.8, 0.98) and decayed["eps"] == 1e-15

    only_hidden = build_hybrid(tagged[:1], hp, lambda h: torch.optim.SGD([t.param for t in h], lr=1.0))
    assert len(only_hidden.parts) == 1


def test_state_dict_is_in_torchs_format_with_every_parts_entries():
    a, b = _params()
    opt = _hybrid(a, b)
    opt.parts[0].state["counter"] = {"steps": torch.tensor(7)}  # a non-parameter entry
    _run(opt, a, b, range(1))
    saved = opt.state_dict()
    assert set(saved) == {"state", "param_groups"}
    assert [g["params"] for g in saved["param_groups"]] == [[0], [1]]
    assert set(saved["state"]) == {0, 1, "0:counter"}
    assert "momentum_buffer" in saved["state"][0] and "exp_avg" in saved["state"][1]

    a2, b2 = _params(seed=1)
    opt2 = _hybrid(a2, b2)
    opt2.load_state_dict(copy.deepcopy(saved))
    assert opt2.parts[0].state["counter"]["steps"] == 7
    assert torch.equal(opt2.state[a2]["momentum_buffer"], opt.state[a]["momentum_buffer"])
    assert torch.equal(opt2.state[b2]["exp_avg"], opt.state[b]["exp_avg"])
