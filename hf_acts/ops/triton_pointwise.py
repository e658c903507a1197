"""Triton kernels (CUDA) for the pointwise activations with learned coefficients.

* dynActivation (papers/dynactivation-abstract.md): ``f(x) = base(x) (alpha - beta) + beta x``;
* Swish-beta (papers/swish-citations.md): ``f(x) = x sigmoid(beta x)``;
* dynActGLU's gate product: ``y = f(gate) * up`` (one read of gate and up, one write).

Forward: one pass. Backward: one pass that writes the input gradient(s) and per-program partial sums of the
coefficient gradients (dynActivation: ``d alpha = sum g base(x)``, ``d beta = sum g x - d alpha``; Swish-beta:
``d beta = sum g x^2 sigmoid'(beta x)``); the partials are summed by ``torch.sum`` afterwards: a deterministic
two-stage reduction, no float atomics. Only the inputs are saved for the backward, which recomputes ``f``.

Loads in the input dtype (float32, bfloat16, float16), arithmetic in float32. The tensor is seen as a 2-D
``(R, K)`` matrix and cut into ``(BLOCK_R, BLOCK_K)`` tiles; the channel of an element is its column (channels
last: tokens, vectors, dynActGLU) or its row modulo C (images: rows are ``(b, c)`` pairs of ``H*W`` positions).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .ids import POINTWISE_OPS

RELU, LEAKY_RELU, SILU, GELU, GELU_TANH, MISH, SWISH = (tl.constexpr(POINTWISE_OPS[name]) for name in (
    "relu", "leaky_relu", "silu", "gelu", "gelu_tanh", "mish", "swish_beta"))
# Launch sizes (module constants, so that the tests can shrink them and run every kernel over many tiles)
TILE = 4096  # elements per program's tile
MAX_BLOCK_K = 1024  # columns per tile
MAX_ROW_PROGRAMS = 512  # programs along R; each loops over its share of row blocks (bounds the partial buffers)


@triton.jit
def _tanh(z):
    return 2.0 * tl.sigmoid(2.0 * z) - 1.0


@triton.jit
def _base_and_grad(x, OP: tl.constexpr, p):
    """``(base(x), base'(x))`` in float32; Swish-beta (OP == SWISH) uses ``p = beta``."""
    if OP == RELU:
        f = tl.where(x <= 0, 0.0, x)  # NaN passes, as in torch.relu and its backward
        d = tl.where(x <= 0, 0.0, 1.0)
    elif OP == LEAKY_RELU:
        f = tl.where(x > 0, x, 0.01 * x)
        d = tl.where(x > 0, 1.0, 0.01)
    elif OP == SILU:
        s = tl.sigmoid(x)
        f = x * s
        d = s * (1.0 + x * (1.0 - s))
    elif OP == GELU:
        cdf = 0.5 * (1.0 + tl.erf(x * 0.7071067811865476))
        f = x * cdf
        d = cdf + x * 0.3989422804014327 * tl.exp(-0.5 * x * x)
    elif OP == GELU_TANH:
        t = _tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))
        f = 0.5 * x * (1.0 + t)
        d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * x * x)
    elif OP == MISH:
        t = _tanh(tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x))))
        f = x * t
        d = t + x * (1.0 - t * t) * tl.sigmoid(x)
    else:  # SWISH: x sigmoid(p x); d/dx = s + p x s (1 - s)
        s = tl.sigmoid(p * x)
        f = x * s
        d = s + p * x * s * (1.0 - s)
    return f, d


@triton.jit
def _tile(pid_r, pid_k, R, K, C, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, CH_ON_K: tl.constexpr):
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (rows[:, None] < R) & (cols[None, :] < K)
    offs = rows[:, None].to(tl.int64) * K + cols[None, :]
    if CH_ON_K:
        ch = cols[None, :] + 0 * rows[:, None]
    else:
        ch = rows[:, None] % C + 0 * cols[None, :]
    return rows, cols, mask, offs, ch


@triton.jit
def _coefficients(c0_ptr, c1_ptr, ch, mask, OP: tl.constexpr):
    """Per-element ``(p, q)``: dynActivation ``(alpha - beta, beta)``; Swish-beta ``(beta, 0)``."""
    c0 = tl.load(c0_ptr + ch, mask=mask, other=0.0).to(tl.float32)
    if OP == SWISH:
        return c0, 0.0 * c0
    c1 = tl.load(c1_ptr + ch, mask=mask, other=0.0).to(tl.float32)
    return c0 - c1, c1


