"""The study's tables, built from cells and speedups and written as Markdown, CSV and LaTeX.

Tables: speedups with intervals (long, and wide per ratio: optimizer x scale), final losses, run
counts (finished / diverged / failed), the AdamW fits, best hyperparameters per optimizer x scale x
ratio (one block per optimizer, like the study's appendix), and the "approximately best" sets
(configs within 3e-3 of the best). Markdown and LaTeX hold formatted text; the CSV holds numbers.
The writers are small and local, so the output does not depend on optional pandas extras.

One set of tables holds one context (analysis.cells), and every caption names it: a table that
showed two contexts side by side would read as one measurement.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.cells import scale_order
from analysis.speedups import missing_intervals
from bench.study import APPROX_BEST_TOL

EXTRAPOLATED_MARK = "*"
# speedups.csv holds exactly these; speedup_vs_scale.csv adds the flags, seeds and notes
SPEEDUPS_CSV_COLUMNS = ["optimizer", "scale", "ratio", "loss", "adamw_fit_loss", "speedup",
                        "ci_low", "ci_high"]


@dataclass(frozen=True)
class Table:
    """One table: Markdown/LaTeX show `sections` (heading, formatted frame); the CSV is `csv`."""

    name: str
    caption: str
    sections: list[tuple[str, pd.DataFrame]]
    csv: pd.DataFrame


def build_tables(cells: pd.DataFrame, speedups: pd.DataFrame, fits: pd.DataFrame,
                 ablations: pd.DataFrame, level: float) -> list[Table]:
    """Every table of the analysis, in the order a reader wants them, each caption naming the
    cells' one context."""
    contexts = list(cells["context"].unique())
    if len(contexts) != 1:
        raise ValueError(f"tables hold one context, got {len(contexts)}: build each context's "
                         f"tables apart (analysis.cells.split_by_context)")
    tables = [speedup_vs_scale_table(speedups, level), speedups_table(speedups, level),
              final_losses_table(cells), run_counts_table(cells), fits_table(fits),
              best_hparams_table(cells), approx_best_table(cells), sensitivity_table(ablations)]
    return [replace(t, caption=f"{t.caption} Context: {contexts[0]}.") for t in tables]


