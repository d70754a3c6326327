"""Per-block state kept as slices of one stack (bench/optimizers/blocks.py: stacked, adopt)."""
import pytest
import torch

from bench.optimizers.blocks import adopt, stacked

pytestmark = pytest.mark.unit


def test_stacked_reuses_the_stack_its_slots_are_slices_of_and_restacks_otherwise():
    states = [{"Q.0": torch.full((2, 2), float(i))} for i in range(3)]
    slots = [(s, "Q.0") for s in states]
    first = stacked(slots)  # fresh tensors: stacked once, then adopted
    assert all(s["Q.0"]._base is first for s in states)
    again = stacked(slots)
    assert again is first  # no copy
    again.add_(1.0)  # updated in place: every block's state sees it
    assert [s["Q.0"][0, 0].item() for s in states] == [1.0, 2.0, 3.0]
    states[1]["Q.0"] = torch.zeros(2, 2)  # e.g. a loaded checkpoint's tensor
    restacked = stacked(slots)
    assert restacked is not first and restacked[:, 0, 0].tolist() == [1.0, 0.0, 3.0]
    assert stacked(slots[:2]) is not restacked  # another membership: another stack


def test_adopt_makes_a_new_tensor_the_blocks_state_without_copying():
    states = [{"Q.0": torch.zeros(2)}, {"Q.0": torch.zeros(2)}]
    new = torch.arange(4.0).view(2, 2)
    assert adopt([(s, "Q.0") for s in states], new) is new
    assert states[1]["Q.0"].data_ptr() == new[1].data_ptr()
