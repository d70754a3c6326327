"""Loss minus AdamW's at 1x, ours at cpu-xs and cpu-s against the study's at 0.1B, one row per
optimizer (sorted by the study's gap), from a table like docs/data/ladder-cpu-s-b16-phase2-1x.csv
(docs/LADDER.md, "A tuned cpu-s cell").

    python examples/ladder_gap_figure.py TABLE.csv OUT.png
"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def main(table: str, out: str) -> None:
    t = pd.read_csv(table)
    t = t[t.optimizer != "adamw"].sort_values("study_gap", ascending=False)
    rows = np.arange(len(t))
    height = 1.8 + 0.42 * len(t)
    fig, ax = plt.subplots(figsize=(6, height))
    ax.plot(t.study_gap, rows, "kD", label="the study, 0.1B (one run, against AdamW's law)")
    for scale, marker, dodge in (("cpu_xs", "s", 0.2), ("cpu_s", "o", -0.2)):  # dodge: rows apart
        gap, lo, hi = t[f"{scale}_gap"], t[f"{scale}_lo"], t[f"{scale}_hi"]
        ax.errorbar(gap, rows + dodge, xerr=[gap - lo, hi - gap], fmt=marker, capsize=3,
                    label=scale.replace("_", "-") + " (90% t over seeds, paired with AdamW's)")
    ax.axvline(0, color="black", lw=0.5)
    ax.set_yticks(rows, t.optimizer)
    ax.invert_yaxis()
    ax.set_xlabel("loss minus AdamW's at 1x (nats); left of 0: better than AdamW")
    ax.set_title("Loss gap to AdamW at 1x: cpu-xs and tuned cpu-s against the study", fontsize=9)
    ax.grid(axis="x", lw=0.3)
    fig.legend(fontsize=7, loc="lower center")  # below the axes: no row's bars hidden
    fig.tight_layout(rect=(0, 0.6 / height, 1, 1))
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
