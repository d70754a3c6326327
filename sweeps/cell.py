"""One cell's tuning as results come in: its protocol's runs (seed 0), then its K best configs at
seed 0 (the finalists; K = 1 by default) again with seeds 1..N-1, so the analysis can average and
bootstrap over seeds; with K > 1 the winner is the finalist with the best mean (analysis.cells).

A cell knows nothing of Ray or the store: the driver asks it what it wants and tells it results
(fresh or read back from the store; both count the same, which is what makes a rerun resume).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from analysis.cells import config_key, rank_configs
from bench.run.spec import RunResult, RunSpec
from bench.study import APPROX_BEST_TOL
from sweeps.grid import Config
from sweeps.plan import Cell
from sweeps.protocols.base import TuningProtocol


@dataclass(frozen=True)
class Request:
    spec: RunSpec
    config: Config
    seed: int

    @property
    def key(self) -> str:
        return self.spec.key


@dataclass
class CellTuning:
    cell: Cell
    protocol: TuningProtocol
    grid: dict[str, list]
    seeds: int = 1
    device: str = "cpu"
    finalists: int = 1  # best seed-0 configs re-run at every seed, the winner chosen on their means
    losses: dict[str, float] = field(default_factory=dict)  # config id -> seed-0 loss
    by_seed: dict[str, dict[int, float]] = field(default_factory=dict)  # config id -> seed -> loss
    configs: dict[str, Config] = field(default_factory=dict)  # config id -> config
    results: dict[str, RunResult] = field(default_factory=dict)  # run key -> result, every seed
    trained: int = 0  # runs this invocation trained
    reused: int = 0  # runs found in the store
    stale: int = 0  # runs whose stored result came from other code, so trained again
    error: str = ""  # an environment failure (not a run that failed): the cell stops, a rerun retries

    def wanted(self) -> list[Request]:
        """Runs whose results the cell needs now (some may be running already)."""
        if self.error:
            return []
        proposal = self.protocol.propose(self.losses)
        if proposal is not None:
            return [self._request(c, 0) for c in proposal]
        seeds = [self._request(c, s) for c in self._finalists() for s in range(1, self.seeds)]
        return [r for r in seeds if r.key not in self.results]

    @property
    def done(self) -> bool:
        return not self.wanted()

    def record(self, request: Request, result: RunResult, reused: bool) -> None:
        self.results[result.run_key] = result
        self.reused += reused
        self.trained += not reused
        cid = config_key(request.config)
        self.by_seed.setdefault(cid, {})[request.seed] = loss_of(result)
        if request.seed == 0:
            self.configs[cid] = request.config
            self.losses[cid] = loss_of(result)

    def best_config(self) -> Config | None:
        """The lowest seed-0 loss, or with finalists that finished two or more seeds the best of
        them on their means (analysis.cells.rank_configs; ties: the smaller config id, so a resume
        picks the same)."""
        finished = {cid: {s: v for s, v in self.by_seed[cid].items() if math.isfinite(v)}
                    for cid in sorted(self.configs)}
        ranked = rank_configs(finished)
        return self.configs[ranked[0]] if ranked else None

    def _finalists(self) -> list[Config]:
        return [self.configs[cid] for cid in finalist_ids(self.losses, self.finalists)]

    def best_loss(self) -> float:
        return min(self.losses.values(), default=math.inf)

    def approx_best(self) -> list[Config]:
        """Configs within 3e-3 of the best seed-0 loss, best first (the study records them)."""
        best = self.best_loss()
        near = sorted((loss, cid) for cid, loss in self.losses.items() if loss <= best + APPROX_BEST_TOL)
        return [self.configs[cid] for _, cid in near]

    def seed_losses(self) -> list[float]:
        """The best config's finished losses over all its seeds."""
        best = self.best_config()
        if best is None:
            return []
        keys = {self.cell.spec(best, s, self.device).key for s in range(self.seeds)}
        return [loss_of(r) for k, r in self.results.items() if k in keys and math.isfinite(loss_of(r))]

    def _request(self, config: Config, seed: int) -> Request:
        return Request(self.cell.spec(config, seed, self.device), config, seed)


def loss_of(result: RunResult) -> float:
    """The loss a protocol sees: the final loss of a finished run, +inf (the worst) otherwise."""
    ok = result.status == "ok" and result.final_loss is not None and math.isfinite(result.final_loss)
    return float(result.final_loss) if ok else math.inf


def finalist_ids(losses: dict[str, float], k: int) -> list[str]:
    """The config ids of the `k` lowest distinct seed-0 losses (ties: the smaller config id). A
    loss equal to the last bit means a key that did not change training (epsilon at 1e-20 or
    1e-25, an unreached clipping norm): re-running such twins would spend the finalists on one
    config's luck."""
    finite = sorted((loss, cid) for cid, loss in losses.items() if math.isfinite(loss))
    distinct = {loss: cid for loss, cid in reversed(finite)}  # each loss's smallest config id
    return [distinct[loss] for loss in sorted(distinct)[:k]]
