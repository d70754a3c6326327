"""Sophia-H: sign-like steps preconditioned by a clipped diagonal Hessian estimate.

Paper: Liu, Li, Hall, Liang & Ma, "Sophia: A Scalable Stochastic Second-order Optimizer for Language
Model Pre-training" (arXiv 2305.14342). The study ran Levanter's `SophiaHConfig` (its Sophia-G
estimator is not implemented in Levanter), i.e. Algorithms 1 and 3 with Hutchinson's estimator:
    every k steps:  h <- b2 h + (1 - b2) u * (H u),  u ~ N(0, I)   (H: Hessian of the training loss)
    every step:     m <- b1 m + (1 - b1) g,  m_hat = m / (1 - b1^t),
                    p <- p (1 - lr wd) - lr clip(m_hat / max(gamma h, eps), -1, 1).
So with wd = 0 no entry moves by more than lr. Checked against Levanter (levanter/optim/sophia.py)
and the authors' SophiaG (Liuhong99/Sophia, read in its PyPI fork sophia-opt 0.2.2). As in
Levanter, m is bias-corrected (the authors' is not), h starts at 0 (so the first k steps are
sign(m) steps), and weight decay is applied outside the clip.

Schedule: Levanter refreshes h after updates k, 2k, ... at the pre-update parameters, so update
k + 1 is the first to use it. `curvature_step` (called by the train loop before each step's main
forward/backward) refreshes h when the optimizer has taken a positive multiple of k updates: the same
updates see the same refresh, estimated one update later. It decides from its own step count,
which a checkpoint restores. The Gaussian probes come from the optimizer's own generator, whose
state lives in self.state["hutchinson"] so that state_dict() carries it.

Estimators (`hessian_estimator`): "hutchinson" (default, the study's) as above, or "gnb", the
paper's Gauss-Newton-Bartlett estimator (Algorithm 2, the authors' SophiaG): labels y^ sampled from
the model's own softmax, g^ the gradient of the mean loss on them, h^ = B g^ * g^ with B the number
of tokens the loss averages (its expectation is the Gauss-Newton diagonal of the mean loss; the
authors' code puts the same B into the step instead). Only the estimator is SophiaG's: m stays
bias-corrected and the clip is Levanter's. `update_curvature(estimates)` is the public entry that
takes one estimate per parameter into h, so the EMA can be driven from outside (a test, another
estimator).

Variants: `study` (default) is the above. `authors` is the step of Liuhong99/Sophia sophia.py
(SophiaG, commit a7e157229b71d58cf995d32854f1be15c265b350):
    p <- p (1 - lr wd);  m <- b1 m + (1 - b1) g  (no bias correction)
    p <- p - lr sign(m) min(|m| / (gamma h + eps), 1),
their rho * bs * hessian being our gamma * h (h holds B g^ * g^ already; their eps is 1e-15).
The authors' optimizer is variant=authors with hessian_estimator=gnb; the estimator stays the
user's choice in both variants.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.errors import UserError
from bench.optimizers.adam_moments import decoupled_step, group_tensors
from bench.optimizers.base import Optimizer
from bench.optimizers.common import TRAIN_DEFAULTS, decay_groups
from bench.optimizers.registry import OptimizerDef, register, variant_of
from bench.roles import Role, TaggedParam

PROBE_SEED = 0  # Levanter's rng_seed default


def lm_loss(model: torch.nn.Module, x: Tensor) -> Tensor:
    """Next-token cross-entropy of the model on the token batch x [B, T]: predict x[:, 1:] from
    x[:, :-1] (so x may be the model's input or the input plus its last target)."""
    logits = model(x[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), x[:, 1:].reshape(-1))


def gaussian_probes(params: list[Tensor], generator: torch.Generator) -> list[Tensor]:
    return [torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) for p in params]


def hessian_vector(loss: Tensor, params: list[Tensor], vectors: list[Tensor]) -> list[Tensor]:
    """H v by double backward (zeros for params the loss does not reach twice)."""
    grads = torch.autograd.grad(loss, params, create_graph=True)
    hvps = torch.autograd.grad(grads, params, grad_outputs=vectors, allow_unused=True)
    return [hv if hv is not None else torch.zeros_like(v) for v, hv in zip(vectors, hvps)]


