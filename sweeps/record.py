"""Every trial of a sweep recorded in Optuna storage, one study per cell, for optuna-dashboard.

Storage: a Journal file under results/ by default (fast and lock-free under many workers, see
docs/MEASUREMENTS.md), or any RDB URL Optuna accepts. The record follows the results store, which is
the source of truth: each run is added once (by run key and code version) when its result is known,
fresh or read back from the store, so after an interruption a rerun fills in whatever the record
missed; a run re-trained by changed code is a new trial. Diverged and failed runs are recorded as
failed trials with their status and reason. A trial's intermediate values are its run's held-out
curve (loss by step). Each hyperparameter is recorded with its real range (float or int, log where
the grid is geometric), so Optuna's plots and importances, and optuna-dashboard (`make dashboard`),
read it as a number.
"""
from __future__ import annotations

import math
from pathlib import Path

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState, create_trial
from sqlalchemy.exc import SQLAlchemyError

from bench.errors import UserError
from bench.paths import results_dir
from bench.run.spec import RunResult
from bench.study import geometric
from bench.urls import error_line, shown_url
from sweeps.cell import CellTuning, Request, loss_of


def default_target() -> str:
    return str(results_dir() / "optuna.journal")


def open_storage(target: str | None) -> optuna.storages.BaseStorage:
    """A URL with '://' is an RDB storage; anything else is a Journal file path."""
    target = target or default_target()
    if "://" in target:
        try:
            return optuna.storages.RDBStorage(target)
        except (SQLAlchemyError, ImportError, ValueError) as e:  # a bad URL, no driver, no server
            raise UserError(f"cannot open Optuna storage {shown_url(target)}: "
                            f"{error_line(e, target)}") from None
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(target))


class StudyRecorder:
    def __init__(self, storage: optuna.storages.BaseStorage):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.storage = storage
        self._studies: dict[str, optuna.Study] = {}
        self._keys: dict[str, set[str]] = {}

    def record(self, tuning: CellTuning, request: Request, result: RunResult) -> None:
        """Add the run as a trial of the cell's study unless it is there already."""
        study = self.study(tuning)
        if _trial_id(result.run_key, _code(result)) in self._keys[study.study_name]:
            return
        params = {k: v for k, v in request.config.items() if k in tuning.grid and v in tuning.grid[k]}
        loss = loss_of(result)

        def trial(distributions: dict[str, BaseDistribution]) -> FrozenTrial:
            return create_trial(
                params=params, distributions=distributions, value=loss if math.isfinite(loss) else None,
                intermediate_values={step: v for step, v in result.eval_curve if math.isfinite(v)},
                state=TrialState.COMPLETE if math.isfinite(loss) else TrialState.FAIL,
                user_attrs={"run_key": result.run_key, "code": _code(result), "seed": request.seed,
                            "status": result.status, "reason": result.reason,
                            "hparams": dict(result.spec["hparams"]), "steps": result.steps,
                            "tokens": result.tokens, "wall_time_s": round(result.wall_time_s, 2)})

        try:
            study.add_trial(trial({k: distribution(tuning.grid[k]) for k in params}))
        except ValueError:  # a study recorded before trials had real ranges keeps its categories
            study.add_trial(trial({k: CategoricalDistribution(tuning.grid[k]) for k in params}))
        self._keys[study.study_name].add(_trial_id(result.run_key, _code(result)))

    def finish(self, tuning: CellTuning) -> None:
        """Store the cell's outcome on its study: best config and loss, approximately-best set."""
        study = self.study(tuning)
        best = tuning.best_config()
        study.set_user_attr("best_config", best)
        study.set_user_attr("best_loss", tuning.best_loss() if best is not None else None)
        study.set_user_attr("approx_best", tuning.approx_best())
        study.set_user_attr("runs", len(tuning.losses))

    def study(self, tuning: CellTuning) -> optuna.Study:
        name = tuning.cell.study_name
        if name not in self._studies:
            study = optuna.create_study(study_name=name, storage=self.storage, direction="minimize",
                                        load_if_exists=True)
            cell = tuning.cell
            for key, value in (("optimizer", cell.optimizer), ("scale", cell.scale),
                               ("ratio", cell.ratio), ("protocol", cell.protocol),
                               ("search_seed", cell.search_seed),
                               ("description", tuning.protocol.label)):
                study.set_user_attr(key, value)
            self._studies[name] = study
            self._keys[name] = {_trial_id(t.user_attrs.get("run_key"), t.user_attrs.get("code"))
                                for t in study.get_trials(deepcopy=False)}
        return self._studies[name]


def _code(result: RunResult) -> str:
    """The code versions of a result, "optimizer/harness" (bench.run.identity)."""
    return f"{result.code.get('optimizer', 'unrecorded')}/{result.code.get('harness', 'unrecorded')}"


def _trial_id(run_key: str | None, code: str | None) -> str:
    """A trial per run and code version: a run re-trained after a code change is a new trial."""
    return f"{run_key} {code}"


def distribution(values: list) -> BaseDistribution:
    """A grid's values as Optuna should see them (plots, importances, the dashboard): an int or
    float range, on a log scale where the grid is geometric (learning rates, batch sizes), else
    categories (booleans, names, a mix, a single value)."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) < len(values) or len(set(numbers)) < 2:
        return CategoricalDistribution(values)
    ordered = sorted(set(numbers))
    log = geometric(ordered)
    if all(isinstance(v, int) for v in numbers):
        return IntDistribution(ordered[0], ordered[-1], log=log)
    return FloatDistribution(float(ordered[0]), float(ordered[-1]), log=log)
