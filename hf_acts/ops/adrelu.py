"""``hf_acts::adrelu``: ADReLU (papers/adrelu.md, Eqs. 1-6) as a registered op on ``(B, C, H, W)`` maps, with a
CPU kernel (``csrc/adrelu.cpp``: the whole chain, sample by sample in cache), a CUDA implementation (cuBLAS /
cuDNN for the convolutions, :mod:`hf_acts.ops.triton_adrelu` for the attention, the final GroupNorm + max and their
backward), a fake implementation and its autograd. Both directions save only ``x`` (and the weights): the backward
recomputes. On the CPU, bfloat16 / float16 maps are read and written in their dtype and computed in float32 one
sample at a time (as the plain path computes there); the weights are passed in float32.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from . import _cpp, direct
from .fles_math import in_compute_dtype  # one rule for the C++ kernels: float64 stays, the rest runs in float32


def _adrelu_cpu(x: Tensor, qkv: Tensor, dw: Tensor, norm_dw_w: Tensor, norm_dw_b: Tensor, proj: Tensor,
                norm_w: Tensor, norm_b: Tensor, groups: int, head_dim: int, norm_groups: int, eps: float, eps_dw: float,
                eps_norm: float) -> Tensor:
    """``max(x, tau)``, ``tau = GN(conv1x1_g(GN(DW(sigmoid(<Qn, Kn>) V))))`` (Eqs. 1-6)."""
    params = in_compute_dtype(x, qkv, dw, norm_dw_w, norm_dw_b, proj, norm_w, norm_b)
    config = (groups, head_dim, norm_groups, eps, eps_dw, eps_norm)
    return _cpp.load("adrelu").forward(x.contiguous(), params, *config)


adrelu = torch.library.custom_op("hf_acts::adrelu", mutates_args=(), device_types="cpu")(_adrelu_cpu)


class _Chain(NamedTuple):
    """Eqs. 2-5's intermediates on CUDA, and the weights as they ran (in the maps' dtype)."""
    qkv: Tensor
    dw: Tensor
    norm_dw_w: Tensor
    proj: Tensor
    padding: list[int]
    q: Tensor  # the QKV conv's output, Q | K | V per group
    a: Tensor  # Eq. 2
    z: Tensor  # Eq. 3
    zh: Tensor  # Eq. 4, with its statistics
    mean_dw: Tensor
    rstd_dw: Tensor
    t: Tensor  # Eq. 5


def _cuda_chain(x: Tensor, qkv: Tensor, dw: Tensor, norm_dw_w: Tensor, norm_dw_b: Tensor, proj: Tensor,
                groups: int, head_dim: int, norm_groups: int, eps: float, eps_dw: float) -> _Chain:
    """Eqs. 2-5 on CUDA for contiguous ``x``: cuBLAS for the grouped 1x1 convs, Triton for the attention, cuDNN for
    the depthwise conv, ATen's GroupNorm."""
    from ..activations.adrelu import grouped_pointwise
    from . import triton_adrelu

    b, c, h, w = x.shape
    qkv, dw, norm_dw_w, proj = (p.to(x.dtype) for p in (qkv, dw, norm_dw_w, proj))
    padding = [dw.shape[2] // 2, dw.shape[3] // 2]
    q = grouped_pointwise(x, qkv, groups)
    a = triton_adrelu.attention(q, groups, head_dim, eps)
    z = torch.nn.functional.conv2d(a, dw, padding=padding, groups=c)
    zh, mean_dw, rstd_dw = torch.native_group_norm(z, norm_dw_w, norm_dw_b.to(x.dtype), b, c, h * w, norm_groups,
                                                   eps_dw)
    return _Chain(qkv, dw, norm_dw_w, proj, padding, q, a, z, zh, mean_dw, rstd_dw, grouped_pointwise(zh, proj, groups))


@adrelu.register_kernel("cuda")
def adrelu_cuda(x: Tensor, qkv: Tensor, dw: Tensor, norm_dw_w: Tensor, norm_dw_b: Tensor, proj: Tensor,
                norm_w: Tensor, norm_b: Tensor, groups: int, head_dim: int, norm_groups: int, eps: float,
                eps_dw: float, eps_norm: float) -> Tensor:
    """Eqs. 2-5 (:func:`_cuda_chain`), then Eqs. 6 and 1 in one Triton pass (tau is never written)."""
    from . import triton_adrelu

    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        x = x.contiguous()  # tokens arrive as a transposed (B, C, 1, N) view
        t = _cuda_chain(x, qkv, dw, norm_dw_w, norm_dw_b, proj, groups, head_dim, norm_groups, eps, eps_dw).t
        return triton_adrelu.norm_max(x, t, groups, norm_w, norm_b, eps_norm)  # Eqs. 6, 1


@adrelu.register_fake
def _(x: Tensor, qkv: Tensor, dw: Tensor, norm_dw_w: Tensor, norm_dw_b: Tensor, proj: Tensor, norm_w: Tensor,
      norm_b: Tensor, groups: int, head_dim: int, norm_groups: int, eps: float, eps_dw: float, eps_norm: float
      ) -> Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _adrelu_backward_cpu(grad: Tensor, x: Tensor, qkv: Tensor, dw: Tensor, norm_dw_w: Tensor, norm_dw_b: Tensor,
                         proj: Tensor, norm_w: Tensor, norm_b: Tensor, groups: int, head_dim: int, norm_groups: int,
                         eps: float, eps_dw: float, eps_norm: float) -> list[Tensor]:
    """``[dx, d qkv, d dw, d norm_dw_w, d norm_dw_b, d proj, d norm_w, d norm_b]`` (recomputing the forward)."""
    weights = [qkv, dw, norm_dw_w, norm_dw_b, proj, norm_w, norm_b]
    params = in_compute_dtype(x, *weights)
    config = (groups, head_dim, norm_groups, eps, eps_dw, eps_norm)
    grads = _cpp.load("adrelu").backward(grad.to(x.dtype).contiguous(), x.contiguous(), params, *config)
    return [g.to(t.dtype) for g, t in zip(grads, [x, *weights], strict=True)]


adrelu_backward = torch.library.custom_op("hf_acts::adrelu_backward", mutates_args=(),
                                          device_types="cpu")(_adrelu_backward_cpu)


def _grouped_pointwise_backward(grad: Tensor, inputs: Tensor, weight: Tensor, groups: int) -> tuple[Tensor, Tensor]:
    """The input's and the weight's gradients of ``grouped_pointwise(inputs, weight, groups)`` (``weight`` already in
    the maps' dtype): ``W_g^T grad_g`` and ``sum_b grad_g inputs_g^T`` per conv group, batched matmuls on cuBLAS."""
    b, c, h, w = inputs.shape
    out = weight.shape[0]
    grad_g = grad.reshape(b, groups, out // groups, h * w)
    inputs_g = inputs.reshape(b, groups, c // groups, h * w)
    grad_inputs = torch.matmul(weight.view(groups, out // groups, c // groups).transpose(1, 2), grad_g)
    grad_weight = torch.matmul(grad_g, inputs_g.transpose(2, 3)).sum(0, dtype=torch.float32)
    return grad_inputs.view(b, c, h, w), grad_weight.view(weight.shape)


@adrelu_backward.register_kernel("cuda")
def adrelu_backward_cuda(grad: Tensor, x: Tensor, qkv: Tensor, dw: Tensor, norm_dw_w: Tensor, norm_dw_b: Tensor,
                         proj: Tensor, norm_w: Tensor, norm_b: Tensor, groups: int, head_dim: int, norm_groups: int,
                         eps: float, eps_dw: float, eps_norm: float) -> list[Tensor]:
    """Recompute Eqs. 2-5 as :func:`adrelu_cuda` runs them, then apply the chain rule backwards, one kernel per step:
    Triton for Eqs. 1 and 2 (:mod:`hf_acts.ops.triton_adrelu`), cuBLAS for the grouped 1x1 convs and their weight
    gradients, ATen's GroupNorm and convolution backward kernels for Eqs. 3, 4 and 6; no autograd graph is built
    (a kernel runs below the autograd dispatch key)."""
    from . import triton_adrelu

    aten = torch.ops.aten
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        x = x.contiguous()
        b, c, h, w = x.shape
        v = _cuda_chain(x, qkv, dw, norm_dw_w, norm_dw_b, proj, groups, head_dim, norm_groups, eps, eps_dw)
        t = v.t
        mean, rstd = triton_adrelu.group_stats(t, groups, eps_norm)  # Eq. 6, as the forward takes them
        grad_x, grad_tau = triton_adrelu.split_grad(grad.to(x.dtype), x, t, mean, rstd, groups, norm_w,
                                                    norm_b)  # Eq. 1
        grad_t, grad_norm_w, grad_norm_b = aten.native_group_norm_backward(
            grad_tau, t, mean.to(x.dtype), rstd.to(x.dtype), norm_w.to(x.dtype), b, c, h * w, groups,
            [True, True, True])  # Eq. 6
        grad_zh, grad_proj = _grouped_pointwise_backward(grad_t, v.zh, v.proj, groups)  # Eq. 5
        grad_z, grad_norm_dw_w, grad_norm_dw_b = aten.native_group_norm_backward(
            grad_zh, v.z, v.mean_dw, v.rstd_dw, v.norm_dw_w, b, c, h * w, norm_groups,
            [True, True, True])  # Eq. 4
        grad_a, grad_dw, _ = aten.convolution_backward(grad_z, v.a, v.dw, None, [1, 1], v.padding, [1, 1],
                                                       False, [0, 0], c, [True, True, False])  # Eq. 3
        grad_q = triton_adrelu.attention_backward(v.q, grad_a, groups, head_dim, eps)  # Eq. 2
        grad_in, grad_qkv = _grouped_pointwise_backward(grad_q, x, v.qkv, groups)
        grads = [grad_x + grad_in, grad_qkv, grad_dw, grad_norm_dw_w, grad_norm_dw_b, grad_proj, grad_norm_w,
                 grad_norm_b]
        return [g.to(p.dtype) for g, p in zip(grads, [x, qkv, dw, norm_dw_w, norm_dw_b, proj, norm_w, norm_b],
                                               strict=True)]


@adrelu_backward.register_fake
def _(grad: Tensor, x: Tensor, qkv: Tensor, dw: Tensor, norm_dw_w: Tensor, norm_dw_b: Tensor, proj: Tensor,
      norm_w: Tensor, norm_b: Tensor, groups: int, head_dim: int, norm_groups: int, eps: float, eps_dw: float,
      eps_norm: float) -> list[Tensor]:
    return [torch.empty_like(t, memory_format=torch.contiguous_format)
            for t in (x, qkv, dw, norm_dw_w, norm_dw_b, proj, norm_w, norm_b)]


direct.register(adrelu, adrelu_backward, {"cpu": _adrelu_cpu, "cuda": adrelu_cuda},
                {"cpu": _adrelu_backward_cpu, "cuda": adrelu_backward_cuda})
