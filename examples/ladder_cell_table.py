"""The tuned cpu-s cell's table (docs/LADDER.md, "A tuned cpu-s cell"): per optimizer, its winner at
cpu-s (the best config at seed 0, as a sweep without finalists chooses), that winner's mean over
seeds and its loss minus AdamW's paired by seed (90% t), the same at cpu-xs, and the study's 0.1B
loss at the ratio minus AdamW's fitted law there; then Kendall's tau and the mean |ours - the
study's| over the optimizers, with 90% bootstraps over seeds.

    python examples/ladder_cell_table.py [--by-mean] [--batch N] [--optimizers A,B] [--ratio R]
      [--study-ratio Q] [--study-scale M] [--seeds S,T] OUT.csv RUNS.csv [RUNS.csv ...]

--batch keeps the cpu-s runs at that train batch size (the cpu-xs ones are all at 16);
--optimizers keeps those optimizers (AdamW, the reference, always);
--ratio takes our runs at Chinchilla ratio R (default 1; without a cpu-xs AdamW run at R the
table has no cpu-xs columns); --study-ratio and --study-scale compare with the study's cell at
ratio Q (default 1, its smallest) and model size M (default 0.1B, its smallest; also 0.3B, 0.5B,
and 1.2B for four optimizers).
--seeds keeps the runs of those seeds (to compare with a table that has only them).

RUNS.csv: rows like docs/data/ladder-cpu-s-b16-phase2-runs.csv (optimizer, scale, ratio, seed,
final_loss, hparams as JSON; hardware where examples/export_runs.py recorded it). A run found in
two files must have the same loss in both, and all runs must come from one kind of hardware
(files without the column count as one, "unrecorded").
"""
import argparse
import json
import pathlib
import sys
import tempfile

import numpy as np
import pandas as pd
from scipy import stats

from analysis.bootstrap import percentile_interval
from analysis.cells import config_key
from analysis.paper.reproduce import reproduce, study_options
from analysis.tuning import mean_interval

LEVEL, N_BOOT = 0.9, 2000


def seed_list(text: str) -> list[int]:
    """--seeds: comma-separated seeds (also examples/ladder_rerun.py's)."""
    return [int(s) for s in text.split(",")]


def runs_file(path: str) -> pd.DataFrame:
    """One runs file (examples/export_runs.py's columns); anything else exits 2 with one line."""
    try:
        runs = pd.read_csv(path)
    except (OSError, pd.errors.ParserError) as e:
        print(f"ladder_cell_table: cannot read {path}: {e}", file=sys.stderr)
        sys.exit(2)
    missing = [c for c in ("optimizer", "scale", "ratio", "seed", "final_loss", "hparams") if c not in runs]
    if missing:
        print(f"ladder_cell_table: {path} is not a runs file (no {', '.join(missing)}; "
              "see examples/export_runs.py)", file=sys.stderr)
        sys.exit(2)
    return runs


def read_runs(paths: list[str], batch: int | None = None, optimizers: list[str] | None = None,
              ratio: float = 1.0, seeds: list[int] | None = None) -> pd.DataFrame:
    runs = pd.concat([runs_file(p) for p in paths], ignore_index=True)
    runs = runs[(runs.ratio == ratio) & (runs.seed.isin(seeds) if seeds else True)].copy()
    runs["hardware"] = runs["hardware"].fillna("unrecorded") if "hardware" in runs else "unrecorded"
    if runs.hardware.nunique() > 1:  # a seed's runs agree to the bit only on one kind of CPU
        print(f"ladder_cell_table: runs from more than one machine ({', '.join(runs.hardware.unique())}): "
              "gaps pair runs by seed, so give runs made on one", file=sys.stderr)
        sys.exit(2)
    if batch is not None:
        size = runs.hparams.map(lambda h: json.loads(h)["train_batch_size"])
        runs = runs[(runs.scale != "cpu-s") | (size == batch)]
    if optimizers is not None:
        runs = runs[runs.optimizer.isin(["adamw", *optimizers])]
    runs["config"] = runs.hparams.map(lambda h: config_key(json.loads(h)))
    key = ["optimizer", "scale", "config", "seed"]
    clash = runs.groupby(key).final_loss.nunique() > 1
    if clash.any():
        print(f"ladder_cell_table: runs that differ between files: {list(clash[clash].index)[:3]}",
              file=sys.stderr)
        sys.exit(2)
    if not ((runs.optimizer == "adamw") & (runs.scale == "cpu-s")).any():
        print(f"ladder_cell_table: no AdamW run at cpu-s ratio {ratio:g}, the reference of every gap",
              file=sys.stderr)
        sys.exit(2)
    return runs.drop_duplicates(key)


