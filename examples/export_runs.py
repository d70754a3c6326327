"""A store's finished runs as a small CSV to commit (the format of docs/data/ladder-cpu-s-b16-
phase2-runs.csv): optimizer, scale, ratio, learning_rate, seed, final_loss (repr, so it reads back
bit for bit), wall_time_s, hardware (the CPU's model), hparams (JSON).

    python examples/export_runs.py STORE_URL OUT.csv
"""
import sys

from analysis.cells import config_key, ok_mask
from bench.store.database import ResultStore

COLUMNS = ["optimizer", "scale", "ratio", "learning_rate", "seed", "final_loss", "wall_time_s", "hardware",
           "hparams"]


def main(url: str, out: str) -> None:
    runs = ResultStore(url).frame()
    runs = runs[ok_mask(runs)].sort_values(["scale", "optimizer", "created_at"], kind="stable")
    runs["learning_rate"] = runs.hparams.map(lambda h: h.get("learning_rate"))
    runs["hparams"] = runs.hparams.map(config_key)
    runs["final_loss"] = runs.final_loss.map(repr)
    runs[COLUMNS].to_csv(out, index=False)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
