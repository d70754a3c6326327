"""Reading the study's published result files, including malformed and partial ones."""
import json
import math
import shutil

import pytest

from analysis.paper.ingest import DEFAULT_DATA_DIR, load_paper_runs, parse_value
from bench.errors import UserError
from bench.store.record import RUN_COLUMNS

pytestmark = pytest.mark.unit

RESULTS = DEFAULT_DATA_DIR / "Analysis" / "Results"


@pytest.fixture(scope="module")
def paper():
    return load_paper_runs()


def _cell(runs, optimizer, scale, ratio):
    return runs[(runs.optimizer == optimizer) & (runs.scale == scale) & (runs.ratio == ratio)]


def test_the_shipped_data_is_read_whole_in_the_stores_shape(paper):
    assert paper.issues == [] and paper.files_read == 150
    assert list(paper.runs.columns) == list(RUN_COLUMNS)
    assert set(paper.runs.optimizer) == {"adamw", "nadamw", "mars", "cautious", "lion", "adam_mini",
                                         "muon", "scion", "kron", "soap", "sophia"}
    assert set(paper.runs.scale) == {"0.1B", "0.3B", "0.5B", "1.2B"}
    assert (paper.runs.ladder == "paper").all() and (paper.runs.seed == 0).all()


def test_budgets_follow_chinchilla_and_the_paper_scales(paper):
    row = _cell(paper.runs, "adamw", "1.2B", 8.0).iloc[0]
    assert row.non_embedding_params == 1_207_959_552
    assert row.tokens == 8 * 20 * 1_207_959_552
    assert row.steps == row.tokens // (4096 * row.hparams["train_batch_size"])


def test_each_cells_best_loss_is_the_studys_min_loss(paper):
    runs = paper.runs[paper.runs.status == "ok"]
    for opt, size, ratio in [("adamw", "130m", 1), ("muon", "130m", 8), ("muon", "1.2b", 1),
                             ("soape", "130m", 4), ("adamw", "520m", 1)]:
        expected = json.loads((RESULTS / opt / size / str(ratio) / "result.json").read_text())
        scale = {"130m": "0.1B", "520m": "0.5B", "1.2b": "1.2B"}[size]
        name = {"soape": "soap"}.get(opt, opt)
        assert _cell(runs, name, scale, float(ratio)).final_loss.min() == expected["min_loss"]


def test_ablations_change_one_hyperparameter_of_the_centre_config(paper):
    cell = _cell(paper.runs, "adamw", "0.1B", 1.0).set_index("run_key")
    centre = cell.loc["paper/adamw/130m/1/Baseline", "hparams"]
    ablation = cell.loc["paper/adamw/130m/1/learning_rate=0.032", "hparams"]
    assert ablation == {**centre, "learning_rate": 0.032}


def test_nan_text_absurd_and_high_losses_are_diverged_runs(paper):
    runs = paper.runs.set_index("run_key")
    assert runs.loc["paper/lion/130m/8/learning_rate=0.008", "status"] == "diverged"  # "NaN"
    assert math.isnan(runs.loc["paper/lion/130m/8/learning_rate=0.008", "final_loss"])
    assert runs.loc["paper/cautious/300m/1/beta2=0.9", "status"] == "diverged"  # 1.38e14
    assert runs.loc["paper/adamw/130m/1/learning_rate=0.032", "status"] == "diverged"  # 7.78
    assert runs.loc["paper/adamw/130m/1/beta1=0.98", "status"] == "ok"  # 3.88: bad, not diverged


def test_missing_runs_are_not_rows(paper):
    # soape/130m/4 is null apart from min_loss: one row, the centre with the study's min_loss
    cell = _cell(paper.runs, "soap", "0.1B", 4.0)
    assert list(cell.run_key) == ["paper/soape/130m/4/min_loss"]


def _copy_cells(tmp_path, cells):
    for cell in cells:
        shutil.copytree(RESULTS / cell, tmp_path / cell)


def test_a_malformed_or_partial_file_is_named_and_the_rest_still_read(tmp_path):
    _copy_cells(tmp_path, ["adamw/130m/1", "adamw/130m/2"])
    broken = tmp_path / "muon" / "130m" / "1" / "result.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"result": {"Baseline": 3.46')  # truncated
    partial = tmp_path / "muon" / "130m" / "2" / "result.json"
    partial.parent.mkdir(parents=True)
    partial.write_text(json.dumps({"result": {"Baseline": "3.37", "learning_rate=0.016": "oops",
                                              "momentum=0.9": None, "noequals": 3.5},
                                   "best_config": {"learning_rate": 0.008}}))
    listy = tmp_path / "muon" / "130m" / "4" / "result.json"
    listy.parent.mkdir(parents=True)
    listy.write_text("[1, 2]")

    paper = load_paper_runs(tmp_path)

    messages = [str(i) for i in paper.issues]
    assert any(m.startswith("muon/130m/1/result.json: not readable as JSON") for m in messages)
    assert any(m.startswith("muon/130m/4/result.json: the top level is a JSON list")
               for m in messages)
    assert any("muon/130m/2/result.json" in m and "'oops'" in m for m in messages)
    assert any("muon/130m/2/result.json" in m and "'noequals'" in m for m in messages)
    assert paper.files_read == 3
    muon = paper.runs[paper.runs.optimizer == "muon"]
    assert list(muon.final_loss) == [3.37]  # the readable part of the partial file
    assert len(paper.runs[paper.runs.optimizer == "adamw"]) == 39  # the good files, whole


def test_an_unknown_size_folder_is_an_issue_not_a_crash(tmp_path):
    _copy_cells(tmp_path, ["adamw/130m/1"])
    shutil.copytree(RESULTS / "adamw/130m/2", tmp_path / "adamw" / "7b" / "2")
    paper = load_paper_runs(tmp_path)
    assert [i.path for i in paper.issues] == ["adamw/7b/2/result.json"]
    assert "unknown model size" in paper.issues[0].message


def test_a_missing_or_empty_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_paper_runs(tmp_path / "nope")
    with pytest.raises(UserError, match="no result files"):
        load_paper_runs(tmp_path)


def test_a_folder_of_only_broken_files_is_a_user_error_naming_one(tmp_path):
    bad = tmp_path / "adamw" / "130m" / "1" / "result.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("not json")
    with pytest.raises(UserError, match="adamw/130m/1/result.json"):
        load_paper_runs(tmp_path)


@pytest.mark.parametrize("text, value", [("128", 128), ("2.0", 2.0), ("1e-25", 1e-25),
                                         ("True", True), ("linear", "linear")])
def test_ablation_values_keep_their_type(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)
