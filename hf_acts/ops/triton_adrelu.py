"""Triton kernels (CUDA) for ADReLU's element-wise chain (papers/adrelu.md); its GEMMs (the grouped 1x1 convs) and
the depthwise conv stay on cuBLAS / cuDNN.

* ``attention``: Eq. 2 from the QKV conv's output: per head of ``head_dim`` channels and position,
  ``A = sigmoid(<Q, K> / ((||Q|| + eps)(||K|| + eps))) V`` (1 read of Q, K, V; 1 write of A);
* ``norm_max``: Eqs. 6 and 1: ``tau = GroupNorm(T)`` from the per-group mean and reciprocal std, then
  ``y = max(x, tau)`` without writing tau (reads T and x, writes y);
* ``split_grad``: Eq. 1's backward: the output gradient goes to x where ``x > tau``, else to tau (tau recomputed from
  T as ``norm_max`` does, so both directions take the same side at every element);
* ``attention_backward``: Eq. 2's backward, the gradients of Q, K and V from A's (the forward's sums recomputed).

Layout ``(B, C, P)`` contiguous (``P = H*W``); the QKV tensor is ``(B, 3C, P)`` group-major (each group's Q, K, V
in turn, as the grouped conv writes them). Loads in the input dtype, arithmetic in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Launch sizes (module constants, so that the tests can shrink them and run every kernel over many tiles)
TILE = 4096  # elements per attention program (head channels x positions)
MIN_BLOCK_P = 16  # positions per attention program, at least
ROW_BLOCK = 1024  # positions per program of the row kernels, at most


@triton.jit
def _head(qkv_ptr, C, P, CG, DK, eps, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr):
    """One program's head and block of positions: its Q, K, V tiles (float32), their offsets and mask, and Eq. 2's
    per-position ``|q|``, ``|k|``, ``(|q| + eps)(|k| + eps)``, ratio ``<q, k> / that`` and score ``sigmoid(ratio)``;
    ``a_offs`` addresses the head's channels in a ``(B, C, P)`` tensor."""
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
    q_norm, k_norm = tl.sqrt(tl.sum(q * q, axis=0)), tl.sqrt(tl.sum(k * k, axis=0))
    den = (q_norm + eps) * (k_norm + eps)
    ratio = tl.sum(q * k, axis=0) / den
    a_offs = b.to(tl.int64) * C * P + c[:, None].to(tl.int64) * P + p[None, :]
    return q, k, v, offs, a_offs, mask, q_norm, k_norm, den, ratio, tl.sigmoid(ratio)


@triton.jit
def attention_kernel(qkv_ptr, a_ptr, C, P, CG, DK, eps, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr):
    _, _, v, _, a_offs, mask, _, _, _, _, score = _head(qkv_ptr, C, P, CG, DK, eps, BLOCK_D, BLOCK_P)
    tl.store(a_ptr + a_offs, (score[None, :] * v).to(a_ptr.dtype.element_ty), mask=mask)


@triton.jit
def attention_backward_kernel(qkv_ptr, ga_ptr, gqkv_ptr, C, P, CG, DK, eps, BLOCK_D: tl.constexpr,
                              BLOCK_P: tl.constexpr):
    q, k, v, offs, a_offs, mask, q_norm, k_norm, den, ratio, score = _head(qkv_ptr, C, P, CG, DK, eps, BLOCK_D,
                                                                          BLOCK_P)
    ga = tl.load(ga_ptr + a_offs, mask=mask, other=0.0).to(tl.float32)
    g_ratio = tl.sum(ga * v, axis=0) * score * (1.0 - score)
    # r = <q, k> / ((|q| + eps)(|k| + eps)): dr/dq = k / den - r q / (|q| (|q| + eps)), 0 for the second term at |q| = 0
    other = g_ratio / den
    coef_q = tl.where(q_norm > 0, -g_ratio * ratio / tl.where(q_norm > 0, q_norm * (q_norm + eps), 1.0), 0.0)
    coef_k = tl.where(k_norm > 0, -g_ratio * ratio / tl.where(k_norm > 0, k_norm * (k_norm + eps), 1.0), 0.0)
    out_ty = gqkv_ptr.dtype.element_ty
    tl.store(gqkv_ptr + offs, (other[None, :] * k + coef_q[None, :] * q).to(out_ty), mask=mask)
    tl.store(gqkv_ptr + offs + CG * P, (other[None, :] * q + coef_k[None, :] * k).to(out_ty), mask=mask)
    tl.store(gqkv_ptr + offs + 2 * CG * P, (score[None, :] * ga).to(out_ty), mask=mask)


@triton.jit
def _x_and_tau(x_ptr, t_ptr, mean_ptr, rstd_ptr, w_ptr, bias_ptr, C, P, CG, G, BLOCK: tl.constexpr):
    """One program's block of a ``(b, c)`` row of P positions: offsets, mask, x and ``tau = GroupNorm(T)`` (Eq. 6)
    in float32."""
    row = tl.program_id(0)
    b, c = row // C, row % C
    stat = b * G + c // CG
    scale = tl.load(rstd_ptr + stat).to(tl.float32) * tl.load(w_ptr + c).to(tl.float32)
    shift = tl.load(bias_ptr + c).to(tl.float32) - tl.load(mean_ptr + stat).to(tl.float32) * scale
    p = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    offs, mask = row.to(tl.int64) * P + p, p < P
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    return offs, mask, x, tl.load(t_ptr + offs, mask=mask, other=0.0).to(tl.float32) * scale + shift