def finalists(runs: pd.DataFrame, scale: str, k: int = 1) -> dict[str, list[str]]:
    """Optimizer -> its k best configs at seed 0 at `scale`, best first (a sweep's --finalists K)."""
    first = runs[(runs.scale == scale) & (runs.seed == 0)].sort_values("final_loss", kind="stable")
    return {name: list(sub.config.head(k)) for name, sub in first.groupby("optimizer")}


def winners(runs: pd.DataFrame, scale: str, by_mean: bool = False) -> dict[str, pd.Series]:
    """Optimizer -> its winner's final loss by seed at `scale`, the Series named by the winner's
    config. The winner is the best config at seed 0, or with `by_mean` the best mean among the
    configs run at as many seeds as its most-seeded one (finalists' reading)."""
    out, first = {}, finalists(runs, scale)
    for name, sub in runs[runs.scale == scale].groupby("optimizer"):
        if by_mean:
            stats_ = sub.groupby("config", sort=False).final_loss.agg(["size", "mean"])
            best = stats_[stats_["size"] == stats_["size"].max()]["mean"].idxmin()
        else:
            best = first[name][0]
        out[name] = sub[sub.config == best].set_index("seed").final_loss.sort_index().rename(best)
    return out


def changes(small: pd.Series, large: pd.Series) -> str:
    """The keys whose value differs between two winners' configs, 'key a->b; ...'."""
    a, b = json.loads(small.name), json.loads(large.name)
    return "; ".join(f"{k} {a.get(k)}->{b.get(k)}" for k in sorted(b) if a.get(k) != b.get(k))


def study_cells() -> pd.DataFrame:
    """Optimizer x (scale, ratio): the study's loss minus AdamW's fitted law there."""
    with tempfile.TemporaryDirectory() as d:
        r = reproduce(pathlib.Path(d), options=study_options(n_boot=10, plots=False))
    s = r.outputs.result.speedups
    return (s.assign(gap=s.loss - s.adamw_fit_loss)
            .pivot_table(index="optimizer", columns=["scale", "ratio"], values="gap"))


def study_gaps(ratio: float = 1.0, scale: str = "0.1B") -> dict[str, float]:
    """The study's gaps to AdamW, per optimizer, at one model size and Chinchilla ratio."""
    cells = study_cells()
    if (scale, ratio) not in cells:
        print(f"ladder_cell_table: the study has no {scale} runs at ratio {ratio:g}", file=sys.stderr)
        sys.exit(2)
    return cells[(scale, ratio)].dropna().to_dict()


def gap_columns(win: dict[str, pd.Series], prefix: str) -> pd.DataFrame:
    ref = win["adamw"]
    rows = {}
    for name, losses in win.items():
        paired = losses.index.intersection(ref.index)
        gap, lo, hi = ((0.0, np.nan, np.nan) if name == "adamw"
                       else mean_interval(losses[paired] - ref[paired], LEVEL))
        rows[name] = {f"{prefix}_seeds": len(losses), f"{prefix}_mean": losses.mean(),
                      f"{prefix}_gap": gap, f"{prefix}_lo": lo, f"{prefix}_hi": hi,
                      f"{prefix}_paired": len(paired)}
    return pd.DataFrame.from_dict(rows, orient="index")


