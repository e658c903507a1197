"""FleS: flexible scaling of self-gated activations (papers/fles-poster.md, "Method")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._base import LazyChannels

try:  # absolute: transformers copies relative imports beside the file
    from hf_acts.ops import direct, dispatch
    from hf_acts.ops import fles as fles_op
except ImportError:  # a copy beside a checkpoint (trust_remote_code) without hf-acts installed: the plain formula
    direct = dispatch = fles_op = None

GATES = ("silu", "gelu")


def gate(t: torch.Tensor, base: str) -> torch.Tensor:
    """``rho``: the sigmoid (``base="silu"``) or the normal CDF (``base="gelu"``); TorchScript compiles it."""
    if base == "silu":
        return torch.sigmoid(t)
    return 0.5 * (1.0 + torch.erf(t * (1.0 / math.sqrt(2.0))))


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

    Speed: the default path for images and tokens is the op ``hf_acts::fles`` (:mod:`hf_acts.ops.fles`: two fused
    passes over ``x`` per direction, C++ on the CPU, Triton on CUDA); the plain PyTorch path below runs for
    vectors, FleS-Proto, and where :mod:`hf_acts.ops.dispatch` says so.
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
        dims: list[int] = [2, 3] if x.ndim == 4 else ([1] if x.ndim == 3 else [])
        if self.proto:  # FleS-Proto: one statistic per channel over the batch
            dims = [0] + dims
        if len(dims) > 0:
            pos, count = pos.sum(dims), count.sum(dims)
        m = pos / (count + self.eps)  # positive channel mean m_c
        if self.proto:
            m = m.unsqueeze(0)
        k = 1.0 + torch.tanh(self.fc2(F.relu(self.fc1(m))))
        k_ve, k_ho = k[..., :self.channels], k[..., self.channels:]
        if x.ndim == 4:
            return k_ve[:, :, None, None], k_ho[:, :, None, None]
        if x.ndim == 3:
            return k_ve[:, None, :], k_ho[:, None, :]
        return k_ve, k_ho

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # TorchScript compiles only the plain path below
            self._check_input(x)
            # vectors (B, C) stay on the plain path: one position per channel leaves nothing to fuse, the
            # coefficient MLP on (B, 2C) matrices is the whole cost, and autograd runs it faster than the manual
            # backward
            if x.ndim > 2 and not self.proto and dispatch is not None and dispatch.fused(x, "fles"):
                return direct.run(fles_op.fles, x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias,
                                  self.base, self.eps)[0]
        k_ve, k_ho = self.coefficients(x)
        return k_ve * gate(k_ho * x, self.base) * x

    def extra_repr(self) -> str:
        return f"channels={self.channels}, base={self.base!r}, reduction={self.reduction}, proto={self.proto}"
