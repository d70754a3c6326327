"""Arguments shared by the subcommands: one error message per kind of bad number, and the model
and data flags of the commands that train (run, sweep)."""
from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path
from typing import Any

from bench.errors import UserError

DEFAULT_TOKENIZER = "bpe-512"  # RunSpec's
ARCHES = ("llama", "mla", "moe")  # bench.model.scales.ARCHES, without importing the model here


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


# A model file's keys besides the shape and architecture fields of bench.model.scales.Scale.
_FILE_ONLY = {"name", "vocab", "batch"}


def read_model_file(path: str) -> dict[str, Any]:
    """A --model file (TOML or JSON): shape fields (hidden, intermediate, layers, heads, seq_len,
    batch), vocab, arch and its options, and an optional name (default: the file's stem)."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as e:
        raise UserError(f"cannot read model file {path}: {e.strerror}") from None
    try:
        data = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"model file {path} is not valid {'JSON' if file.suffix == '.json' else 'TOML'}: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"model file {path} must hold a table of fields")
    return {"name": file.stem, **data}


def model_choice(scale: str | None, arch: str | None, model_file: str | None,
                 tokenizer: str | None) -> tuple[str, dict[str, Any], str]:
    """(scale name, RunSpec.model, tokenizer) from --scale, --arch, --model FILE and --tokenizer.
    With --scale, a model file's fields change that scale's shape; without, the file is a whole
    shape of its own, named by its `name`. The file's vocab picks the bpe-<vocab> tokenizer."""
    if scale is None and model_file is None:
        raise UserError("--scale or --model FILE is required")
    model = read_model_file(model_file) if model_file else {}
    name, vocab = model.pop("name", None), model.pop("vocab", None)
    if "batch" in model:
        model["default_batch"] = model.pop("batch")
    if arch is not None:
        if model.get("arch", arch) != arch:
            raise UserError(f"--arch {arch} but the model file says arch = {model['arch']!r}")
        model["arch"] = arch
    return scale or str(name), model, _tokenizer(tokenizer, vocab, model_file)


def _tokenizer(tokenizer: str | None, vocab: Any, model_file: str | None) -> str:
    if vocab is None:
        return tokenizer or DEFAULT_TOKENIZER
    if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab < 2:
        raise UserError(f"model file {model_file}: vocab must be an integer >= 2, got {vocab!r}")
    if tokenizer is not None and tokenizer != f"bpe-{vocab}":
        raise UserError(f"model file {model_file} has vocab {vocab}, --tokenizer {tokenizer} another; "
                        f"drop one (a vocab picks the bpe-{vocab} tokenizer)")
    return f"bpe-{vocab}"


def add_model_and_data_flags(p: argparse.ArgumentParser) -> None:
    """--scale, --arch, --model FILE, --data, --eval-data, --tokenizer: what a run trains and on what."""
    p.add_argument("--scale", default=None, help="e.g. cpu-xs, 0.1B (see `optbench scales`)")
    p.add_argument("--arch", default=None, choices=ARCHES,
                   help="the architecture: llama (default), mla (latent attention) or moe (experts)")
    p.add_argument("--model", default=None, metavar="FILE",
                   help="a TOML or JSON model file: a shape of your own (hidden, intermediate, layers, "
                        "heads, seq_len, batch, vocab, arch and its options), or with --scale changes "
                        "to that scale (see `optbench scales --model FILE`)")
    p.add_argument("--data", default="default", help="data spec (see bench/data/corpus.py)")
    p.add_argument("--eval-data", default="", help="evaluation data spec; default: held-out split")
    p.add_argument("--tokenizer", default=None, help=f"default: {DEFAULT_TOKENIZER}, or a model file's bpe-<vocab>")


PARALLEL = ("ddp", "fsdp")


def add_execution_flags(p: argparse.ArgumentParser, checkpoint_default: str) -> None:
    """How a trial runs, never what it computes (so none of it is in the run key): processes per
    trial and how they split the model, and where mid-run checkpoints go."""
    p.add_argument("--procs-per-trial", type=positive_int, default=1, metavar="N",
                   help="spread each trial over N processes with torch.distributed (gloo on CPU, NCCL "
                        "with one GPU each on CUDA; default: 1)")
    p.add_argument("--parallel", default="ddp", choices=PARALLEL,
                   help="with --procs-per-trial > 1: ddp (replicated model, all-reduced gradients) or "
                        "fsdp (parameters and optimizer state sharded, FSDP2)")
    p.add_argument("--checkpoint-every", type=non_negative_int, default=0, metavar="STEPS",
                   help="checkpoint every STEPS steps; a rerun (or a retried trial) resumes (default: 0, none)")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help=f"where checkpoints go; a path every node reaches, for trials retried on another "
                        f"node (default: {checkpoint_default})")


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def scale_filter(text: str | None) -> str | None:
    """A --scale filter of the commands that read the store: a ladder scale by any of its names,
    else the name of a shape of the user's own as written."""
    from bench.model.scales import get_scale

    if text is None:
        return None
    try:
        return get_scale(text).name
    except UserError:
        return text
