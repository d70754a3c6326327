"""CLI commands for single runs and the registries: `run`, `scales`, `optimizers`."""
from __future__ import annotations

import argparse
import json
from typing import Any

from bench.cli.args import (
    ARCHES,
    add_execution_flags,
    add_model_and_data_flags,
    model_choice,
    non_negative_int,
    positive_float,
)
from bench.errors import UserError
from bench.track import TRACKERS, parse_trackers

# Short names users type for the study's long hyperparameter names.
ALIASES = {"lr": "learning_rate", "wd": "weight_decay", "batch": "train_batch_size",
           "batch_size": "train_batch_size", "eps": "epsilon", "clip": "max_grad_norm",
           "schedule": "lr_schedule"}


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="train one run to the end of its budget and store it")
    p.add_argument("--optimizer", required=True,
                   help="a name (see `optbench optimizers`) or module:Class, a torch.optim.Optimizer subclass")
    p.add_argument("--space", default=None, metavar="FILE",
                   help="with module:Class: its search space file (defaults, roles; README)")
    add_model_and_data_flags(p)
    p.add_argument("--ratio", type=positive_float, default=1.0, help="data budget in Chinchilla units")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="hyperparameter override, repeatable (lr=8e-3 warmup=0.05 ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--store", default=None, help="SQLAlchemy URL (default: sqlite under results/)")
    p.add_argument("--micro-batch", type=non_negative_int, default=0, metavar="SEQS",
                   help="sequences per forward/backward, gradients accumulated (default: the whole batch)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer blocks and the loss head")
    add_execution_flags(p, "results/checkpoints")
    add_reuse_flags(p)
    add_track_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("scales", help="list the model scales, or describe a model file's shape")
    p.add_argument("--model", default=None, metavar="FILE",
                   help="a model file (as `run --model`): its shape, parameters, budgets and time here")
    p.add_argument("--scale", default=None, help="with --model: the scale the file changes")
    p.add_argument("--arch", default=None, choices=ARCHES, help="with --model or --scale: the architecture")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_scales)

    p = subparsers.add_parser("optimizers", help="list the optimizers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_optimizers)


def parse_sets(sets: list[str]) -> dict[str, Any]:
    """KEY=VALUE strings to a dict; values read as JSON (numbers, true, null) else as strings."""
    out = {}
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"bad --set {item!r}: expected KEY=VALUE")
        try:
            value = json.loads(text.lower() if text.lower() in ("true", "false", "null", "none") else text)
        except json.JSONDecodeError:
            value = text
        out[ALIASES.get(key, key)] = None if text.lower() == "none" else value
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from bench.paths import results_dir
    from bench.run.faults import planned
    from bench.run.spec import RunSpec
    from bench.run.train import RunOptions, run
    from bench.store.database import ResultStore
    from bench.track import require, send
    from bench.urls import shown_url
    from sweeps.grid import use_space

    require(args.track)  # a missing tracker package fails now, not after the training
    use_space(args.optimizer, args.space)  # your own optimizer's space file, checked (sweeps.grid)
    scale, model, tokenizer = model_choice(args.scale, args.arch, args.model, args.tokenizer)
    spec = RunSpec(args.optimizer, scale, args.ratio, parse_sets(args.sets), args.seed, args.data,
                   args.eval_data, tokenizer, args.precision, args.device, model=model)
    store = ResultStore(args.store)  # opened first: a bad store fails before an hour of training
    found = store.lookup(spec.key)
    if args.reuse_stale and found.stale is None:
        raise UserError(f"--reuse-stale: the store holds no stale result of run {spec.key}")
    stored = found.current or (found.stale if args.reuse_stale else None)
    if stored is not None and args.retry_failed and stored.status != "ok":
        stored = None
    options = RunOptions(threads=args.threads, progress=not args.json, checkpoint_every=args.checkpoint_every,
                         checkpoint_dir=args.checkpoint_dir or str(results_dir() / "checkpoints"),
                         micro_batch=args.micro_batch, compile=args.compile, procs=args.procs_per_trial,
                         parallel=args.parallel, fault=planned(spec.to_dict()))
    result = stored or run(spec, options)
    if stored is None:
        store.put(result)
    tracked = send(result, args.track)  # after storing: a tracker's failure never costs the result
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        _print_result(result, shown_url(store.url), from_store=stored is not None)
        _print_history(found, stored)
        for line in tracked:
            print(f"  tracked       {line}")
    return 0 if result.status == "ok" else 1