def write_table(table: Table, out_dir: Path) -> list[Path]:
    """Write name.md, name.csv and name.tex under out_dir; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{table.name}.{ext}" for ext in ("md", "csv", "tex")]
    paths[0].write_text(to_markdown(table))
    table.csv.to_csv(paths[1], index=False, float_format="%.7g")
    paths[2].write_text(to_latex(table))
    return paths


# --- the tables --------------------------------------------------------------------------------

def speedup_vs_scale_table(speedups: pd.DataFrame, level: float) -> Table:
    """Wide: one block per ratio, optimizer rows, scale columns, 'speedup [low, high]'."""
    sections = [(f"{ratio:g}x Chinchilla", speedup_wide(speedups, ratio))
                for ratio in sorted(speedups["ratio"].unique())]
    return Table("speedup_vs_scale", _speedup_caption(level, speedups), sections,
                 speedups.drop(columns=["params"]))


def speedup_wide(speedups: pd.DataFrame, ratio: float) -> pd.DataFrame:
    """Optimizer rows, scale columns (small to large), 'speedup[*] [low, high]' at one ratio."""
    sub = speedups[speedups["ratio"] == ratio]
    text = sub.assign(text=[_speedup_text(r) for _, r in sub.iterrows()])
    wide = text.pivot_table(index="optimizer", columns="scale", values="text", aggfunc="first",
                            sort=False)
    wide = wide.reindex(columns=[s for s in scale_order(speedups) if s in wide.columns])
    return wide.fillna("").reset_index().rename_axis(columns=None)


def speedups_table(speedups: pd.DataFrame, level: float) -> Table:
    shown = pd.DataFrame({
        "optimizer": speedups["optimizer"], "scale": speedups["scale"],
        "ratio": speedups["ratio"].map(_ratio_text), "loss": speedups["loss"].map(_loss_text),
        "AdamW fit": speedups["adamw_fit_loss"].map(_loss_text),
        "speedup": [_speedup_text(r, interval=False) for _, r in speedups.iterrows()],
        f"{level:.0%} interval": [_interval_text(r) for _, r in speedups.iterrows()],
        "seeds": speedups["n_seeds"], "uncertainty": speedups["uncertainty"],
        "note": speedups["note"]})
    return Table("speedups", _speedup_caption(level, speedups), [("", shown)],
                 speedups[SPEEDUPS_CSV_COLUMNS])


def final_losses_table(cells: pd.DataFrame) -> Table:
    sections = []
    for scale in scale_order(cells):
        sub = cells[cells["scale"] == scale]
        wide = sub.assign(text=sub.apply(_cell_loss_text, axis=1)).pivot_table(
            index="optimizer", columns="ratio", values="text", aggfunc="first", sort=False)
        wide = wide.reindex(columns=sorted(wide.columns))
        wide.columns = [_ratio_text(r) for r in wide.columns]
        sections.append((scale, wide.fillna("").reset_index()))
    csv = cells[["optimizer", "scale", "ratio", "params", "loss", "loss_sd", "n_seeds",
                 "n_configs", "n_runs", "n_ok", "n_diverged", "n_failed"]]
    return Table("final_losses", "Final held-out loss in nats/token (at the end of each budget) of "
                 "each cell's best config: the mean over its seeds, +- their sd where there are "
                 "several.", sections, csv)


def run_counts_table(cells: pd.DataFrame) -> Table:
    shown = pd.DataFrame({
        "optimizer": cells["optimizer"], "scale": cells["scale"],
        "ratio": cells["ratio"].map(_ratio_text), "configs": cells["n_configs"],
        "runs": cells["n_runs"], "finished": cells["n_ok"], "diverged": cells["n_diverged"],
        "failed": cells["n_failed"]})
    csv = cells[["optimizer", "scale", "ratio", "n_configs", "n_runs", "n_ok", "n_diverged",
                 "n_failed"]]
    return Table("run_counts", "Runs per cell: finished, diverged (excluded from every fit and "
                 "mean) and failed.", [("", shown)], csv)


def fits_table(fits: pd.DataFrame) -> Table:
    shown = pd.DataFrame({
        "scale": fits["scale"], "alpha": fits["alpha"].map("{:.4g}".format),
        "B": fits["B"].map("{:.4g}".format), "beta": fits["beta"].map("{:.4f}".format),
        "ratios": fits["fit_ratios"], "dof": fits["dof"],
        "rmse": fits["rmse"].map("{:.2g}".format), "R^2": fits["r2"].map(_r2_text),
        "sigma used": fits["sigma"].map("{:.2g}".format), "sigma from": fits["sigma_source"],
        "note": fits["note"]})
    return Table("fits", "AdamW fits L(D) = alpha * D^(-B) + beta per scale (D in Chinchilla "
                 "multiples); sigma is the residual scale that perturbs single-seed cells in "
                 "the bootstrap.", [("", shown)], fits)


def best_hparams_table(cells: pd.DataFrame) -> Table:
    """One block per optimizer and scale: hyperparameter rows, a column per data ratio."""
    long = [{"optimizer": c["optimizer"], "scale": c["scale"], "ratio": c["ratio"],
             "loss": c["loss"], "param": k, "value": v}
            for _, c in cells.iterrows() for k, v in sorted(c["hparams"].items())]
    long = pd.DataFrame(long, columns=["optimizer", "scale", "ratio", "loss", "param", "value"])
    sections = []
    for optimizer in cells["optimizer"].unique():
        for scale in scale_order(cells):
            sub = cells[(cells["optimizer"] == optimizer) & (cells["scale"] == scale)
                        & (cells["n_seeds"] > 0)].sort_values("ratio")
            if len(sub):
                sections.append((f"{optimizer} at {scale}", _hparams_block(sub)))
    long["value"] = long["value"].map(_value_text)
    return Table("best_hparams", "Best hyperparameters per optimizer, scale and data ratio "
                 "(the config with the lowest mean loss; loss: its final held-out loss in "
                 "nats/token).", sections, long)


def _hparams_block(sub: pd.DataFrame) -> pd.DataFrame:
    columns = {_ratio_text(c["ratio"]): c["hparams"] for _, c in sub.iterrows()}
    params = sorted({k for h in columns.values() for k in h})
    block = pd.DataFrame({name: [_value_text(h.get(p)) for p in params]
                          for name, h in columns.items()}, index=params)
    block.loc["loss"] = [_loss_text(v) for v in sub["loss"]]
    return block.rename_axis("hyperparameter").reset_index()


def approx_best_table(cells: pd.DataFrame) -> Table:
    rows = []
    for _, c in cells.iterrows():
        others = c["approx_best"][1:]
        rows.append({"optimizer": c["optimizer"], "scale": c["scale"],
                     "ratio": _ratio_text(c["ratio"]), "best loss": _loss_text(c["loss"]),
                     "within 3e-3": len(c["approx_best"]),
                     "the others differ from the best in": "; ".join(
                         f"{_diff_text(c['hparams'], o['hparams'])} ({o['loss'] - c['loss']:+.4f})"
                         for o in others)})
    csv = pd.DataFrame([{"optimizer": c["optimizer"], "scale": c["scale"], "ratio": c["ratio"],
                         "loss": o["loss"], "is_best": i == 0,
                         "hparams": json.dumps(o["hparams"], sort_keys=True, default=str)}
                        for _, c in cells.iterrows() for i, o in enumerate(c["approx_best"])],
                       columns=["optimizer", "scale", "ratio", "loss", "is_best", "hparams"])
    return Table("approx_best", f"The study's approximately best sets: configs within "
                 f"{APPROX_BEST_TOL:g} of each cell's best loss.", [("", pd.DataFrame(rows))], csv)


def sensitivity_table(ablations: pd.DataFrame) -> Table:
    """The one-parameter ablations behind the sensitivity figures, one row per point."""
    csv = ablations.assign(above_best=ablations["loss"] - ablations["cell_best"])
    csv = csv[["optimizer", "scale", "ratio", "param", "value", "loss", "above_best", "diverged", "is_centre"]]
    shown = pd.DataFrame({
        "optimizer": csv["optimizer"], "scale": csv["scale"], "ratio": csv["ratio"].map(_ratio_text),
        "hyperparameter": csv["param"], "value": csv["value"].map(_value_text),
        "loss": csv["loss"].map(_loss_text),
        "above best": ["diverged" if d else f"{v:+.4f}" for v, d in zip(csv["above_best"], csv["diverged"])],
        "centre": csv["is_centre"].map({True: "yes", False: ""})})
    return Table("sensitivity", "One-parameter ablations around each cell's centre config: final "
                 "held-out loss in nats/token, and above the cell's best loss.", [("", shown)], csv)


# --- writers -----------------------------------------------------------------------------------

def to_markdown(table: Table) -> str:
    parts = [f"# {table.name}\n\n{table.caption}\n"]
    for heading, frame in table.sections:
        if heading:
            parts.append(f"## {heading}\n")
        parts.append(_markdown_grid(frame))
    return "\n".join(parts)


def _markdown_grid(frame: pd.DataFrame) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_latex(table: Table) -> str:
    """One booktabs `table` per section (needs \\usepackage{booktabs})."""
    parts = [f"% {table.name}: generated by optbench (analysis/tables.py); needs booktabs\n"]
    for heading, frame in table.sections:
        caption = f"{table.caption} {heading}".strip() if heading else table.caption
        label = f"tab:{table.name}" + (f":{_label(heading)}" if heading else "")
        body = [" & ".join(_tex(c) for c in frame.columns) + r" \\", r"\midrule"]
        body += [" & ".join(_tex(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
        parts.append("\n".join([
            r"\begin{table}[ht]", r"\centering", r"\small",
            rf"\caption{{{_tex(caption)}}}", rf"\label{{{label}}}",
            rf"\begin{{tabular}}{{{_alignment(frame)}}}", r"\toprule", *body,
            r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]))
    return "\n".join(parts)


def _alignment(frame: pd.DataFrame) -> str:
    """'r' for a column of numbers (a number, maybe marked or with its interval), else 'l'."""
    return "".join("r" if _numeric_column(frame[c]) else "l" for c in frame.columns)


def _numeric_column(values: pd.Series) -> bool:
    shown = [str(v) for v in values if str(v) not in ("", "n/a", "nan") and not str(v).startswith("- ")]
    return bool(shown) and all(_NUMBER.match(v) for v in shown)


_NUMBER = re.compile(r"^\[?[-+]?(\d|\.\d|inf)")  # 1.41*, 3.1113 +- 0.0012, [1.34, 1.48], 1e-05, 2x
_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}"}


def _tex(value) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(value))


def _label(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").lower()


# --- formatting --------------------------------------------------------------------------------

def _speedup_caption(level: float, speedups: pd.DataFrame) -> str:
    missing = missing_intervals(speedups)
    return (f"Speedup over AdamW (D_eff / D) with {level:.0%} bootstrap intervals"
            + (f" ({missing})" if missing else "") + ". "
            f"{EXTRAPOLATED_MARK} = the loss lies outside the range of AdamW losses the fit was "
            f"made on (the law is extrapolated); inf = below the fit's asymptote.")


def _speedup_text(row: pd.Series, interval: bool = True) -> str:
    if not np.isfinite(row["loss"]) or (np.isnan(row["speedup"])):
        return "n/a"
    mark = EXTRAPOLATED_MARK if row["extrapolated"] else ""
    text = f"{_num(row['speedup'])}{mark}"
    return f"{text} {_interval_text(row)}" if interval and np.isfinite(row["ci_low"]) else text


def _interval_text(row: pd.Series) -> str:
    if not np.isfinite(row["ci_low"]):
        return ""
    return f"[{_num(row['ci_low'])}, {_num(row['ci_high'])}]"


def _num(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.2f}"


def _cell_loss_text(cell: pd.Series) -> str:
    if not np.isfinite(cell["loss"]):
        return f"- ({int(cell['n_diverged'])} div)" if cell["n_diverged"] else "-"
    text = _loss_text(cell["loss"])
    return f"{text} +- {cell['loss_sd']:.4f}" if np.isfinite(cell["loss_sd"]) else text


def _loss_text(x) -> str:
    return f"{x:.4f}" if x is not None and np.isfinite(x) else ""


def _ratio_text(r: float) -> str:
    return f"{r:g}x"


def _r2_text(r2: float) -> str:
    return f"{r2:.6f}" if np.isfinite(r2) else ""


def _value_text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _diff_text(best: dict, other: dict) -> str:
    keys = sorted(set(best) | set(other), key=str)
    diffs = [f"{k}={_value_text(other.get(k))}" for k in keys if best.get(k) != other.get(k)]
    return ", ".join(diffs) if diffs else "same config"


def format_frame(frame: pd.DataFrame) -> str:
    """A plain-text table for the terminal."""
    text = frame.astype(str)
    widths = [max(len(c), *(len(v) for v in text[c])) for c in text.columns]
    line = "  ".join(c.ljust(w) for c, w in zip(text.columns, widths))
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths))
            for row in text.itertuples(index=False)]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])
