"""A trial's deadline counts from its start (sweeps/deadlines.py), on a clock the test moves."""
import pytest

from sweeps.deadlines import Deadlines

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_trial_queued_behind_others_is_due_a_timeout_after_its_own_start():
    clock = Clock()
    deadlines = Deadlines(100.0, clock)
    deadlines.submitted("first")
    deadlines.submitted("second")  # waits for the one CPU
    deadlines.saw("first", 1)
    clock.now = 90.0
    deadlines.ended("first")
    deadlines.saw("second", 1)
    clock.now = 150.0  # 150 s after its submission, 60 s after its start
    assert deadlines.overdue() == ([], True)
    clock.now = 190.5
    assert deadlines.overdue() == (["second"], True)


def test_a_retried_trial_s_clock_starts_again():
    clock = Clock()
    deadlines = Deadlines(100.0, clock)
    deadlines.submitted("trial")
    deadlines.saw("trial", 1)
    clock.now = 80.0
    deadlines.saw("trial", 2)  # its worker died; Ray runs it again
    clock.now = 150.0
    assert deadlines.overdue() == ([], True)
    deadlines.saw("trial", 2)  # the same start, seen again
    clock.now = 180.5
    assert deadlines.overdue() == (["trial"], True)


def test_a_queue_that_moves_never_expires_its_waiting_trials():
    clock = Clock()
    deadlines = Deadlines(100.0, clock)
    for name in ("a", "b", "waiting"):
        deadlines.submitted(name)
    deadlines.saw("a", 1)
    for t, name in ((60.0, "a"), (140.0, "b")):
        clock.now = t
        deadlines.ended(name)
        if name == "a":
            deadlines.saw("b", 1)
    clock.now = 230.0  # 230 s waiting, but the last trial ended 90 s ago
    assert deadlines.overdue() == ([], True)


def test_a_queue_where_nothing_moves_for_a_timeout_expires_its_waiting_trials():
    clock = Clock()
    deadlines = Deadlines(100.0, clock)
    clock.now = 500.0  # a sweep that read stored results for a while: its first trial still gets a timeout
    deadlines.submitted("waiting")
    clock.now = 550.0
    assert deadlines.overdue() == ([], True)
    clock.now = 600.5
    assert deadlines.overdue() == (["waiting"], False)


def test_a_hung_trial_goes_first_and_its_end_gives_the_queue_a_new_timeout():
    """The running trial and the queued one fall due at the same moment: only the running one is
    overdue; its kill frees the queue, so the queued trial may start."""
    clock = Clock()
    deadlines = Deadlines(100.0, clock)
    deadlines.submitted("hung")
    deadlines.submitted("queued")
    deadlines.saw("hung", 1)
    clock.now = 100.5
    assert deadlines.overdue() == (["hung"], True)
    deadlines.ended("hung")
    clock.now = 101.5
    assert deadlines.overdue() == ([], True)


def test_no_timeout_means_no_deadline():
    clock = Clock()
    deadlines = Deadlines(0.0, clock)
    deadlines.submitted("trial")
    clock.now = 1e9
    assert deadlines.overdue() == ([], True)
