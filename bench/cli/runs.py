"""CLI commands on what the store holds and which code made it: `runs` and `code`."""
from __future__ import annotations

import argparse
import json
import math

from bench.cli.args import positive_float, scale_filter
from bench.errors import UserError

WHAT = ("served", "replaced", "stale", "attempt")
STATUSES = ("ok", "diverged", "failed", "error")


def register(subparsers) -> None:
    p = subparsers.add_parser("runs", help="list the stored runs: results (current or stale) and failed attempts")
    p.add_argument("--store", default=None, help="results store URL (default: sqlite under results/)")
    p.add_argument("--optimizer", default=None)
    p.add_argument("--scale", default=None)
    p.add_argument("--ratio", type=positive_float, default=None)
    p.add_argument("--status", choices=STATUSES, default=None,
                   help="error: runs the environment stopped (attempts)")
    p.add_argument("--stale", action="store_true", help="only results of older code")
    p.add_argument("--all", action="store_true",
                   help="every stored row (default: the row each run serves, and stale ones)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_runs)

    p = subparsers.add_parser("code", help="the code version of the harness and of each optimizer; "
                                           "declare a change as a refactor (accept) or a new version (bump)")
    p.add_argument("action", nargs="?", choices=("show", "accept", "bump"), default="show",
                   help="accept: results stay current; bump: results of the old version go stale")
    p.add_argument("parts", nargs="*", metavar="PART", help="harness, optimizer names, or all")
    p.set_defaults(func=cmd_code)


def cmd_runs(args: argparse.Namespace) -> int:
    from bench.store.database import ResultStore
    from bench.urls import shown_url

    scale = scale_filter(args.scale)
    store = ResultStore(args.store)
    rows = [(what, r, created) for what, r, created in store.history(optimizer=args.optimizer, scale=scale)
            if _kept(what, r, args)]
    if args.json:
        for what, r, created in rows:
            print(json.dumps({"state": what, "created_at": created, **_summary(r)}))
        return 0
    print(f"{len(rows)} stored run(s) in {shown_url(store.url)}")
    if rows:
        print(f"{'state':8} {'run key':20} {'optimizer':10} {'scale':6} {'ratio':>6} {'seed':>4} "
              f"{'status':8} {'loss':>7}  {'code (optimizer/harness)':24} {'stored at':25} reason")
    for what, r, created in rows:
        s = _summary(r)
        loss = "" if s["final_loss"] is None else f"{s['final_loss']:.4f}"
        print(f"{what:8} {r.run_key:20} {s['optimizer']:10} {s['scale']:6} {s['ratio']:6g} {s['seed']:4d} "
              f"{r.status:8} {loss:>7}  {s['code']:24} {created:25} {r.reason}")
    return 0


def _kept(what: str, result, args: argparse.Namespace) -> bool:
    spec = result.spec
    return ((args.all or what != "replaced") and (not args.stale or what == "stale")
            and (args.status is None or result.status == args.status)
            and (args.ratio is None or math.isclose(spec["ratio"], args.ratio)))


def _summary(result) -> dict:
    spec, code = result.spec, result.code or {}
    return {"run_key": result.run_key, "optimizer": spec["optimizer"], "scale": spec["scale"],
            "ratio": spec["ratio"], "seed": spec["seed"], "status": result.status,
            "final_loss": result.final_loss, "reason": result.reason,
            "code": f"{code.get('optimizer', 'unrecorded')}/{code.get('harness', 'unrecorded')}"}


def cmd_code(args: argparse.Namespace) -> int:
    from bench.run import identity

    known = identity.parts()
    names = known if args.parts == ["all"] else args.parts
    # `show` also takes module:Class (your own optimizer's version; declaring one is for bench/'s)
    unknown = [n for n in names if n not in known and not (":" in n and args.action == "show")]
    if unknown:
        raise UserError(f"unknown code part {unknown[0]!r}; known: all, {', '.join(known)}")
    if args.action == "show":
        for name in names or known:
            state = "declared" if "+" not in identity.part_version(name) else "CHANGED since declared"
            files = ", ".join(identity.source_label(p) for p in identity.part_sources(name))
            print(f"{name:12} {identity.part_version(name):20} {state}  ({files})")
        return 0
    if not names:
        raise UserError(f"`optbench code {args.action}` needs the parts to declare (or all)")
    for line in identity.declare(names, bump=args.action == "bump"):
        print(line)
    print(f"wrote {identity.VERSIONS_FILE}")
    return 0
