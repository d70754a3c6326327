"""Fuzzed input (hypothesis): bad input is always a one-line error and exit code 2, never a
traceback, and nothing written; input that is accepted means what it says. The CLI is called
in-process; runs never start because every case given to it is invalid."""
import json
import math
import re

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

KINDS = ("default", "text", "json", "parquet", "hf")  # bench.data.corpus's source kinds
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
KNOWN_OPTS = {o.name for o in all_optimizers()}


def _expect_exit_2(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and err.startswith("optbench: error:")


@pytest.mark.integration
@FUZZ
@given(name=names)
def test_any_unknown_optimizer_name(name, capsys, tmp_path):
    assume(name not in KNOWN_OPTS and not name.startswith("-"))
    _expect_exit_2(["run", "--optimizer", name, "--scale", "cpu-xs", "--store", f"sqlite:///{tmp_path}/s.db"], capsys)
    assert not (tmp_path / "s.db").exists()


@pytest.mark.integration
@FUZZ
@given(name=names)
def test_any_unknown_scale(name, capsys):
    assume(name.lower() not in _ALIASES and name not in SCALES and not name.startswith("-"))
    _expect_exit_2(["run", "--optimizer", "adamw", "--scale", name], capsys)


@pytest.mark.integration
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


@pytest.mark.unit
@FUZZ
@given(opt=st.sampled_from(sorted(KNOWN_OPTS)), data=st.data(),
       value=json_values | st.integers(0, 4) | st.floats(0, 0.99))  # and values a key may accept
def test_a_hyperparameter_is_kept_as_its_defaults_type_or_refused_naming_it(opt, data, value):
    defaults = get(opt).defaults
    # the optimizer's own names (with fuzzed values) as often as fuzzed names
    key = data.draw(st.one_of(st.sampled_from(sorted(defaults)), st.text(min_size=1, max_size=12)))
    try:
        spec = RunSpec(opt, "cpu-xs", 1, {key: value})
    except UserError as e:
        assert repr(key) in str(e)
        return
    assert key in defaults  # an unknown name is never accepted
    default = defaults[key]
    assert spec.hparams[key] == value
    assert type(spec.hparams[key]) is (float if default is None and value is not None else type(default))


@pytest.mark.integration
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


# Mostly well-formed specs (kinds, fuzzed targets, good and bad weights), and fuzzed text.
weights = st.one_of(st.just(""), st.floats(1e-100, 1e100).map(lambda w: f"@{w}"),
                    st.sampled_from(["@0", "@-1", "@x", "@inf", "@nan", "@1e999", "@1e308"]))
parts = st.builds(lambda kind, target, weight: f"{kind}:{target}{weight}", st.sampled_from(KINDS), names, weights)
data_specs = st.one_of(names, st.lists(parts, min_size=1, max_size=3).map(",".join))


@pytest.mark.unit
@FUZZ
@given(spec=data_specs)
def test_a_data_spec_parses_into_its_weighted_sources_or_fails_with_a_user_error(spec):
    try:
        sources = parse_sources(spec)
    except UserError:
        return
    written = [p.strip() for p in spec.split(",") if p.strip()]
    assert [s.kind for s in sources] == [re.match("[a-z]+", p)[0] for p in written]
    assert all(s.target in p for s, p in zip(sources, written))
    assert all(s.weight > 0 for s in sources) and math.isclose(sum(s.weight for s in sources), 1)


@pytest.mark.integration
@FUZZ
@given(url=names)
def test_store_urls_open_or_fail_with_a_user_error(url, tmp_path):
    assume(url and "://" not in url)  # empty means the default store; a URL could name a real one
    with pytest.raises(UserError):
        ResultStore(url)


@pytest.mark.unit
@pytest.mark.parametrize("content", ["", "{", "[]", '{"cpu": 3}', '{"paper": {}}', '{"cpu": {"warmup": []}}',
                                     '{"cpu": {"warmup": [0.1]}, "start": {"warmup": 0.1}}'])
def test_corrupt_search_space_files_are_user_errors(content, tmp_path, monkeypatch):
    import bench.optimizers.registry as registry

    monkeypatch.setattr(registry, "SPACES_DIR", tmp_path)
    (tmp_path / "adamw.json").write_text(content)
    with pytest.raises(UserError, match="space file"):
        get("adamw").space("cpu")
    (tmp_path / "adamw.json").unlink()
    with pytest.raises(UserError, match="no search space file"):
        get("adamw").space("cpu")


@pytest.mark.unit
def test_registry_rejects_an_incomplete_registration():
    with pytest.raises(ValueError, match="train keys"):
        from bench.optimizers.registry import register

        register(OptimizerDef("broken", "adam", lambda *a: None, {}, {}, "p", "s"))
