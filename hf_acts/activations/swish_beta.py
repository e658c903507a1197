"""Swish-beta: ``x * sigmoid(beta * x)`` with a trainable beta (papers/swish-citations.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import LazyChannels

try:
    from . import _cpp
except ImportError:  # a copy beside a checkpoint (trust_remote_code) without hf-acts installed: the plain formula
    _cpp = None

SWISH_OP = 6  # the kernel's op id (csrc/pointwise.cpp)


class SwishBetaFunction(torch.autograd.Function):
    """Fused Swish-beta (``csrc/pointwise.cpp``): forward and backward are one pass each over ``x``, the backward
    also summing ``dbeta = sum(g x^2 sigmoid'(beta x))``; saves only ``x`` (and beta). ``inner`` describes the
    layout as ``(outer, C, inner)`` with ``C = beta.numel()``."""

    @staticmethod
    def forward(ctx, x, beta, inner):  # noqa: ANN001, ANN205
        ctx.save_for_backward(x, beta)
        ctx.inner = inner
        if float(beta) == 1.0 if beta.numel() == 1 else bool((beta == 1).all()):
            return F.silu(x)  # exactly SiLU at init: swapped models reproduce logits bit for bit
        return _cpp.load("pointwise").forward(x, beta, beta, SWISH_OP, inner)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x, beta = ctx.saved_tensors
        grad_x, grad_beta, _ = _cpp.load("pointwise").backward(grad.contiguous(), x, beta, beta, SWISH_OP, ctx.inner)
        return grad_x, grad_beta, None


class SwishBeta(LazyChannels):
    """``f(x) = x * sigmoid(beta * x)`` (Ramachandran et al. 2017); ``beta_init = 1`` is exactly SiLU.

    ``per_channel=True`` learns one beta per channel (channels inferred at the first call when not
    given). Layouts: any for a scalar beta; images ``(B, C, H, W)``, tokens ``(B, N, C)`` and
    vectors ``(B, C)`` per channel. ``inplace`` is accepted and ignored.

    Speed: on the CPU the default path is :class:`SwishBetaFunction` (one fused pass per direction); the plain
    formula runs under ``torch.compile``, dispatch modes, on other devices and with ``HF_ACTS_FUSED=0``.
    """

    _channel_key = ("beta", 0, 1)

    def __init__(
        self,
        beta_init: float = 1.0,
        per_channel: bool = False,
        channels: int | None = None,
        inplace: bool = False,
    ) -> None:
        self.beta_init = float(beta_init)
        self.per_channel = per_channel
        super().__init__(channels if per_channel else None)
        if not per_channel:
            self.beta = nn.Parameter(torch.tensor(self.beta_init))

    @staticmethod
    def preserving_kwargs(base: str) -> dict | None:
        """Constructor kwargs that make the module equal ``base`` at init, or None if impossible."""
        return {} if base == "silu" else None

    def _needs_channels(self) -> bool:
        return self.per_channel

    def _build(self, channels: int) -> None:
        self.beta = nn.Parameter(torch.full((channels,), self.beta_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_channel:
            self._check_input(x)
        if x.numel() and _cpp is not None and _cpp.fused_allowed(x) and _cpp.load("pointwise") is not None:
            return SwishBetaFunction.apply(x.contiguous(), self.beta, _cpp.pointwise_inner(x, self.per_channel))
        beta = self.beta.view(-1, 1, 1) if self.per_channel and x.ndim == 4 else self.beta
        return x * torch.sigmoid(beta * x)

    def extra_repr(self) -> str:
        return f"beta_init={self.beta_init}, per_channel={self.per_channel}"
