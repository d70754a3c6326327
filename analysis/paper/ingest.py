"""Read the study's published result files into the runs frame the rest of analysis/ uses.

The files are `Analysis/Results/{optimizer}/{size}/{ratio}/result.json` from marin-community/marin
(copied, with provenance, to analysis/paper/data/; its README describes them). Each file holds one
regime: the centre config (`best_config`), the loss of the centre run ("Baseline") and of each
one-parameter ablation ("param=value"), and `min_loss`, the number the study's speedups use.

Every listed run becomes a StoredRun (bench.store.record; seed 0, a paper-ladder scale, the
study's context STUDY_CONTEXT).
Missing runs (null) give no row. A loss that is "NaN", not finite, not positive or >= 6 is a
diverged run (divergent runs sit at 6-8 or 11.76; a few are absurd, like 1.38e14). Where
`min_loss` is lower than every listed run (a near-best run the file does not list), the centre row
carries it, so the cell's best loss is the study's.

A malformed or partial file never stops the rest: its problem is recorded as an Issue naming the
file, and whatever it holds that can be read is kept.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import UserError
from bench.model.scales import SCALES
from bench.store.record import StoredRun, to_frame
from bench.study import PAPER_SEQ_LEN, TOKENS_PER_PARAM

DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data"
RESULTS_SUBDIR = Path("Analysis") / "Results"

# the study's size folders -> optbench's paper-ladder scale and its non-embedding parameters
PAPER_SCALES = {s.paper_name: (s.name, s.non_embedding_params) for s in SCALES.values() if s.ladder == "paper"}
OPTIMIZER_NAMES = {"mini": "adam_mini", "soape": "soap"}  # the rest keep the study's name
DIVERGED_AT = 6.0  # every loss of a run that trained is below 4; divergent ones sit at 6-8+
# The context every run of the study shares (bench.store.record.CONTEXT_COLUMNS). data, eval_data
# and tokenizer: docs/PROTOCOL.md, "Data, tokenizer, metric". precision and device are not in
# PROTOCOL.md: the authors' code (marin's experiments/optimizer_sweep) trains with Levanter, in
# bf16 compute (its default mixed precision), on TPU pods (its tpu_type settings). eval_tokens:
# the result files give no count, so None (unknown). arch: Llama 2 shapes (docs/PROTOCOL.md).
STUDY_CONTEXT = {"data": "DCLM-baseline mix", "eval_data": "Paloma c4-en", "tokenizer": "llama3",
                 "precision": "bf16", "device": "tpu", "eval_tokens": None, "arch": "llama"}

@dataclass(frozen=True)
class Issue:
    """A problem with one input file; the rest of the data is still analysed."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class PaperRuns:
    """The runs read from the study's files, the problems met, and how many files were read."""

    runs: pd.DataFrame
    issues: list[Issue] = field(default_factory=list)
    files_read: int = 0


def load_paper_runs(data_dir: str | Path = DEFAULT_DATA_DIR) -> PaperRuns:
    """Read every `{opt}/{size}/{ratio}/result.json` under `data_dir` into a runs frame.

    `data_dir` is the paper-data folder (holding Analysis/Results/) or the Results folder itself.
    Raises UserError if the folder is missing or yields no run at all.
    """
    root = _results_root(Path(data_dir))
    files = sorted(root.glob("*/*/*/result.json"))
    if not files:
        raise UserError(f"no result files ({{optimizer}}/{{size}}/{{ratio}}/result.json) "
                        f"under {root}")
    runs: list[StoredRun] = []
    issues: list[Issue] = []
    for path in files:
        file_runs, file_issues = read_result_file(path, root)
        runs += file_runs
        issues += file_issues
    if not runs:
        raise UserError(f"none of the {len(files)} result files under {root} held a usable "
                        f"run; first problem: {issues[0] if issues else 'none recorded'}")
    read = len({r.run_key.rsplit("/", 1)[0] for r in runs})
    return PaperRuns(to_frame(runs), issues, read)


def read_result_file(path: Path, root: Path) -> tuple[list[StoredRun], list[Issue]]:
    """The runs of one result.json, and the problems found in it (each naming the file)."""
    name = str(path.relative_to(root))
    where = _Where(name)
    cell = _parse_location(path.relative_to(root), where)
    if cell is None:
        return [], where.issues
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        where.add(f"not readable as JSON ({e})")
        return [], where.issues
    if not isinstance(payload, dict):
        where.add(f"the top level is a JSON {type(payload).__name__}, not an object")
        return [], where.issues
    return _runs_of(payload, cell, where), where.issues


@dataclass
class _Where:
    """Collects the issues of one file."""

    path: str
    issues: list[Issue] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.issues.append(Issue(self.path, message))


