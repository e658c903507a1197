"""Practical FleS (papers/fles-poster.md) around four pass kernels, with no op registration: the CUDA math of the
``hf_acts::fles`` op (:mod:`hf_acts.ops.fles`) and of the Kernel Hub layer (:mod:`hf_acts.ops.hub_layers`).

``kernels`` is :mod:`hf_acts.ops.triton_fles`, which provides ``stats``, ``apply``, ``coef_grads`` and
``input_grad`` (the CPU kernel, ``csrc/fles.cpp``, runs the same steps per sample, the MLP included).
Forward: the positive channel statistics ``m = sum relu(x) / (count(x > 0) + eps)`` (one pass), the coefficient MLP
``[k_ve, k_ho] = 1 + tanh(fc2(relu(fc1(m))))`` on ``(B, C)`` matrices, then ``phi(x) = k_ve rho(k_ho x) x`` (one pass).
Backward: the coefficient gradients (one pass), the MLP's backward, the input gradient (one pass). Images
``(B, C, H, W)`` and tokens ``(B, N, C)``; the arithmetic is in float32 (float64 for float64).
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

from .ids import FLES_GATES


def inner_positions(x: Tensor) -> int:
    """Positions per channel that are contiguous in memory: H*W for images, 1 for tokens."""
    return x.shape[2] * x.shape[3] if x.ndim == 4 else 1


def check_input(x: Tensor, w1: Tensor) -> None:
    if x.ndim not in (3, 4) or x.shape[1 if x.ndim == 4 else -1] != w1.shape[1]:
        raise ValueError(f"fles: expected images (B, C, H, W) or tokens (B, N, C) with C={w1.shape[1]}, "
                         f"got {tuple(x.shape)}")


def _coefficient_mlp(pos: Tensor, count: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, eps: float
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(m, denom, h, t)`` with ``m = pos / denom``, ``h = relu(fc1(m))``, ``t = tanh(fc2(h))``."""
    dtype = pos.dtype
    denom = count.to(dtype) + eps
    m = pos / denom
    h = F.relu(F.linear(m, w1.to(dtype), b1.to(dtype)))
    t = torch.tanh(F.linear(h, w2.to(dtype), b2.to(dtype)))
    return m, denom, h, t


def compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def in_compute_dtype(x: Tensor, *params: Tensor) -> list[Tensor]:
    """``params`` contiguous in ``x``'s compute dtype, as the C++ kernels take their weights."""
    dtype = compute_dtype(x)
    return [p.to(dtype).contiguous() for p in params]


def fles_forward(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, base: str, eps: float,
                 kernels: ModuleType) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The op's forward with the given pass ``kernels`` (C++ or Triton). Autocast is off inside: the coefficient
    MLP runs in the compute dtype whatever the caller's autocast (the fake implementation promises that)."""
    with torch.autocast(x.device.type, enabled=False):
        return _forward(x, w1, b1, w2, b2, base, eps, kernels)


def _forward(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, base: str, eps: float, kernels: ModuleType
             ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    check_input(x, w1)
    x = x.contiguous()
    pos, count = kernels.stats(x, w1.shape[1], inner_positions(x))
    m, denom, h, t = _coefficient_mlp(pos.to(compute_dtype(x)), count, w1, b1, w2, b2, eps)
    k_ve, k_ho = (k.contiguous() for k in (1.0 + t).chunk(2, dim=-1))
    return kernels.apply(x, k_ve, k_ho, FLES_GATES[base], inner_positions(x)), m, denom, h, t


def fles_backward_with(grad: Tensor, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, m: Tensor,
                       denom: Tensor, h: Tensor, t: Tensor, base: str, kernels: ModuleType
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The op's backward with the given pass ``kernels`` (C++ or Triton), autocast off as in the forward."""
    with torch.autocast(x.device.type, enabled=False):
        return _backward(grad, x, w1, w2, m, denom, h, t, base, kernels)


def _backward(grad: Tensor, x: Tensor, w1: Tensor, w2: Tensor, m: Tensor, denom: Tensor, h: Tensor, t: Tensor,
              base: str, kernels: ModuleType) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    x, grad = x.contiguous(), grad.contiguous()
    gate, inner = FLES_GATES[base], inner_positions(x)
    k_ve, k_ho = (k.contiguous() for k in (1.0 + t).chunk(2, dim=-1))
    d_ve, d_ho = kernels.coef_grads(grad, x, k_ve, k_ho, gate, inner)
    d_pre2 = torch.cat([d_ve, d_ho], dim=-1).to(t.dtype) * (1.0 - t * t)  # through 1 + tanh
    d_pre1 = (d_pre2 @ w2.to(t.dtype)) * (h > 0)  # through the hidden ReLU
    d_m = d_pre1 @ w1.to(t.dtype)
    grad_x = kernels.input_grad(grad, x, k_ve, k_ho, (d_m / denom).contiguous(), gate, inner)
    return grad_x, *weight_grads(d_pre1, d_pre2, m, h, w1.dtype)


def weight_grads(d_pre1: Tensor, d_pre2: Tensor, m: Tensor, h: Tensor, dtype: torch.dtype
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(d w1, d b1, d w2, d b2)`` of the coefficient MLP from the gradients at fc1's and fc2's outputs (summed over
    the batch), in ``dtype``."""
    return tuple(g.to(dtype) for g in (d_pre1.T @ m, d_pre1.sum(0), d_pre2.T @ h, d_pre2.sum(0)))
