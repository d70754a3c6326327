"""Failures: the run's own (diverged, non-finite, its optimizer raised) are results and count as the
worst loss; the environment's (no such device, out of memory, an import error, a killed worker) are
attempts, never served, retried when asked again (bench/run/failures.py).

The finding this reproduces: `run --device cuda` on a CPU-only machine was stored as a failed
result; a rerun printed "already in" and returned the failure, and it counted in the CPU cell."""
import pytest
import torch

from bench.cli import main
from bench.run.failures import ENVIRONMENT_FAILURE, classify, task_failure
from bench.store.database import ResultStore

RUN = ["run", "--optimizer", "adamw", "--scale", "cpu-xs", "--ratio", "0.05", "--threads", "2"]


@pytest.mark.unit
@pytest.mark.parametrize("error, cause", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of memory"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
     "out of memory"),
    (ModuleNotFoundError("No module named 'triton'"), "import error"),
    (AssertionError("Torch not compiled with CUDA enabled"), "no such device"),
    (FileNotFoundError("shard 3 is gone"), "system error"),
])
def test_failures_of_the_environment_are_told_apart(error, cause):
    status, reason = classify(error)
    assert status == ENVIRONMENT_FAILURE and reason.startswith(f"environment ({cause}): {type(error).__name__}")


@pytest.mark.unit
@pytest.mark.parametrize("error", [RuntimeError("injected fault"), ValueError("bad shape"),
                                   torch.linalg.LinAlgError("linalg.eigh: failed to converge")])
def test_failures_of_the_run_itself_are_results(error):
    assert classify(error) == ("failed", f"{type(error).__name__}: {error}")


def _rank(rank: int, port: int, verdicts) -> None:
    """Rank 1 never joins the all-reduce (a hung peer); rank 0 classifies what its wait raises."""
    import time
    from datetime import timedelta

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=2))
    if rank == 1:
        time.sleep(6)
        return
    try:
        dist.all_reduce(torch.ones(4))
        verdicts.put(("returned", ""))
    except Exception as e:  # noqa: BLE001 - what gloo raises is the subject
        verdicts.put(classify(e))


@pytest.mark.integration
def test_a_collective_whose_peer_hangs_is_the_environment_s_failure():
    """gloo's timeout is a plain RuntimeError; stored as the run's own failure it would count as
    the config's worst loss for ever, though the config did nothing wrong."""
    import torch.multiprocessing as mp

    from bench.run.distributed import free_port

    context, port = mp.get_context("spawn"), free_port()
    verdicts = context.SimpleQueue()
    ranks = [context.Process(target=_rank, args=(rank, port, verdicts)) for rank in (0, 1)]
    for p in ranks:
        p.start()
    status, reason = verdicts.get()
    for p in ranks:  # how they exit is not the subject (gloo may abort a torn-down group)
        p.kill()
        p.join()
    assert status == ENVIRONMENT_FAILURE and reason.startswith("environment (collective failed)"), reason


@pytest.mark.unit
def test_a_sweep_task_that_returned_nothing_says_whether_its_worker_died():
    assert task_failure("WorkerCrashedError", "exit code 9").startswith("environment (killed worker): Worker")
    assert task_failure("RayTaskError(OSError)", "no shard").startswith("environment (the task raised): Ray")


@pytest.mark.integration
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_run_on_a_missing_device_is_an_attempt_and_is_retried(store_url, capsys):
    assert main([*RUN, "--device", "cuda", "--store", store_url]) == 1
    assert "attempt recorded in" in capsys.readouterr().out
    assert main([*RUN, "--device", "cuda", "--store", store_url]) == 1  # tried again, not served
    out = capsys.readouterr().out
    assert "already in" not in out and "retried       1 earlier attempt(s) failed: environment (no such device)" in out
    store = ResultStore(store_url)
    assert store.runs() == [] and len(store.history()) == 2
    assert main(["runs", "--status", "error", "--store", store_url]) == 0
    assert "2 stored run(s)" in capsys.readouterr().out


@pytest.mark.integration
@pytest.mark.parametrize("command", [
    [*RUN, "--reuse-stale"],
    ["sweep", "--scale", "cpu-xs", "--optimizers", "adamw", "--ratios", "0.05", "--yes", "--reuse-stale"],
    ["analyze", "--reuse-stale"],
])
def test_reuse_stale_with_nothing_stale_is_one_line_exit_2_and_writes_nothing(command, store_url, capsys):
    store = ResultStore(store_url)
    assert main([*command, "--store", store_url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--reuse-stale" in err and "no stale result" in err
    assert store.history() == []


@pytest.mark.system
def test_a_stored_failure_is_served_until_retry_failed_and_out_of_memory_is_retried(store_url, capsys,
                                                                                    monkeypatch):
    monkeypatch.setenv("OPTBENCH_FAULT", "raise@3")
    assert main([*RUN, "--store", store_url]) == 1  # the run's own failure: a result
    monkeypatch.delenv("OPTBENCH_FAULT")
    assert main([*RUN, "--store", store_url]) == 1
    assert "already in" in capsys.readouterr().out
    assert main([*RUN, "--store", store_url, "--retry-failed"]) == 0
    store = ResultStore(store_url)
    assert sorted(what for what, _, _ in store.history()) == ["replaced", "served"]
    assert [r.status for r in store.runs()] == ["ok"]

    seed = ["--seed", "1"]
    monkeypatch.setenv("OPTBENCH_FAULT", "oom@2")
    assert main([*RUN, *seed, "--store", store_url]) == 1  # the environment's: an attempt
    monkeypatch.delenv("OPTBENCH_FAULT")
    capsys.readouterr()
    assert main([*RUN, *seed, "--micro-batch", "8", "--store", store_url]) == 0  # smaller micro-batches
    assert "retried       1 earlier attempt(s) failed: environment (out of memory)" in capsys.readouterr().out
    assert sorted(r.seed for r in store.runs()) == [0, 1]
