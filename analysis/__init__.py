"""optbench's analysis: speedups over AdamW with uncertainty, tables and plots.

It reads runs in one shape, a pandas DataFrame with one row per run (what the results store's
`frame()` returns, and what `ingest_paper` makes of the study's published files), and writes
Markdown/CSV/LaTeX tables and PNG/PDF figures. The pieces, in the order data flows:

- ingest_paper: the study's result.json files -> runs frame
- cells: runs -> one row per optimizer x scale x ratio (best config, its seeds, run counts)
- fit, bootstrap: the scaling-law fit L(D) = alpha * D^(-B) + beta, its inversion, intervals
- speedups: cells -> AdamW fit per scale and every cell's speedup with an interval and flags
- sensitivity: one-parameter ablations around each cell's centre config
- tables, plots: the outputs; pipeline writes them all; reproduce compares with the study
- commands: the `optbench analyze` and `optbench reproduce` subcommands
"""
