"""Dy-ReLU-B (Chen et al. 2020): the dynamic-ReLU baseline of ADReLU's Table 5."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import LazyChannels


class DyReLU(LazyChannels):
    """``y_c = max_k(a_c^k x_c + b_c^k)`` with input-dependent, channel-wise coefficients (DY-ReLU-B).

    ``theta = 2 * sigmoid(fc2(relu(fc1(GAP(x))))) - 1`` with ``fc1: C -> C // reduction`` and
    ``fc2: -> 2 * K * C``; ``a^k = alpha_k + lambda_a * theta_a^k``, ``b^k = beta_k + lambda_b * theta_b^k``
    with ``alpha = (1, 0, ...)``, ``beta = 0``, ``lambda_a = 1.0``, ``lambda_b = 0.5``, ``K = 2``,
    ``reduction = 4``. Both FCs have a bias (this reproduces Table 5's Dy-ReLU parameter counts).
    Layouts: images (GAP over H, W), tokens (over N), vectors (one position).
    ``inplace`` is accepted and ignored.
    """

    _channel_key = ("fc1.weight", 1, 1)

    def __init__(
        self,
        channels: int | None = None,
        k: int = 2,
        reduction: int = 4,
        lambda_a: float = 1.0,
        lambda_b: float = 0.5,
        inplace: bool = False,
    ) -> None:
        self.k = k
        self.reduction = reduction
        self.lambda_a = lambda_a
        self.lambda_b = lambda_b
        super().__init__(channels)

    @staticmethod
    def preserving_kwargs(base: str) -> dict | None:
        """Dy-ReLU's hyper-function starts random: it never equals its base at init."""
        return None

    def _build(self, channels: int) -> None:
        if channels < self.reduction:
            raise ValueError(f"channels={channels} must be >= reduction={self.reduction}")
        self.fc1 = nn.Linear(channels, channels // self.reduction)
        self.fc2 = nn.Linear(channels // self.reduction, 2 * self.k * channels)
        init = torch.zeros(2 * self.k)
        init[0] = 1.0  # alpha^1 = 1, other alphas and all betas 0: ReLU when theta = 0
        self.register_buffer("init_v", init, persistent=False)
        self.register_buffer("lambdas", torch.tensor([self.lambda_a] * self.k + [self.lambda_b] * self.k),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            self._check_input(x)
        pooled = x.mean((2, 3)) if x.ndim == 4 else (x.mean(1) if x.ndim == 3 else x)
        theta = 2.0 * torch.sigmoid(self.fc2(F.relu(self.fc1(pooled)))) - 1.0
        coefs = theta.view(x.shape[0], -1, 2 * self.k) * self.lambdas + self.init_v  # (B, C, 2K)
        coefs = coefs.to(x.dtype)
        if x.ndim == 4:
            coefs = coefs[:, :, None, None]
        elif x.ndim == 3:
            coefs = coefs[:, None]
        y = torch.addcmul(coefs[..., self.k], x, coefs[..., 0])
        for i in range(1, self.k):  # max over the K linear pieces, one map at a time
            y = torch.maximum(y, torch.addcmul(coefs[..., self.k + i], x, coefs[..., i]))
        return y

    def extra_repr(self) -> str:
        return f"channels={self.channels}, k={self.k}, reduction={self.reduction}"
