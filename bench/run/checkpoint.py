"""Mid-run checkpoints: model, optimizer state, data position, RNG and the loss curve so far.

A run killed and started again with the same spec resumes from its last checkpoint and ends with the
same final loss, to the last bit on CPU, as a run never interrupted. Files are written atomically
(temporary file, then rename) and removed when the run finishes. In a sweep the folder is shared by
every node, so a trial Ray retries on another node after its own died resumes there too; the run
key names the file, so one folder serves any number of trials.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import torch


class Checkpointer:
    def __init__(self, folder: Path, run_key: str, every: int):
        self.path = Path(folder) / f"{run_key}.pt"
        self.every = every

    def due(self, step: int, total: int) -> bool:
        """After `step` steps; never at the end (the finished result is stored instead)."""
        return self.every > 0 and step % self.every == 0 and step < total

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # unique across nodes too: the folder may be shared, and a pid alone is not
        tmp = self.path.with_suffix(f".tmp{uuid.uuid4().hex}")
        torch.save({**state, "torch_rng": torch.get_rng_state()}, tmp)
        tmp.replace(self.path)

    def load(self, layout: Any = "full") -> dict[str, Any] | None:
        """The checkpoint, if there is one of this `layout` (whose optimizer state it holds:
        bench.run.distributed.Parallel.layout); another costs a restart, never a wrong result."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, weights_only=False)
        except Exception:  # a damaged checkpoint costs a restart from step 0, never a wrong result
            return None
        if state.get("layout", "full") != layout:
            return None
        torch.set_rng_state(state.pop("torch_rng"))
        return state

    def remove(self) -> None:
        """The checkpoint, and any temporary file a process killed mid-save left of this run."""
        self.path.unlink(missing_ok=True)
        for tmp in self.path.parent.glob(f"{self.path.stem}.tmp*"):
            tmp.unlink(missing_ok=True)
