"""No password in what optbench shows or keeps: store and Optuna storage URLs are shown with the
password as ***, in messages, plans, summaries, one-line errors and recorded provenance; and a
PostgreSQL password can stay out of the URL (PGPASSWORD, ~/.pgpass).

The commands run as users run them (subprocesses) against a real PostgreSQL server that asks for a
password, and every byte they print or write under their results folder is searched for it."""
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest
from pg_server import free_port, local_postgres

from bench.errors import UserError
from bench.paths import cache_dir
from bench.urls import hide_passwords, shown_url

OPTBENCH = [sys.executable, "-m", "bench.cli"]
SECRET = "s3cret@Zq7:pw"  # '@' and ':' must be percent-encoded in a URL: both forms are searched for
NEEDLES = (b"s3cret", b"Zq7:pw", b"Zq7%3Apw")  # any part of it, raw or encoded
RUN = ["run", "--optimizer", "adamw", "--scale", "cpu-xs", "--ratio", "0.05", "--threads", "1"]


def _leaks(text: str | bytes, where: str) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [f"{needle.decode()} in {where}" for needle in NEEDLES if needle in data]


def _leaks_in(p: subprocess.CompletedProcess, results: Path) -> list[str]:
    """Every place the password shows: the process's stdout and stderr, every file under results."""
    found = _leaks(p.stdout, "stdout") + _leaks(p.stderr, "stderr")
    for path in results.rglob("*"):
        if path.is_file():
            found += _leaks(path.read_bytes(), str(path))
    return found


# --- the masking itself ----------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("url, shown", [
    ("postgresql+psycopg://alice:s3cretpw@db.example:5432/optbench",
     "postgresql+psycopg://alice:***@db.example:5432/optbench"),
    (f"postgresql+psycopg://alice:{quote(SECRET, safe='')}@db/x", "postgresql+psycopg://alice:***@db/x"),
    ("postgresql+psycopg://alice@db/x?password=s3cretpw&sslmode=require",
     "postgresql+psycopg://alice@db/x?password=***&sslmode=require"),
    ("postgresql+psycopg://alice@db.example/optbench", "postgresql+psycopg://alice@db.example/optbench"),
    ("sqlite:///results/my store:1.db", "sqlite:///results/my store:1.db"),  # as written, not re-encoded
    ("results/optuna.journal", "results/optuna.journal"),  # a Journal file path
    ("postgresql://alice:s3cretpw@db:notaport/x", "postgresql://alice:***@db:notaport/x"),  # malformed
    ("not a url", "not a url"),
])
def test_a_url_is_shown_with_its_password_hidden(url, shown):
    assert shown_url(url) == shown


@pytest.mark.unit
def test_a_command_line_quoting_urls_has_every_password_hidden():
    line = ("optbench sweep --store=postgresql+psycopg://a:s3cret1@h/db "
            "--optuna-storage 'mysql+pymysql://b:s3cret2@h:3306/optuna' --yes")
    assert hide_passwords(line) == ("optbench sweep --store=postgresql+psycopg://a:***@h/db "
                                    "--optuna-storage 'mysql+pymysql://b:***@h:3306/optuna' --yes")


@pytest.mark.unit
def test_a_drivers_message_quoting_the_password_alone_has_it_hidden():
    url = f"postgresql+psycopg://alice:{quote(SECRET, safe='')}@db/x"
    message = f"auth failed for {SECRET} ({quote(SECRET, safe='')})"
    assert hide_passwords(message, url) == "auth failed for *** (***)"


@pytest.mark.integration
def test_recorded_tuning_provenance_holds_no_password(monkeypatch):
    from sweeps.regress.check import tuning_record

    url = f"postgresql+psycopg://alice:{quote(SECRET, safe='')}@db/tune"
    monkeypatch.setattr(sys, "argv", ["optbench", "regress", "--update-baseline", "--tuned-from", url])
    record = tuning_record(pd.DataFrame(), url, "cpu-xs", 1.0, f"optbench sweep --store {url} --yes")
    text = json.dumps(record)
    assert not _leaks(text, "the record")
    assert record["store"] == "postgresql+psycopg://alice:***@db/tune"
    assert record["recorded_command"].endswith("--tuned-from 'postgresql+psycopg://alice:***@db/tune'")
    assert record["command"] == "optbench sweep --store postgresql+psycopg://alice:***@db/tune --yes"


# --- the commands, against a PostgreSQL server that asks for a password ----------------------

@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server whose user optbench logs in only with the password SECRET."""
    with local_postgres(SECRET) as server:
        yield server


def _url(postgres, password: str | None = SECRET, database: str = "postgres") -> str:
    host, port = postgres
    user = "optbench" + (f":{quote(password, safe='')}" if password is not None else "")
    return f"postgresql+psycopg://{user}@{host}:{port}/{database}"


def _optbench(*args, results: Path, home: Path, **env) -> subprocess.CompletedProcess:
    """optbench in a fresh process: results under `results`, this test session's tokenizer cache,
    and no PostgreSQL password from this machine (PG* variables dropped, HOME without a .pgpass)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "OPTBENCH_STORE"}
    base.update(OPTBENCH_RESULTS=str(results), OPTBENCH_CACHE=str(cache_dir()), HOME=str(home), **env)
    return subprocess.run([*OPTBENCH, *args], capture_output=True, text=True, env=base, timeout=600)


@pytest.fixture(scope="module")
def stored(postgres, tmp_path_factory):
    """One run trained and stored through the password-bearing URL: the process and its results."""
    results, home = tmp_path_factory.mktemp("secret-results"), tmp_path_factory.mktemp("home")
    p = _optbench(*RUN, "--store", _url(postgres), results=results, home=home)
    return p, results, home


