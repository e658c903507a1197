"""Triton kernels (CUDA) for ADReLU's element-wise chain (papers/adrelu.md); its GEMMs (the grouped 1x1 convs) and
the depthwise conv stay on cuBLAS / cuDNN.

* ``attention``: Eq. 2 from the QKV conv's output: per head of ``head_dim`` channels and position,
  ``A = sigmoid(<Q, K> / ((||Q|| + eps)(||K|| + eps))) V`` (1 read of Q, K, V; 1 write of A);
* ``norm_max``: Eqs. 6 and 1: ``tau = GroupNorm(T)`` from the per-group mean and reciprocal std, then
  ``y = max(x, tau)`` without writing tau (reads T and x, writes y).

Layout ``(B, C, P)`` contiguous (``P = H*W``); the QKV tensor is ``(B, 3C, P)`` group-major (each group's Q, K, V
in turn, as the grouped conv writes them). Loads in the input dtype, arithmetic in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def attention_kernel(qkv_ptr, a_ptr, C, P, CG, DK, eps, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr):
    b, head = tl.program_id(0), tl.program_id(1)
    d = tl.arange(0, BLOCK_D)
    p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = head * DK + d
    mask = (d[:, None] < DK) & (p[None, :] < P)
    q_channel = (c // CG) * 3 * CG + c % CG  # Q of channel c in its group's [Q | K | V] block
    offs = b.to(tl.int64) * 3 * C * P + q_channel[:, None].to(tl.int64) * P + p[None, :]
    q = tl.load(qkv_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    k = tl.load(qkv_ptr + offs + CG * P, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(qkv_ptr + offs + 2 * CG * P, mask=mask, other=0.0).to(tl.float32)
    qk = tl.sum(q * k, axis=0)
    norms = (tl.sqrt(tl.sum(q * q, axis=0)) + eps) * (tl.sqrt(tl.sum(k * k, axis=0)) + eps)
    score = tl.sigmoid(qk / norms)
    out = b.to(tl.int64) * C * P + c[:, None].to(tl.int64) * P + p[None, :]
    tl.store(a_ptr + out, (score[None, :] * v).to(a_ptr.dtype.element_ty), mask=mask)


@triton.jit
def norm_max_kernel(x_ptr, t_ptr, y_ptr, mean_ptr, rstd_ptr, w_ptr, bias_ptr, C, P, CG, G, BLOCK: tl.constexpr):
    row = tl.program_id(0)  # one (b, c) row of P positions
    b, c = row // C, row % C
    stat = b * G + c // CG
    scale = tl.load(rstd_ptr + stat).to(tl.float32) * tl.load(w_ptr + c).to(tl.float32)
    shift = tl.load(bias_ptr + c).to(tl.float32) - tl.load(mean_ptr + stat).to(tl.float32) * scale
    p = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    offs = row.to(tl.int64) * P + p
    x = tl.load(x_ptr + offs, mask=p < P, other=0.0).to(tl.float32)
    tau = tl.load(t_ptr + offs, mask=p < P, other=0.0).to(tl.float32) * scale + shift
    tl.store(y_ptr + offs, tl.where(x > tau, x, tau).to(y_ptr.dtype.element_ty), mask=p < P)


def attention(qkv: torch.Tensor, groups: int, head_dim: int, eps: float) -> torch.Tensor:
    """``A`` (B, C, H, W) from the QKV conv's ``(B, 3C, H, W)`` output."""
    b, c3, h, w = qkv.shape
    c, p = c3 // 3, h * w
    a = torch.empty((b, c, h, w), device=qkv.device, dtype=qkv.dtype)
    block_d = triton.next_power_of_2(head_dim)
    block_p = max(16, min(triton.next_power_of_2(p), 4096 // block_d))
    grid = (b, c // head_dim, triton.cdiv(p, block_p))
    attention_kernel[grid](qkv.contiguous(), a, c, p, c // groups, head_dim, eps, BLOCK_D=block_d, BLOCK_P=block_p)
    return a


def norm_max(x: torch.Tensor, t: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float
             ) -> torch.Tensor:
    """``max(x, GroupNorm(t))`` (Eqs. 6 and 1); ties go to tau, as on the CPU."""
    x = x.contiguous()  # tokens arrive as a transposed (B, C, 1, N) view; y is written densely
    b, c, h, w = x.shape
    p = h * w
    var, mean = torch.var_mean(t.reshape(b, groups, -1).float(), dim=-1, correction=0)
    rstd = torch.rsqrt(var + eps)
    y = torch.empty_like(x)
    block = min(triton.next_power_of_2(p), 1024)
    norm_max_kernel[(b * c, triton.cdiv(p, block))](x, t.contiguous(), y, mean, rstd,
                                                   weight.contiguous(), bias.contiguous(), c, p, c // groups, groups,
                                                   BLOCK=block)
    return y
