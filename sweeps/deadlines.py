"""A sweep's trial deadlines (--trial-timeout), counted from when each trial starts.

A trial can wait a long time between its submission and its start: behind others on a cluster with
fewer CPUs than --workers, behind a lost node's trials, or as a retry Ray runs again after its
worker died. Counting from submission would kill such a trial when it had barely run, and the kill
would repeat on every rerun. So each trial says when it starts (StartLog, a Ray actor the tasks call
once they hold their CPUs), and its deadline is that start plus the timeout, again from each retry.

A trial that never starts is wedged too (a cluster with no room left for it, say every worker node
gone): it is overdue once no trial has been submitted, started or ended for a whole timeout, so a
queue that moves never kills it.
"""
from __future__ import annotations

import time


class StartLog:
    """How many times each run key has started (a Ray actor, one per sweep, on the driver's node)."""

    def __init__(self):
        self._starts: dict[str, int] = {}

    def started(self, run_key: str) -> None:
        self._starts[run_key] = self._starts.get(run_key, 0) + 1

    def starts(self) -> dict[str, int]:
        return dict(self._starts)


def report_start(log, run_key: str) -> None:
    """Called by a trial's task once it holds its resources; `log` None: nobody keeps time."""
    if log is not None:
        log.started.remote(run_key)  # no wait: the trial need not block on the driver's node


def start_log():
    """A StartLog actor on the driver's node (soft: a driver connected from elsewhere still gets one)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return ray.remote(StartLog).options(num_cpus=0, scheduling_strategy=here).remote()


class Deadlines:
    """Pending trials (any hashable handle, a Ray object ref in the sweep) and when each is due."""

    def __init__(self, timeout_s: float, clock=time.monotonic):
        self.timeout_s, self._clock = timeout_s, clock
        self._starts: dict = {}  # handle -> starts seen so far (0: queued)
        self._since: dict = {}  # handle -> when its latest start was seen
        self._moved = clock()  # when a trial was last submitted, started or ended

    def submitted(self, handle) -> None:
        self._starts[handle] = 0
        self._moved = self._clock()

    def saw(self, handle, starts: int) -> None:
        """`starts`: how many times the trial has started by now (StartLog); a new one restarts the clock."""
        if handle in self._starts and starts > self._starts[handle]:
            self._starts[handle] = starts
            self._since[handle] = self._moved = self._clock()

    def ended(self, handle) -> None:
        self._starts.pop(handle, None)
        self._since.pop(handle, None)
        self._moved = self._clock()

    def overdue(self) -> tuple[list, bool]:
        """The trials past their deadline, and whether they had started. Started ones first: ending
        them moves the queue, so a queued trial is due only if nothing ends by the next call either."""
        if self.timeout_s <= 0:
            return [], True
        now = self._clock()
        running = [h for h, t in self._since.items() if now > t + self.timeout_s]
        if running or now <= self._moved + self.timeout_s:
            return running, True
        return [h for h in self._starts if h not in self._since], False
