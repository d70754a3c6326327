"""The diagnostic scripts in examples/: each leaves an unpatched run bitwise as `optbench run` trains it,
never stores its runs, and measures what it claims. examples/sophia_clipping.py's shares tell the two
curvature estimators apart (Hutchinson's u * Hu can be negative, Gauss-Newton-Bartlett's B g^2 cannot);
examples/adam_mini_blocks.py changes the run only when it names a role."""
import csv
import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.optimizers.sophia import SophiaH

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
RUN = ["--scale", "cpu-xs", "--ratio", "0.1", "--seed", "0", "--threads", "1", "--json"]


@pytest.fixture
def clipping(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from examples import sophia_clipping
    return sophia_clipping.main


@pytest.fixture
def blocks(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from examples import adam_mini_blocks
    return adam_mini_blocks.main


def _loss(capsys) -> float:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["final_loss"]


def _rows(path: Path) -> list[dict[str, float]]:
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_recording_leaves_the_run_bitwise_equal(clipping, tmp_path, capsys):
    update_group = SophiaH.update_group
    assert clipping(["--out", str(tmp_path / "clip.csv"), "--every", "10", "--plot", str(tmp_path / "clip"),
                     "--", *RUN]) == 0
    recorded = _loss(capsys)
    assert SophiaH.update_group is update_group  # the recording is undone
    assert main(["run", "--optimizer", "sophia", "--store", f"sqlite:///{tmp_path}/plain.db", *RUN]) == 0
    assert _loss(capsys) == recorded
    rows = _rows(tmp_path / "clip.csv")
    assert [r["step"] for r in rows] == [10, 20, 30]
    assert all(0.0 <= r[k] <= 1.0 for r in rows for k in r if k != "step")
    assert (tmp_path / "clip.png").stat().st_size > 0 and (tmp_path / "clip.pdf").stat().st_size > 0


@pytest.mark.parametrize("estimator", ["hutchinson", "gnb"])
def test_only_hutchinson_leaves_matrix_curvature_non_positive(clipping, tmp_path, capsys, estimator):
    out = tmp_path / "clip.csv"
    assert clipping(["--out", str(out), "--", *RUN, "--set", f"hessian_estimator={estimator}"]) == 0
    capsys.readouterr()
    rows = _rows(out)
    assert rows[0]["h_nonpositive_matrices"] == 1.0  # h starts at 0, first refreshed after 10 updates
    refreshed = [r["h_nonpositive_matrices"] for r in rows[1:]]
    if estimator == "gnb":
        assert refreshed == [0.0] * len(refreshed)
    else:
        assert all(share > 0.1 for share in refreshed)


@pytest.mark.parametrize("bad, named", [(["--every", "0"], "--every"),
                                        (["--", *RUN, "--store", "sqlite:///x.db"], "--store")])
def test_bad_options_are_refused(clipping, tmp_path, capsys, bad, named):
    with pytest.raises(SystemExit) as exit_:
        clipping(["--out", str(tmp_path / "clip.csv"), *bad])
    assert exit_.value.code == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "clip.csv").exists()


def test_adam_mini_blocks_leave_an_unpatched_run_bitwise_equal(blocks, tmp_path, capsys):
    from bench.optimizers import adam_mini
    block_count = adam_mini.block_count
    assert blocks(["--", *RUN]) == 0
    unpatched = _loss(capsys)
    assert main(["run", "--optimizer", "adam_mini", "--store", f"sqlite:///{tmp_path}/plain.db", *RUN]) == 0
    assert _loss(capsys) == unpatched
    assert blocks(["--per-entry", "hidden", "--", *RUN]) == 0
    assert _loss(capsys) != unpatched
    assert adam_mini.block_count is block_count  # the patch is undone


def test_adam_mini_blocks_refuse_an_unknown_role(blocks, capsys):
    with pytest.raises(SystemExit) as exit_:
        blocks(["--per-entry", "hiden", "--", *RUN])
    assert exit_.value.code == 2
    assert "hiden" in capsys.readouterr().err