@pytest.mark.system
def test_a_run_stored_through_a_password_url_never_shows_the_password(stored, postgres):
    p, results, _ = stored
    assert p.returncode == 0, p.stderr
    host, port = postgres
    assert f"stored in postgresql+psycopg://optbench:***@{host}:{port}/postgres" in p.stdout
    assert not _leaks_in(p, results)


@pytest.mark.system
def test_the_sweep_plan_shows_both_urls_without_their_passwords(stored, postgres):
    _, results, home = stored
    optuna = _url(postgres, database="optuna")
    p = _optbench("sweep", "--scale", "cpu-xs", "--ratios", "0.05", "--optimizers", "adamw", "--threads", "1",
                  "--workers", "1", "--store", _url(postgres), "--optuna-storage", optuna, "--dry-run",
                  results=results, home=home)
    assert p.returncode == 0, p.stderr
    assert f"Results store: {shown_url(_url(postgres))}\n" in p.stdout
    assert f"Optuna studies: {shown_url(optuna)}\n" in p.stdout and ":***@" in shown_url(optuna)
    assert not _leaks_in(p, results)


@pytest.mark.system
def test_analyze_over_a_password_url_from_the_environment_never_shows_it(stored, postgres):
    _, results, home = stored
    p = _optbench("analyze", results=results, home=home, OPTBENCH_STORE=_url(postgres))
    assert f"read 1 run from the results store {shown_url(_url(postgres))}" in p.stdout, p.stderr
    assert not _leaks_in(p, results)


@pytest.mark.system
def test_listing_the_runs_of_a_password_url_never_shows_it(stored, postgres):
    _, results, home = stored
    p = _optbench("runs", "--store", _url(postgres), results=results, home=home)
    assert p.returncode == 0 and f"1 stored run(s) in {shown_url(_url(postgres))}" in p.stdout, p.stderr
    assert not _leaks_in(p, results)


@pytest.mark.system
@pytest.mark.parametrize("url, message", [
    (f"postgresql+psycopg://alice:{quote(SECRET, safe='')}@127.0.0.1:{free_port()}/db",
     "cannot open results store"),  # no server there
    (f"postgresql+psycopg://alice:{quote(SECRET, safe='')}@127.0.0.1:notaport/db", "bad store URL"),
    (f"postgresql+nosuchdriver://alice:{quote(SECRET, safe='')}@127.0.0.1/db", "cannot open store"),
], ids=["no-server", "bad-port", "no-driver"])  # stable ids: the free port differs per collection
def test_a_store_error_is_one_line_without_the_password(url, message, tmp_path):
    p = _optbench(*RUN, "--store", url, results=tmp_path, home=tmp_path)
    assert p.returncode == 2 and message in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("optbench: error:")
    assert "alice:***@127.0.0.1" in p.stderr
    assert not _leaks_in(p, tmp_path)


@pytest.mark.system
def test_a_wrong_password_is_refused_in_one_line_that_does_not_show_it(postgres, tmp_path):
    wrong = _url(postgres, password="wr0ng-s3cret")
    p = _optbench(*RUN, "--store", wrong, results=tmp_path, home=tmp_path)
    assert p.returncode == 2 and "password authentication failed" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and shown_url(wrong) in p.stderr
    assert not _leaks_in(p, tmp_path)


@pytest.mark.system
def test_an_optuna_storage_that_refuses_the_password_is_a_user_error_that_does_not_show_it(postgres):
    from sweeps.record import open_storage

    wrong = _url(postgres, password="wr0ng-s3cret")
    with pytest.raises(UserError) as refused:
        open_storage(wrong)
    assert "password authentication failed" in str(refused.value)
    assert shown_url(wrong) in str(refused.value) and not _leaks(str(refused.value), "the error")


@pytest.mark.system
@pytest.mark.parametrize("source", ["none", "PGPASSWORD", "~/.pgpass"])
def test_the_password_can_come_from_pgpassword_or_pgpass_instead_of_the_url(source, stored, postgres,
                                                                             tmp_path):
    results, home = tmp_path / "results", tmp_path / "home"
    home.mkdir()
    env = {"PGPASSWORD": SECRET} if source == "PGPASSWORD" else {}
    if source == "~/.pgpass":
        host, port = postgres
        escaped = SECRET.replace("\\", "\\\\").replace(":", "\\:")  # the file's own escapes
        (home / ".pgpass").write_text(f"{host}:{port}:*:optbench:{escaped}\n")
        (home / ".pgpass").chmod(0o600)  # libpq ignores a password file others can read
    p = _optbench(*RUN, "--store", _url(postgres, password=None), results=results, home=home, **env)
    if source == "none":  # the server asks for a password: without one, no store
        assert p.returncode == 2 and "password" in p.stderr
    else:  # the run stored by the `stored` fixture, read back
        assert p.returncode == 0, p.stderr
        assert f"already in {_url(postgres, password=None)}" in p.stdout
    assert not _leaks_in(p, results)


@pytest.mark.system
def test_a_sweep_through_ray_into_password_urls_never_shows_them(stored, postgres):
    _, results, home = stored
    store, optuna = _url(postgres), _url(postgres, database="postgres?application_name=optuna")
    p = _optbench("sweep", "--scale", "cpu-xs", "--ratios", "0.05", "--optimizers", "adamw", "--protocol",
                  "tpe", "--max-trials", "1", "--workers", "1", "--threads", "1", "--store", store,
                  "--optuna-storage", optuna, "--yes", results=results, home=home)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"from the store ({shown_url(store)}); Optuna studies in {shown_url(optuna)}" in p.stdout
    assert "adamw 0.05x seed 0 run" in p.stderr  # the progress lines were there to search
    assert not _leaks_in(p, results)