@triton.jit
def pointwise_fwd_kernel(x_ptr, up_ptr, y_ptr, c0_ptr, c1_ptr, R, K, C, OP: tl.constexpr, GLU: tl.constexpr,
                         CH_ON_K: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """``y = p base(x) + q x`` (times ``up`` for dynActGLU) over one tile."""
    _, _, mask, offs, ch = _tile(tl.program_id(0), tl.program_id(1), R, K, C, BLOCK_R, BLOCK_K, CH_ON_K)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    p, q = _coefficients(c0_ptr, c1_ptr, ch, mask, OP)
    f, _ = _base_and_grad(x, OP, p)
    if OP != SWISH:
        f = f * p + q * x
    if GLU:
        f = f * tl.load(up_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, f.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def pointwise_bwd_kernel(g_ptr, x_ptr, up_ptr, gx_ptr, gup_ptr, c0_ptr, c1_ptr, part0_ptr, part1_ptr, R, K, C,
                         OP: tl.constexpr, GLU: tl.constexpr, CH_ON_K: tl.constexpr, BLOCK_R: tl.constexpr,
                         BLOCK_K: tl.constexpr):
    """Input gradient(s) of one column of tiles (program ``(i, j)`` takes row blocks ``i, i + n, ...``) and the
    partial coefficient sums: per column (channels on K, stored at ``[i, col]``) or per row (``[j, row]``)."""
    pid_r = tl.program_id(0)
    pid_k = tl.program_id(1)
    n_r = tl.num_programs(0)
    acc0_k = tl.zeros((BLOCK_K,), dtype=tl.float32)
    acc1_k = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for rb in range(pid_r, tl.cdiv(R, BLOCK_R), n_r):
        rows, cols, mask, offs, ch = _tile(rb, pid_k, R, K, C, BLOCK_R, BLOCK_K, CH_ON_K)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        p, q = _coefficients(c0_ptr, c1_ptr, ch, mask, OP)
        f, d = _base_and_grad(x, OP, p)
        if GLU:  # y = dyn(gate) up: d gate = g up dyn'(gate), d up = g dyn(gate)
            up = tl.load(up_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dyn = f
            if OP != SWISH:
                dyn = f * p + q * x
            tl.store(gup_ptr + offs, (g * dyn).to(gup_ptr.dtype.element_ty), mask=mask)
            g = g * up
        if OP == SWISH:  # d/d beta of x sigmoid(beta x) = x^2 s (1 - s)
            s = tl.sigmoid(p * x)
            s0 = g * x * x * s * (1.0 - s)
            s1 = 0.0 * s0
            gx = g * d
        else:
            s0 = g * f
            s1 = g * x
            gx = g * (p * d + q)
        tl.store(gx_ptr + offs, gx.to(gx_ptr.dtype.element_ty), mask=mask)
        s0 = tl.where(mask, s0, 0.0)
        s1 = tl.where(mask, s1, 0.0)
        if CH_ON_K:
            acc0_k += tl.sum(s0, axis=0)
            acc1_k += tl.sum(s1, axis=0)
        else:  # channels on rows: each row block is visited by one program only
            tl.store(part0_ptr + pid_k.to(tl.int64) * R + rows, tl.sum(s0, axis=1), mask=rows < R)
            tl.store(part1_ptr + pid_k.to(tl.int64) * R + rows, tl.sum(s1, axis=1), mask=rows < R)
    if CH_ON_K:
        cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
        tl.store(part0_ptr + pid_r.to(tl.int64) * K + cols, acc0_k, mask=cols < K)
        tl.store(part1_ptr + pid_r.to(tl.int64) * K + cols, acc1_k, mask=cols < K)


def _matrix(x: torch.Tensor, channels: int) -> tuple[int, int, bool]:
    """``(R, K, channels_on_K)`` of the 2-D view: one coefficient -> ``(1, numel)``; images ``(B*C, H*W)``;
    tokens and vectors ``(numel / C, C)``."""
    if channels == 1:
        return 1, x.numel(), False
    if x.ndim == 4:
        return x.shape[0] * x.shape[1], x.shape[2] * x.shape[3], False
    return x.numel() // channels, channels, True


def _blocks(r: int, k: int) -> tuple[int, int]:
    """``(BLOCK_R, BLOCK_K)``: tiles of about ``TILE`` elements (a single row: one row of ``TILE``)."""
    if r == 1:
        return 1, min(triton.next_power_of_2(k), TILE)
    block_k = min(triton.next_power_of_2(k), MAX_BLOCK_K)
    return max(1, TILE // block_k), block_k


def forward(x: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor, op: int, up: torch.Tensor | None = None
            ) -> torch.Tensor:
    """``f(x)`` (or ``f(x) * up``) for contiguous ``x``; ``c0, c1``: dynActivation's alpha, beta or Swish's beta
    twice, one value per channel or one in all."""
    R, K, ch_on_k = _matrix(x, c0.numel())
    block_r, block_k = _blocks(R, K)
    y = torch.empty_like(x)
    grid = (triton.cdiv(R, block_r), triton.cdiv(K, block_k))
    pointwise_fwd_kernel[grid](x, x if up is None else up, y, c0, c1, R, K, c0.numel(), OP=op, GLU=up is not None,
                               CH_ON_K=ch_on_k, BLOCK_R=block_r, BLOCK_K=block_k)
    return y


def backward(grad: torch.Tensor, x: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor, op: int,
             up: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """``(dx, dup, dc0, dc1)`` (``dup`` None without ``up``); ``dc1`` is zero for Swish-beta. Coefficient gradients
    have ``c0``'s shape and dtype."""
    channels = c0.numel()
    R, K, ch_on_k = _matrix(x, channels)
    block_r, block_k = _blocks(R, K)
    grid_r = min(triton.cdiv(R, block_r), MAX_ROW_PROGRAMS) if ch_on_k else triton.cdiv(R, block_r)
    grid = (grid_r, triton.cdiv(K, block_k))
    parts = torch.empty((2, grid[0] if ch_on_k else grid[1], K if ch_on_k else R), device=x.device,
                        dtype=torch.float32)
    gx = torch.empty_like(x)
    gup = torch.empty_like(x) if up is not None else None
    pointwise_bwd_kernel[grid](grad, x, x if up is None else up, gx, gx if gup is None else gup, c0, c1, parts[0],
                               parts[1], R, K, channels, OP=op, GLU=up is not None, CH_ON_K=ch_on_k,
                               BLOCK_R=block_r, BLOCK_K=block_k)
    sums = parts.sum(1)  # (2, K) or (2, R)
    if not ch_on_k:
        sums = sums.view(2, -1, channels).sum(1)
    if op == SWISH:
        d0, d1 = sums[0], torch.zeros_like(sums[1])
    else:  # d alpha = sum g base(x); d beta = sum g x - d alpha
        d0, d1 = sums[0], sums[1] - sums[0]
    return gx, gup, d0.view(c0.shape).to(c0.dtype), d1.view(c1.shape).to(c1.dtype)
