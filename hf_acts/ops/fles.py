"""``hf_acts::fles``: practical FleS (papers/fles-poster.md) as a registered op with a CPU kernel
(``csrc/fles.cpp``: the whole op, coefficient MLP included, one sample at a time), a CUDA kernel (the passes of
:mod:`hf_acts.ops.triton_fles` around the MLP in :mod:`hf_acts.ops.fles_math`), a fake implementation and its
autograd. The op returns ``phi`` and the ``(B, C)``-sized intermediates the backward needs (``m``, ``denom``, ``h``,
``t``), so only ``x`` is saved at full size."""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from . import _cpp, direct
from .fles_math import (
    check_input,
    compute_dtype,
    fles_backward_with,
    fles_forward,
    in_compute_dtype,
    inner_positions,
    weight_grads,
)
from .ids import FLES_GATES


def _triton() -> ModuleType:
    from . import triton_fles

    return triton_fles


def _fles_cpu(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, base: str, eps: float
              ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(phi(x), m, denom, h, t)``; ``phi(x) = k_ve rho(k_ho x) x`` with ``[k_ve, k_ho] = 1 + t``."""
    check_input(x, w1)
    return tuple(_cpp.load("fles").forward(x.contiguous(), *in_compute_dtype(x, w1, b1, w2, b2), FLES_GATES[base],
                                           inner_positions(x), eps))


fles = torch.library.custom_op("hf_acts::fles", mutates_args=(), device_types="cpu")(_fles_cpu)


@fles.register_kernel("cuda")
def fles_triton(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, base: str, eps: float
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return fles_forward(x, w1, b1, w2, b2, base, eps, _triton())


@fles.register_fake
def _(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, base: str, eps: float
      ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    b, c, hidden, dtype = x.shape[0], w1.shape[1], w1.shape[0], compute_dtype(x)
    stat = x.new_empty((b, c), dtype=dtype)
    return (torch.empty_like(x, memory_format=torch.contiguous_format), stat, torch.empty_like(stat),
            x.new_empty((b, hidden), dtype=dtype), x.new_empty((b, 2 * c), dtype=dtype))


# The backward takes the forward's inputs, its intermediates (m, denom, h, t) and its non-tensor arguments, as
# hf_acts.ops.direct passes them; eps is unused (denom holds it).
def _fles_backward_cpu(grad: Tensor, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, m: Tensor,
                       denom: Tensor, h: Tensor, t: Tensor, base: str, eps: float
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(dx, d w1, d b1, d w2, d b2)``: ``d k_ve = sum g rho(u) x``, ``d k_ho = sum g k_ve rho'(u) x^2``
    (``u = k_ho x``), through ``1 + tanh`` and the MLP to ``d m``, then
    ``dx = g k_ve (rho(u) + u rho'(u)) + [x > 0] d m / denom``."""
    grad_x, d_pre1, d_pre2 = _cpp.load("fles").backward(
        grad.contiguous(), x.contiguous(), *in_compute_dtype(x, w1, w2), denom, h, t, FLES_GATES[base],
        inner_positions(x))
    with torch.autocast("cpu", enabled=False):  # the weight gradients in the compute dtype, as the MLP ran
        return grad_x, *weight_grads(d_pre1, d_pre2, m, h, w1.dtype)


fles_backward = torch.library.custom_op("hf_acts::fles_backward", mutates_args=(),
                                        device_types="cpu")(_fles_backward_cpu)


@fles_backward.register_kernel("cuda")
def fles_backward_triton(grad: Tensor, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, m: Tensor,
                         denom: Tensor, h: Tensor, t: Tensor, base: str, eps: float
                         ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return fles_backward_with(grad, x, w1, b1, w2, b2, m, denom, h, t, base, _triton())


@fles_backward.register_fake
def _(grad: Tensor, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, m: Tensor, denom: Tensor, h: Tensor,
      t: Tensor, base: str, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    params = (w1, b1, w2, b2)
    return (torch.empty_like(x, memory_format=torch.contiguous_format), *(torch.empty_like(p) for p in params))


# autograd, and the eager fast path (hf_acts.ops.direct: the kernels without the op's dispatch; under no_grad FleS(16)
# on (2, 4, 16) 150 -> 80 us a call, and ResNet-50 FleS at batch 1 ran in 0.91-0.99x of its time through the op)
direct.register(fles, fles_backward, {"cpu": _fles_cpu, "cuda": fles_triton},
                {"cpu": _fles_backward_cpu, "cuda": fles_backward_triton}, saves_outputs=True)
