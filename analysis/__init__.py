"""optbench's analysis: speedups over AdamW with uncertainty, tables and plots.

It reads runs in one shape, the runs frame: one row per run, built only by
bench.store.record.to_frame from StoredRun records (the results store's, the regression baseline's,
or paper.ingest's from the study's published files), and writes Markdown/CSV/LaTeX tables and
PNG/PDF figures. The pieces, in the order data flows:

- paper.ingest: the study's result.json files -> StoredRun records
- cells: runs -> one row per optimizer x scale x ratio within a context (best config, its seeds,
  run counts); runs of different contexts (data, tokenizer, precision, ...) never share a cell
- fit, bootstrap: the scaling-law fit L(D) = alpha * D^(-B) + beta, its inversion, intervals
- speedups: cells -> AdamW fit per scale and every cell's speedup with an interval and flags
- sensitivity: one-parameter ablations around each cell's centre config
- tables, plots: the outputs; pipeline writes them all; paper.reproduce compares with the study
- tuning: tuning cost, from replayed protocols' trials: trials to the approximately-best band
"""
