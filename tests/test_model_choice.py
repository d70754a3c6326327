"""Choosing the model of a run or a sweep: --arch, --model FILE (a shape of your own, or changes to a
scale), and where the choice goes: the run's key, its context in the store, a sweep's cells."""
import json

import pytest

from bench.cli import main
from bench.cli.args import model_choice
from bench.errors import UserError
from bench.run.spec import RunSpec
from bench.store.database import ResultStore
from bench.store.record import StoredRun, context_label, spec_context
from sweeps.plan import Cell, SweepContext

pytestmark = pytest.mark.integration

SHAPE = {"hidden": 48, "intermediate": 192, "layers": 2, "heads": 3, "seq_len": 64, "batch": 8}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def toml(fields):
    return "\n".join(f"{k} = {json.dumps(v)}" for k, v in fields.items()) + "\n"


def test_a_model_file_is_a_shape_of_its_own_named_by_its_stem(tmp_path):
    path = write(tmp_path, "wide.toml", toml({**SHAPE, "vocab": 256}))
    scale, model, tokenizer = model_choice(None, None, path, None)
    assert (scale, tokenizer) == ("wide", "bpe-256")
    spec = RunSpec("adamw", scale, 1.0, tokenizer=tokenizer, model=model)
    shape = spec.shape
    assert (shape.name, shape.ladder, shape.hidden, shape.heads, shape.seq_len) == ("wide", "custom", 48, 3, 64)
    assert spec.hparams["train_batch_size"] == 8  # the file's batch is the shape's default batch
    assert RunSpec.from_dict(spec.to_dict()) == spec


def test_with_a_scale_the_file_changes_that_scale_and_json_works_too(tmp_path):
    path = write(tmp_path, "deeper.json", json.dumps({"layers": 6}))
    scale, model, _ = model_choice("cpu-xs", None, path, None)
    spec = RunSpec("adamw", scale, 1.0, model=model)
    assert (spec.scale, spec.shape.layers, spec.shape.hidden) == ("cpu-xs", 6, 32)
    assert spec.key != RunSpec("adamw", "cpu-xs").key


def test_the_scales_llama_keeps_its_key_and_an_architecture_changes_it():
    llama = RunSpec("adamw", "cpu-xs")
    assert RunSpec("adamw", "cpu-xs", model={"arch": "llama"}).key == llama.key
    assert "model" not in llama.to_dict()
    moe = RunSpec("adamw", "cpu-xs", model={"arch": "moe"})
    mla = RunSpec("adamw", "cpu-xs", model={"arch": "mla"})
    assert len({llama.key, moe.key, mla.key}) == 3
    # resolved: the architecture's options written out are the same run as left to their defaults
    assert RunSpec("adamw", "cpu-xs", model=dict(moe.model)).key == moe.key


def test_the_architecture_is_part_of_the_context():
    moe = RunSpec("adamw", "cpu-xs", model={"arch": "moe"})
    assert spec_context(moe.to_dict())["arch"] == "moe"
    assert spec_context(RunSpec("adamw", "cpu-xs").to_dict())["arch"] == "llama"
    changed = RunSpec("adamw", "cpu-xs", model={**moe.model, "aux_loss_weight": 0.1}).to_dict()
    label = spec_context(changed)["arch"]
    assert label.startswith("moe+") and label != "moe"  # other options: never the default's label
    base = {"data": "default", "eval_data": "", "tokenizer": "bpe-512", "precision": "fp32",
            "device": "cpu", "eval_tokens": 131072}
    assert context_label({**base, "arch": "llama"}).endswith("eval_tokens=131072")
    assert context_label({**base, "arch": "moe"}).endswith("eval_tokens=131072 arch=moe")


def test_a_sweep_cell_carries_its_context_into_its_runs_and_its_study():
    context = SweepContext("default", "", "bpe-512", json.dumps({"arch": "mla"}))
    cell = Cell("muon", "cpu-xs", 1.0, "coordinate", context)
    plain = Cell("muon", "cpu-xs", 1.0, "coordinate")
    assert cell.spec({}).shape.arch == "mla" and plain.spec({}).shape.arch == "llama"
    assert cell.study_name == plain.study_name + "/arch=mla"
    other_data = Cell("muon", "cpu-xs", 1.0, "coordinate", SweepContext(data="tiny.txt"))
    assert other_data.spec({}).data == "tiny.txt" and other_data.study_name.endswith("/data=tiny.txt")


@pytest.mark.parametrize("fields, message", [
    ({**SHAPE, "heads": 5}, "heads"),
    ({**SHAPE, "hidden": -48}, "hidden"),
    ({**SHAPE, "arch": "moe", "top_k": 9, "experts": 4}, "top_k"),
    ({**SHAPE, "arch": "rnn"}, "arch"),
    ({**SHAPE, "colour": "red"}, "colour"),
    ({**SHAPE, "vocab": 1}, "vocab"),
])
def test_a_bad_model_file_is_one_line_and_exit_2_and_stores_nothing(fields, message, tmp_path, store_url, capsys):
    path = write(tmp_path, "bad.toml", toml(fields))
    assert main(["run", "--optimizer", "adamw", "--model", path, "--ratio", "0.02", "--store", store_url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert len(ResultStore(store_url).frame()) == 0


def test_unreadable_and_contradicting_choices_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not valid TOML"):
        model_choice(None, None, write(tmp_path, "x.toml", "hidden = = 3"), None)
    with pytest.raises(UserError, match="--scale or --model"):
        model_choice(None, "moe", None, None)
    with pytest.raises(UserError, match="--arch mla but the model file says"):
        model_choice("cpu-xs", "mla", write(tmp_path, "m.toml", 'arch = "moe"\n'), None)
    with pytest.raises(UserError, match="vocab 256, --tokenizer bpe-512"):
        model_choice(None, None, write(tmp_path, "v.toml", toml({**SHAPE, "vocab": 256})), "bpe-512")


def test_scales_describes_a_model_file(tmp_path, capsys):
    path = write(tmp_path, "wide.toml", toml({**SHAPE, "arch": "moe"}))
    assert main(["scales", "--model", path, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    shape = RunSpec("adamw", "wide", model=model_choice(None, None, path, None)[1]).shape
    assert row["name"] == "wide" and row["arch"] == "moe"
    assert row["non_embedding_params"] == shape.non_embedding_params
    assert row["total_non_embedding_params"] == shape.total_non_embedding_params > shape.non_embedding_params
    assert row["tokens"]["1"] == shape.tokens(1)
    assert main(["scales", "--model", path]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wide (custom), moe:") and "active" in out and "1x here" in out


def test_a_run_of_a_shape_of_its_own_is_stored_and_found_by_its_name(tmp_path, store_url, capsys):
    path = write(tmp_path, "tiny.toml", toml({**SHAPE, "layers": 1}))
    assert main(["run", "--optimizer", "adamw", "--model", path, "--ratio", "0.05", "--threads", "1",
                 "--store", store_url, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "ok" and result["spec"]["scale"] == "tiny"
    run = StoredRun.from_result(ResultStore(store_url).get(result["run_key"]))
    assert run.ladder == "custom" and run.arch.startswith("llama+")  # its shape is in its model
    assert main(["runs", "--scale", "tiny", "--store", store_url, "--json"]) == 0
    assert result["run_key"] in capsys.readouterr().out