def add_reuse_flags(p: argparse.ArgumentParser) -> None:
    """--reuse-stale and --retry-failed, for the commands that train."""
    p.add_argument("--reuse-stale", action="store_true",
                   help="serve results of older code (stale, see `optbench runs --stale`) instead of "
                        "re-training them")
    p.add_argument("--retry-failed", action="store_true",
                   help="re-train stored runs that diverged or failed (environment failures are always retried)")


def add_track_flag(p: argparse.ArgumentParser) -> None:
    """--track, for the commands that produce results (bench/track.py)."""
    p.add_argument("--track", type=parse_trackers, action="extend", default=[], metavar="NAME",
                   help=f"also send each result to a tracker: {', '.join(TRACKERS)} (comma-separated or "
                        "repeated; needs pip install -e '.[track]')")


def _print_history(found, served) -> None:
    """What the store held besides what was served: a stale result re-trained, failed attempts."""
    if found.stale is not None and served is None and found.current is None:
        print(f"  re-trained    the stored result came from other code ({_code(found.stale)}); "
              "it stays in the store")
    if served is not None and served is found.stale:
        print("  stale         from other code than the current one, served as --reuse-stale asks")
    if found.attempts and served is None:
        print(f"  retried       {len(found.attempts)} earlier attempt(s) failed: {found.attempts[-1]}")


def _code(result) -> str:
    code = result.code or {}
    return f"optimizer {code.get('optimizer', 'unrecorded')}, harness {code.get('harness', 'unrecorded')}"


def _print_result(r, url: str, from_store: bool) -> None:
    spec = r.spec
    print(f"{spec['optimizer']} at {spec['scale']} x{spec['ratio']:g} seed {spec['seed']}: {r.status}"
          + (f" ({r.reason})" if r.reason else ""))
    if r.final_loss is not None:
        buckets = ", ".join(f"{k} {v:.3f}" for k, v in r.loss_by_frequency.items())
        print(f"  eval loss     {r.final_loss:.4f} nats/token ({r.bits_per_byte:.4f} bits/byte)")
        print(f"  unigram       {r.unigram_loss:.4f} nats/token (a model that ignores context)")
        print(f"  by frequency  {buckets}")
    if r.status != "error":  # a run its environment stopped has no budget or cost to speak of
        print(f"  budget        {r.tokens:,} tokens, {r.steps} steps, {r.epochs:.2f} epochs")
        print(f"  cost          {r.wall_time_s:.1f} s, {r.tokens_per_s:,.0f} tokens/s, {r.flops:.3g} FLOPs, "
              f"optimizer step {r.optimizer_step_ms:.2f} ms")
    where = "already in" if from_store else ("attempt recorded in" if r.status == "error" else "stored in")
    print(f"  run key       {r.run_key} ({where} {url})")
    print(f"  code          {_code(r)}")


def cmd_scales(args: argparse.Namespace) -> int:
    from bench.model.scales import SCALES

    if args.model or args.scale or args.arch:
        return _describe_shape(args)
    from bench.run.estimate import run_seconds

    rows, sources = [], {}
    for s in SCALES.values():
        seconds, how = run_seconds(s, 1.0)
        sources.setdefault(how.split(",")[0], how)  # one line per measurement (paper scales share cpu-l's)
        rows.append({"name": s.name, "ladder": s.ladder, "hidden": s.hidden, "intermediate": s.intermediate,
                     "layers": s.layers, "heads": s.heads, "seq_len": s.seq_len,
                     "default_batch": s.default_batch, "non_embedding_params": s.non_embedding_params,
                     "tokens": {str(r): s.tokens(r) for r in (1, 2, 4, 8)},
                     "est_seconds_1x_here": round(seconds), "estimated_from": how})
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'scale':8} {'ladder':6} {'h':>5} {'i':>5} {'L':>3} {'non-emb params':>15} "
          f"{'1x tokens':>15} {'8x tokens':>16} {'1x here':>10}")
    for r in rows:
        print(f"{r['name']:8} {r['ladder']:6} {r['hidden']:5} {r['intermediate']:5} {r['layers']:3} "
              f"{r['non_embedding_params']:15,} {r['tokens']['1']:15,} {r['tokens']['8']:16,} "
              f"{_duration(r['est_seconds_1x_here']):>10}")
    print("1x here: training time (bench.run.estimate.seconds_per_token, as a sweep's plan) from")
    for how in sources.values():
        print(f"  {how}")
    print("  (the paper scales take the largest CPU scale's rate: an order of magnitude only)")
    return 0


