"""dynActivation: ``f(x) = base(x) * (alpha - beta) + beta * x`` (papers/dynactivation-abstract.md)."""

from __future__ import annotations

import torch
from torch import nn

from ._base import LazyChannels
from .bases import apply_base, get_base

try:  # absolute: transformers copies relative imports beside the file
    from hf_acts.ops import direct, dispatch, pointwise
except ImportError:  # a copy beside a checkpoint (trust_remote_code) without hf-acts installed: the plain formula
    direct = dispatch = pointwise = None

DYN_BASES = ("relu", "leaky_relu", "silu", "gelu", "gelu_tanh", "mish")


def dynact_formula(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, base: str) -> torch.Tensor:
    """The abstract's formula in PyTorch ops: the reference, and the path wherever no op runs
    (see :mod:`hf_acts.ops.dispatch`)."""
    return torch.addcmul(beta * x, apply_base(x, base), alpha - beta)


def use_op(x: torch.Tensor) -> bool:
    """Whether the registered op (C++ on CPU, Triton on CUDA) runs on ``x`` rather than the plain formula."""
    return dispatch is not None and dispatch.fused(x, "pointwise")


class DynActivation(LazyChannels):
    """``f_i(x) = BaseAct(x) (alpha_i - beta_i) + beta_i x`` (abstract), one learned pair per module.

    ``alpha_init=1, beta_init=0`` (default) is exactly the base activation: function-preserving when
    swapped into a pretrained network. ``alpha_init=beta_init=1`` is the identity. Training from
    scratch may want a partly linear start (``0 < beta_init < alpha_init``).
    ``per_channel=True`` learns one pair per channel (project extension; channels inferred at the
    first call when not given). Layouts: any for scalars; images ``(B, C, H, W)``, tokens
    ``(B, N, C)`` and vectors ``(B, C)`` for ``per_channel``. ``inplace`` is accepted and ignored.

    Per-tensor ``alpha``/``beta`` have shape ``(1,)`` (FSDP2 and DeepSpeed ZeRO-3 refuse 0-d parameters);
    checkpoints written with 0-d ones load unchanged.

    Speed: the default path is the op ``hf_acts::dynact`` (:mod:`hf_acts.ops.pointwise`): one fused pass per
    direction (C++ on the CPU, Triton on CUDA), saving only ``x`` for the backward.
    """

    _channel_key = ("alpha", 0, 1)
    _per_tensor_keys = ("alpha", "beta")

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
            self._build(1)

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
            return p.view(())
        return p.view(-1, 1, 1) if x.ndim == 4 else p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # TorchScript compiles only the plain formula below
            if self.per_channel:
                self._check_input(x)
            if use_op(x):
                return direct.run(pointwise.dynact, x, self.alpha, self.beta, self.base)
        return dynact_formula(x, self._coefficient(self.alpha, x), self._coefficient(self.beta, x), self.base)

    def extra_repr(self) -> str:
        return (
            f"base={self.base!r}, alpha_init={self.alpha_init}, beta_init={self.beta_init}, "
            f"per_channel={self.per_channel}"
        )
