"""The study's facts the code relies on, each in one place (docs/PROTOCOL.md gives their sources).

Wen, Hall, Ma, Liang, "Fantastic Pretraining Optimizers and Where to Find Them", arXiv 2509.02046.
"""
TOKENS_PER_PARAM = 20  # Chinchilla: a ratio-r budget is r * 20 tokens per non-embedding parameter
REFERENCE_OPTIMIZER = "adamw"  # every speedup is over this optimizer's data-scaling law
APPROX_BEST_TOL = 3e-3  # "approximately best": within 3e-3 nats of a cell's best loss
PAPER_SEQ_LEN = 4096  # tokens per sequence in every paper-ladder run
DEFAULT_EVAL_TOKENS = 1 << 17  # held-out tokens scored at the end of a budget
CPU_BATCH = 32  # sequences per step on the CPU ladder (the paper ladder's batch is its scale's)
