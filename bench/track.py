"""Send finished runs to an experiment tracker: TensorBoard, MLflow or Weights & Biases.

The results store stays the source of truth; a tracker gets a copy of each result so researchers can
browse runs where they browse everything else. `optbench run --track NAME` and `optbench sweep
--track NAME` call send() in their own process once the result is stored (Ray workers never import a
tracker). Each tracker gets:
- the config: the run spec flattened (`hparams.<name>` for each hyperparameter), run key, code versions;
- the curves by step: train_loss, eval_loss (held-out, nats/token), lr (fraction of the peak), and
  tokens (seen by that step), the x-axis a tracker can plot them against;
- the final metrics: held-out loss (nats/token), bits/byte, wall time, tokens/s, and the status.
Diverged and failed runs are results and are sent with their status; a run its environment stopped
(status "error") is only an attempt (bench/run/failures.py) and is not sent.

Sending is idempotent: a result the tracker already holds (same run key, code, status and loss) is
skipped, so a sweep rerun with --track adds what is missing and duplicates nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.paths import results_dir
from bench.urls import shown_url

TRACKERS = ("tensorboard", "mlflow", "wandb")
# tracker -> (module imported, package pinned in pyproject's `track` extra)
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard==2.21.0"),
             "mlflow": ("mlflow", "mlflow-skinny==3.18.0"),
             "wandb": ("wandb", "wandb==0.31.0")}


def parse_trackers(text: str) -> list[str]:
    """argparse type of --track: 'tensorboard,mlflow' -> ['tensorboard', 'mlflow']."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in TRACKERS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown tracker {(bad or [text])[0]!r}: "
                                         f"choose from {', '.join(TRACKERS)}")
    return names


def require(names: list[str]) -> None:
    """Fail before any training when a chosen tracker's package is missing (one line, exit 2)."""
    for name in dict.fromkeys(names):
        module, pin = _PACKAGES[name]
        try:
            importlib.import_module(module)
        except ImportError:
            raise UserError(f"--track {name} needs the {pin.split('==')[0]} package: "
                            f"pip install '{pin}' (or pip install -e '.[track]')") from None


def send(result, names: list[str]) -> list[str]:
    """Send `result` to each tracker in `names`; one line per tracker saying where it went.

    The result is stored before this is called, so a tracker that fails costs only its copy: the
    failure is one warning line on stderr, never an exception."""
    from bench.run.failures import ENVIRONMENT_FAILURE  # here: every optbench command imports this module

    if result.status == ENVIRONMENT_FAILURE:
        return []
    lines = []
    for name in dict.fromkeys(names):
        try:
            lines.append(f"{name}: {_SENDERS[name](result)}")
        except Exception as e:  # any failure of a third-party tracker: the run itself is safe
            text = str(e).strip().splitlines()[0] if str(e).strip() else ""
            print(f"optbench: warning: --track {name} did not take run {result.run_key} (the stored result "
                  f"is unaffected): {type(e).__name__}: {text}", file=sys.stderr)
    return lines


def where(name: str) -> str:
    """Where a tracker's runs go, for the user to open it."""
    if name == "tensorboard":
        return f"tensorboard --logdir {_tensorboard_root()}"
    if name == "mlflow":
        return f"experiment {_mlflow_experiment()!r} in {shown_url(_mlflow_uri())}"
    return f"project {_wandb_project()!r} (WANDB_MODE {os.environ.get('WANDB_MODE', 'online')}; " \
           f"local files under {_wandb_root() / 'wandb'})"


def run_name(result) -> str:
    """A readable name, unique per run key: adamw-cpu-xs-x1-s0-1a2b3c4d."""
    s = result.spec
    return f"{s['optimizer']}-{s['scale']}-x{s['ratio']:g}-s{s['seed']}-{result.run_key[:8]}"


def fingerprint(result) -> str:
    """What makes a sent result the same one: the run, the code that made it, and its outcome
    (a stale result re-trained, or a failed one retried, is sent again)."""
    loss = result.final_loss if result.final_loss is not None and math.isfinite(result.final_loss) else None
    what = [result.run_key, result.code, result.status, loss]
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def config(result) -> dict[str, Any]:
    """The spec flattened, plus the run key and the code versions: one level, as trackers want."""
    flat = {k: v for k, v in result.spec.items() if k != "hparams"}
    flat.update({f"hparams.{k}": v for k, v in sorted(result.spec["hparams"].items())})
    flat.update({f"code.{k}": v for k, v in sorted(result.code.items())})
    flat["run_key"] = result.run_key
    return flat


def curves(result) -> dict[str, list[tuple[int, float]]]:
    """The step-indexed series every tracker gets, tokens included."""
    series = {"train_loss": result.curve, "eval_loss": result.eval_curve, "lr": result.lr_curve}
    steps = sorted({step for points in series.values() for step, _ in points})
    series["tokens"] = [(step, tokens_at(result, step)) for step in steps]
    return series


