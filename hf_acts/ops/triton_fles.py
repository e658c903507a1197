"""Triton kernels (CUDA) for FleS (papers/fles-poster.md), the four passes of ``csrc/fles.cpp`` with its signatures:

* ``stats``       ``pos = sum relu(x)``, ``count = sum [x > 0]`` per sample and channel    (1 read)
* ``apply``       ``y = k_ve rho(k_ho x) x``                                              (1 read, 1 write)
* ``coef_grads``  ``d k_ve = sum g rho(u) x``, ``d k_ho = sum g k_ve rho'(u) x^2``, ``u = k_ho x``  (2 reads)
* ``input_grad``  ``dx = g k_ve (rho(u) + u rho'(u)) + [x > 0] d pos``                   (2 reads, 1 write)

``x`` is ``(B, C, P)`` in memory with strides ``(C*P, P, 1)`` (images, ``P = H*W``) or ``(P*C, 1, C)`` (tokens,
``P = N``). The reductions give each program one sample and a block of channels, looping over the positions:
deterministic, no atomics. Loads in the input dtype, arithmetic and sums in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Launch sizes (module constants, so that the tests can shrink them and run every kernel over many tiles)
TILE = 4096  # elements per program's tile
MAX_BLOCK_P = 1024  # positions per tile of an image
MAX_BLOCK_C = 64  # channels per tile of tokens


@triton.jit
def _gate(u, GATE: tl.constexpr):
    """``(rho(u), rho'(u))``: sigmoid (GATE 0, SiLU) or the normal CDF (GATE 1, GELU)."""
    if GATE == 0:
        rho = tl.sigmoid(u)
        drho = rho * (1.0 - rho)
    else:
        rho = 0.5 * (1.0 + tl.erf(u * 0.7071067811865476))
        drho = 0.3989422804014327 * tl.exp(-0.5 * u * u)
    return rho, drho


@triton.jit
def _offsets(b, p0, c0, P, C, IMAGES: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    p = p0 + tl.arange(0, BLOCK_P)
    c = c0 + tl.arange(0, BLOCK_C)
    mask = (p[:, None] < P) & (c[None, :] < C)
    if IMAGES:
        offs = b.to(tl.int64) * C * P + c[None, :].to(tl.int64) * P + p[:, None]
    else:
        offs = b.to(tl.int64) * C * P + p[:, None].to(tl.int64) * C + c[None, :]
    return c, mask, offs


@triton.jit
def stats_kernel(x_ptr, pos_ptr, count_ptr, P, C, IMAGES: tl.constexpr, BLOCK_P: tl.constexpr,
                 BLOCK_C: tl.constexpr):
    b, c0 = tl.program_id(0), tl.program_id(1) * BLOCK_C
    pos = tl.zeros((BLOCK_C,), dtype=tl.float32)
    count = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for p0 in range(0, P, BLOCK_P):
        c, mask, offs = _offsets(b, p0, c0, P, C, IMAGES, BLOCK_P, BLOCK_C)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        pos += tl.sum(tl.where(x <= 0, 0.0, x), axis=0)  # relu with NaN kept, as torch.relu
        count += tl.sum(tl.where(x > 0, 1.0, 0.0), axis=0)
    c = c0 + tl.arange(0, BLOCK_C)
    tl.store(pos_ptr + b * C + c, pos, mask=c < C)
    tl.store(count_ptr + b * C + c, count, mask=c < C)


@triton.jit
def apply_kernel(x_ptr, y_ptr, kve_ptr, kho_ptr, P, C, GATE: tl.constexpr, IMAGES: tl.constexpr,
                 BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(0)
    c, mask, offs = _offsets(b, tl.program_id(1) * BLOCK_P, tl.program_id(2) * BLOCK_C, P, C, IMAGES, BLOCK_P,
                             BLOCK_C)
    kve = tl.load(kve_ptr + b * C + c, mask=c < C, other=1.0).to(tl.float32)[None, :]
    kho = tl.load(kho_ptr + b * C + c, mask=c < C, other=1.0).to(tl.float32)[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    rho, _ = _gate(kho * x, GATE)
    tl.store(y_ptr + offs, (kve * rho * x).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def coef_grads_kernel(g_ptr, x_ptr, kve_ptr, kho_ptr, dve_ptr, dho_ptr, P, C, GATE: tl.constexpr,
                      IMAGES: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    b, c0 = tl.program_id(0), tl.program_id(1) * BLOCK_C
    c = c0 + tl.arange(0, BLOCK_C)
    kve = tl.load(kve_ptr + b * C + c, mask=c < C, other=1.0).to(tl.float32)[None, :]
    kho = tl.load(kho_ptr + b * C + c, mask=c < C, other=1.0).to(tl.float32)[None, :]
    d_ve = tl.zeros((BLOCK_C,), dtype=tl.float32)
    d_ho = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for p0 in range(0, P, BLOCK_P):
        _, mask, offs = _offsets(b, p0, c0, P, C, IMAGES, BLOCK_P, BLOCK_C)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        rho, drho = _gate(kho * x, GATE)
        d_ve += tl.sum(g * rho * x, axis=0)
        d_ho += tl.sum(g * kve * drho * x * x, axis=0)
    tl.store(dve_ptr + b * C + c, d_ve, mask=c < C)
    tl.store(dho_ptr + b * C + c, d_ho, mask=c < C)


@triton.jit
def input_grad_kernel(g_ptr, x_ptr, gx_ptr, kve_ptr, kho_ptr, dpos_ptr, P, C, GATE: tl.constexpr,
                      IMAGES: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(0)
    c, mask, offs = _offsets(b, tl.program_id(1) * BLOCK_P, tl.program_id(2) * BLOCK_C, P, C, IMAGES, BLOCK_P,
                             BLOCK_C)
    kve = tl.load(kve_ptr + b * C + c, mask=c < C, other=1.0).to(tl.float32)[None, :]
    kho = tl.load(kho_ptr + b * C + c, mask=c < C, other=1.0).to(tl.float32)[None, :]
    dpos = tl.load(dpos_ptr + b * C + c, mask=c < C, other=0.0).to(tl.float32)[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = kho * x
    rho, drho = _gate(u, GATE)
    gx = g * kve * (rho + u * drho) + tl.where(x <= 0, 0.0, dpos)
    tl.store(gx_ptr + offs, gx.to(gx_ptr.dtype.element_ty), mask=mask)


def _shape(x: torch.Tensor, channels: int, inner: int) -> tuple[int, int, bool, int, int]:
    """``(P, B, images, BLOCK_P, BLOCK_C)`` for contiguous ``x`` (``inner > 1``: images)."""
    images = inner > 1
    P = x.numel() // (x.shape[0] * channels)
    if images:
        block_p = min(triton.next_power_of_2(P), MAX_BLOCK_P)
        block_c = min(max(1, TILE // block_p), triton.next_power_of_2(channels))
    else:
        block_c = min(triton.next_power_of_2(channels), MAX_BLOCK_C)
        block_p = max(1, TILE // block_c)
    return P, x.shape[0], images, block_p, block_c


def stats(x: torch.Tensor, channels: int, inner: int) -> tuple[torch.Tensor, torch.Tensor]:
    P, B, images, bp, bc = _shape(x, channels, inner)
    pos = torch.empty((B, channels), device=x.device, dtype=torch.float32)
    count = torch.empty_like(pos)
    stats_kernel[(B, triton.cdiv(channels, bc))](x, pos, count, P, channels, IMAGES=images, BLOCK_P=bp, BLOCK_C=bc)
    return pos, count


def apply(x: torch.Tensor, k_ve: torch.Tensor, k_ho: torch.Tensor, gate: int, inner: int) -> torch.Tensor:
    channels = k_ve.shape[1]
    P, B, images, bp, bc = _shape(x, channels, inner)
    y = torch.empty_like(x)
    apply_kernel[(B, triton.cdiv(P, bp), triton.cdiv(channels, bc))](x, y, k_ve, k_ho, P, channels, GATE=gate,
                                                                     IMAGES=images, BLOCK_P=bp, BLOCK_C=bc)
    return y


def coef_grads(grad: torch.Tensor, x: torch.Tensor, k_ve: torch.Tensor, k_ho: torch.Tensor, gate: int, inner: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    channels = k_ve.shape[1]
    P, B, images, bp, bc = _shape(x, channels, inner)
    d_ve = torch.empty((B, channels), device=x.device, dtype=torch.float32)
    d_ho = torch.empty_like(d_ve)
    coef_grads_kernel[(B, triton.cdiv(channels, bc))](grad, x, k_ve, k_ho, d_ve, d_ho, P, channels, GATE=gate,
                                                      IMAGES=images, BLOCK_P=bp, BLOCK_C=bc)
    return d_ve, d_ho


def input_grad(grad: torch.Tensor, x: torch.Tensor, k_ve: torch.Tensor, k_ho: torch.Tensor, dpos: torch.Tensor,
               gate: int, inner: int) -> torch.Tensor:
    channels = k_ve.shape[1]
    P, B, images, bp, bc = _shape(x, channels, inner)
    gx = torch.empty_like(x)
    input_grad_kernel[(B, triton.cdiv(P, bp), triton.cdiv(channels, bc))](
        grad, x, gx, k_ve, k_ho, dpos, P, channels, GATE=gate, IMAGES=images, BLOCK_P=bp, BLOCK_C=bc)
    return gx
