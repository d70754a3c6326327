"""OPTBENCH_FAULT (bench/run/faults.py), the fault injection the reliability tests use: which runs a rule
hits, and a mistyped rule is bad input (exit code 2, one line), never a silently healthy run."""
import pytest

from bench import cli
from bench.run import faults
from bench.run.spec import RunSpec

pytestmark = pytest.mark.integration


def fields(lr=0.008, seed=0, optimizer="adamw"):
    return RunSpec(optimizer, "cpu-xs", 0.05, {"learning_rate": lr}, seed).to_dict()


def test_a_rule_hits_only_the_runs_matching_every_filter(monkeypatch):
    monkeypatch.setenv(faults.VARIABLE, "raise@3:learning_rate=0.004:seed=1; nan@5:optimizer=muon")
    assert faults.planned(fields(lr=0.004, seed=1)) == faults.Fault("raise", 3)
    assert faults.planned(fields(lr=0.004, seed=0)) is None
    assert faults.planned(fields(optimizer="muon")) == faults.Fault("nan", 5)
    monkeypatch.delenv(faults.VARIABLE)
    assert faults.planned(fields(lr=0.004, seed=1)) is None


@pytest.mark.parametrize("rule", ["explode@3", "raise@x", "raise@2:learning_rate"])
def test_a_bad_rule_is_one_line_and_exit_code_2(rule, monkeypatch, capsys, store_url):
    monkeypatch.setenv(faults.VARIABLE, rule)
    code = cli.main(["run", "--optimizer", "adamw", "--scale", "cpu-xs", "--ratio", "0.01",
                     "--store", store_url])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and faults.VARIABLE in err
