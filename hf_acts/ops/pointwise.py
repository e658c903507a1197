"""``hf_acts::dynact``, ``hf_acts::swish_beta`` and ``hf_acts::dynact_glu``: registered ops (``torch.library``)
with a CPU kernel (``csrc/pointwise.cpp``), a CUDA kernel (:mod:`hf_acts.ops.triton_pointwise`), a fake
implementation and their autograd. Each backward is an op of its own, so ``torch.compile`` traces both directions
without a graph break.

Coefficients are one value per tensor (shape ``(1,)``) or one per channel: images ``(B, C, H, W)`` on dim 1,
tokens ``(B, N, C)`` and vectors ``(B, C)`` on the last dim; ``dynact_glu`` is per tensor or per last-dim channel.
The forward saves only the inputs; the backward recomputes ``f``.
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

from ..activations.bases import BASE_ACTIVATIONS
from . import _cpp, direct
from .ids import POINTWISE_OPS as OPS

SWISH = OPS["swish_beta"]

# (dynActivation) the op is exactly the base activation at alpha = 1, beta = 0 (the init), so a swapped pretrained
# model reproduces its logits bit for bit; on CUDA this check would cost a device sync per call, so it is CPU-only
# (the CUDA kernel then matches the base to float32 rounding).


def _at_init(c0: Tensor, c1: Tensor | None) -> bool:
    if c0.numel() == 1:  # one pair: .item() is several times cheaper than a comparison op per call
        return c0.item() == 1 and (c1 is None or c1.item() == 0)
    if c1 is None:  # Swish-beta: beta == 1
        return bool((c0 == 1).all())
    return bool((c0 == 1).all()) and bool((c1 == 0).all())


def _inner(x: Tensor, channels: int) -> int:
    """``inner`` of the ``(outer, C, inner)`` view the C++ kernel takes."""
    if channels == 1:
        return x.numel()
    return x.shape[2] * x.shape[3] if x.ndim == 4 else 1


def _triton() -> ModuleType:
    from . import triton_pointwise

    return triton_pointwise


def _check(x: Tensor, coefficient: Tensor, name: str) -> None:
    channels = coefficient.numel()
    if channels != 1 and (x.ndim not in (2, 3, 4) or x.shape[1 if x.ndim == 4 else -1] != channels):
        raise ValueError(f"{name}: {channels} coefficients do not match the channels of input {tuple(x.shape)}")


# ---- dynActivation ----------------------------------------------------------------------------------------------

def _dynact_cpu(x: Tensor, alpha: Tensor, beta: Tensor, base: str) -> Tensor:
    """``base(x) (alpha - beta) + beta x`` (dynActivation abstract)."""
    _check(x, alpha, "dynact")
    if _at_init(alpha, beta):
        return BASE_ACTIVATIONS[base](x)
    return _cpp.load("pointwise").forward(x.contiguous(), alpha, beta, OPS[base], _inner(x, alpha.numel()))


dynact = torch.library.custom_op("hf_acts::dynact", mutates_args=(), device_types="cpu")(_dynact_cpu)


@dynact.register_kernel("cuda")
def dynact_triton(x: Tensor, alpha: Tensor, beta: Tensor, base: str) -> Tensor:
    _check(x, alpha, "dynact")
    return _triton().forward(x.contiguous(), alpha.contiguous(), beta.contiguous(), OPS[base])


@dynact.register_fake
def _(x: Tensor, alpha: Tensor, beta: Tensor, base: str) -> Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _dynact_backward_cpu(grad: Tensor, x: Tensor, alpha: Tensor, beta: Tensor, base: str
                         ) -> tuple[Tensor, Tensor, Tensor]:
    """``(dx, d alpha, d beta)``: ``dx = g (base'(x) (alpha - beta) + beta)``, ``d alpha = sum g base(x)``,
    ``d beta = sum g x - d alpha`` (sums per channel or over the tensor)."""
    return tuple(_cpp.load("pointwise").backward(grad.contiguous(), x.contiguous(), alpha, beta, OPS[base],
                                                 _inner(x, alpha.numel())))


dynact_backward = torch.library.custom_op("hf_acts::dynact_backward", mutates_args=(),
                                          device_types="cpu")(_dynact_backward_cpu)


@dynact_backward.register_kernel("cuda")
def dynact_backward_triton(grad: Tensor, x: Tensor, alpha: Tensor, beta: Tensor, base: str
                           ) -> tuple[Tensor, Tensor, Tensor]:
    gx, _, ga, gb = _triton().backward(grad.contiguous(), x.contiguous(), alpha.contiguous(), beta.contiguous(),
                                       OPS[base])
    return gx, ga, gb


@dynact_backward.register_fake
def _(grad: Tensor, x: Tensor, alpha: Tensor, beta: Tensor, base: str) -> tuple[Tensor, Tensor, Tensor]:
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(alpha), torch.empty_like(beta)


# ---- Swish-beta -------------------------------------------------------------------------------------------------

def _swish_beta_cpu(x: Tensor, beta: Tensor) -> Tensor:
    """``x sigmoid(beta x)`` (Ramachandran et al. 2017)."""
    _check(x, beta, "swish_beta")
    if _at_init(beta, None):
        return F.silu(x)
    return _cpp.load("pointwise").forward(x.contiguous(), beta, beta, SWISH, _inner(x, beta.numel()))


swish_beta = torch.library.custom_op("hf_acts::swish_beta", mutates_args=(), device_types="cpu")(_swish_beta_cpu)


@swish_beta.register_kernel("cuda")
def swish_beta_triton(x: Tensor, beta: Tensor) -> Tensor:
    _check(x, beta, "swish_beta")
    beta = beta.contiguous()
    return _triton().forward(x.contiguous(), beta, beta, SWISH)


@swish_beta.register_fake
def _(x: Tensor, beta: Tensor) -> Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _swish_beta_backward_cpu(grad: Tensor, x: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """``(dx, d beta)``: ``dx = g (s + beta x s (1 - s))``, ``d beta = sum g x^2 s (1 - s)``,
    ``s = sigmoid(beta x)``."""
    gx, gb, _ = _cpp.load("pointwise").backward(grad.contiguous(), x.contiguous(), beta, beta, SWISH,
                                                _inner(x, beta.numel()))
    return gx, gb


swish_beta_backward = torch.library.custom_op("hf_acts::swish_beta_backward", mutates_args=(),
                                              device_types="cpu")(_swish_beta_backward_cpu)


@swish_beta_backward.register_kernel("cuda")
def swish_beta_backward_triton(grad: Tensor, x: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    beta = beta.contiguous()
    gx, _, gb, _ = _triton().backward(grad.contiguous(), x.contiguous(), beta, beta, SWISH)
    return gx, gb


@swish_beta_backward.register_fake
def _(grad: Tensor, x: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(beta)


# ---- dynActGLU's gate product -----------------------------------------------------------------------------------

def _check_glu(gate: Tensor, up: Tensor, alpha: Tensor) -> None:
    if gate.shape != up.shape:
        raise ValueError(f"dynact_glu: gate {tuple(gate.shape)} and up {tuple(up.shape)} must have one shape")
    if alpha.numel() not in (1, gate.shape[-1]):
        raise ValueError(f"dynact_glu: {alpha.numel()} coefficients for a last dim of {gate.shape[-1]}")


def _glu_view(t: Tensor, channels: int) -> Tensor:
    """The Triton kernels read per-channel (channels-last) tensors as vectors ``(rows, C)``."""
    return t.contiguous() if channels == 1 else t.reshape(-1, channels).contiguous()


def _glu_inner(gate: Tensor, alpha: Tensor) -> int:
    """``inner`` of the C++ kernel's ``(outer, C, inner)`` view of a contiguous gate: its last dim holds the channels
    (so the kernel takes the tensor as it is, with no view per call: ~4 us each at a decoding step's size)."""
    return gate.numel() if alpha.numel() == 1 else 1


def _dynact_glu_cpu(gate: Tensor, up: Tensor, alpha: Tensor, beta: Tensor, base: str) -> Tensor:
    """``dynact(gate) * up``: the gated product of a dynActGLU MLP (project definition), one pass."""
    _check_glu(gate, up, alpha)
    if _at_init(alpha, beta):  # exactly the base GLU (e.g. SwiGLU), as dynact at its init
        return BASE_ACTIVATIONS[base](gate) * up
    return _cpp.load("pointwise").forward(gate.contiguous(), alpha, beta, OPS[base], _glu_inner(gate, alpha),
                                          up.contiguous())


dynact_glu = torch.library.custom_op("hf_acts::dynact_glu", mutates_args=(), device_types="cpu")(_dynact_glu_cpu)


@dynact_glu.register_kernel("cuda")
def dynact_glu_triton(gate: Tensor, up: Tensor, alpha: Tensor, beta: Tensor, base: str) -> Tensor:
    _check_glu(gate, up, alpha)
    c = alpha.numel()
    y = _triton().forward(_glu_view(gate, c), alpha.contiguous(), beta.contiguous(), OPS[base], _glu_view(up, c))
    return y.view(gate.shape)


@dynact_glu.register_fake
def _(gate: Tensor, up: Tensor, alpha: Tensor, beta: Tensor, base: str) -> Tensor:
    return torch.empty_like(gate, memory_format=torch.contiguous_format)


def _dynact_glu_backward_cpu(grad: Tensor, gate: Tensor, up: Tensor, alpha: Tensor, beta: Tensor, base: str
                             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(d gate, d up, d alpha, d beta)``: the dynact backward of ``g * up``, and ``d up = g dynact(gate)``, one
    pass."""
    d_gate, d_alpha, d_beta, d_up = _cpp.load("pointwise").backward(
        grad.contiguous(), gate.contiguous(), alpha, beta, OPS[base], _glu_inner(gate, alpha), up.contiguous())
    return d_gate, d_up, d_alpha, d_beta


dynact_glu_backward = torch.library.custom_op("hf_acts::dynact_glu_backward", mutates_args=(),
                                              device_types="cpu")(_dynact_glu_backward_cpu)


@dynact_glu_backward.register_kernel("cuda")
def dynact_glu_backward_triton(grad: Tensor, gate: Tensor, up: Tensor, alpha: Tensor, beta: Tensor, base: str
      ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    c = alpha.numel()
    d_gate, d_up, d_alpha, d_beta = _triton().backward(_glu_view(grad, c), _glu_view(gate, c), alpha.contiguous(),
                                                       beta.contiguous(), OPS[base], _glu_view(up, c))
    return d_gate.view(gate.shape), d_up.view(gate.shape), d_alpha, d_beta


@dynact_glu_backward.register_fake
def _(grad: Tensor, gate: Tensor, up: Tensor, alpha: Tensor, beta: Tensor, base: str
      ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    like = torch.empty_like(gate, memory_format=torch.contiguous_format)
    return like, torch.empty_like(like), torch.empty_like(alpha), torch.empty_like(beta)


# ---- autograd and the eager fast path (hf_acts.ops.direct) ---------------------------------------------------------

direct.register(dynact, dynact_backward, {"cpu": _dynact_cpu, "cuda": dynact_triton},
                {"cpu": _dynact_backward_cpu, "cuda": dynact_backward_triton})
direct.register(swish_beta, swish_beta_backward, {"cpu": _swish_beta_cpu, "cuda": swish_beta_triton},
                {"cpu": _swish_beta_backward_cpu, "cuda": swish_beta_backward_triton})
direct.register(dynact_glu, dynact_glu_backward, {"cpu": _dynact_glu_cpu, "cuda": dynact_glu_triton},
                {"cpu": _dynact_glu_backward_cpu, "cuda": dynact_glu_backward_triton})