def tokens_at(result, step: int) -> int:
    return step * result.tokens // result.steps if result.steps else 0  # tokens per step is fixed


def finals(result) -> dict[str, float]:
    """The end-of-run numbers; a number a failed run does not have is left out."""
    values = {"final/eval_loss": result.final_loss, "final/bits_per_byte": result.bits_per_byte,
              "final/wall_time_s": result.wall_time_s, "final/tokens_per_s": result.tokens_per_s,
              "final/tokens": result.tokens, "final/steps": result.steps}
    return {k: float(v) for k, v in values.items() if v is not None}


def _tensorboard(result) -> str:
    from torch.utils.tensorboard import SummaryWriter

    logdir = _tensorboard_root() / run_name(result)
    mark = logdir / "optbench-result.txt"  # which result the event files hold
    if mark.exists() and mark.read_text() == fingerprint(result):
        return f"already in {logdir}"
    # One directory per run key: a result that supersedes an earlier one replaces its event files
    # (two sets in one directory would draw as one tangled curve).
    shutil.rmtree(logdir, ignore_errors=True)
    with SummaryWriter(str(logdir)) as writer:
        series = curves(result)
        for tag in ("train_loss", "eval_loss", "lr"):
            for step, value in series[tag]:
                writer.add_scalar(f"by_step/{tag}", value, step)
                # TensorBoard's x-axis is the step, so the same points again with tokens as the step
                writer.add_scalar(f"by_tokens/{tag}", value, tokens_at(result, step))
        writer.add_text("status", f"{result.status} {result.reason}".strip())
        # the hparams plugin takes numbers, strings and booleans only (a None decay becomes "None")
        hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config(result).items()}
        writer.add_hparams({**hparams, "status": result.status}, finals(result), run_name=".")
    mark.write_text(fingerprint(result))
    return f"sent to {logdir}"


def _mlflow(result) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines (creating tables) are noise here
    client = MlflowClient(tracking_uri=_mlflow_uri())
    experiment = client.get_experiment_by_name(_mlflow_experiment())
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(_mlflow_experiment())
    sent = f"tags.`optbench.result` = '{fingerprint(result)}'"
    if client.search_runs([experiment_id], sent, max_results=1):
        return f"already in {where('mlflow')}"
    tags = {"optbench.run_key": result.run_key, "optbench.status": result.status,
            "optbench.code": json.dumps(result.code, sort_keys=True)}
    run_id = client.create_run(experiment_id, run_name=run_name(result), tags=tags).info.run_id
    now = int(time.time() * 1000)
    params = [Param(k, str(v)) for k, v in config(result).items()]
    metrics = [Metric(name, float(value), now, step) for name, points in curves(result).items()
               for step, value in points]
    metrics += [Metric(name, value, now, result.steps) for name, value in finals(result).items()]
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params, 1000 metrics a batch
        client.log_batch(run_id, params=params[i:i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    client.set_tag(run_id, "optbench.result", fingerprint(result))  # last: a half-sent run is sent again
    client.set_terminated(run_id, "FINISHED" if result.status == "ok" else "FAILED")
    return f"sent to {where('mlflow')}"


def _wandb(result) -> str:
    import wandb

    root = _wandb_root()
    # The run id is the result's fingerprint: wandb names each local run directory after it, so a
    # result already logged from this machine (online or offline) is found there and not sent again.
    logged = sorted((root / "wandb").glob(f"*run-*-{fingerprint(result)}"))
    if logged:
        return f"already in {logged[0]}"
    root.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=_wandb_project(), name=run_name(result),
                     id=fingerprint(result), dir=str(root), config=config(result), tags=[result.status],
                     settings=wandb.Settings(silent=True, console="off"))
    by_step: dict[int, dict[str, float]] = {}
    for name, points in curves(result).items():
        for step, value in points:
            by_step.setdefault(step, {})[name] = value
    for step in sorted(by_step):
        run.log(by_step[step], step=step)
    run.summary.update({**finals(result), "status": result.status})
    run.finish(exit_code=0 if result.status == "ok" else 1)
    return f"sent to {where('wandb')}"


def _tensorboard_root() -> Path:
    return results_dir() / "tensorboard"


def _mlflow_uri() -> str:
    """MLflow's own setting, else a SQLite store under results/ (MLflow 3's local default kind)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(results_dir() / 'mlflow.db').resolve()}"


def _mlflow_experiment() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME", "optbench")


def _wandb_root() -> Path:
    return Path(os.environ.get("WANDB_DIR") or results_dir())


def _wandb_project() -> str:
    return os.environ.get("WANDB_PROJECT", "optbench")


_SENDERS = {"tensorboard": _tensorboard, "mlflow": _mlflow, "wandb": _wandb}
