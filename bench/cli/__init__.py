"""The `optbench` command: each module of bench/cli registers its subcommands.

Bad input raises UserError anywhere below; here it becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from bench.errors import UserError

# Each module has register(subparsers): one place per part of the tree adds its commands.
COMMAND_MODULES = ("bench.cli.run", "bench.cli.runs", "bench.cli.sweep", "bench.cli.regress",
                   "bench.cli.analysis", "bench.cli.curves", "bench.cli.tuning", "bench.cli.agreement",
                   "bench.cli.perf")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse would print usage too)
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="optbench", description="Fair optimizer comparisons for LM pretraining.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args) or 0
    except UserError as e:
        print(f"optbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("optbench: interrupted", file=sys.stderr)
        return 130