def batch_gnb(model: torch.nn.Module, x: Tensor, params: list[Tensor], generator: torch.Generator,
              micro_batch: int = 0) -> list[Tensor]:
    """Gauss-Newton-Bartlett: B g^ * g^, g^ the gradient of the batch's mean loss on labels sampled
    from the model's softmax (one draw per token from `generator`), B its number of tokens."""
    chunks = x.split(micro_batch) if micro_batch else [x]
    total = None
    with torch.enable_grad():
        for chunk in chunks:
            logits = model(chunk[:, :-1])
            flat = logits.reshape(-1, logits.size(-1)).float()
            sampled = torch.multinomial(flat.detach().softmax(-1), 1, generator=generator).squeeze(1)
            loss = F.cross_entropy(flat, sampled) * (chunk.size(0) / x.size(0))
            part = torch.autograd.grad(loss, params, allow_unused=True)
            part = [torch.zeros_like(p) if g is None else g for p, g in zip(params, part)]
            total = part if total is None else [a + b for a, b in zip(total, part)]
    tokens = x.size(0) * (x.size(1) - 1)
    return [tokens * g * g for g in total]


def batch_hutchinson(model: torch.nn.Module, x: Tensor, params: list[Tensor], generator: torch.Generator,
                     micro_batch: int = 0) -> list[Tensor]:
    """Hutchinson's u * (H u) for one Gaussian probe u, an unbiased estimate of diag(H), for the
    batch's loss. H u is summed over micro-batches of `micro_batch` rows (one probe for all: H of
    the batch's mean loss is the row-weighted sum of the chunks' H)."""
    probes = gaussian_probes(params, generator)
    chunks = x.split(micro_batch) if micro_batch else [x]
    total = None
    # The math SDPA kernel is the one with a double backward on every device.
    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
        for chunk in chunks:
            loss = lm_loss(model, chunk)
            if len(chunks) > 1:
                loss = loss * (chunk.size(0) / x.size(0))
            part = hessian_vector(loss, params, probes)
            total = part if total is None else [a + b for a, b in zip(total, part)]
    return [u * hu for u, hu in zip(probes, total)]


# hessian_estimator's values: the study's Hutchinson, SophiaG's Gauss-Newton-Bartlett
ESTIMATORS = {"hutchinson": batch_hutchinson, "gnb": batch_gnb}


class SophiaH(Optimizer):
    later_options = {"variant": "study"}

    def __init__(self, params: list[dict[str, Any]], lr: float, betas: tuple[float, float] = (0.965, 0.99),
                 eps: float = 1e-12, gamma: float = 0.01, weight_decay: float = 0.0,
                 update_interval: int = 10, estimator: str = "hutchinson", variant: str = "study") -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "gamma": gamma,
                                  "weight_decay": weight_decay, "variant": variant})
        self.update_interval = update_interval
        self.estimate = ESTIMATORS[estimator]

    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def steps_taken(self) -> int:
        first = self._params()[0]
        return self.state[first].get("step", 0) if first in self.state else 0

    def _generator(self, device: torch.device) -> torch.Generator:
        gen = torch.Generator(device=device)
        saved = self.state.get("hutchinson")
        if saved is None:
            gen.manual_seed(PROBE_SEED)
        else:
            gen.set_state(saved["rng"])
        return gen

    def curvature_step(self, step: int, model: torch.nn.Module, x: Tensor, micro_batch: int = 0) -> None:
        """Refresh the Hessian EMA when a positive multiple of update_interval updates are done.

        `step` (the train loop's counter) is not used: the decision rests on this optimizer's own
        step count so that it survives a checkpoint and does not depend on the loop's indexing.
        `micro_batch` splits the double backward as the training step's passes are split.
        """
        n = self.steps_taken()
        saved = self.state.get("hutchinson")
        if n == 0 or n % self.update_interval or (saved is not None and saved["at_step"] == n):
            return
        params = self._params()
        gen = self._generator(params[0].device)
        estimates = self.estimate(model, x, params, gen, micro_batch)
        # Replace (never mutate) the entry: a state_dict() taken earlier shares the old one.
        self.state["hutchinson"] = {"rng": gen.get_state(), "at_step": n}
        self.update_curvature(estimates)
        self.zero_grad()

    @torch.no_grad()
    def update_curvature(self, estimates: list[Tensor]) -> None:
        """h <- beta2 h + (1 - beta2) estimate, one estimate per parameter in param-group order."""
        estimate_of = dict(zip(self._params(), estimates))
        for group in self.param_groups:
            hs = [self._hessian(p) for p in group["params"]]
            torch._foreach_lerp_(hs, [estimate_of[p] for p in group["params"]], 1.0 - group["betas"][1])

    def _hessian(self, p: Tensor) -> Tensor:
        state = self.state[p]
        if "hessian" not in state:
            state["hessian"] = torch.zeros_like(p)
        return state["hessian"]

    def update_group(self, params: list[Tensor], group: dict[str, Any]) -> None:
        t = group_tensors(self, params, ("exp_avg", "hessian"))
        beta1 = group["betas"][0]
        if group["variant"] == "authors":
            self._authors_step(t, group)
            return
        torch._foreach_lerp_(t.buffers["exp_avg"], t.grads, 1.0 - beta1)
        denom = torch._foreach_mul(t.buffers["hessian"], group["gamma"])
        torch._foreach_clamp_min_(denom, group["eps"])
        update = torch._foreach_div(t.buffers["exp_avg"], 1.0 - beta1**t.step)
        torch._foreach_div_(update, denom)
        torch._foreach_clamp_min_(update, -1.0)
        torch._foreach_clamp_max_(update, 1.0)
        decoupled_step(t.params, update, group["lr"], group["weight_decay"])

    @staticmethod
    def _authors_step(t: Any, group: Mapping[str, Any]) -> None:
        """SophiaG's order: decay, then m (not bias-corrected), then sign(m) min(|m| / (gamma h + eps), 1)."""
        lr, wd = group["lr"], group["weight_decay"]
        if wd:
            torch._foreach_mul_(t.params, 1.0 - lr * wd)
        exp_avgs = t.buffers["exp_avg"]
        torch._foreach_mul_(exp_avgs, group["betas"][0])
        torch._foreach_add_(exp_avgs, t.grads, alpha=1.0 - group["betas"][0])
        denom = torch._foreach_mul(t.buffers["hessian"], group["gamma"])
        torch._foreach_add_(denom, group["eps"])
        ratio = torch._foreach_div(torch._foreach_abs(exp_avgs), denom)
        torch._foreach_clamp_max_(ratio, 1.0)
        torch._foreach_mul_(ratio, torch._foreach_sign(exp_avgs))
        torch._foreach_add_(t.params, ratio, alpha=-lr)


