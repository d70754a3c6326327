"""AdamW: Adam with decoupled weight decay, the baseline every optimizer is compared against.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (arXiv 1711.05101).
Implementation: torch.optim.AdamW (fused kernels on CPU and CUDA). Defaults: the study's best
130m / 1x configuration where it transfers (betas, eps, weight decay, clipping); learning rate,
warmup and batch are set for the CPU ladder (the study's values are in the "paper" search grid).
"""
from bench.optimizers.common import TRAIN_DEFAULTS, make_adamw
from bench.optimizers.registry import OptimizerDef, register
from bench.roles import Role

register(OptimizerDef(
    name="adamw",
    family="adam",
    build=lambda params, hp, model: make_adamw(params, hp, hp["learning_rate"]),
    defaults={**TRAIN_DEFAULTS, "beta1": 0.9, "beta2": 0.98, "epsilon": 1e-10, "weight_decay": 0.1},
    roles={Role.HIDDEN: "AdamW, decayed", Role.HEAD: "AdamW, decayed",
           Role.EMBEDDING: "AdamW, no decay", Role.NORM: "AdamW, no decay",
           Role.BIAS: "AdamW, no decay"},
    paper="Loshchilov & Hutter, Decoupled Weight Decay Regularization, ICLR 2019, arXiv:1711.05101",
    source="torch.optim.AdamW (fused)",
))
