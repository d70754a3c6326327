"""Drop-Muon (bench/optimizers/drop_muon.py): blocks before the sampled start are frozen, the rest
take Muon's step, the start is uniform and seeded, checkpoint resume restores the sampler."""
import copy

import pytest
import torch

from bench.optimizers.drop_muon import DropMuon, block_layers
from bench.optimizers.muon import Muon
from bench.roles import Role

from .testkit import assert_registered, assert_resume_is_bitwise, build, tiny_model, train

pytestmark = pytest.mark.integration


def _layers(n_layers=4, per_layer=2, seed=0):
    torch.manual_seed(seed)
    return [[torch.nn.Parameter(torch.randn(6, 4)) for _ in range(per_layer)] for _ in range(n_layers)]


def test_groups_hidden_matrices_by_transformer_block_in_model_order():
    model = tiny_model()
    hidden = [t for t in model.tagged_parameters() if t.role == Role.HIDDEN]
    layers = block_layers(hidden)
    assert len(layers) == 3
    for i, layer in enumerate(layers):
        names = {t.name for t in hidden if any(t.param is p for p in layer)}
        assert len(layer) == 7 and all(n.startswith(f"layers.{i}.") for n in names)


def test_start_index_is_uniform_over_layers_and_seeded_from_a_constant():
    a, b = DropMuon(_layers(), lr=0.1), DropMuon(_layers(seed=1), lr=0.1)
    draws = [a.draw_start() for _ in range(4000)]
    assert draws == [b.draw_start() for _ in range(4000)]
    counts = torch.bincount(torch.tensor(draws), minlength=4)
    assert counts.min() > 900 and counts.max() < 1100  # 1000 each expected, sd about 27


def test_layers_before_start_are_frozen_and_the_rest_take_muons_step():
    layers = _layers()
    twins = [[torch.nn.Parameter(p.detach().clone()) for p in layer] for layer in layers]
    drop = DropMuon(layers, lr=0.1, weight_decay=0.1)
    muons = Muon([p for layer in twins for p in layer], lr=0.1, weight_decay=0.1)
    seen_starts = set()
    for step in range(6):
        gen = torch.Generator().manual_seed(step)
        grads = [[torch.randn(6, 4, generator=gen) for _ in layer] for layer in layers]
        before = [[p.detach().clone() for p in layer] for layer in layers]
        buffers = [[copy.deepcopy(drop.state[p].get("momentum_buffer")) for p in layer] for layer in layers]
        for layer, twin, g in zip(layers, twins, grads):
            for p, q, gi in zip(layer, twin, g):
                p.grad, q.grad = gi.clone(), gi.clone()
        drop.step()
        start = drop.start
        seen_starts.add(start)
        for q in (q for twin in twins[:start] for q in twin):  # the reference updates only start..
            q.grad = None
        muons.step()
        for i, (layer, twin, old, old_bufs) in enumerate(zip(layers, twins, before, buffers)):
            for p, q, w, old_buf in zip(layer, twin, old, old_bufs):
                if i < start:
                    assert torch.equal(p, w)
                    buf = drop.state[p].get("momentum_buffer")
                    assert (buf is None and old_buf is None) or torch.equal(buf, old_buf)
                else:
                    assert not torch.equal(p, w)
                assert torch.equal(p, q)  # matches Muon run on the same active layers
    assert len(seen_starts) > 1


def test_resume_restores_the_sampler_state():
    opt = DropMuon(_layers(), lr=0.1)
    for _ in range(5):
        opt.draw_start()
    saved = copy.deepcopy(opt.state_dict())
    expected = [opt.draw_start() for _ in range(20)]
    resumed = DropMuon(_layers(), lr=0.1)
    resumed.load_state_dict(saved)
    assert [resumed.draw_start() for _ in range(20)] == expected


def test_trains_a_tiny_model():
    model = tiny_model()
    losses = train(model, build("drop_muon", model), range(30))
    assert losses[-1] < 0.5 * losses[0]


def test_resume_from_checkpoint_is_bitwise():
    assert_resume_is_bitwise("drop_muon")


def test_registered_with_complete_defaults_and_loadable_space():
    assert_registered("drop_muon")
