"""Loss minus AdamW's at 1x, ours at cpu-xs and cpu-s against the study's at 0.1B, from a table
like docs/data/ladder-cpu-s-b16-phase2-1x.csv (docs/LADDER.md, "A tuned cpu-s cell").

    python examples/ladder_gap_figure.py TABLE.csv OUT.png
"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def main(table: str, out: str) -> None:
    t = pd.read_csv(table)
    t = t[t.optimizer != "adamw"]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for scale, marker, dodge in (("cpu_xs", "s", -0.002), ("cpu_s", "o", 0.002)):  # dodge: bars apart
        gap, lo, hi = t[f"{scale}_gap"], t[f"{scale}_lo"], t[f"{scale}_hi"]
        ax.errorbar(t.study_gap + dodge, gap, yerr=[gap - lo, hi - gap], fmt=marker, capsize=3,
                    label=scale.replace("_", "-") + " (90% t over seeds)")
        for name, x, y in zip(t.optimizer, t.study_gap + dodge, gap):
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 3), fontsize=8)
    ends = [min(t.study_gap.min(), t.cpu_xs_lo.min(), t.cpu_s_lo.min()) - 0.01, 0.06]
    ax.plot(ends, ends, color="grey", lw=0.8, ls="--", label="equal to the study")
    ax.axhline(0, color="black", lw=0.5)
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel("the study, 0.1B: loss minus AdamW's law at 1x (nats)")
    ax.set_ylabel("ours: loss minus AdamW's at 1x (nats)")
    ax.set_title("Loss gap to AdamW at 1x: cpu-xs and tuned cpu-s against the study")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
