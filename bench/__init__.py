"""optbench's library for one run: scales, model, data, optimizers, schedules, train loop, store."""

__version__ = "0.1.0"
