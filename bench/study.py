"""The study's facts the code relies on, each in one place (docs/PROTOCOL.md gives their sources).

Wen, Hall, Ma, Liang, "Fantastic Pretraining Optimizers and Where to Find Them", arXiv 2509.02046.
"""
TOKENS_PER_PARAM = 20  # Chinchilla: a ratio-r budget is r * 20 tokens per non-embedding parameter
REFERENCE_OPTIMIZER = "adamw"  # every speedup is over this optimizer's data-scaling law
APPROX_BEST_TOL = 3e-3  # "approximately best": within 3e-3 nats of a cell's best loss
PAPER_SEQ_LEN = 4096  # tokens per sequence in every paper-ladder run
DEFAULT_EVAL_TOKENS = 1 << 17  # held-out tokens scored at the end of a budget
CPU_BATCH = 32  # sequences per step on the CPU ladder (the paper ladder's batch is its scale's)


def geometric(values) -> bool:
    """Whether a grid's numbers grow by a factor (learning rates, batch sizes, warmups), so they
    are read on a log scale: all positive, each at least 1.5x the one before."""
    ordered = sorted(set(values))
    return len(ordered) > 1 and ordered[0] > 0 and all(b / a >= 1.5 for a, b in zip(ordered, ordered[1:]))
