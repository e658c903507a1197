"""dynActivation: ``f(x) = base(x) * (alpha - beta) + beta * x`` (papers/dynactivation-abstract.md)."""

from __future__ import annotations

import torch
from torch import nn

from ._base import LazyChannels
from .bases import BASE_ACTIVATIONS, get_base

try:
    from . import _cpp
except ImportError:  # a copy beside a checkpoint (trust_remote_code) without hf-acts installed: the plain formula
    _cpp = None

DYN_BASES = ("relu", "leaky_relu", "silu", "gelu", "gelu_tanh", "mish")
BASE_IDS = {name: i for i, name in enumerate(DYN_BASES)}  # the kernel's op ids (csrc/pointwise.cpp)


def dynact_formula(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, base: str) -> torch.Tensor:
    """The abstract's formula in PyTorch ops (the path under ``torch.compile``, dispatch modes and without the
    kernel)."""
    return torch.addcmul(beta * x, BASE_ACTIVATIONS[base](x), alpha - beta)


def _at_init(alpha: torch.Tensor, beta: torch.Tensor) -> bool:
    """alpha == 1 and beta == 0 everywhere (a scalar pair is read without building comparison tensors)."""
    if alpha.numel() == 1:
        return float(alpha) == 1.0 and float(beta) == 0.0
    return bool((alpha == 1).all()) and bool((beta == 0).all())


class DynActFunction(torch.autograd.Function):
    """Fused dynActivation (``csrc/pointwise.cpp``): forward and backward are one pass each over ``x``, the
    backward also summing ``dalpha = sum(g base(x))`` and ``dbeta = sum(g x) - dalpha``; saves only ``x`` (and
    alpha, beta). ``inner`` describes the layout as ``(outer, C, inner)`` with ``C = alpha.numel()``."""

    @staticmethod
    def forward(ctx, x, alpha, beta, base, inner):  # noqa: ANN001, ANN205
        ctx.save_for_backward(x, alpha, beta)
        ctx.base, ctx.inner = base, inner
        if _at_init(alpha, beta):
            return BASE_ACTIVATIONS[base](x)  # exactly the base op at init: swapped models reproduce logits bit for bit
        return _cpp.load("pointwise").forward(x, alpha, beta, BASE_IDS[base], inner)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x, alpha, beta = ctx.saved_tensors
        grad_x, grad_alpha, grad_beta = _cpp.load("pointwise").backward(grad.contiguous(), x, alpha, beta,
                                                                        BASE_IDS[ctx.base], ctx.inner)
        return grad_x, grad_alpha, grad_beta, None, None


class DynActivation(LazyChannels):
    """``f_i(x) = BaseAct(x) (alpha_i - beta_i) + beta_i x`` (abstract), one learned pair per module.

    ``alpha_init=1, beta_init=0`` (default) is exactly the base activation: function-preserving when
    swapped into a pretrained network. ``alpha_init=beta_init=1`` is the identity. Training from
    scratch may want a partly linear start (``0 < beta_init < alpha_init``).
    ``per_channel=True`` learns one pair per channel (project extension; channels inferred at the
    first call when not given). Layouts: any for scalars; images ``(B, C, H, W)``, tokens
    ``(B, N, C)`` and vectors ``(B, C)`` for ``per_channel``. ``inplace`` is accepted and ignored.

    Speed: on the CPU the default path is :class:`DynActFunction`, whose forward and backward are single fused
    passes (``csrc/pointwise.cpp``, built on first use) and which saves only ``x`` for the backward; under
    ``torch.compile`` the plain formula is used and fused by inductor.
    """

    _channel_key = ("alpha", 0, 1)

    def __init__(
        self,
        base: str = "silu",
        alpha_init: float = 1.0,
        beta_init: float = 0.0,
        per_channel: bool = False,
        channels: int | None = None,
        inplace: bool = False,
    ) -> None:
        self.base = base
        get_base(base, DYN_BASES)  # validates the name
        self.alpha_init = float(alpha_init)
        self.beta_init = float(beta_init)
        self.per_channel = per_channel
        super().__init__(channels if per_channel else None)
        if not per_channel:
            self.alpha = nn.Parameter(torch.tensor(self.alpha_init))
            self.beta = nn.Parameter(torch.tensor(self.beta_init))

    @staticmethod
    def preserving_kwargs(base: str) -> dict | None:
        """Constructor kwargs that make the module equal ``base`` at init, or None if impossible."""
        return {"base": base} if base in DYN_BASES else None

    def _needs_channels(self) -> bool:
        return self.per_channel

    def _build(self, channels: int) -> None:
        self.alpha = nn.Parameter(torch.full((channels,), self.alpha_init))
        self.beta = nn.Parameter(torch.full((channels,), self.beta_init))

    def _coefficient(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not self.per_channel:
            return p
        return p.view(-1, 1, 1) if x.ndim == 4 else p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_channel:
            self._check_input(x)
        if x.numel() and _cpp is not None and _cpp.fused_allowed(x) and _cpp.load("pointwise") is not None:
            return DynActFunction.apply(x.contiguous(), self.alpha, self.beta, self.base,
                                        _cpp.pointwise_inner(x, self.per_channel))
        return dynact_formula(x, self._coefficient(self.alpha, x), self._coefficient(self.beta, x), self.base)

    def extra_repr(self) -> str:
        return (
            f"base={self.base!r}, alpha_init={self.alpha_init}, beta_init={self.beta_init}, "
            f"per_channel={self.per_channel}"
        )
