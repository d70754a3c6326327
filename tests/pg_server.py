"""A throwaway PostgreSQL server on loopback for the tests that need a real one (the store's
concurrency, passwords kept out of every output). Skips the test where the server binaries or the
psycopg driver are missing."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

USER = "optbench"


@contextmanager
def local_postgres(password: str | None = None) -> Iterator[tuple[str, int]]:
    """A server whose user USER logs in freely (password None) or only with `password`
    (scram-sha-256 for every connection); yields its (host, port) and removes it afterwards."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl: Debian package postgresql)")
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed")
    root = Path(tempfile.mkdtemp(prefix="optbench-pg-"))  # under /tmp: the postgres user can reach it
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    auth = ["--auth=trust"]
    if password is not None:
        (root / "pwfile").write_text(password + "\n")
        auth = [f"--pwfile={root / 'pwfile'}", "--auth=scram-sha-256"]
    if as_user:
        for path in root.iterdir():
            shutil.chown(path, "postgres")
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", USER, *auth], check=True, capture_output=True)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -h 127.0.0.1 -k {root}", "start"], check=True, capture_output=True)
    try:
        yield "127.0.0.1", port
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
