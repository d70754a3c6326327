"""Loss minus AdamW's, ours at cpu-xs and cpu-s against the study's at the cell the table names
(0.1B and 1x if it names none), one row per optimizer (sorted by the study's gap), from a table
like docs/data/ladder-cpu-s-b16-phase2-1x.csv (docs/LADDER.md, "A tuned cpu-s cell").

    python examples/ladder_gap_figure.py TABLE.csv OUT.png
    python examples/ladder_gap_figure.py TABLE.csv OUT.png --against TABLE2.csv [TABLE3.csv ...] --labels A B [C ...]

With --against, each row shows the cpu-s columns of every table (TABLE's labelled A, TABLE2's B,
...), for regimes of one scale such as docs/LADDER.md's batch sizes; only the optimizers in every
table get a row, and every table must compare with one cell of the study.
"""
import argparse
import itertools
import sys
import textwrap
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def main(table: str, out: str, against: Sequence[str] = (), labels: Sequence[str] = ()) -> None:
    if against and len(labels) != 1 + len(against):
        print(f"ladder_gap_figure: {1 + len(against)} tables need as many --labels", file=sys.stderr)
        sys.exit(2)
    t = pd.read_csv(table).set_index("optimizer")
    cell = study_cell(t)
    series = [(t, "cpu_xs", "cpu-xs"), (t, "cpu_s", "cpu-s")]
    title = "cpu-xs and tuned cpu-s"
    if against:
        tables = [t, *(pd.read_csv(a).set_index("optimizer") for a in against)]
        if len({study_cell(f) for f in tables}) > 1:
            print("ladder_gap_figure: the tables compare with different cells of the study", file=sys.stderr)
            sys.exit(2)
        for other in tables[1:]:
            t = t.loc[t.index.intersection(other.index)]
        series = [(f, "cpu_s", label) for f, label in zip(tables, labels)]
        title = " and ".join(labels) if len(labels) == 2 else f"{len(labels)} regimes"
    t = t.drop("adamw").sort_values("study_gap", ascending=False)
    rows = np.arange(len(t))
    legend = 0.6 + 0.15 * (len(series) - 2)  # inches below the axes
    height = 1.2 + legend + 0.21 * max(2, len(series)) * len(t)
    fig, ax = plt.subplots(figsize=(6, height))
    ax.plot(t.study_gap, rows, "kD", label=f"the study, {cell} (one run, against AdamW's law)")
    dodges = np.linspace(0.2, -0.2, len(series))  # keeps a row's bars apart
    for (frame, col, label), marker, dodge in zip(series, itertools.cycle("so^v<>ph"), dodges):
        f = frame.loc[t.index]
        gap, lo, hi = f[f"{col}_gap"], f[f"{col}_lo"], f[f"{col}_hi"]
        spread = "90% t over seeds" if lo.notna().any() else "one seed, no interval"
        ax.errorbar(gap, rows + dodge, xerr=[gap - lo, hi - gap], fmt=marker, capsize=3,
                    label=f"{label} ({spread}, paired with AdamW's)")
    ax.axvline(0, color="black", lw=0.5)
    ax.set_yticks(rows, t.index)
    ax.invert_yaxis()
    ax.set_xlabel("loss minus AdamW's at the same batch and ratio (nats)\nleft of 0: better than AdamW")
    ax.set_title(textwrap.fill(f"Loss gap to AdamW: {title} against the study at {cell}", 64), fontsize=9)  # 64 fit 6 in at 9 pt
    ax.grid(axis="x", lw=0.3)
    fig.legend(fontsize=7, loc="lower center")  # below the axes: no row's bars hidden
    fig.tight_layout(rect=(0, legend / height, 1, 1))
    fig.savefig(out, dpi=120)


def study_cell(table: pd.DataFrame) -> str:
    """The study's cell a table compares with, '0.1B 1x' (tables written before the columns: that)."""
    if "study_ratio" not in table:
        return "0.1B 1x"
    return f"{table.study_scale.iloc[0]} {table.study_ratio.iloc[0]:g}x"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table")
    parser.add_argument("out")
    parser.add_argument("--against", nargs="+", default=[], help="more tables: their cpu-s columns against TABLE's")
    parser.add_argument("--labels", nargs="+", default=[], help="names of every table's cpu-s, TABLE's first")
    args = parser.parse_args()
    main(args.table, args.out, args.against, args.labels)
