"""Hugging Face Kernel Hub layers: drop-in forwards for the hf-acts modules, on the Triton kernels.

:func:`hf_acts.kernel_hub.build_kernel_repo` copies this file as ``layers.py`` into a kernel repository (beside
``triton_pointwise.py``, ``triton_fles.py``, ``fles_math.py`` and ``ids.py``), which the ``kernels`` library loads;
``kernelize(model, mode=Mode.TRAINING, device="cuda")`` then replaces the ``forward`` of every module whose class
carries the matching ``kernel_layer_name`` (``HfActsDynActivation``, ...). Per the Kernel Hub's rules a layer has no
``__init__`` and keeps the original forward's signature; it reads the module's own parameters and settings. Only
relative imports of those files and torch: the repository runs without hf-acts installed.
"""

from __future__ import annotations

import torch
from torch import nn

from . import fles_math, triton_fles, triton_pointwise
from .ids import POINTWISE_OPS


class _Pointwise(torch.autograd.Function):
    """dynActivation / Swish-beta (and with ``up``, the dynActGLU gate product) on the Triton kernels."""

    @staticmethod
    def forward(ctx, x, c0, c1, op, up):  # noqa: ANN001, ANN205
        x, c0, c1 = x.contiguous(), c0.contiguous(), c1.contiguous()
        up = None if up is None else up.contiguous()
        ctx.save_for_backward(x, c0, c1, up)
        ctx.op = op
        return triton_pointwise.forward(x, c0, c1, op, up)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x, c0, c1, up = ctx.saved_tensors
        gx, gup, g0, g1 = triton_pointwise.backward(grad.contiguous(), x, c0, c1, ctx.op, up)
        if ctx.op == POINTWISE_OPS["swish_beta"]:  # c0 and c1 are both beta
            return gx, g0, None, None, None
        return gx, g0, g1, None, gup


class _FleS(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, base, eps):  # noqa: ANN001, ANN205
        y, *saved = fles_math.fles_forward(x, w1, b1, w2, b2, base, eps, triton_fles)
        ctx.save_for_backward(x, w1, b1, w2, b2, *saved)
        ctx.base = base
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        return *fles_math.fles_backward_with(grad, *ctx.saved_tensors, ctx.base, triton_fles), None, None


def _glu_rows(t: torch.Tensor, channels: int) -> torch.Tensor:
    return t if channels == 1 else t.reshape(-1, channels)


class DynActivation(nn.Module):
    """``base(x) (alpha - beta) + beta x`` (dynActivation abstract)."""

    has_backward = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_channel:
            self._check_input(x)
        return _Pointwise.apply(x, self.alpha, self.beta, POINTWISE_OPS[self.base], None)


class SwishBeta(nn.Module):
    """``x sigmoid(beta x)``."""

    has_backward = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_channel:
            self._check_input(x)
        return _Pointwise.apply(x, self.beta, self.beta, POINTWISE_OPS["swish_beta"], None)


class DynActGLU(nn.Module):
    """``down(dynact(gate(x)) * up(x))`` with the gate product fused (``mode="gate"``; ``"both"`` also runs the up
    branch's dynActivation, here unfused)."""

    has_backward = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_proj(x), self.up_proj(x)
        act = self.act_fn
        if self.mode == "both":
            up = _Pointwise.apply(up, self.up_act.alpha, self.up_act.beta, POINTWISE_OPS[self.up_act.base], None)
        c = act.alpha.numel()
        y = _Pointwise.apply(_glu_rows(gate, c), act.alpha, act.beta, POINTWISE_OPS[act.base], _glu_rows(up, c))
        return self.down_proj(y.view(gate.shape))


class FleS(nn.Module):
    """``k_ve rho(k_ho x) x`` with per-sample channel coefficients; vectors ``(B, C)`` as tokens with one position.
    (FleS-Proto instances are not kernelized: their condition in :mod:`hf_acts.kernel_hub` excludes them.)"""

    has_backward = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x3 = x.unsqueeze(1) if x.ndim == 2 else x
        y = _FleS.apply(x3, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias, self.base, self.eps)
        return y.view(x.shape)