def build(params: list[TaggedParam], hp: Mapping[str, Any], model: torch.nn.Module | None) -> SophiaH:
    groups = decay_groups(params, hp["learning_rate"], hp, betas=(hp["beta1"], hp["beta2"]),
                          eps=hp["epsilon"], gamma=hp["gamma"])
    if hp["hessian_estimator"] not in ESTIMATORS:
        raise UserError(f"bad value for hyperparameter 'hessian_estimator': one of {', '.join(ESTIMATORS)}")
    return SophiaH(groups, lr=hp["learning_rate"], update_interval=hp["update_interval"],
                   estimator=hp["hessian_estimator"], variant=variant_of(hp))


register(OptimizerDef(
    name="sophia",
    family="second-order",
    build=build,
    # The study's Levanter Sophia never clipped gradients (its optimizer chain has no clip step,
    # whatever max_grad_norm its configs list), so clipping is off by default here.
    defaults={**TRAIN_DEFAULTS, "learning_rate": 4e-3, "max_grad_norm": 0.0, "beta1": 0.95, "beta2": 0.9,
              "epsilon": 1e-7, "gamma": 0.0125, "weight_decay": 0.0, "update_interval": 10,
              "hessian_estimator": "hutchinson", "variant": "study"},
    added_later=frozenset({"hessian_estimator", "variant"}),
    choices={"hessian_estimator": tuple(ESTIMATORS)},
    differences=("m: study bias-corrected (Levanter), authors not (SophiaG)",
                 "step: study clip(m / max(gamma h, eps), -1, 1), authors sign(m) min(|m| / (gamma h + eps), 1)"),
    roles={Role.HIDDEN: "Sophia-H, decayed", Role.HEAD: "Sophia-H, decayed",
           Role.EMBEDDING: "Sophia-H, no decay", Role.NORM: "Sophia-H, no decay",
           Role.BIAS: "Sophia-H, no decay"},
    paper="Liu et al., Sophia: A Scalable Stochastic Second-order Optimizer for Language Model "
          "Pre-training, arXiv:2305.14342",
    source="ours: study = the study's Levanter SophiaHConfig (Hutchinson estimator), pinned against "
           "hand-written equations; authors = Liuhong99/Sophia SophiaG (a7e1572), checked step by step "
           "against a float64 transcription; gnb = SophiaG's estimator",
    notes="needs curvature_step(step, model, x) before every step (one extra forward and double "
          "backward every update_interval steps)",
    needs_curvature_pass=True,
))