def _describe_shape(args: argparse.Namespace) -> int:
    """One shape (a scale, an architecture, a model file) in full: what a run of it would cost."""
    from dataclasses import asdict

    from bench.model.flops import flops_per_token
    from bench.run.estimate import run_seconds
    from bench.run.spec import resolve_shape

    name, model, tokenizer = model_choice(args.scale, args.arch, args.model, None)
    shape, canonical = resolve_shape(name, model)
    vocab = int(tokenizer[4:]) if tokenizer.startswith("bpe-") else None
    seconds, how = run_seconds(shape, 1.0)
    row = {**asdict(shape), "model": canonical, "tokenizer": tokenizer,
           "non_embedding_params": shape.non_embedding_params,
           "total_non_embedding_params": shape.total_non_embedding_params,
           "flops_per_token": flops_per_token(shape, vocab) if vocab else None,
           "tokens": {str(r): shape.tokens(r) for r in (1, 2, 4, 8)},
           "steps_1x": shape.steps(1.0, shape.default_batch),
           "est_seconds_1x_here": round(seconds), "estimated_from": how}
    if args.json:
        print(json.dumps(row))
        return 0
    print(f"{shape.name} ({shape.ladder}), {shape.arch}: hidden {shape.hidden}, intermediate "
          f"{shape.intermediate}, {shape.layers} layers, {shape.heads} heads, seq_len {shape.seq_len}, "
          f"batch {shape.default_batch}, tokenizer {tokenizer}")
    if canonical:
        print(f"  model         {', '.join(f'{k}={v}' for k, v in canonical.items())}")
    active, total = shape.non_embedding_params, shape.total_non_embedding_params
    print(f"  parameters    {active:,} non-embedding" + ("" if active == total else f" active, {total:,} in all"))
    if vocab:
        print(f"  FLOPs/token   {row['flops_per_token']:.4g} (6 x active weights with the head + attention)")
    print("  budgets       " + ", ".join(f"{r}x {t:,} tokens" for r, t in row["tokens"].items())
          + f" (1x: {row['steps_1x']} steps at batch {shape.default_batch})")
    print(f"  1x here       {_duration(seconds)}, from {how}")
    return 0


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _roles(described: dict) -> dict[str, str]:
    """Each role an optimizer takes, in words: the MoE and MLA matrix roles (bench.roles.MATRIX_ROLES)
    are treated as hidden matrices unless the optimizer describes them itself."""
    from bench.roles import MATRIX_ROLES, Role

    out = {k.value: v for k, v in described.items()}
    for role in sorted(MATRIX_ROLES - set(described), key=lambda r: r.value):
        if Role.HIDDEN in described:
            out[role.value] = f"as hidden: {described[Role.HIDDEN]}"
    return out


def cmd_optimizers(args: argparse.Namespace) -> int:
    from bench.optimizers.registry import VARIANTS, all_optimizers

    rows = []
    for o in all_optimizers():
        try:
            grid = o.space("cpu")
        except UserError:
            grid = {}
        rows.append({"name": o.name, "family": o.family, "source": o.source, "paper": o.paper,
                     "schedule": o.schedule, "defaults": dict(o.defaults), "grid": grid,
                     "roles": _roles(o.roles),
                     "variants": list(VARIANTS) if o.differences else [],
                     "differences": list(o.differences)})
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        print(f"{r['name']}  [{r['family']}]  {r['paper']}")
        print(f"    implementation: {r['source']}")
        if r["variants"]:
            print(f"    variants: {' | '.join(r['variants'])} (default {r['defaults']['variant']}); authors differs in")
            for line in r["differences"]:
                print(f"      - {line}")
        for key, value in r["defaults"].items():
            grid = r["grid"].get(key)
            print(f"    {key:28} {value!r:>10}" + (f"   grid {grid}" if grid else ""))
    return 0