@dataclass(frozen=True)
class _Cell:
    optimizer: str  # the study's folder name
    size: str
    ratio: float

    @property
    def prefix(self) -> str:
        return f"paper/{self.optimizer}/{self.size}/{self.ratio:g}"


def _results_root(data_dir: Path) -> Path:
    if not data_dir.is_dir():
        raise UserError(f"paper data folder not found: {data_dir}")
    nested = data_dir / RESULTS_SUBDIR
    return nested if nested.is_dir() else data_dir


def _parse_location(rel: Path, where: _Where) -> _Cell | None:
    optimizer, size, ratio_text = rel.parts[:3]
    if size not in PAPER_SCALES:
        where.add(f"unknown model size folder {size!r} (known: {', '.join(PAPER_SCALES)})")
        return None
    try:
        ratio = float(ratio_text)
    except ValueError:
        ratio = math.nan
    if not (math.isfinite(ratio) and ratio > 0):
        where.add(f"the data-ratio folder {ratio_text!r} is not a positive number")
        return None
    return _Cell(optimizer, size, ratio)


def _runs_of(payload: dict, cell: _Cell, where: _Where) -> list[StoredRun]:
    centre = payload.get("best_config")
    if not isinstance(centre, dict):
        where.add("no 'best_config' object: the runs' hyperparameters are unknown")
        centre = {}
    listed = _listed_losses(payload, where)
    runs = []
    for key, loss in listed.items():
        hparams = dict(centre) if key == "Baseline" else _ablation(centre, key, where)
        if hparams is not None:
            runs.append(_run(cell, key, loss, hparams))
    min_loss = _loss(payload.get("min_loss"), "min_loss", where)
    if min_loss is not None and _is_ok(min_loss):
        runs = _carry_min_loss(runs, cell, min_loss, centre)
    if not runs:
        where.add("no run with a loss in it (all null)")
    return runs


def _listed_losses(payload: dict, where: _Where) -> dict[str, float]:
    """The file's runs as {key: loss}; null (missing) runs and unreadable values left out."""
    result = payload.get("result", {})
    if not isinstance(result, dict):
        where.add(f"'result' is a JSON {type(result).__name__}, not an object; ignored")
        result = {}
    if "Baseline" not in result and isinstance(payload.get("baseline"), dict):
        result = {"Baseline": payload["baseline"].get("loss"), **result}
    losses = {}
    for key, value in result.items():
        loss = _loss(value, f"result[{key!r}]", where)
        if loss is not None:
            losses[key] = loss
    # the centre first: a tie between the centre and an ablation then goes to the centre
    return dict(sorted(losses.items(), key=lambda kv: kv[0] != "Baseline"))


def _loss(value: Any, what: str, where: _Where) -> float | None:
    """A loss value as a float (NaN for "NaN"); None for null or an unreadable value."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        where.add(f"{what} is {value!r}, not a number; left out")
        return None
    try:
        return float(value)
    except ValueError:
        where.add(f"{what} is the text {value!r}, not a number; left out")
        return None


def _ablation(centre: dict, key: str, where: _Where) -> dict | None:
    param, sep, text = key.partition("=")
    if not sep or not param:
        where.add(f"result key {key!r} is neither 'Baseline' nor 'param=value'; left out")
        return None
    return {**centre, param: parse_value(text)}


def parse_value(text: str) -> Any:
    """A hyperparameter value from the study's "param=value" keys: int, float, bool or text."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(text, text)


def _carry_min_loss(runs: list[StoredRun], cell: _Cell, min_loss: float,
                    centre: dict) -> list[StoredRun]:
    """Make the cell's best loss the study's min_loss when no listed run reached it."""
    listed = [r.final_loss for r in runs if r.status == "ok"]
    if listed and min(listed) <= min_loss + 1e-9:
        return runs
    best = replace(_run(cell, "Baseline", min_loss, dict(centre)), run_key=f"{cell.prefix}/min_loss")
    return [best] + [r for r in runs if not r.run_key.endswith("/Baseline")]


def _is_ok(loss: float) -> bool:
    return math.isfinite(loss) and 0.0 < loss < DIVERGED_AT


def _run(cell: _Cell, key: str, loss: float, hparams: dict) -> StoredRun:
    scale, params = PAPER_SCALES[cell.size]
    tokens = int(round(cell.ratio * TOKENS_PER_PARAM * params))
    batch = hparams.get("train_batch_size")
    steps = tokens // (PAPER_SEQ_LEN * int(batch)) if isinstance(batch, (int, float)) and batch > 0 \
        else math.nan
    return StoredRun(f"{cell.prefix}/{key}", OPTIMIZER_NAMES.get(cell.optimizer, cell.optimizer),
                     scale, cell.ratio, 0, "ok" if _is_ok(loss) else "diverged", loss, steps,
                     tokens, params, math.nan, hparams, **STUDY_CONTEXT)
