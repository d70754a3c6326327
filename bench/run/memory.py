"""Memory of one training process of a run, estimated before it starts (the sweep's plan checks it).

Per process (one GPU on CUDA; one CPU process):
- parameters: fp32 master weights, 4 bytes each (bf16 autocast keeps them fp32), counted on a model
  built on the meta device (exact for every architecture, and it allocates nothing);
- gradients: fp32, 4 bytes per parameter;
- optimizer state: bytes per parameter MEASURED from the real optimizer stepped twice over a
  2-layer model of the run's architecture, per parameter role (its name without the layer index),
  then applied to the roles of the real model. The 2-layer model has the real width up to
  MEASURE_HIDDEN (256) and the real vocabulary, so up to that width every optimizer's state is
  exact. Wider, it is 256 wide with the real MLP ratio: exact for state proportional to its
  parameter (AdamW's moments, Muon's momentum, Lion's) and for SOAP's and Kron's, whose
  preconditioners are per block of at most 256 x 256 (their default block_size), where the real
  sizes are multiples of 256 (every paper scale's); an estimate otherwise;
- with ddp every process has all three. With fsdp over N processes (bench.run.distributed.Sharded)
  a process keeps the whole master copy and its whole gradients too (each parameter's owner steps
  it whole), plus its 1/N shard of both for FSDP's forward and backward; only the optimizer state
  is split, each parameter's on its owner (all of it on every process for the optimizers stepped
  on every rank: distributed.REPLICATED and those from outside bench/optimizers);
- activations saved for the backward at the micro-batch (ACTIVATION_VALUES_PER_LAYER), 2 bytes a
  value in bf16 (CUDA) or 4 in fp32 (CPU), plus the head's logits (LOGIT_BYTES per token).
Not counted: the CUDA context and the allocator's fragmentation (the plan leaves DEVICE_HEADROOM of
the device free for them) and the transient buffers of one layer's backward.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import torch

from bench.model.build import build_model
from bench.model.scales import Scale

DEVICE_HEADROOM = 0.10  # of a device's memory kept free: CUDA context, allocator fragmentation
MEASURE_HIDDEN = 256  # the widest model the optimizer state is measured on (module doc)
FALLBACK_STATE_BYTES = 8.0  # per parameter, for an optimizer that cannot be stepped on the small model
LOGIT_BYTES = 12  # per token and vocabulary entry: the logits in fp32, their log-softmax, its gradient


def activation_values_per_layer(scale: Scale) -> int:
    """Values one token saves for the backward in one block (Llama's, bench/model/llama.py):
    attention: the norm's input and output, rotated q and k, v, SDPA's output and its reshaped copy
    (7h); MLP: the norm's input and output (2h), gate and up outputs, silu(gate), their product
    (4m), m the MLP width a token goes through (MoE: its top_k + shared experts'). MLA's latents
    are smaller than the q, k, v they replace, so this is an upper bound for it."""
    m = scale.intermediate
    if scale.arch == "moe":
        m = scale.expert_intermediate * (scale.top_k + scale.shared_experts)
    return 9 * scale.hidden + 4 * m


@dataclass(frozen=True)
class Memory:
    """Bytes of one process, by kind."""

    params: int
    grads: int
    state: int
    activations: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.state + self.activations


def param_count(scale: Scale, vocab: int) -> int:
    """Every parameter of the model (embeddings, head and norm gains included)."""
    return sum(p.numel() for p in _meta_model(scale, vocab).parameters())


def block_param_count(scale: Scale, vocab: int) -> int:
    """The parameters inside the transformer blocks (the rest: embeddings, head, final norm)."""
    return sum(p.numel() for p in _meta_model(scale, vocab).layers.parameters())


def optimizer_state_bytes(optimizer: str, scale: Scale, vocab: int, procs: int = 1,
                          parallel: str = "ddp") -> int:
    """The optimizer's state on one process, from its measured bytes per parameter role: the whole
    model's, or under fsdp its most loaded owner's share (bench.run.distributed.owners)."""
    from bench.run.distributed import owners, stepped_everywhere

    numels, state = zip(*_state_by_parameter(optimizer, scale, vocab))
    if parallel != "fsdp" or procs <= 1 or stepped_everywhere(optimizer):
        return round(sum(state))
    owner = owners(list(numels), procs)
    return round(max(sum(b for b, o in zip(state, owner) if o == r) for r in range(procs)))


def _state_by_parameter(optimizer: str, scale: Scale, vocab: int) -> list[tuple[int, float]]:
    """(elements, state bytes) of every parameter of the model, in the model's order."""
    try:
        per_role, overall = state_per_parameter(optimizer, scale.arch, _measured_shape(scale), vocab)
    except Exception:  # it fails its own runs; the plan counts AdamW's two fp32 moments for it
        per_role, overall = {}, FALLBACK_STATE_BYTES
    return [(p.numel(), per_role.get(_role(n), overall) * p.numel())
            for n, p in _meta_model(scale, vocab).named_parameters()]


def activation_bytes(scale: Scale, vocab: int, sequences: int, value_bytes: int) -> int:
    """Saved activations of one forward over `sequences` sequences (module doc)."""
    tokens = sequences * scale.seq_len
    trunk = scale.layers * activation_values_per_layer(scale) + 3 * scale.hidden  # + embedding, final norm
    return tokens * (trunk * value_bytes + LOGIT_BYTES * vocab)


def process_memory(optimizer: str, scale: Scale, vocab: int, sequences: int, procs: int = 1,
                   parallel: str = "ddp", device: str = "cuda") -> Memory:
    """One process's memory with `sequences` per micro-batch, its run spread over `procs` (module
    doc: under fsdp the master copy and its gradients stay whole, the state is split)."""
    params = 4 * param_count(scale, vocab)
    if parallel == "fsdp" and procs > 1:
        params += -(-params // procs)  # the process's FSDP shard beside the master copy
    value_bytes = 2 if device == "cuda" else 4  # bf16 autocast on CUDA, fp32 on CPU (RunSpec)
    return Memory(params, params, optimizer_state_bytes(optimizer, scale, vocab, procs, parallel),
                  activation_bytes(scale, vocab, sequences, value_bytes))


def available_ram() -> int:
    """Bytes of memory this machine can give without swapping (MemAvailable), else its total."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@functools.lru_cache(maxsize=None)
def state_per_parameter(optimizer: str, arch: str, options: tuple = (),
                        vocab: int = 256) -> tuple[dict[str, float], float]:
    """({role: state bytes per parameter}, over all parameters) of `optimizer`, measured: built with
    its defaults over a 2-layer model of `arch` with the model fields `options` (_measured_shape)
    and `vocab`, stepped twice (some build their state on the first step), its state tensors
    summed per parameter. State kept under other keys than the parameters is spread over all."""
    from bench.optimizers.registry import get
    from bench.run.spec import RunSpec
    from bench.run.step import train_step

    spec = RunSpec(optimizer, "cpu-xs", model={"arch": arch, **dict(options), "layers": 2, "seq_len": 16})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(spec.shape, vocab)
        definition = get(optimizer)
        opt = definition.build(model.tagged_parameters(), spec.hparams, model)
        batch = torch.randint(0, vocab, (4, spec.shape.seq_len + 1))
        for step in range(2):
            train_step(model, opt, batch, step, curvature=definition.needs_curvature_pass)
    named = dict(model.named_parameters())
    total = sum(p.numel() for p in named.values())
    by_param = {id(p): _tensor_bytes(s) for p, s in opt.state.items()}
    state = _tensor_bytes(list(opt.state.values()))
    known = {id(p) for p in named.values()}
    spread = max(0, state - sum(b for k, b in by_param.items() if k in known)) / total
    roles: dict[str, list[float]] = {}
    for name, p in named.items():
        role = roles.setdefault(_role(name), [0.0, 0])
        role[0] += by_param.get(id(p), 0) + spread * p.numel()
        role[1] += p.numel()
    overall = state / total
    return {role: b / n for role, (b, n) in roles.items()}, overall


def _tensor_bytes(obj, seen: set | None = None) -> int:
    """Bytes of the distinct tensors in obj (nested dicts, lists, tuples). A tensor is its own
    memory (its address and size), not its storage's: Kron keeps its blocks' factors as slices of
    one stacked tensor, and slices of equal size must count once each, not once together."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        key = (obj.data_ptr(), obj.nbytes) if obj.device.type != "meta" else id(obj)
        if key in seen:
            return 0
        seen.add(key)
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(o, seen) for o in obj)
    return 0


def _role(name: str) -> str:
    """A parameter's name without its layer (or expert) index: layers.3.attn.wq.weight -> layers.*.attn.wq.weight."""
    return re.sub(r"\.\d+(?=\.|$)", ".*", name)


def _measured_shape(scale: Scale) -> tuple:
    """The model fields of the 2-layer model the state is measured on (module doc): the width up to
    MEASURE_HIDDEN with the real MLP ratio, and an MoE's expert counts (its widths follow)."""
    hidden = min(scale.hidden, MEASURE_HIDDEN)
    shape = (("hidden", hidden), ("intermediate", max(1, scale.intermediate * hidden // scale.hidden)),
             ("heads", math.gcd(hidden, scale.heads)))
    if scale.arch == "moe":
        shape += (("experts", scale.experts), ("top_k", scale.top_k), ("shared_experts", scale.shared_experts))
    return shape


@functools.lru_cache(maxsize=8)
def _meta_model(scale: Scale, vocab: int):
    with torch.device("meta"):
        return build_model(scale, vocab)


def measured_peak(optimizer: str, scale: Scale, vocab: int, sequences: int) -> tuple[int | None, str]:
    """(peak bytes, how) of one real bf16 training step of one process on the visible GPU at
    `sequences` per micro-batch: the estimate's check where a GPU is there. (None, why) when it is
    out of memory, or the step fails."""
    from bench.optimizers.registry import get
    from bench.run.spec import RunSpec
    from bench.run.step import train_step

    model = opt = batch = None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        with torch.device("cuda"):
            model = build_model(scale, vocab)
        definition = get(optimizer)
        opt = definition.build(model.tagged_parameters(), RunSpec(optimizer, "cpu-xs").hparams, model)
        batch = torch.randint(0, vocab, (sequences, scale.seq_len + 1), device="cuda")
        train_step(model, opt, batch, 0, autocast=torch.autocast("cuda", dtype=torch.bfloat16),
                   curvature=definition.needs_curvature_pass)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(), f"measured: one {optimizer} step on the visible GPU"
    except torch.cuda.OutOfMemoryError:
        return None, f"measured: out of memory in one {optimizer} step on the visible GPU"
    except Exception as e:  # the estimate stands; the measurement says why it is missing
        return None, f"not measured ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})"
    finally:
        del model, opt, batch
        torch.cuda.empty_cache()