def agreement(win: dict[str, pd.Series], study: dict[str, float], rng) -> dict[str, tuple]:
    """Tau (AdamW in, at 0) and mean |gap - study's| (AdamW out), each with a bootstrap that
    resamples every optimizer's seeds; AdamW's mean is the reference of every gap."""
    names = [n for n in win if n in study]
    target = np.array([study[n] for n in names])
    others = np.array([n != "adamw" for n in names])

    def stats_of(means: np.ndarray) -> tuple[float, float]:
        gaps = means - means[names.index("adamw")]
        return (stats.kendalltau(gaps, target).statistic,
                float(np.mean(np.abs(gaps - target)[others])))

    point = stats_of(np.array([win[n].mean() for n in names]))
    reps = np.array([stats_of(np.array([rng.choice(win[n].to_numpy(), len(win[n])).mean()
                                        for n in names])) for _ in range(N_BOOT)])
    return {label: (point[i], *percentile_interval(reps[:, i], LEVEL))
            for i, label in enumerate(("tau", "mad"))}


def main(out: str, paths: list[str], by_mean: bool, batch: int | None,
         optimizers: list[str] | None, ratio: float, seeds: list[int] | None = None,
         study_ratio: float = 1.0, study_scale: str = "0.1B") -> None:
    runs = read_runs(paths, batch, optimizers, ratio, seeds)
    study = study_gaps(study_ratio, study_scale)
    s, xs = winners(runs, "cpu-s", by_mean), winners(runs, "cpu-xs", by_mean)
    xs = {n: xs[n] for n in s if n in xs} if "adamw" in xs else {}  # no reference, no cpu-xs columns
    table = gap_columns(s, "cpu_s")
    configs = runs[(runs.scale == "cpu-s") & (runs.seed == 0)].groupby("optimizer").config.nunique()
    table.insert(0, "cpu_s_configs", configs)
    if xs:
        table = table.join(gap_columns(xs, "cpu_xs"), how="left")
        table.insert(0, "cpu_xs_to_s", pd.Series({n: changes(xs[n], s[n]) for n in xs}))
    table["study_gap"], table["study_scale"], table["study_ratio"] = pd.Series(study), study_scale, study_ratio
    table = table.loc[sorted(table.index, key=lambda n: (n != "adamw", table.cpu_s_gap[n]))]
    table.rename_axis("optimizer").to_csv(out, float_format="%.4f")
    rng = np.random.default_rng(0)
    for scale, win in (("cpu-s", s), ("cpu-xs", xs)):
        if not win:
            continue
        a, single = agreement(win, study, rng), [n for n in win if len(win[n]) < 2]
        tau, mad = (f"{a['tau'][0]:.2f}", f"{a['mad'][0]:.3f}") if single else (
            f"{a['tau'][0]:.2f} [{a['tau'][1]:.2f}, {a['tau'][2]:.2f}]",
            f"{a['mad'][0]:.3f} [{a['mad'][1]:.3f}, {a['mad'][2]:.3f}]")
        spread = (f"one seed of {', '.join(single)}: no interval" if single
                  else f"{LEVEL:.0%} bootstrap over seeds")
        print(f"{scale} over {', '.join(win)}, against the study's {study_scale} {study_ratio:g}x: "
              f"Kendall's tau {tau}, mean |gap - study's| {mad} ({spread})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--by-mean", action="store_true", help="choose winners by their mean over seeds")
    parser.add_argument("--batch", type=int, help="only the cpu-s runs at this train batch size")
    parser.add_argument("--optimizers", type=lambda v: v.split(","), help="only these (and AdamW)")
    parser.add_argument("--ratio", type=float, default=1.0, help="our runs at this Chinchilla ratio")
    parser.add_argument("--study-ratio", type=float, default=1.0, help="the study's cell at this ratio")
    parser.add_argument("--study-scale", default="0.1B", help="the study's cell at this model size")
    parser.add_argument("--seeds", type=seed_list, help="only these seeds")
    args = parser.parse_args()
    main(args.out, args.runs, args.by_mean, args.batch, args.optimizers, args.ratio, args.seeds,
         args.study_ratio, args.study_scale)
