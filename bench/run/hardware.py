"""What hardware a run ran on: the CPU's or the GPU's model name. Floating-point kernels differ
between CPU families and GPU models, so losses agree to the last bit only on the same hardware;
results record it, and analysis says when a comparison's runs came from several."""
from __future__ import annotations

import platform


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; platform.processor() is empty there), else the
    architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def device_model(device: str) -> str:
    """The model of what `device` ("cpu", "cuda", "cuda:1") computes on; the device must exist."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model()
