"""Known GPUs, for planning a sweep on a machine that has none (`optbench sweep --gpu NAME`).

Each has its memory and its dense bf16 tensor-core peak from the vendor's datasheet. Datasheet "GB"
of HBM are counted as GiB: torch reports an 80 GB H100 as 79.1 GiB and a 141 GB H200 as 139.7 GiB.
A visible GPU is read from the device itself (its memory measured, its peak from this table).
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.errors import UserError

GIB = 2**30
DEFAULT_GPU = "H100"


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_bytes: int
    bf16_flops: float | None  # dense peak; None for a visible card this table does not know
    visible: bool = False  # read from a device of this machine
    link_bytes_s: float | None = None  # to the other GPUs of its node, each way (bench.run.comms)


# name -> (memory in GiB, dense bf16 FLOP/s, link to the node's other GPUs in bytes/s each way).
# Sources, NVIDIA datasheets: H100 Tensor Core GPU (SXM 80 GB HBM3: BF16 1,979 TFLOPS with sparsity,
# so 989 dense, NVLink 900 GB/s; PCIe 80 GB: 1,513 with sparsity, 756 dense, PCIe Gen5 128 GB/s);
# H200 Tensor Core GPU (141 GB HBM3e, BF16 1,979 with sparsity, NVLink 900 GB/s); A100 Tensor Core
# GPU (40 or 80 GB, BF16 312 TFLOPS dense, 624 with sparsity, SXM NVLink 600 GB/s); L40S (48 GB
# GDDR6, BF16 362.05 TFLOPS dense, 733 with sparsity, PCIe Gen4 x16 64 GB/s). Link figures are both
# ways together: half each way. The PCIe H100 is planned without its optional NVLink bridge.
KNOWN: dict[str, tuple[float, float, float]] = {
    "H100": (80, 989e12, 450e9),
    "H100-PCIe": (80, 756e12, 64e9),
    "H200": (141, 989e12, 450e9),
    "A100-80GB": (80, 312e12, 300e9),
    "A100-40GB": (40, 312e12, 300e9),
    "L40S": (48, 362e12, 32e9),
}
# a visible device's name (torch.cuda.get_device_name) -> its entry: the first substring wins, so
# the PCIe H100 and the 40 GB A100 come before their siblings
_BY_DEVICE_NAME = [("H100 PCIe", "H100-PCIe"), ("H100", "H100"), ("H200", "H200"),
                   ("A100-SXM4-40GB", "A100-40GB"), ("A100-PCIE-40GB", "A100-40GB"), ("A100", "A100-80GB"),
                   ("L40S", "L40S")]


def known_gpu(name: str) -> Gpu:
    """The table's GPU of `name` (any case); unknown: a one-line UserError naming the known ones."""
    key = next((k for k in KNOWN if k.lower() == name.strip().lower()), None)
    if key is None:
        raise UserError(f"unknown GPU {name!r}; known: {', '.join(KNOWN)}")
    memory, peak, link = KNOWN[key]
    return Gpu(key, int(memory * GIB), peak, link_bytes_s=link)


def planned_gpu(name: str | None) -> Gpu:
    """The GPU a plan is for: `name` from the table when given, else the visible GPU (its memory
    measured), else the default (H100)."""
    if name:
        return known_gpu(name)
    import torch

    if not torch.cuda.is_available():
        return known_gpu(DEFAULT_GPU)
    device = torch.cuda.get_device_name(0)
    key = next((k for sub, k in _BY_DEVICE_NAME if sub in device), None)
    peak, link = KNOWN[key][1:] if key else (None, None)
    return Gpu(device, torch.cuda.get_device_properties(0).total_memory, peak, visible=True,
               link_bytes_s=link)
