"""Fuzzed bad input (hypothesis): always a one-line error and exit code 2, never a traceback, and
nothing written. The CLI is called in-process; runs never start because every case is invalid."""
import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bench.cli import main
from bench.data.corpus import parse_sources
from bench.errors import UserError
from bench.model.scales import _ALIASES, SCALES
from bench.optimizers.registry import OptimizerDef, all_optimizers, get
from bench.run.spec import RunSpec
from bench.store.database import ResultStore

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
KNOWN_OPTS = {o.name for o in all_optimizers()}


def _expect_exit_2(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and err.startswith("optbench: error:")


@FUZZ
@given(name=names)
def test_any_unknown_optimizer_name(name, capsys, tmp_path):
    assume(name not in KNOWN_OPTS and not name.startswith("-"))
    _expect_exit_2(["run", "--optimizer", name, "--scale", "cpu-xs", "--store", f"sqlite:///{tmp_path}/s.db"], capsys)
    assert not (tmp_path / "s.db").exists()


@FUZZ
@given(name=names)
def test_any_unknown_scale(name, capsys):
    assume(name.lower() not in _ALIASES and name not in SCALES and not name.startswith("-"))
    _expect_exit_2(["run", "--optimizer", "adamw", "--scale", name], capsys)


@FUZZ
@given(ratio=st.one_of(names, st.floats(max_value=0).map(str), st.just("nan"), st.just("inf")))
def test_any_bad_ratio(ratio, capsys):
    try:
        assume(not (0 < float(ratio) < float("inf")))
    except ValueError:
        pass
    assume(not ratio.startswith("-") or ratio[1:2].isdigit())
    _expect_exit_2(["run", "--optimizer", "adamw", "--scale", "cpu-xs", f"--ratio={ratio}"], capsys)


json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3), max_leaves=4)


@FUZZ
@given(opt=st.sampled_from(sorted(KNOWN_OPTS)), key=st.text(min_size=1, max_size=12), value=json_values)
def test_run_spec_accepts_or_refuses_with_a_user_error_never_a_crash(opt, key, value):
    known = get(opt).defaults
    hp = {key if key not in known else key: value}
    try:
        spec = RunSpec(opt, "cpu-xs", 1, hp)
    except UserError:
        return
    assert spec.hparams[key] == value or float(spec.hparams[key]) == float(value)


@FUZZ
@given(opt=st.sampled_from(sorted(KNOWN_OPTS)), data=st.data())
def test_bad_hyperparameter_values_on_the_command_line(opt, data, capsys):
    key = data.draw(st.sampled_from(sorted(get(opt).defaults)))
    text = data.draw(st.sampled_from(["abc", "-1", "1e999", "[1]", "{}", "nan", "-0.5"]))
    try:
        RunSpec(opt, "cpu-xs", 1, {key: json.loads(text) if text not in ("abc", "nan") else text})
        assume(False)  # a value this key happens to accept: not a bad-input case
    except (UserError, ValueError):
        pass
    _expect_exit_2(["run", "--optimizer", opt, "--scale", "cpu-xs", "--set", f"{key}={text}"], capsys)


@FUZZ
@given(spec=names)
def test_data_specs_parse_or_fail_with_a_user_error(spec):
    try:
        parse_sources(spec)
    except UserError:
        pass


@FUZZ
@given(url=names)
def test_store_urls_open_or_fail_with_a_user_error(url, tmp_path):
    assume(url and "://" not in url)  # empty means the default store; a URL could name a real one
    with pytest.raises(UserError):
        ResultStore(url)


@pytest.mark.parametrize("content", ["", "{", "[]", '{"cpu": 3}', '{"paper": {}}'])
def test_corrupt_search_space_files_are_user_errors(content, tmp_path, monkeypatch):
    import bench.optimizers.registry as registry

    monkeypatch.setattr(registry, "SPACES_DIR", tmp_path)
    (tmp_path / "adamw.json").write_text(content)
    with pytest.raises(UserError, match="search space"):
        get("adamw").space("cpu")
    (tmp_path / "adamw.json").unlink()
    with pytest.raises(UserError, match="no search space file"):
        get("adamw").space("cpu")


def test_registry_rejects_an_incomplete_registration():
    with pytest.raises(ValueError, match="train keys"):
        from bench.optimizers.registry import register

        register(OptimizerDef("broken", "adam", lambda *a: None, {}, {}, "p", "s"))
