"""ADReLU against a loop-by-loop transcription of Eqs. 1-6."""

import contextlib
import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_fused_equals_plain, num_threads, ran_op, randomize_

from hf_acts import ADReLU
from hf_acts.ops import adrelu as adrelu_op
from hf_acts.ops import direct


def grouped_1x1(weight: torch.Tensor, x: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped 1x1 conv written as one einsum per group."""
    cin = x.shape[1] // groups
    cout = weight.shape[0] // groups
    outs = [torch.einsum("oc,bchw->bohw", weight[i * cout:(i + 1) * cout, :, 0, 0], x[:, i * cin:(i + 1) * cin])
            for i in range(groups)]
    return torch.cat(outs, 1), cout


def adrelu_reference(m: ADReLU, x: torch.Tensor, dw, tau_only: bool = False) -> torch.Tensor:
    """Eqs. 1-6 on (B, C, H, W) (tau alone: Eqs. 2-6); ``dw`` applies the depthwise conv of Eq. 3."""
    c, g, dk = x.shape[1], m.groups, m.head_dim
    qkv, cout = grouped_1x1(m.qkv.weight, x, g)  # each group: [Q_g | K_g | V_g]
    cg = cout // 3
    q = torch.cat([qkv[:, i * cout:i * cout + cg] for i in range(g)], 1)
    k = torch.cat([qkv[:, i * cout + cg:i * cout + 2 * cg] for i in range(g)], 1)
    v = torch.cat([qkv[:, i * cout + 2 * cg:(i + 1) * cout] for i in range(g)], 1)
    a = torch.empty_like(v)
    for h in range(c // dk):  # Eq. 2, head by head
        s = slice(h * dk, (h + 1) * dk)
        qn = q[:, s] / (torch.linalg.vector_norm(q[:, s], dim=1, keepdim=True) + m.eps)
        kn = k[:, s] / (torch.linalg.vector_norm(k[:, s], dim=1, keepdim=True) + m.eps)
        a[:, s] = torch.sigmoid((qn * kn).sum(1, keepdim=True)) * v[:, s]
    z = dw(a)  # Eq. 3
    z = F.group_norm(z, m.norm_groups, m.norm_dw.weight, m.norm_dw.bias, m.norm_dw.eps)  # Eq. 4
    t, _ = grouped_1x1(m.proj.weight, z, g)  # Eq. 5
    tau = F.group_norm(t, g, m.norm.weight, m.norm.bias, m.norm.eps)  # Eq. 6
    return tau if tau_only else torch.maximum(x, tau)  # Eq. 1


@pytest.mark.parametrize("channels,groups,head_dim", [(16, 4, 8), (32, 4, 8), (24, 2, 4)])
def test_images_match_equations(channels, groups, head_dim):
    m = randomize_(ADReLU(channels, groups=groups, head_dim=head_dim)).double()
    x = torch.randn(2, channels, 5, 6, dtype=torch.float64)
    ref = adrelu_reference(m, x, lambda a: F.conv2d(a, m.dw.weight, padding=1, groups=channels))
    torch.testing.assert_close(m(x), ref)


def test_tokens_use_a_kernel_of_three_along_n():
    m = randomize_(ADReLU(16)).double()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    x4 = x.transpose(1, 2).unsqueeze(2)  # (B, C, 1, N)
    row = m.dw.weight[:, :, 1:2, :]  # the middle row of the 3x3 kernel
    ref = adrelu_reference(m, x4, lambda a: F.conv2d(a, row, padding=(0, 1), groups=16))
    torch.testing.assert_close(m(x), ref.squeeze(2).transpose(1, 2))


def test_tokens_with_1d_kernel_and_vectors():
    m = randomize_(ADReLU(16, spatial_dims=1)).double()
    assert m.dw.weight.shape == (16, 1, 1, 3)
    x = torch.randn(3, 16, dtype=torch.float64)
    center = m.dw.weight[:, 0, 0, 1].view(1, -1, 1, 1)
    ref = adrelu_reference(m, x[:, :, None, None], lambda a: a * center)
    torch.testing.assert_close(m(x), ref[:, :, 0, 0])
    with pytest.raises(ValueError, match="spatial_dims=1"):
        m(torch.randn(1, 16, 4, 4, dtype=torch.float64))


def test_threshold_is_sometimes_active():
    """The reference comparison is only meaningful if tau changes the output."""
    m = randomize_(ADReLU(16))
    x = torch.randn(2, 16, 5, 5)
    y = m(x)
    assert (y != x).any() and (y != F.relu(x)).any()


def test_zero_tau_init_is_exactly_relu_and_still_learns():
    m = ADReLU(32, tau_init="zero")
    x = torch.randn(2, 32, 6, 6, requires_grad=True)
    y = m(x)
    assert torch.equal(y, F.relu(x))
    y.sum().backward()  # where tau wins (x < 0) the threshold's affine gets gradient
    assert m.norm.bias.grad.abs().sum() > 0


def test_gradcheck():
    m = randomize_(ADReLU(8, groups=2, head_dim=4)).double()
    x = torch.randn(1, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def zero_heads_and_ties(channels: int = 16) -> tuple[ADReLU, torch.Tensor]:
    """A module and a float64 input where both edge cases of Eqs. 1-2 occur: a position where x is zero in every channel
    (Q = K = 0 there: ``||q||`` has no derivative at 0, its subgradient 0 is taken, as ``vector_norm`` does), and
    elements equal to tau (channels whose last GroupNorm weight is 0 have tau = its bias; ties send the gradient to
    tau)."""
    m = randomize_(ADReLU(channels)).double()
    with torch.no_grad():
        m.norm.weight[:8] = 0
    x = torch.randn(2, channels, 5, 6, dtype=torch.float64)
    x[:, :8, 1] = m.norm.bias[:8, None].detach()
    x[:, :, 3, 4] = 0
    return m, x


@pytest.mark.parametrize("fused", [True, False])
def test_zero_heads_and_ties_have_the_reference_gradients(monkeypatch, fused):
    """Both paths at a zero input position (where a plain ``sqrt`` of the head's sum of squares gives NaN gradients)
    and at ties, against autograd through the reference (``vector_norm``'s subgradient; ``maximum`` would send half of
    a tie's gradient each way, so Eq. 1 is ``where(x > tau, x, tau)`` here, as in the modules)."""
    from hf_acts.ops import dispatch

    monkeypatch.setattr(dispatch, "FUSED", fused)
    m, x = zero_heads_and_ties()
    x.requires_grad_()
    grad = torch.randn_like(x)
    got = torch.autograd.grad(m(x), (x, *m.parameters()), grad)

    def reference(x: torch.Tensor) -> torch.Tensor:
        tau = adrelu_reference(m, x, lambda a: F.conv2d(a, m.dw.weight, padding=1, groups=x.shape[1]), tau_only=True)
        return torch.where(x > tau, x, tau)

    want = torch.autograd.grad(reference(x), (x, *m.parameters()), grad)
    assert all(g.isfinite().all() for g in got)
    assert got[-1][:8].abs().sum() > 0  # the ties' gradient reached tau's bias
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_parameter_count():
    # qkv 3C*C/g + dw 9C + GN 2C + proj C*C/g + GN 2C
    c, g = 64, 4
    assert sum(p.numel() for p in ADReLU(c).parameters()) == 3 * c * c // g + 9 * c + 2 * c + c * c // g + 2 * c


@pytest.mark.parametrize("kwargs,match", [
    (dict(channels=18), "groups=4"),
    (dict(channels=20, head_dim=8), "head_dim=8"),
    (dict(channels=16, tau_init="one"), "tau_init"),
    (dict(channels=16, spatial_dims=3), "spatial_dims"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ADReLU(**kwargs)


# The default CPU path is the fused kernel (csrc/adrelu.cpp); the module's plain PyTorch path (HF_ACTS_FUSED=0)
# is checked against the equations above, and the fused one against both.

def test_the_fused_kernel_is_built_and_is_the_default():
    from hf_acts.ops import _cpp

    assert _cpp.load("adrelu") is not None
    y = ADReLU(16)(torch.randn(2, 16, 4, 4, requires_grad=True))
    assert ran_op(y, "adrelu")


@pytest.mark.parametrize("shape,kwargs", [
    ((3, 24, 5, 7), {"groups": 4, "head_dim": 8}),  # heads straddle groups, 6 rows per group, odd H*W
    ((2, 32, 4, 16), {"groups": 4, "head_dim": 8, "norm_groups": 2}),
    # every stage inside its conv group: the kernel runs each group of a sample as its own unit of work
    ((1, 32, 6, 6), {"groups": 4, "head_dim": 8}),  # one sample, four units
    ((3, 32, 5, 5), {"groups": 4, "head_dim": 4, "norm_groups": 8}),  # two GroupNorm groups inside each unit
    ((2, 32, 5, 6), {"groups": 8, "head_dim": 8}),  # heads straddle two conv groups: units of one head each
    # at most 100 positions and 8+ channels per group: the weight gradients' short-row path; 9 channels per group
    # leave QKV rows (27) and proj rows (9) beyond its blocks of 4
    ((2, 18, 5, 5), {"groups": 2, "head_dim": 9}),
    # the convs' micro-kernel takes 6 output rows at a time: 7 channels per group leave 3 QKV rows and 1 proj row
    # beyond its blocks, 5 leave 3 and 5; 25 and 20 positions leave 9 and 4 beyond its strips of 16 (AVX2)
    ((2, 14, 5, 5), {"groups": 2, "head_dim": 7}),
    ((2, 20, 4, 5), {"groups": 4, "head_dim": 5}),
    ((2, 20, 16), {"groups": 2, "head_dim": 8}),  # tokens, 3x3 kernel (middle row)
    ((2, 20, 16), {"groups": 2, "head_dim": 8, "spatial_dims": 1}),  # tokens, 1x3 kernel
])
def test_fused_path_matches_the_plain_path_with_all_gradients(monkeypatch, shape, kwargs):
    channels = shape[-1] if len(shape) == 3 else shape[1]
    with num_threads(4):  # more threads than samples: the kernel splits samples into units where f allows
        assert_fused_equals_plain(monkeypatch, randomize_(ADReLU(channels, **kwargs)), shape)


@pytest.mark.parametrize("channels,shape,fused", [
    (16, (2, 16, 4, 4), True), (256, (2, 256, 4, 4), True),  # 64 channels per group, 16 positions
    (16, (2, 16, 3, 3), False), (16, (5, 16), False), (16, (2, 9, 16), False),  # fewer than 16 positions
    (512, (2, 512, 4, 4), False),  # 128 channels per group: GEMM-bound, batched matmuls win
])
def test_the_kernel_runs_where_it_wins(channels, shape, fused):
    y = ADReLU(channels)(torch.randn(*shape, requires_grad=True))
    assert ran_op(y, "adrelu") is fused


def test_wide_groups_without_a_backward_match_the_plain_path(monkeypatch):
    """136 channels per group (the kernel runs them in inference only), 35 positions: float64 against the plain
    formulas."""
    from hf_acts.ops import dispatch

    m = randomize_(ADReLU(272, groups=2, head_dim=8)).double().eval()
    x = torch.randn(2, 272, 5, 7, dtype=torch.float64)
    outputs = []
    for fused in (True, False):
        monkeypatch.setattr(dispatch, "FUSED", fused)
        with torch.inference_mode():
            outputs.append(m(x))
    torch.testing.assert_close(*outputs)


@pytest.mark.parametrize("channels,shape,fused", [
    (512, (2, 512, 4, 4), True), (2048, (1, 2048, 7, 7), True),  # wide groups: no backward, no recomputation
    (512, (2, 512, 3, 3), False),  # fewer than 16 positions
])
def test_without_a_backward_the_kernel_runs_at_every_width(monkeypatch, channels, shape, fused):
    forward_kernels = direct.KERNELS[adrelu_op.adrelu][0]
    calls = []
    monkeypatch.setitem(forward_kernels, "cpu", lambda *a, k=forward_kernels["cpu"]: calls.append(1) or k(*a))

    def ran(context: Any) -> bool:
        calls.clear()
        with context:
            m(torch.randn(*shape))
        return bool(calls)

    m = ADReLU(channels)
    assert ran(torch.inference_mode()) is fused
    assert ran(torch.no_grad()) is fused
    # grad enabled and trainable parameters: a backward may follow (for the parameters) though x needs none
    assert ran(contextlib.nullcontext()) is False
    m.requires_grad_(False)
    assert ran(contextlib.nullcontext()) is fused


def test_fused_path_gradcheck_including_parameters():
    m = randomize_(ADReLU(12, groups=3, head_dim=4)).double()
    names, params = zip(*m.named_parameters(), strict=True)
    x = torch.randn(2, 12, 4, 5, dtype=torch.float64, requires_grad=True)

    def f(x, *p):
        return torch.func.functional_call(m, dict(zip(names, p, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, (x, *(p.detach().requires_grad_() for p in params)))


def test_fused_path_bfloat16_runs_in_float32(monkeypatch):
    from hf_acts.ops import dispatch

    m = randomize_(ADReLU(16))
    x = torch.randn(2, 16, 6, 6).bfloat16()
    y = m(x)
    monkeypatch.setattr(dispatch, "FUSED", False)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, m(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_path_half_precision_is_the_float32_kernel_rounded(dtype):
    """A bf16/fp16 module reads and writes its dtype and computes in float32: output, input gradient and parameter
    gradients are the float32 kernel's on the same values, rounded once."""
    half = randomize_(ADReLU(16)).to(dtype)
    full = copy.deepcopy(half).float()
    x, g = torch.randn(3, 16, 6, 6).to(dtype), torch.randn(3, 16, 6, 6).to(dtype)
    xh, xf = x.clone().requires_grad_(), x.float().requires_grad_()
    y, yf = half(xh), full(xf)
    y.backward(g)
    yf.backward(g.float())
    assert ran_op(y, "adrelu") and y.dtype == xh.grad.dtype == dtype
    assert torch.equal(y, yf.to(dtype)) and torch.equal(xh.grad, xf.grad.to(dtype))
    for p, q in zip(half.parameters(), full.parameters(), strict=True):
        assert p.grad.dtype == dtype and torch.equal(p.grad, q.grad.to(dtype))

