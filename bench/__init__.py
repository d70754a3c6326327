"""optbench's library for one run, in layers (docs/DESIGN.md): model, data and optimizers; the run
(spec, step, train loop); the results store; and, above sweeps and analysis, the performance
benchmark (perf) and the `optbench` command (cli)."""

__version__ = "0.1.0"
