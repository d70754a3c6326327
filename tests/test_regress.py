"""The regression check's statistics, table, baseline file and command, on synthetic losses.

Losses follow a known AdamW law L(D) = 2 D^-0.3 + 1.5 plus seed noise; another optimizer with
speedup s reaches AdamW's loss at s times its budget. No training here (tests/test_regress_fault.py
trains real runs).
"""
import json

import numpy as np
import pytest
from scipy.stats import binom

from bench import cli
from bench.errors import UserError
from sweeps.regress import baseline as files
from sweeps.regress.check import Layout, check, new_baseline, updated
from sweeps.regress.report import cpu_line, format_table, reproduction_line
from sweeps.regress.stats import CheckOptions

pytestmark = pytest.mark.integration

SPEEDUPS = {"muon": 1.8, "lion": 1.1, "soap": 1.5}
LAYOUT = Layout(optimizers=("adamw", *SPEEDUPS))
FAST = CheckOptions(n_boot=2000)


def law(ratio):
    return 2.0 * ratio ** -0.3 + 1.5


def synthetic_runs(rng, sd=0.01, factor=None, adamw_shift=0.0, status=None):
    """One measurement of LAYOUT: per-seed losses with noise `sd`; `factor` scales an optimizer's
    speedup (0.8: 20% slower), `status` marks an optimizer's runs (e.g. diverged)."""
    factor, status = factor or {}, status or {}
    runs = []
    for name in LAYOUT.optimizers:
        ratios = LAYOUT.ratios_for(name)
        s = 1.0 if name == "adamw" else SPEEDUPS[name] * factor.get(name, 1.0)
        for ratio in ratios:
            for seed in LAYOUT.seeds:
                loss = law(s * ratio) + rng.normal(0, sd) + (adamw_shift if name == "adamw" else 0)
                st = status.get(name, "ok")
                runs.append({"optimizer": name, "ratio": ratio, "seed": seed, "status": st,
                             "final_loss": loss if st == "ok" else None, "steps": 1, "wall_time_s": 1.0})
    return runs


@pytest.fixture
def baseline():
    b = new_baseline({name: {} for name in LAYOUT.optimizers}, LAYOUT)
    b.runs = synthetic_runs(np.random.default_rng(0))
    return b


def verdicts(outcome):
    return {v.optimizer: v.verdict for v in outcome.verdicts}


def test_an_identical_measurement_passes(baseline):
    outcome = check(baseline, list(baseline.runs), FAST)
    assert set(verdicts(outcome).values()) == {"ok"} and outcome.regressed == []
    assert all(v.diff == 0 for v in outcome.verdicts)


def test_the_report_counts_the_runs_that_reproduce_the_baseline_to_the_last_bit(baseline):
    assert reproduction_line(baseline.runs, baseline.runs).startswith(
        f"losses: {len(baseline.runs)} of {len(baseline.runs)} runs equal the baseline's to the last bit")
    now = [dict(r) for r in baseline.runs]
    now[3]["final_loss"] = np.nextafter(now[3]["final_loss"], np.inf)  # one ulp
    now[5]["final_loss"] += 0.01
    line = reproduction_line(baseline.runs, now)
    assert f"{len(now) - 2} of {len(now)} runs equal" in line and "2 moved, by at most 1.00e-02" in line
    other_seeds = [dict(r, seed=r["seed"] + 10) for r in baseline.runs]
    assert reproduction_line(baseline.runs, other_seeds) == (
        "losses: other seeds than the baseline's, so none to compare to the last bit")


def test_a_check_on_another_cpu_than_the_baselines_says_so_naming_both():
    assert cpu_line("Intel(R) Xeon(R) Platinum 8480+", "Intel(R) Xeon(R) Platinum 8480+") is None
    line = cpu_line("Intel(R) Xeon(R) Platinum 8480+", "AMD EPYC 9B14")
    assert line.startswith("cpu: ") and "Xeon(R) Platinum 8480+, this check on AMD EPYC 9B14" in line
    assert "a CPU it does not name" in cpu_line(None, "AMD EPYC 9B14")  # baselines before the field


def test_a_slower_optimizer_is_a_regression_and_the_table_names_it(baseline):
    now = synthetic_runs(np.random.default_rng(1), factor={"lion": 0.8})
    outcome = check(baseline, now, FAST)
    assert outcome.regressed == ["lion"]
    table = format_table(outcome.verdicts, outcome.level, outcome.alpha)
    lion_row = next(line for line in table.splitlines() if line.startswith("lion"))
    assert "REGRESSION" in lion_row and "-2" in lion_row  # about -20%


def test_a_faster_optimizer_is_reported_as_an_improvement_not_a_failure(baseline):
    outcome = check(baseline, synthetic_runs(np.random.default_rng(1), factor={"soap": 1.3}), FAST)
    assert verdicts(outcome)["soap"] == "IMPROVED?" and outcome.regressed == []


def test_a_worse_adamw_is_blamed_on_adamw_and_shows_in_every_speedup(baseline):
    outcome = check(baseline, synthetic_runs(np.random.default_rng(1), adamw_shift=0.1), FAST)
    rows = {v.optimizer: v for v in outcome.verdicts}
    assert outcome.regressed == ["adamw"]
    # the others did not change: their verdicts stay ok, but their speedups over AdamW rose
    assert all(rows[name].verdict == "ok" and rows[name].now > rows[name].base + 0.1 for name in SPEEDUPS)


