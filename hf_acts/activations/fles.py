"""FleS: flexible scaling of self-gated activations (papers/fles-poster.md, "Method")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import _cpp
from ._base import LazyChannels

GATES = {"silu": torch.sigmoid, "gelu": lambda t: 0.5 * (1.0 + torch.erf(t * (1.0 / math.sqrt(2.0))))}
GATE_IDS = {"silu": 0, "gelu": 1}  # the kernel's enum (csrc/fles.cpp)


class FleSFunction(torch.autograd.Function):
    """Practical FleS as fused CPU passes (``csrc/fles.cpp``): channel statistics and ``phi`` in the forward,
    coefficient gradients and the input gradient in the backward; the coefficient MLP (``fc1 -> relu -> fc2 ->
    1 + tanh``) and its backward run in PyTorch on ``(B, C)`` matrices. Saves ``x`` and ``(B, C)``-sized tensors.

    ``inner`` is the number of positions per channel that are contiguous in memory (H*W for images, 1 for tokens
    and vectors)."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, base, inner, eps):  # noqa: ANN001, ANN205
        ext = _cpp.load("fles")
        dtype = _cpp.compute_dtype(x)
        pos, count = ext.stats(x, w1.shape[1], inner)
        denom = (count + eps).to(dtype)
        m = pos.to(dtype) / denom  # positive channel mean m_c
        w1c, b1c, w2c, b2c = (p.detach().to(dtype) for p in (w1, b1, w2, b2))
        h = F.relu(F.linear(m, w1c, b1c))
        t = torch.tanh(F.linear(h, w2c, b2c))
        k_ve, k_ho = ((1.0 + t).chunk(2, dim=-1))
        k_ve, k_ho = k_ve.contiguous(), k_ho.contiguous()
        ctx.save_for_backward(x, w1c, w2c, m, denom, h, t, k_ve, k_ho)
        ctx.base, ctx.inner, ctx.dtypes = base, inner, (w1.dtype, b1.dtype, w2.dtype, b2.dtype)
        return ext.apply(x, k_ve, k_ho, GATE_IDS[base], inner)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        ext = _cpp.load("fles")
        x, w1, w2, m, denom, h, t, k_ve, k_ho = ctx.saved_tensors
        grad = grad.contiguous()
        d_ve, d_ho = ext.coef_grads(grad, x, k_ve, k_ho, GATE_IDS[ctx.base], ctx.inner)
        d_pre2 = torch.cat([d_ve, d_ho], dim=-1).to(t.dtype) * (1.0 - t * t)  # through 1 + tanh
        d_h = d_pre2 @ w2
        d_pre1 = d_h * (h > 0)  # through the hidden ReLU
        d_m = d_pre1 @ w1
        grad_x = ext.input_grad(grad, x, k_ve, k_ho, (d_m / denom).contiguous(), GATE_IDS[ctx.base], ctx.inner)
        grads = (d_pre1.T @ m, d_pre1.sum(0), d_pre2.T @ h, d_pre2.sum(0))
        return grad_x, *(g.to(dt) for g, dt in zip(grads, ctx.dtypes, strict=True)), None, None, None


class FleS(LazyChannels):
    """``phi(x) = k_ve * rho(k_ho * x) * x`` (poster, "Method"); ``rho`` = sigmoid (``base="silu"``)
    or the normal CDF (``base="gelu"``). With ``k_ve = k_ho = 1`` it is exactly SiLU / GELU.

    The coefficients come from the positive channel statistics of each sample (practical FleS):
    ``m_c = sum(relu(x_c)) / (count(x_c > 0) + eps)`` over positions, then
    ``[k_ve, k_ho] = 1 + tanh(fc2(relu(fc1(m))))`` with ``fc1: C -> max(C // reduction, min_hidden)``
    and ``fc2: -> 2C``. ``fc2`` is zero-initialised, so ``k = 1``: function-preserving over the base.
    ``proto=True`` is FleS-Proto: statistics over the whole batch (ablation only; it breaks when
    the batch is shuffled, Table 1).

    Layouts: images ``(B, C, H, W)`` (positions H*W), tokens ``(B, N, C)`` (positions N), vectors
    ``(B, C)`` (one position). Project decisions: the hidden activation is ReLU, ``reduction=32``
    (reproduces the paper's overheads), ``eps=1e-6``. ``inplace`` is accepted and ignored.

    Speed: on the CPU the default path for images and tokens is :class:`FleSFunction` (two fused passes over
    ``x`` per direction); the plain PyTorch path below runs for vectors, FleS-Proto, under ``torch.compile``,
    dispatch modes, on other devices and with ``HF_ACTS_FUSED=0``.
    """

    _channel_key = ("fc2.weight", 0, 2)

    def __init__(
        self,
        channels: int | None = None,
        base: str = "silu",
        reduction: int = 32,
        min_hidden: int = 8,
        proto: bool = False,
        eps: float = 1e-6,
        inplace: bool = False,
    ) -> None:
        if base not in GATES:
            raise ValueError(f"base must be one of {tuple(GATES)}, got {base!r}")
        self.base = base
        self.reduction = reduction
        self.min_hidden = min_hidden
        self.proto = proto
        self.eps = eps
        super().__init__(channels)

    def _build(self, channels: int) -> None:
        hidden = max(channels // self.reduction, self.min_hidden)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, 2 * channels)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    @staticmethod
    def preserving_kwargs(base: str) -> dict | None:
        """Constructor kwargs that make the module equal ``base`` at init, or None if impossible."""
        return {"base": base} if base in GATES else None

    def coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(k_ve, k_ho)``, each shaped to broadcast against ``x``."""
        pos = x.clamp_min(0)
        count = (x > 0).to(x.dtype)
        dims = {4: (2, 3), 3: (1,), 2: ()}[x.ndim]
        if self.proto:  # FleS-Proto: one statistic per channel over the batch
            dims = (0, *dims)
        if dims:
            pos, count = pos.sum(dims), count.sum(dims)
        m = pos / (count + self.eps)  # positive channel mean m_c
        if self.proto:
            m = m.unsqueeze(0)
        k = 1.0 + torch.tanh(self.fc2(F.relu(self.fc1(m))))
        k_ve, k_ho = k.chunk(2, dim=-1)
        shape = {4: (k.shape[0], -1, 1, 1), 3: (k.shape[0], 1, -1), 2: (k.shape[0], -1)}[x.ndim]
        return k_ve.reshape(shape), k_ho.reshape(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        # vectors (B, C) stay on the plain path: one position per channel leaves nothing to fuse, the coefficient
        # MLP on (B, 2C) matrices is the whole cost, and autograd runs it faster than the manual backward
        if x.ndim > 2 and not self.proto and x.numel() and _cpp.fused_allowed(x) and _cpp.load("fles") is not None:
            inner = x.shape[2] * x.shape[3] if x.ndim == 4 else 1
            return FleSFunction.apply(x.contiguous(), self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias,
                                      self.base, inner, self.eps)
        k_ve, k_ho = self.coefficients(x)
        return k_ve * GATES[self.base](k_ho * x) * x

    def extra_repr(self) -> str:
        return f"channels={self.channels}, base={self.base!r}, reduction={self.reduction}, proto={self.proto}"
