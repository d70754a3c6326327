"""One run: RunSpec in, RunResult out (spec), the training step, the train loop and its hooks."""