def test_runs_that_diverge_now_are_a_regression_with_a_note(baseline):
    outcome = check(baseline, synthetic_runs(np.random.default_rng(1), status={"muon": "diverged"}), FAST)
    row = next(v for v in outcome.verdicts if v.optimizer == "muon")
    assert row.verdict == "REGRESSION" and "10 of 10 runs diverged" in row.note


def test_seed_noise_alone_alarms_no_more_often_than_alpha():
    """Unchanged optimizers measured twice with independent seed noise alarm (any optimizer) in at
    most a fraction alpha of checks. The allowance is the binomial bound at alpha: if the check
    holds its level, this test fails by chance with probability at most 1e-3. A high alpha gives
    the test teeth with few trials: the bound (16 of 32) is twice the nominal rate."""
    alpha, trials = 0.25, 32
    rng = np.random.default_rng(2)
    alarms = 0
    for i in range(trials):
        b = new_baseline({name: {} for name in LAYOUT.optimizers}, LAYOUT)
        b.runs = synthetic_runs(rng, sd=0.02)
        options = CheckOptions(alpha=alpha, n_boot=1000, seed=i)
        alarms += bool(check(b, synthetic_runs(rng, sd=0.02), options).regressed)
    assert alarms <= binom.ppf(1 - 1e-3, trials, alpha)


def test_a_baseline_file_round_trips_every_loss_exactly(baseline, tmp_path):
    written = updated(baseline, synthetic_runs(np.random.default_rng(3)), seconds=1.0)
    files.save(written, tmp_path / "b.json")
    back = files.load(tmp_path / "b.json")
    assert back.runs == written.runs and back.optimizers == written.optimizers
    assert [s["optimizer"] for s in back.summary] == list(LAYOUT.optimizers)
    assert {"commit", "date", "torch"} <= set(back.provenance["measured"])


def _corrupt(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.update(format="something/2"), "format"),
    (lambda d: d["optimizers"]["adamw"].update(ratios=[0.25, 0.5]), "3 or more ratios"),
    (lambda d: d.update(seeds=[0]), "2 or more seeds"),
    (lambda d: d["runs"][0].update(optimizer="sgd"), "does not list"),
    (lambda d: d["runs"][0].pop("final_loss"), "final_loss"),
    (lambda d: d.pop("optimizers"), "optimizers"),
])
def test_a_malformed_baseline_is_a_user_error_naming_the_problem(baseline, tmp_path, edit, words):
    path = tmp_path / "b.json"
    files.save(updated(baseline, list(baseline.runs), seconds=1.0), path)
    _corrupt(path, edit)
    with pytest.raises(UserError, match=words):
        files.load(path)


def test_an_unknown_hyperparameter_in_the_baseline_is_a_user_error(baseline, tmp_path):
    path = tmp_path / "b.json"
    files.save(updated(baseline, list(baseline.runs), seconds=1.0), path)
    _corrupt(path, lambda d: d["optimizers"]["lion"]["hparams"].update(nokey=1))
    with pytest.raises(UserError, match="nokey"):
        files.load(path)


@pytest.mark.parametrize("content", [None, "{not json", "[]"])
def test_a_missing_or_corrupt_baseline_exits_2_with_one_line(content, tmp_path, capsys):
    path = tmp_path / "b.json"
    if content is not None:
        path.write_text(content)
    assert cli.main(["regress", "--baseline", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("optbench: error:") and len(err.splitlines()) == 1 and str(path) in err


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_a_bad_run_timeout_exits_2_with_one_line(value, capsys):
    assert cli.main(["regress", "--run-timeout", value]) == 2
    err = capsys.readouterr().err.strip()
    assert "--run-timeout" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("extra, words", [(["--update-baseline"], "the baseline file keeps them"),
                                          ([], "cannot write")])
def test_a_runs_out_that_cannot_hold_a_checks_runs_exits_2_with_one_line(extra, words, tmp_path, capsys):
    assert cli.main(["regress", "--runs-out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_the_committed_baseline_covers_the_issue():
    """Six optimizers (AdamW, NAdamW, Muon, Soap, Lion and a newer one) at two or more ratios with
    three or more seeds, every run finished, and where its hyperparameters came from."""
    b = files.load(files.DEFAULT_PATH)
    assert list(b.optimizers)[:1] == ["adamw"]
    assert {"adamw", "nadamw", "muon", "soap", "lion"} <= set(b.optimizers) and len(b.optimizers) >= 6
    assert all(len(e.ratios) >= 2 for e in b.optimizers.values()) and len(b.seeds) >= 3
    expected = sum(len(e.ratios) for e in b.optimizers.values()) * len(b.seeds)
    assert len(b.runs) == expected and all(r["status"] == "ok" for r in b.runs)
    tuning = b.provenance["tuning"]
    assert tuning["command"].startswith("optbench sweep") and tuning["recorded_commit"] and tuning["first_run"]
    assert all(s["ci_low"] is not None for s in b.speedups if s["optimizer"] != "adamw")
