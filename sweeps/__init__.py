"""optbench's sweeps: which runs to train, and training many of them at once.

The pieces, in the order a sweep uses them:

- grid: the search grid of an optimizer on a ladder, its start point and coordinate order
- plan: the cells (optimizer x scale x ratio) of a sweep and its cost estimate
- protocols/: base (what a protocol is to a cell: configs wanted, given the losses so far);
  coordinate, samplers, scaling (the study's Phase I/II coordinate descent, Optuna's TPE and GP with
  an equal budget, the Phase III fit and prediction); phases (which protocol and start point each
  cell gets, from what the store already holds)
- cell: one cell's tuning (protocol, then extra seeds of the winner) as results come in
- record: every trial recorded in Optuna storage, one study per cell
- driver, task: Ray runs the trials, the store keeps them, a rerun resumes
- progress, report: the status line while running and the tables at the end
- replay: a cell's protocol at a search seed replayed from the store, its trials in the order asked
  (tuning cost, docs/TUNING.md)
- regress/: the CI regression check of optimizer speedups against a committed baseline
"""
