"""The committed baseline of the CI regression check: what to run, and what it gave.

A baseline file (results/baselines/regress-<scale>.json) pins, per optimizer, the tuned
hyperparameters (fully resolved, so a changed default cannot silently change the runs) and the
data ratios it runs at, plus the seeds, the scale and the torch thread count shared by all runs.
It stores every run's end-of-budget loss, not only summaries, so the check bootstraps the baseline
and the new measurement with the same code. Runs are bitwise deterministic for a fixed spec and
thread count, so an unchanged tree on the same kind of machine reproduces every loss exactly.

Anything wrong with the file (missing, not JSON, a field of the wrong shape, an unknown optimizer)
is a UserError: bad input, exit code 2, never a regression verdict.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from bench.errors import UserError
from bench.model.scales import get_scale
from bench.run.spec import RunResult, RunSpec
from bench.store.record import StoredRun, spec_context, to_frame
from bench.study import DEFAULT_EVAL_TOKENS, REFERENCE_OPTIMIZER

FORMAT = "optbench-regress-baseline/1"
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "results" / "baselines" / "regress-cpu-xs.json"
RUN_FIELDS = ("optimizer", "ratio", "seed", "status", "final_loss", "steps", "wall_time_s")


@dataclass
class Entry:
    """One optimizer of the baseline: its tuned hyperparameters and the ratios it runs at."""

    hparams: dict[str, Any]
    ratios: tuple[float, ...]


@dataclass
class Baseline:
    scale: str
    seeds: tuple[int, ...]
    threads: int
    optimizers: dict[str, Entry]  # the reference (adamw) first
    runs: list[dict[str, Any]] = field(default_factory=list)  # one record per run, RUN_FIELDS
    eval_tokens: int = DEFAULT_EVAL_TOKENS
    speedups: list[dict[str, Any]] = field(default_factory=list)  # analysis' table, for readers
    summary: list[dict[str, Any]] = field(default_factory=list)  # per optimizer, for readers
    provenance: dict[str, Any] = field(default_factory=dict)

    def specs(self, seeds: tuple[int, ...] | None = None) -> Iterator[RunSpec]:
        """Every run of the check: optimizer x its ratios x seeds (the baseline's unless given)."""
        for name, entry in self.optimizers.items():
            for ratio in entry.ratios:
                for seed in seeds if seeds is not None else self.seeds:
                    yield RunSpec(name, self.scale, ratio, entry.hparams, seed,
                                  eval_tokens=self.eval_tokens)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "scale": self.scale, "seeds": list(self.seeds),
            "threads": self.threads, "eval_tokens": self.eval_tokens,
            "optimizers": {n: {"hparams": dict(sorted(e.hparams.items())), "ratios": list(e.ratios)}
                           for n, e in self.optimizers.items()},
            "summary": self.summary, "speedups": self.speedups, "provenance": self.provenance,
            "runs": self.runs,
        }


def run_record(result: RunResult) -> dict[str, Any]:
    """What the baseline keeps of one run."""
    spec = result.spec
    return {"optimizer": spec["optimizer"], "ratio": float(spec["ratio"]), "seed": int(spec["seed"]),
            "status": result.status, "final_loss": result.final_loss, "steps": result.steps,
            "wall_time_s": round(result.wall_time_s, 1)}


def runs_frame(runs: list[dict[str, Any]], baseline: Baseline) -> pd.DataFrame:
    """Run records as a runs frame (bench.store.record), for analysis.cells.summarize_cells."""
    return to_frame(_stored(r, baseline) for r in runs)


def _stored(record: dict[str, Any], baseline: Baseline) -> StoredRun:
    """A run record with what the baseline knows of its run: its spec's key, hyperparameters and
    context (the record keeps no token count)."""
    hparams = baseline.optimizers[record["optimizer"]].hparams
    spec = RunSpec(record["optimizer"], baseline.scale, record["ratio"], hparams, record["seed"],
                   eval_tokens=baseline.eval_tokens)
    loss = record.get("final_loss")
    return StoredRun(spec.key, spec.optimizer, spec.scale, spec.ratio, spec.seed, record["status"],
                     math.nan if loss is None else loss, record.get("steps", math.nan), math.nan,
                     get_scale(spec.scale).non_embedding_params, record.get("wall_time_s", math.nan),
                     hparams, **spec_context(spec.to_dict()))


def save(baseline: Baseline, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(baseline.to_json(), indent=1, allow_nan=False) + "\n")


def load(path: Path) -> Baseline:
    """Read and validate a baseline file; UserError (exit code 2) if it is missing or malformed."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"no regression baseline at {path}; create one with `optbench regress "
                        f"--update-baseline --tuned-from STORE`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"regression baseline {path} is not readable JSON: {e}") from None
    try:
        return _parse(data)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"regression baseline {path} is malformed: {type(e).__name__}: {e}") from None


def _parse(data: dict[str, Any]) -> Baseline:
    if data.get("format") != FORMAT:
        raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
    optimizers = {str(n): Entry(dict(e["hparams"]), tuple(float(r) for r in e["ratios"]))
                  for n, e in data["optimizers"].items()}
    baseline = Baseline(
        scale=get_scale(str(data["scale"])).name, seeds=tuple(int(s) for s in data["seeds"]),
        threads=int(data["threads"]), optimizers=optimizers,
        runs=[_run(r, optimizers) for r in data["runs"]],
        eval_tokens=int(data.get("eval_tokens", DEFAULT_EVAL_TOKENS)), speedups=list(data.get("speedups", [])),
        summary=list(data.get("summary", [])), provenance=dict(data.get("provenance", {})))
    check(baseline)
    return baseline


def _run(record: dict[str, Any], optimizers: dict[str, Entry]) -> dict[str, Any]:
    out = {k: record[k] for k in RUN_FIELDS if k in record}
    if out["optimizer"] not in optimizers:
        raise ValueError(f"a run of {out['optimizer']!r}, which the baseline does not list")
    loss = out.get("final_loss")
    if out["status"] == "ok" and not (isinstance(loss, (int, float)) and math.isfinite(loss)):
        raise ValueError(f"an ok run of {out['optimizer']} without a finite final_loss")
    return out


def check(baseline: Baseline) -> None:
    """Raise ValueError unless the layout supports the test: AdamW first at 3+ ratios (its law
    has 3 parameters), every other optimizer at 1+ ratio, 2+ seeds (to bootstrap), threads >= 1,
    and every spec valid (a UserError from RunSpec names the bad hyperparameter)."""
    names = list(baseline.optimizers)
    if not names or names[0] != REFERENCE_OPTIMIZER:
        raise ValueError(f"the first optimizer must be {REFERENCE_OPTIMIZER!r} (speedups are over it)")
    if len(set(baseline.optimizers[REFERENCE_OPTIMIZER].ratios)) < 3:
        raise ValueError(f"{REFERENCE_OPTIMIZER} needs 3 or more ratios for its 3-parameter law")
    if any(not e.ratios for e in baseline.optimizers.values()):
        raise ValueError("every optimizer needs at least one ratio")
    if len(set(baseline.seeds)) < 2:
        raise ValueError("the check needs 2 or more seeds to bootstrap")
    if baseline.threads < 1:
        raise ValueError(f"threads must be at least 1, got {baseline.threads}")
    list(baseline.specs(baseline.seeds[:1]))  # building each RunSpec validates its names and values
