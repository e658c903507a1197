"""dynActivation: ``f(x) = base(x) * (alpha - beta) + beta * x`` (papers/dynactivation-abstract.md)."""

from __future__ import annotations

import os
import types
import warnings

import torch
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ._base import LazyChannels
from .bases import BASE_ACTIVATIONS, get_base

DYN_BASES = ("relu", "leaky_relu", "silu", "gelu", "gelu_tanh", "mish")
_aten = torch.ops.aten
# d base(x)/dx times grad, as aten's fused backward ops (one kernel each in eager, decomposed under compile)
_BASE_BACKWARD = {
    "relu": lambda g, x: _aten.threshold_backward(g, x, 0),
    "leaky_relu": lambda g, x: _aten.leaky_relu_backward(g, x, 0.01, False),
    "silu": _aten.silu_backward,
    "gelu": lambda g, x: _aten.gelu_backward(g, x),
    "gelu_tanh": lambda g, x: _aten.gelu_backward(g, x, approximate="tanh"),
    "mish": _aten.mish_backward,
}


def _forward_kernel(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, base: str) -> torch.Tensor:
    return torch.addcmul(beta * x, BASE_ACTIVATIONS[base](x), alpha - beta)


def _backward_kernel(grad: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, base: str,
                     dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dx = g ((alpha - beta) base'(x) + beta)``, ``dalpha = sum(g base(x))``, ``dbeta = sum(g x) - dalpha``
    (sums in float32)."""
    grad_x = _BASE_BACKWARD[base](grad * (alpha - beta), x) + grad * beta
    g32 = grad.float()
    grad_alpha = (g32 * BASE_ACTIVATIONS[base](x).float()).sum(dims)
    grad_beta = (g32 * x.float()).sum(dims) - grad_alpha
    return grad_x, grad_alpha, grad_beta


class _Kernels:
    """Inductor-fused versions of the two kernels, compiled on first use (one loop over the tensor each).

    Each (kernel, base, dtype, rank, reduced dims) gets its own code object, hence its own compile cache, so
    dynamo's per-function recompile limit is never reached. Falls back to eager, once and with a warning, where
    compilation is unavailable (e.g. no C++ compiler), and under dispatch modes such as ``FlopCounterMode``.
    ``HF_ACTS_FUSED=0`` disables them.
    """

    enabled = os.environ.get("HF_ACTS_FUSED", "1") != "0"
    compiled: dict = {}

    @classmethod
    def run(cls, fn, *args):
        args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)  # gradients: DynActFunction
        if not cls.enabled or _get_current_dispatch_mode() is not None:  # e.g. FlopCounterMode: stay eager
            return fn(*args)
        x = args[1] if fn is _backward_kernel else args[0]
        key = (fn.__name__, *args[4 if fn is _backward_kernel else 3:], x.dtype, x.ndim)
        if key not in cls.compiled:
            code = fn.__code__.replace(co_name=f"{fn.__name__}_{abs(hash(key))}")
            cls.compiled[key] = torch.compile(types.FunctionType(code, fn.__globals__, code.co_name), dynamic=True,
                                              fullgraph=True)
        if cls.compiled[key] is not None:
            try:
                return cls.compiled[key](*args)
            except Exception as e:  # noqa: BLE001 - any compiler failure: eager is always correct
                warnings.warn(f"hf-acts: fused dynActivation kernel {key[0]} unavailable ({type(e).__name__}: {e}); "
                              "using eager", stacklevel=3)
                cls.compiled[key] = None
        return fn(*args)


class DynActFunction(torch.autograd.Function):
    """Fused dynActivation: saves only ``x`` (and alpha/beta); forward and backward are one pass each."""

    @staticmethod
    def forward(ctx, x, alpha, beta, base, dims):  # noqa: ANN001, ANN205
        ctx.save_for_backward(x, alpha, beta)
        ctx.base, ctx.dims = base, dims
        if x.device.type == "cpu" and bool((alpha == 1).all()) and bool((beta == 0).all()):
            return BASE_ACTIVATIONS[base](x)  # exactly the base op at init: swapped models reproduce logits bit for bit
        return _Kernels.run(_forward_kernel, x, alpha, beta, base)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x, alpha, beta = ctx.saved_tensors
        grad_x, grad_alpha, grad_beta = _Kernels.run(_backward_kernel, grad.contiguous(), x, alpha, beta, ctx.base,
                                                     ctx.dims)
        return (grad_x, grad_alpha.reshape(alpha.shape).to(alpha.dtype),
                grad_beta.reshape(beta.shape).to(beta.dtype), None, None)


class DynActivation(LazyChannels):
    """``f_i(x) = BaseAct(x) (alpha_i - beta_i) + beta_i x`` (abstract), one learned pair per module.

    ``alpha_init=1, beta_init=0`` (default) is exactly the base activation: function-preserving when
    swapped into a pretrained network. ``alpha_init=beta_init=1`` is the identity. Training from
    scratch may want a partly linear start (``0 < beta_init < alpha_init``).
    ``per_channel=True`` learns one pair per channel (project extension; channels inferred at the
    first call when not given). Layouts: any for scalars; images ``(B, C, H, W)``, tokens
    ``(B, N, C)`` and vectors ``(B, C)`` for ``per_channel``. ``inplace`` is accepted and ignored.

    Speed: the default path is :class:`DynActFunction`, whose forward and backward are single fused passes
    (compiled once per base and dtype) and which saves only ``x`` for the backward; under ``torch.compile`` the
    plain formula is used and fused by inductor.
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
        alpha, beta = self._coefficient(self.alpha, x), self._coefficient(self.beta, x)
        if torch.compiler.is_compiling():  # inductor fuses the plain formula itself
            return _forward_kernel(x, alpha, beta, self.base)
        if not self.per_channel:
            dims = tuple(range(x.ndim))
        else:
            dims = tuple(d for d in range(x.ndim) if d != (1 if x.ndim == 4 else x.ndim - 1))
        return DynActFunction.apply(x, alpha, beta, self.base, dims)

    def extra_repr(self) -> str:
        return (
            f"base={self.base!r}, alpha_init={self.alpha_init}, beta_init={self.beta_init}, "
            f"per_channel={self.per_channel}"
        )
