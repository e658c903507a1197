"""Swish-beta: ``x * sigmoid(beta * x)`` with a trainable beta (papers/swish-citations.md)."""

from __future__ import annotations

import torch
from torch import nn

from ._base import LazyChannels

try:  # absolute: transformers copies relative imports beside the file
    from hf_acts.ops import direct, dispatch, pointwise
except ImportError:  # a copy beside a checkpoint (trust_remote_code) without hf-acts installed: the plain formula
    direct = dispatch = pointwise = None


class SwishBeta(LazyChannels):
    """``f(x) = x * sigmoid(beta * x)`` (Ramachandran et al. 2017); ``beta_init = 1`` is exactly SiLU.

    ``per_channel=True`` learns one beta per channel (channels inferred at the first call when not
    given). Layouts: any for a scalar beta; images ``(B, C, H, W)``, tokens ``(B, N, C)`` and
    vectors ``(B, C)`` per channel. ``inplace`` is accepted and ignored.

    A per-tensor ``beta`` has shape ``(1,)`` (0-d checkpoints load unchanged).

    Speed: the default path is the op ``hf_acts::swish_beta`` (one fused pass per direction, C++ on the CPU,
    Triton on CUDA); the plain formula runs where :mod:`hf_acts.ops.dispatch` says so.
    """

    _channel_key = ("beta", 0, 1)
    _per_tensor_keys = ("beta",)

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
            self._build(1)

    @staticmethod
    def preserving_kwargs(base: str) -> dict | None:
        """Constructor kwargs that make the module equal ``base`` at init, or None if impossible."""
        return {} if base == "silu" else None

    def _needs_channels(self) -> bool:
        return self.per_channel

    def _build(self, channels: int) -> None:
        self.beta = nn.Parameter(torch.full((channels,), self.beta_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # TorchScript compiles only the plain formula below
            if self.per_channel:
                self._check_input(x)
            if dispatch is not None and dispatch.fused(x, "pointwise"):
                return direct.run(pointwise.swish_beta, x, self.beta)
        beta = self.beta if self.per_channel else self.beta.view(())
        beta = beta.view(-1, 1, 1) if self.per_channel and x.ndim == 4 else beta
        return x * torch.sigmoid(beta * x)

    def extra_repr(self) -> str:
        return f"beta_init={self.beta_init}, per_channel={self.per_channel}"
