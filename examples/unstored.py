"""`optbench run` into a throwaway store, for the diagnostic scripts beside this file.

A diagnostic patches an optimizer for one process (to read its state, or to change one piece of
it), so its run must always train and must never be stored where a real result could be served
from it: the run goes to a temporary SQLite store that is deleted afterwards.
"""
from __future__ import annotations

import argparse
import tempfile

from bench.cli import main as optbench


def split_args(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The script's own options (before `--`) and `optbench run`'s (after it); a --store of the
    caller's is refused (exit 2): a stored run would be served again, untrained and unpatched."""
    split = argv.index("--") if "--" in argv else len(argv)
    args, run_args = parser.parse_args(argv[:split]), argv[split + 1:]
    if "--store" in run_args:
        parser.error("--store: the run goes to a throwaway store so that it always trains")
    return args, run_args


def run_unstored(optimizer: str, run_args: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        return optbench(["run", "--optimizer", optimizer, "--store", f"sqlite:///{tmp}/runs.db", *run_args])
