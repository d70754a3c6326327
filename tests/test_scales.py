import pytest

from bench.errors import UserError
from bench.model.scales import SCALES, get_scale

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name,params", [("0.1B", 134_217_728), ("0.3B", 301_989_888),
                                         ("0.5B", 536_870_912), ("1.2B", 1_207_959_552)])
def test_paper_scales_have_the_studys_non_embedding_counts(name, params):
    assert get_scale(name).non_embedding_params == params


def test_study_folder_names_and_case_are_accepted():
    assert get_scale("130m").name == "0.1B"
    assert get_scale("0.1b").name == "0.1B"
    assert get_scale("CPU-XS").name == "cpu-xs"


def test_cpu_ladder_spans_at_least_8x_over_three_scales():
    cpu = sorted(s.non_embedding_params for s in SCALES.values() if s.ladder == "cpu")
    assert len(cpu) >= 3 and cpu[2] / cpu[0] >= 8


def test_chinchilla_budget_is_20_tokens_per_parameter_times_ratio():
    s = get_scale("0.1B")
    assert s.tokens(1) == 20 * 134_217_728
    assert s.tokens(8) == 8 * s.tokens(1)
    assert s.steps(1, 128) == s.tokens(1) // (128 * 4096)


def test_cpu_default_batch_gives_several_hundred_steps_at_1x():
    s = get_scale("cpu-xs")
    assert s.steps(1, s.default_batch) >= 300


def test_unknown_scale_is_a_user_error():
    with pytest.raises(UserError, match="unknown scale"):
        get_scale("7B")
