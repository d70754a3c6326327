"""StoredRun, one run as analysis sees it, and the runs frame: one row per run, built only here.

The results store, the study's published files (analysis.paper.ingest) and the regression
baseline all give StoredRun records; `to_frame` turns any of them into the frame that
analysis.cells.summarize_cells, analysis.speedups, sweeps.report and the regression check read.

A run's **context** is what its spec fixes besides the optimizer, its hyperparameters, the seed,
the scale and the ratio: the training data, the evaluation data, the tokenizer, the precision, the
device, the evaluation tokens and the model's architecture and shape beside the scale's Llama
(CONTEXT_COLUMNS). Losses of different contexts are different
measurements, so analysis never pools them into one cell; `context_label` names a context in one
line, the same way everywhere (tables, the terminal, the filters of `optbench analyze`).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from bench.errors import UserError
from bench.model import scales
from bench.model.scales import get_scale
from bench.run.spec import RunResult, RunSpec

if TYPE_CHECKING:  # imported where a frame is built: the store's writers never need pandas
    import pandas as pd

CONTEXT_COLUMNS = ("data", "eval_data", "tokenizer", "precision", "device", "eval_tokens", "arch")
# A run's context fields default to RunSpec's, so a record built without them is a default-spec run.
_SPEC_DEFAULTS = {f.name: f.default for f in fields(RunSpec) if f.name in CONTEXT_COLUMNS} | {"arch": "llama"}


@dataclass(frozen=True)
class StoredRun:
    """One run, whatever its source: its fields are the runs frame's columns, in order."""

    run_key: str
    optimizer: str
    scale: str
    ladder: str = field(init=False)  # the scale's ladder ("cpu" or "paper")
    ratio: float
    seed: int
    status: str  # ok | diverged | failed
    final_loss: float  # end-of-budget held-out loss; NaN when the run reported none
    steps: int | float  # NaN where the source does not say
    tokens: int | float  # NaN where the source does not say
    non_embedding_params: int
    wall_time_s: float
    hparams: Mapping[str, Any]
    created_at: str | None = None  # when the store took the run; None for runs from elsewhere
    reason: str = ""  # why a run failed or diverged; empty for a finished one
    # the context (CONTEXT_COLUMNS), as in RunSpec
    data: str = _SPEC_DEFAULTS["data"]
    eval_data: str = _SPEC_DEFAULTS["eval_data"]  # empty: the held-out split of the training data
    tokenizer: str = _SPEC_DEFAULTS["tokenizer"]
    precision: str = _SPEC_DEFAULTS["precision"]
    device: str = _SPEC_DEFAULTS["device"]
    eval_tokens: int | None = _SPEC_DEFAULTS["eval_tokens"]  # None: the source does not say
    arch: str = _SPEC_DEFAULTS["arch"]  # arch_label of the spec's model
    hardware: str = ""  # the CPU's or GPU's model; empty where the source does not say

    def __post_init__(self) -> None:
        try:
            ladder = get_scale(self.scale).ladder
        except UserError:  # a shape of the user's own (--model FILE)
            ladder = "custom"
        object.__setattr__(self, "ladder", ladder)

    @classmethod
    def from_result(cls, result: RunResult, created_at: str | None = None) -> StoredRun:
        """What analysis reads of a finished run (`created_at`: when the store took it)."""
        spec = result.spec
        return cls(result.run_key, spec["optimizer"], spec["scale"], spec["ratio"], spec["seed"],
                   result.status, math.nan if result.final_loss is None else result.final_loss,
                   result.steps, result.tokens, result.non_embedding_params, result.wall_time_s,
                   spec["hparams"], created_at, result.reason or "", **spec_context(spec),
                   hardware=result.hardware)


def spec_context(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The context (CONTEXT_COLUMNS) of a spec dict (RunSpec.to_dict()); fields it lacks take
    RunSpec's defaults."""
    context = {name: spec.get(name, default) for name, default in _SPEC_DEFAULTS.items()}
    context["arch"] = arch_label(spec["scale"], spec.get("model") or {})
    return context


def arch_label(scale: str, model: Mapping[str, Any]) -> str:
    """The model beside the scale's Llama in one word: "llama" for none, the architecture's name
    at its default options ("moe"), else the name and a digest of the whole `model` ("moe+1f0c9a2e"),
    so two different models never share a label."""
    if not model:
        return "llama"
    arch = model.get("arch", "llama")
    try:
        base = get_scale(scale)
        if scales.resolve_model(base, {"arch": arch})[1] == scales.resolve_model(base, model)[1]:
            return arch
    except UserError:  # a scale of the user's own: its shape is in `model`
        pass
    digest = hashlib.sha256(json.dumps(dict(model), sort_keys=True).encode()).hexdigest()[:8]
    return f"{arch}+{digest}"


RUN_COLUMNS = tuple(f.name for f in fields(StoredRun))
# What a runs frame must have: every column but the store's own notes (created_at, reason); the
# context columns too, since without them runs of different contexts could not be kept apart.
REQUIRED_COLUMNS = tuple(name for name in RUN_COLUMNS if name not in ("created_at", "reason"))


def context_text(name: str, value: Any) -> str:
    """How one context field reads in a label and in the filters of `optbench analyze`."""
    if name == "eval_data" and value == "":
        return "held-out"
    if name == "eval_tokens":
        # a frame column with a missing count turns the others into floats: 131072.0 reads 131072
        unknown = value is None or (isinstance(value, float) and math.isnan(value))
        return "unknown" if unknown else str(int(value))
    return str(value)


def context_label(context: Mapping[str, Any]) -> str:
    """A context in one line, e.g. "data=default eval=held-out tok=bpe-512 fp32 cpu
    eval_tokens=131072 arch=moe" (the scale's Llama is not named); `context` maps every name of CONTEXT_COLUMNS to its value."""
    text = {name: context_text(name, context[name]) for name in CONTEXT_COLUMNS}
    return (f"data={text['data']} eval={text['eval_data']} tok={text['tokenizer']} "
            f"{text['precision']} {text['device']} eval_tokens={text['eval_tokens']}"
            + ("" if text["arch"] == "llama" else f" arch={text['arch']}"))


def context_labels(runs: pd.DataFrame) -> list[str]:
    """The context label of every row of a runs frame, in row order."""
    columns = [runs[name] for name in CONTEXT_COLUMNS]
    return [context_label(dict(zip(CONTEXT_COLUMNS, values))) for values in zip(*columns)]


def to_frame(runs: Iterable[StoredRun]) -> pd.DataFrame:
    """The runs frame: one row per run, the columns RUN_COLUMNS in that order."""
    import pandas as pd

    rows = [tuple(getattr(run, name) for name in RUN_COLUMNS) for run in runs]
    return pd.DataFrame.from_records(rows, columns=list(RUN_COLUMNS))
