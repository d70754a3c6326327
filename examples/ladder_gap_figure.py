"""Loss minus AdamW's at 1x, ours at cpu-xs and cpu-s against the study's at 0.1B, one row per
optimizer (sorted by the study's gap), from a table like docs/data/ladder-cpu-s-b16-phase2-1x.csv
(docs/LADDER.md, "A tuned cpu-s cell").

    python examples/ladder_gap_figure.py TABLE.csv OUT.png
    python examples/ladder_gap_figure.py TABLE.csv OUT.png --against TABLE2.csv --labels A B

With --against, the rows are the cpu-s columns of both tables (TABLE's labelled A, TABLE2's B), for
two regimes of one scale such as docs/LADDER.md's batch sizes.
"""
import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def main(table: str, out: str, against: str | None = None,
         labels: tuple[str, str] = ("TABLE", "TABLE2")) -> None:
    t = pd.read_csv(table).set_index("optimizer")
    series = [(t, "cpu_xs", "cpu-xs"), (t, "cpu_s", "cpu-s")]
    title = "cpu-xs and tuned cpu-s"
    if against:
        t2 = pd.read_csv(against).set_index("optimizer")
        t = t.loc[t.index.intersection(t2.index)]
        series, title = [(t, "cpu_s", labels[0]), (t2, "cpu_s", labels[1])], " and ".join(labels)
    t = t.drop("adamw").sort_values("study_gap", ascending=False)
    rows = np.arange(len(t))
    height = 1.8 + 0.42 * len(t)
    fig, ax = plt.subplots(figsize=(6, height))
    ax.plot(t.study_gap, rows, "kD", label="the study, 0.1B (one run, against AdamW's law)")
    for (frame, col, label), marker, dodge in zip(series, "so", (0.2, -0.2)):  # dodge: rows apart
        f = frame.loc[t.index]
        gap, lo, hi = f[f"{col}_gap"], f[f"{col}_lo"], f[f"{col}_hi"]
        ax.errorbar(gap, rows + dodge, xerr=[gap - lo, hi - gap], fmt=marker, capsize=3,
                    label=label + " (90% t over seeds, paired with AdamW's)")
    ax.axvline(0, color="black", lw=0.5)
    ax.set_yticks(rows, t.index)
    ax.invert_yaxis()
    ax.set_xlabel("loss minus AdamW's at 1x (nats); left of 0: better than AdamW")
    ax.set_title(f"Loss gap to AdamW at 1x: {title} against the study", fontsize=9)
    ax.grid(axis="x", lw=0.3)
    fig.legend(fontsize=7, loc="lower center")  # below the axes: no row's bars hidden
    fig.tight_layout(rect=(0, 0.6 / height, 1, 1))
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table")
    parser.add_argument("out")
    parser.add_argument("--against", help="a second table: its cpu-s columns against TABLE's")
    parser.add_argument("--labels", nargs=2, default=("TABLE", "TABLE2"), help="names of the two tables' cpu-s")
    args = parser.parse_args()
    main(args.table, args.out, args.against, args.labels)
