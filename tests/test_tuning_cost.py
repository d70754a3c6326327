"""Tuning cost from replayed traces: trials to the approximately-best band, the goal's budget (a
third of coordinate descent's trials in the study's order), and the statistics over search seeds."""
import math

import pytest

from analysis.tuning import Trace, rate_lower_bound, tuning_cost

pytestmark = pytest.mark.unit

INF = math.inf


def trace(protocol, seed, losses, finished=True):
    return Trace(protocol, seed, protocol, tuple(losses), finished)


def test_trials_to_the_band_count_the_first_trial_whose_best_so_far_is_in_it():
    t = trace("tpe", 0, [3.3, INF, 3.25, 3.30, 3.204, 3.1])
    assert t.trials_to(3.205) == 5 and t.trials_to(3.0) is None
    assert t.best(2) == 3.3 and t.best() == 3.1
    assert trace("gp", 0, [INF, INF]).trials_to(10.0) is None


def test_the_goal_is_a_third_of_coordinate_descents_trials_and_each_seed_is_judged_by_it():
    cd = trace("coordinate", 0, [3.5] * 20 + [3.2] + [3.3] * 9)  # 30 trials: goal 10; best at 21
    fast = trace("tpe", 0, [3.4] * 7 + [3.202] + [3.3] * 4)  # in the band at 8
    slow = trace("tpe", 1, [3.4] * 11 + [3.201])  # at 12: too late
    short = trace("tpe", 2, [3.4] * 5, finished=False)  # its sweep stopped before the goal: not judged
    cost = tuning_cost([cd, fast, slow, short])
    assert (cost.best, cost.reference_trials, cost.goal) == (3.2, 30, 10)
    tpe = next(p for p in cost.protocols if p.protocol == "tpe")
    assert tpe.to_band == (8, 12, None) and (tpe.within_goal, tpe.judged) == (1, 2)
    mean, lo, hi = tpe.gap_at_goal
    assert mean == pytest.approx((0.002 + 0.2) / 2) and lo < mean < hi
    coordinate = cost.protocols[0]
    assert coordinate.to_band == (21,) and coordinate.within_goal == 0


def test_without_a_finished_study_order_coordinate_descent_nothing_is_judged():
    cost = tuning_cost([trace("coordinate", 0, [3.3, 3.2], finished=False), trace("tpe", 0, [3.1])])
    assert cost.goal is None and all(p.judged == 0 for p in cost.protocols)
    with pytest.raises(ValueError):
        tuning_cost([trace("tpe", 0, [INF])])


def test_the_rate_bound_is_clopper_pearson():
    # all n succeed: the one-sided bound has the closed form (1 - confidence) ** (1 / n)
    assert rate_lower_bound(3, 3) == pytest.approx(0.1 ** (1 / 3))
    assert rate_lower_bound(0, 3) == 0.0 and math.isnan(rate_lower_bound(0, 0))
    assert rate_lower_bound(2, 3) < rate_lower_bound(3, 3) < rate_lower_bound(10, 10)


def test_winners_are_compared_paired_by_training_seed_and_never_on_the_seed_they_won_on():
    ref = Trace("coordinate", 0, "", (3.0, 3.1), True, winner_losses=(3.0, 3.2, 3.4))
    other = Trace("tpe", 0, "", (3.3,), True, winner_losses=(3.3, 3.21, 3.41))  # seed 0 lost by 0.3
    cost = tuning_cost([ref, other])
    tpe = cost.protocols[1]
    assert tpe.winner_gap[0] == pytest.approx(0.01)  # seeds 1 and 2 only; each seed's shift cancels
    assert cost.seed_sd == pytest.approx(0.2 / math.sqrt(2))  # over seeds 1 and 2
    assert math.isnan(tuning_cost([ref, trace("gp", 0, [3.2])]).protocols[1].winner_gap[0])


def test_winners_chosen_on_finalists_means_are_compared_on_the_seeds_after_those():
    ref = Trace("coordinate", 0, "", (3.0,), True, winner_losses=(3.0, 3.1, 3.2, 3.5, 3.7), chosen_on=3)
    other = Trace("tpe", 0, "", (3.1,), True, winner_losses=(3.1, 3.0, 3.0, 3.52, 3.74))
    cost = tuning_cost([ref, other])
    assert cost.protocols[1].winner_gap[0] == pytest.approx(0.03)  # seeds 3 and 4: neither chose on them
    assert cost.seed_sd == pytest.approx(0.2 / math.sqrt(2))
