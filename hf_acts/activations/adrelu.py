"""ADReLU: attention-based dynamic ReLU (papers/adrelu.md, Eqs. 1-6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import LazyChannels, check_divisible, from_nchw, to_nchw

try:  # absolute: transformers copies relative imports beside the file
    from hf_acts.ops import adrelu as adrelu_op
    from hf_acts.ops import direct, dispatch
except ImportError:  # a copy beside a checkpoint (trust_remote_code) without hf-acts installed: the plain formula
    direct = dispatch = adrelu_op = None

TAU_INITS = ("paper", "zero")


def grouped_pointwise(x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped 1x1 convolution as one batched matmul: same result as ``F.conv2d(x, weight, groups=groups)``,
    several times faster forward and backward on CPU than the grouped-convolution kernels."""
    b, c, h, w = x.shape
    out = weight.shape[0]
    y = torch.matmul(weight.view(groups, out // groups, c // groups), x.reshape(b, groups, c // groups, h * w))
    return y.view(b, out, h, w)


def _norm(square_sum: torch.Tensor) -> torch.Tensor:
    """``sqrt(square_sum)`` whose gradient is 0 where the sum is 0 (a head whose Q or K is zero at a position, e.g. on a
    zero input), where ``sqrt``'s is infinite and would make the weights' gradients NaN: the subgradient of ``||q||``
    at 0 that ``torch.linalg.vector_norm`` and the fused kernels take."""
    nonzero = square_sum > 0
    return torch.where(nonzero, torch.where(nonzero, square_sum, 1.0).sqrt(), 0.0)


def adrelu_attention(x: torch.Tensor, qkv_weight: torch.Tensor, groups: int, head_dim: int, eps: float
                     ) -> torch.Tensor:
    """Eq. 2 on a ``(B, C, H, W)`` map: ``A = sigmoid(<Qn, Kn>_head) * V`` with ``Q, K, V`` from one grouped 1x1
    conv (each group makes its own Q, K, V; heads of ``head_dim`` channels in channel order)."""
    b, c, h, w = x.shape
    g, dk = groups, head_dim
    qkv = grouped_pointwise(x, qkv_weight.to(x.dtype), g).view(b, g, 3, c // g, h * w)
    if (c // g) % dk == 0:  # heads nest inside groups: pure views, no copy
        q, k, v = qkv.view(b, g, 3, c // g // dk, dk, h * w).unbind(2)
        head_axis = 3
    else:  # heads straddle groups: one copy to Q|K|V-major order
        q, k, v = qkv.transpose(1, 2).reshape(b, 3, c // dk, dk, h * w).unbind(1)
        head_axis = 2
    # sums over the head axis rather than vector_norm over a strided axis: same math, ~3x faster
    qk = (q * k).sum(head_axis, keepdim=True)
    qn = _norm((q * q).sum(head_axis, keepdim=True)) + eps
    kn = _norm((k * k).sum(head_axis, keepdim=True)) + eps
    score = torch.sigmoid(qk / (qn * kn))
    return (score * v).reshape(b, c, h, w)


def adrelu_threshold(x: torch.Tensor, qkv_weight: torch.Tensor, dw_weight: torch.Tensor, norm_dw_weight: torch.Tensor,
                     norm_dw_bias: torch.Tensor, proj_weight: torch.Tensor, norm_weight: torch.Tensor,
                     norm_bias: torch.Tensor, groups: int, head_dim: int, norm_groups: int, eps: float, eps_dw: float,
                     eps_norm: float) -> torch.Tensor:
    """``tau = f(x)`` (Eqs. 2-6) in PyTorch ops, parameters cast to ``x``'s dtype: the reference formula, the plain
    path, and what the CUDA op's backward recomputes."""
    dtype = x.dtype
    padding = [dw_weight.shape[2] // 2, dw_weight.shape[3] // 2]
    z = F.conv2d(adrelu_attention(x, qkv_weight, groups, head_dim, eps), dw_weight.to(dtype), padding=padding,
                 groups=x.shape[1])  # Eq. 3
    z = F.group_norm(z, norm_groups, norm_dw_weight.to(dtype), norm_dw_bias.to(dtype), eps_dw)  # Eq. 4
    t = grouped_pointwise(z, proj_weight.to(dtype), groups)  # Eq. 5
    return F.group_norm(t, groups, norm_weight.to(dtype), norm_bias.to(dtype), eps_norm)  # Eq. 6


class _Maximum(torch.autograd.Function):
    """``max(x, tau)`` saving a 1-byte mask: backward is two element-wise ops instead of torch.maximum's seven
    (ties go to tau, where the gradient is taken)."""

    @staticmethod
    def forward(ctx, x, tau):  # noqa: ANN001, ANN205
        above = x > tau
        ctx.save_for_backward(above)
        return torch.where(above, x, tau)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        (above,) = ctx.saved_tensors
        grad_x = grad * above
        return grad_x, grad - grad_x


class ADReLU(LazyChannels):
    """``y = max(x, tau)`` with an input-dependent threshold ``tau = f(x)`` (Eq. 1).

    ``f`` (Eqs. 2-6):

    * ``Q, K, V = QKV_conv^(g)(x)``: one grouped 1x1 conv ``C -> 3C`` with ``groups`` groups; each
      group produces its own Q, K and V from its own input channels (project reading of "each group
      is an attention subspace"), channel order group-major as in the input;
    * per head of ``head_dim`` channels and per position: ``Qn = Q / (||Q||_2 + eps)``, same for K,
      ``A = sigmoid(sum_i Qn_i Kn_i) * V`` (Eq. 2) -- linear in H*W;
    * ``Z = DW_conv(A)`` 3x3 depthwise (Eq. 3), ``Z^ = GNorm^(g_dw)(Z)`` (Eq. 4),
      ``T = conv1x1^(g)(Z^)`` (Eq. 5), ``tau = GNorm^(g)(T)`` (Eq. 6).

    Layouts: images ``(B, C, H, W)``; tokens ``(B, N, C)`` with N as the spatial axis and a kernel
    of 3 along N (Sec. 3, ViT remark; the middle row of the 3x3 kernel, or a 1x3 kernel with
    ``spatial_dims=1``); vectors ``(B, C)`` as one position (Table 6).

    Project decisions (the paper is silent): the convolutions have no bias (each is followed by a
    GroupNorm); ``eps = 1e-6``; where a head's Q (or K) is zero at a position, ``||q||`` takes the
    subgradient 0 (as ``torch.linalg.vector_norm`` does), so a zero input gives finite gradients.
    ``tau_init="paper"`` keeps the default GroupNorm affine init; ``tau_init="zero"`` zeroes the last
    GroupNorm's affine so ``tau = 0`` and the module is exactly ReLU at init (function-preserving over
    ReLU). ``inplace`` is accepted and ignored.

    Speed: the default path is the op ``hf_acts::adrelu`` (:mod:`hf_acts.ops.adrelu`): on the CPU one fused C++
    kernel per direction that keeps each sample's intermediates in cache (where it wins, see ``_fused_wins``), on
    CUDA the GEMMs and depthwise conv on cuBLAS/cuDNN with Triton kernels for the attention and the final
    GroupNorm + max; both save only ``x`` for the backward, which recomputes. The plain PyTorch path
    (:meth:`threshold`) runs where :mod:`hf_acts.ops.dispatch` says so.
    """

    _channel_key = ("qkv.weight", 0, 3)

    def __init__(
        self,
        channels: int | None = None,
        groups: int = 4,
        head_dim: int = 8,
        norm_groups: int | None = None,
        eps: float = 1e-6,
        tau_init: str = "paper",
        spatial_dims: int = 2,
        inplace: bool = False,
    ) -> None:
        if tau_init not in TAU_INITS:
            raise ValueError(f"tau_init must be one of {TAU_INITS}, got {tau_init!r}")
        if spatial_dims not in (1, 2):
            raise ValueError(f"spatial_dims must be 1 (tokens) or 2 (images), got {spatial_dims}")
        self.groups = groups
        self.head_dim = head_dim
        self.norm_groups = norm_groups or groups
        self.eps = eps
        self.tau_init = tau_init
        self.spatial_dims = spatial_dims
        super().__init__(channels)

    def _build(self, channels: int) -> None:
        check_divisible(channels, self.groups, "grouped 1x1 convs", "groups")
        check_divisible(channels, self.head_dim, "attention heads", "head_dim")
        check_divisible(channels, self.norm_groups, "GroupNorm after the depthwise conv", "norm_groups")
        kernel = (3, 3) if self.spatial_dims == 2 else (1, 3)
        padding = (1, 1) if self.spatial_dims == 2 else (0, 1)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, groups=self.groups, bias=False)
        self.dw = nn.Conv2d(channels, channels, kernel, padding=padding, groups=channels, bias=False)
        self.norm_dw = nn.GroupNorm(self.norm_groups, channels)
        self.proj = nn.Conv2d(channels, channels, 1, groups=self.groups, bias=False)
        self.norm = nn.GroupNorm(self.groups, channels)
        if self.tau_init == "zero":
            nn.init.zeros_(self.norm.weight)
            nn.init.zeros_(self.norm.bias)

    @staticmethod
    def preserving_kwargs(base: str) -> dict | None:
        """Constructor kwargs that make the module equal ``base`` at init, or None if impossible."""
        return {"tau_init": "zero"} if base == "relu" else None

    def parameters_and_config(self) -> tuple[list[torch.Tensor], tuple]:
        """The seven weights and the ``(groups, head_dim, norm_groups, eps, eps_dw, eps_norm)`` of Eqs. 2-6, in the
        order :func:`adrelu_threshold` and the op ``hf_acts::adrelu`` take them."""
        params = [self.qkv.weight, self.dw.weight, self.norm_dw.weight, self.norm_dw.bias, self.proj.weight,
                  self.norm.weight, self.norm.bias]
        return params, (self.groups, self.head_dim, self.norm_groups, self.eps, self.norm_dw.eps, self.norm.eps)

    def threshold(self, x: torch.Tensor) -> torch.Tensor:
        """``tau = f(x)`` on a ``(B, C, H, W)`` map (Eqs. 2-6), see :func:`adrelu_threshold`.

        bfloat16/float16 inputs on the CPU are computed in float32 (and tau cast back): CPU half-precision
        GEMM and depthwise-conv kernels are 8-10x slower than float32 ones here (project decision)."""
        self._check_spatial(x)
        dtype = x.dtype
        if x.device.type == "cpu" and (dtype == torch.bfloat16 or dtype == torch.float16):
            x = x.float()
        return adrelu_threshold(x, self.qkv.weight, self.dw.weight, self.norm_dw.weight, self.norm_dw.bias,
                                self.proj.weight, self.norm.weight, self.norm.bias, self.groups, self.head_dim,
                                self.norm_groups, self.eps, self.norm_dw.eps, self.norm.eps).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # TorchScript: the plain path (Eqs. 1-6 in PyTorch ops)
            x4 = to_nchw(x)
            return from_nchw(torch.maximum(x4, self.threshold(x4)), x)
        return self._forward(x)

    @torch.jit.unused
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x4 = to_nchw(x)
        self._check_spatial(x4)
        impl = "plain" if dispatch is None else dispatch.implementation(x4, "adrelu")
        if impl == "triton" or (impl == "cpp" and self._fused_wins(x4)):
            params, config = self.parameters_and_config()
            return from_nchw(direct.run(adrelu_op.adrelu, x4, *params, *config), x)
        tau = self.threshold(x4)
        if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
            return from_nchw(torch.maximum(x4, tau), x)  # Eq. 1
        return from_nchw(_Maximum.apply(x4, tau), x)  # Eq. 1, lean backward

    def _check_spatial(self, x: torch.Tensor) -> None:
        if self.spatial_dims == 1 and x.shape[2] != 1:
            raise ValueError("ADReLU(spatial_dims=1) accepts tokens (B, N, C) or vectors (B, C) only")

    def _fused_wins(self, x: torch.Tensor) -> bool:
        """Where the per-sample kernel pays off: at least 16 positions per sample (with fewer the kernel's vector
        lanes run empty; vectors (B, C) take the plain path), and, where a backward will follow, at most 64 channels
        per group. The backward recomputes the forward, which adds a third to the convolutions' FLOPs: wider groups
        are GEMM-bound, and there the plain path's batched matmuls (BLAS), which save their inputs instead, win
        (1.4-1.5x at 256 channels per group; 128: 0.7-1.2x). Without a backward the kernel wins at every width
        measured (0.33-0.94x of the plain path, 64-512 channels per group, 4 x 4 to 28 x 28 maps, batch 1 and 8;
        2-core Zen 3 VM)."""
        if x.shape[2] * x.shape[3] < 16:
            return False
        backward = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        return not backward or x.shape[1] // self.groups <= 64

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, groups={self.groups}, head_dim={self.head_dim}, "
            f"norm_groups={self.norm_groups}, tau_init={self.tau_init!r}, spatial_dims={self.spatial_dims}"
        )
