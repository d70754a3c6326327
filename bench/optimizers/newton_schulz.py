"""Newton-Schulz orthogonalisation, shared by the Muon family.

The quintic iteration X <- aX + (bA + cA^2)X with A = XX^T and (a, b, c) = (3.4445, -4.7750, 2.0315),
from Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024), checked against
KellerJordan/Muon (muon.py, zeropower_via_newtonschulz5) and torch.optim.Muon. It maps G = USV^T to
approximately U S' V^T with S' in about [0.7, 1.2]: not exactly orthogonal, by design, for speed.
"""
from __future__ import annotations

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
# On CPU, bf16 (the reference's working precision) is faster from 64-wide matrices up and slower
# below (AVX-512 bf16, 2 threads, 5 steps: 16 x 64x64 0.85 vs 1.55 ms fp32, 16 x 128x128 3.2 vs
# 8.3 ms; 16 x 32x32 0.67 vs 0.33 ms), so smaller matrices stay in fp32.
CPU_BF16_FROM = 64


def ns_dtype(x: torch.Tensor) -> torch.dtype:
    """The working precision for orthogonalising x: bf16 on CUDA and for CPU matrices at least
    CPU_BF16_FROM on both sides, x's own dtype otherwise."""
    return torch.bfloat16 if x.is_cuda or min(x.shape[-2:]) >= CPU_BF16_FROM else x.dtype


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """Approximately orthogonalise the last two dims of `g` (batched over leading dims).

    `dtype` is the working precision (bf16 on GPUs; fp32 is faster for small matrices on CPU).
    The result has g's dtype.
    """
    if g.ndim < 2:
        raise ValueError("newton_schulz needs a matrix (or a batch of matrices)")
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype or g.dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the wide orientation so A = XX^T is the small Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)  # spectral norm <= Frobenius norm <= 1
    batch_shape = x.shape[:-2]
    x = x.reshape(-1, *x.shape[-2:])
    for _ in range(steps):
        gram = x @ x.mT
        # b A + c A^2 and a X + B X, each one fused multiply-add in BLAS, as torch.optim.Muon does
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, poly, x, beta=a)
    x = x.reshape(*batch_shape, *x.shape[-2:])
    if tall:
        x = x.mT
    return x.to(g.dtype)


def muon_scale(shape: torch.Size) -> float:
    """The study's (and KellerJordan/Muon's) update scale: sqrt(max(1, rows / cols))."""
    rows, cols = shape[-2], shape[-1]
    return max(1.0, rows / cols) ** 0.5
