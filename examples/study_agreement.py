"""How well the study's 0.1B ranking predicts its own other cells: Kendall's tau between the gaps
to AdamW (loss minus AdamW's fitted law) of every pair of the study's cells, over the optimizers
both ran. The yardstick for docs/LADDER.md's goal (tau >= 0.7 against the study's 0.1B, 1x): each
gap is one run, so these taus carry the study's own seed noise and have no interval.

    python -m examples.study_agreement OUT.csv
"""
import argparse

import pandas as pd
from scipy import stats

from examples.ladder_cell_table import study_cells


def agreement(cells: pd.DataFrame, anchor: tuple[str, float]) -> pd.DataFrame:
    """Tau of `anchor`'s gaps against every other cell's, and how many optimizers each compares."""
    rows = []
    for cell in cells.columns.drop(anchor):
        both = cells[[anchor, cell]].dropna()
        rows.append({"scale": cell[0], "ratio": cell[1], "optimizers": len(both),
                     "tau": stats.kendalltau(both[anchor], both[cell]).statistic})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    args = parser.parse_args()
    table = agreement(study_cells(), ("0.1B", 1.0))
    table.to_csv(args.out, index=False, float_format="%.2f")
    print(table.to_string(index=False, float_format="%.2f"))