@triton.jit
def norm_max_kernel(x_ptr, t_ptr, y_ptr, mean_ptr, rstd_ptr, w_ptr, bias_ptr, C, P, CG, G, BLOCK: tl.constexpr):
    offs, mask, x, tau = _x_and_tau(x_ptr, t_ptr, mean_ptr, rstd_ptr, w_ptr, bias_ptr, C, P, CG, G, BLOCK)
    tl.store(y_ptr + offs, tl.where(x > tau, x, tau).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def split_grad_kernel(x_ptr, t_ptr, g_ptr, gx_ptr, gtau_ptr, mean_ptr, rstd_ptr, w_ptr, bias_ptr, C, P, CG, G,
                      BLOCK: tl.constexpr):
    offs, mask, x, tau = _x_and_tau(x_ptr, t_ptr, mean_ptr, rstd_ptr, w_ptr, bias_ptr, C, P, CG, G, BLOCK)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0)
    above = x > tau
    tl.store(gx_ptr + offs, tl.where(above, g, 0.0).to(gx_ptr.dtype.element_ty), mask=mask)
    tl.store(gtau_ptr + offs, tl.where(above, 0.0, g).to(gtau_ptr.dtype.element_ty), mask=mask)


def _attention_grid(qkv: torch.Tensor, head_dim: int) -> tuple[tuple[int, int, int], int, int]:
    """The launch grid of the attention kernels (one program per sample, head and block of positions)."""
    b, c3, h, w = qkv.shape
    block_d = triton.next_power_of_2(head_dim)
    block_p = max(MIN_BLOCK_P, min(triton.next_power_of_2(h * w), TILE // block_d))
    return (b, c3 // 3 // head_dim, triton.cdiv(h * w, block_p)), block_d, block_p


def attention(qkv: torch.Tensor, groups: int, head_dim: int, eps: float) -> torch.Tensor:
    """``A`` (B, C, H, W) from the QKV conv's ``(B, 3C, H, W)`` output."""
    b, c3, h, w = qkv.shape
    c = c3 // 3
    a = torch.empty((b, c, h, w), device=qkv.device, dtype=qkv.dtype)
    grid, block_d, block_p = _attention_grid(qkv, head_dim)
    attention_kernel[grid](qkv.contiguous(), a, c, h * w, c // groups, head_dim, eps, BLOCK_D=block_d,
                           BLOCK_P=block_p)
    return a


def attention_backward(qkv: torch.Tensor, grad_a: torch.Tensor, groups: int, head_dim: int, eps: float
                       ) -> torch.Tensor:
    """The gradient of the QKV conv's ``(B, 3C, H, W)`` output from A's gradient (Eq. 2's backward)."""
    b, c3, h, w = qkv.shape
    grad_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
    grid, block_d, block_p = _attention_grid(qkv, head_dim)
    attention_backward_kernel[grid](qkv.contiguous(), grad_a.contiguous(), grad_qkv, c3 // 3, h * w,
                                    c3 // 3 // groups, head_dim, eps, BLOCK_D=block_d, BLOCK_P=block_p)
    return grad_qkv


def _row_grid(x: torch.Tensor) -> tuple[tuple[int, int], int]:
    """The grid and block of the row kernels: a program per ``(b, c)`` row and block of up to ``ROW_BLOCK``
    positions."""
    b, c, h, w = x.shape
    block = min(triton.next_power_of_2(h * w), ROW_BLOCK)
    return (b * c, triton.cdiv(h * w, block)), block


def group_stats(t: torch.Tensor, groups: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GroupNorm's per-(sample, group) mean and reciprocal std of ``t`` in float32 (Eq. 6)."""
    var, mean = torch.var_mean(t.reshape(t.shape[0], groups, -1).float(), dim=-1, correction=0)
    return mean, torch.rsqrt(var + eps)


def norm_max(x: torch.Tensor, t: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float
             ) -> torch.Tensor:
    """``max(x, GroupNorm(t))`` (Eqs. 6 and 1); ties go to tau, as on the CPU."""
    x = x.contiguous()  # tokens arrive as a transposed (B, C, 1, N) view; y is written densely
    b, c, h, w = x.shape
    p = h * w
    mean, rstd = group_stats(t, groups, eps)
    y = torch.empty_like(x)
    grid, block = _row_grid(x)
    norm_max_kernel[grid](x, t.contiguous(), y, mean, rstd, weight.contiguous(), bias.contiguous(), c, p, c // groups,
                          groups, BLOCK=block)
    return y


def split_grad(grad: torch.Tensor, x: torch.Tensor, t: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
               groups: int, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1's backward: ``(grad where x > tau, grad where not)`` with ``tau = GroupNorm(t)`` from ``group_stats``
    (the side ``norm_max`` took, ties to tau)."""
    x = x.contiguous()
    b, c, h, w = x.shape
    p = h * w
    grad_x, grad_tau = torch.empty_like(x), torch.empty_like(x)
    grid, block = _row_grid(x)
    split_grad_kernel[grid](x, t.contiguous(), grad.contiguous(), grad_x, grad_tau, mean, rstd, weight.contiguous(),
                            bias.contiguous(), c, p, c // groups, groups, BLOCK=block)
    return grad_x, grad_tau
