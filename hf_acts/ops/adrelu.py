"""``hf_acts::adrelu``: ADReLU (papers/adrelu.md, Eqs. 1-6) as a registered op on ``(B, C, H, W)`` maps, with a
CPU kernel (``csrc/adrelu.cpp``: the whole chain, sample by sample in cache), a CUDA implementation (cuBLAS /
cuDNN for the convolutions, :mod:`hf_acts.ops.triton_adrelu` for the attention and the final GroupNorm + max), a
fake implementation and its autograd. Both directions save only ``x`` (and the weights): the backward recomputes.
On the CPU, bfloat16 / float16 maps are read and written in their dtype and computed in float32 one sample at a
time (as the plain path computes there); the weights are passed in float32.
"""

from __future__ import annotations

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


@adrelu.register_kernel("cuda")
def adrelu_cuda(x: Tensor, qkv: Tensor, dw: Tensor, norm_dw_w: Tensor, norm_dw_b: Tensor, proj: Tensor,
                norm_w: Tensor, norm_b: Tensor, groups: int, head_dim: int, norm_groups: int, eps: float,
                eps_dw: float, eps_norm: float) -> Tensor:
    """Eqs. 2-5 with the attention in Triton, then Eqs. 6 and 1 in one Triton pass (tau is never written)."""
    import torch.nn.functional as F

    from ..activations.adrelu import grouped_pointwise
    from . import triton_adrelu

    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        w = lambda p: p.to(x.dtype)  # noqa: E731
        a = triton_adrelu.attention(grouped_pointwise(x, w(qkv), groups), groups, head_dim, eps)  # Eq. 2
        z = F.conv2d(a, w(dw), padding=(dw.shape[2] // 2, dw.shape[3] // 2), groups=x.shape[1])  # Eq. 3
        z = F.group_norm(z, norm_groups, w(norm_dw_w), w(norm_dw_b), eps_dw)  # Eq. 4
        t = grouped_pointwise(z, w(proj), groups)  # Eq. 5
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


@adrelu_backward.register_kernel("cuda")
def adrelu_backward_cuda(grad: Tensor, x: Tensor, qkv: Tensor, dw: Tensor, norm_dw_w: Tensor, norm_dw_b: Tensor,
                         proj: Tensor, norm_w: Tensor, norm_b: Tensor, groups: int, head_dim: int, norm_groups: int,
                         eps: float, eps_dw: float, eps_norm: float) -> list[Tensor]:
    """Recompute Eqs. 2-6 (the plain formula) and backpropagate ``max``'s split of ``grad``. A kernel runs below
    the autograd dispatch key, where ``torch.autograd.grad`` sees no graph: ``torch.func.vjp`` differentiates there."""
    from ..activations.adrelu import adrelu_threshold

    def forward(x: Tensor, *weights: Tensor) -> Tensor:
        tau = adrelu_threshold(x, *weights, groups, head_dim, norm_groups, eps, eps_dw, eps_norm)
        return torch.where(x > tau, x, tau)  # ties go to tau, as on the CPU

    with torch.autocast(x.device.type, enabled=False):
        _, vjp = torch.func.vjp(forward, x, qkv, dw, norm_dw_w, norm_dw_b, proj, norm_w, norm_b)
        return list(vjp(grad))


@adrelu_backward.register_fake
def _(grad: Tensor, x: Tensor, qkv: Tensor, dw: Tensor, norm_dw_w: Tensor, norm_dw_b: Tensor, proj: Tensor,
      norm_w: Tensor, norm_b: Tensor, groups: int, head_dim: int, norm_groups: int, eps: float, eps_dw: float,
      eps_norm: float) -> list[Tensor]:
    return [torch.empty_like(t, memory_format=torch.contiguous_format)
            for t in (x, qkv, dw, norm_dw_w, norm_dw_b, proj, norm_w, norm_b)]


direct.register(adrelu, adrelu_backward, {"cpu": _adrelu_cpu, "cuda": adrelu_cuda},
                {"cpu": _adrelu_backward_cpu, "cuda": adrelu_backward_cuda})
