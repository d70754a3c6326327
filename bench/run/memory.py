"""Memory of one training process of a run, estimated before it starts (the sweep's plan checks it).

Per process (one GPU on CUDA; one CPU process):
- parameters: fp32 master weights, 4 bytes each (bf16 autocast keeps them fp32), counted on a model
  built on the meta device (exact for every architecture, and it allocates nothing);
- gradients: fp32, 4 bytes per parameter;
- optimizer state: bytes per parameter MEASURED from the real optimizer stepped twice over a small
  model of the run's architecture, per parameter role (its name without the layer index), then
  applied to the roles of the real model. State proportional to its parameter (AdamW's two moments,
  Muon's momentum, Lion's) is exact; state that grows as m^2 + n^2 per m x n matrix (SOAP's
  preconditioners) depends on the aspect ratios, which the small model (cpu-xs, i = 4h) shares with
  both ladders; a shape of the user's own with other ratios gets an estimate;
- with fsdp over N processes those three are divided by N (sharded); with ddp each has all of them;
- activations saved for the backward at the micro-batch (ACTIVATION_VALUES_PER_LAYER), 2 bytes a
  value in bf16 (CUDA) or 4 in fp32 (CPU), plus the head's logits (LOGIT_BYTES per token).
Not counted: the CUDA context and the allocator's fragmentation (the plan leaves DEVICE_HEADROOM of
the device free for them) and the transient buffers of one layer's backward.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch

from bench.model.build import build_model
from bench.model.scales import Scale

DEVICE_HEADROOM = 0.10  # of a device's memory kept free: CUDA context, allocator fragmentation
SMALL_HIDDEN = 32  # cpu-xs's: the model the optimizer state is measured on
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


def optimizer_state_bytes(optimizer: str, scale: Scale, vocab: int) -> int:
    """The optimizer's state over the whole model, from its measured bytes per parameter role."""
    # the small model's vocabulary keeps the embedding's aspect ratio (SOAP's state depends on it)
    small_vocab = max(8, round(vocab * SMALL_HIDDEN / scale.hidden))
    try:
        per_role, overall = state_per_parameter(optimizer, scale.arch, _arch_options(scale), small_vocab)
    except Exception:  # it fails its own runs; the plan counts AdamW's two fp32 moments for it
        per_role, overall = {}, FALLBACK_STATE_BYTES
    return round(sum(per_role.get(_role(n), overall) * p.numel()
                     for n, p in _meta_model(scale, vocab).named_parameters()))


def activation_bytes(scale: Scale, vocab: int, sequences: int, value_bytes: int) -> int:
    """Saved activations of one forward over `sequences` sequences (module doc)."""
    tokens = sequences * scale.seq_len
    trunk = scale.layers * activation_values_per_layer(scale) + 3 * scale.hidden  # + embedding, final norm
    return tokens * (trunk * value_bytes + LOGIT_BYTES * vocab)


def process_memory(optimizer: str, scale: Scale, vocab: int, sequences: int, procs: int = 1,
                   parallel: str = "ddp", device: str = "cuda") -> Memory:
    """One process's memory with `sequences` per micro-batch; fsdp shards the model over `procs`."""
    shards = procs if parallel == "fsdp" else 1
    params = param_count(scale, vocab)
    value_bytes = 2 if device == "cuda" else 4  # bf16 autocast on CUDA, fp32 on CPU (RunSpec)
    return Memory(-(-4 * params // shards), -(-4 * params // shards),
                  -(-optimizer_state_bytes(optimizer, scale, vocab) // shards),
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
    its defaults over a 2-layer cpu-xs model of `arch` (SMALL_HIDDEN wide) and `vocab`, stepped twice (some build their state on the
    first step), its state tensors summed per parameter. State kept under other keys than the
    parameters is spread over all of them."""
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
    """Bytes of the distinct tensors in obj (nested dicts, lists, tuples)."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        key = (obj.untyped_storage().data_ptr(), obj.nbytes) if obj.device.type != "meta" else id(obj)
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


def _arch_options(scale: Scale) -> tuple:
    """The options a small model of the architecture keeps: an MoE's expert counts (widths scale)."""
    if scale.arch == "moe":
        return (("experts", scale.experts), ("top_k", scale.top_k), ("shared_experts", scale.shared_experts))
    return ()


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
