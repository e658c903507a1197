"""FleS against a per-sample transcription of the poster's equations."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_fused_equals_plain, num_threads, ran_op, randomize_

from hf_acts import FleS


def normal_cdf(t):
    return 0.5 * (1 + torch.erf(t / math.sqrt(2)))


def fles_reference(m: FleS, x: torch.Tensor) -> torch.Tensor:
    """x as (B, C, positions): phi = k_ve * rho(k_ho x) x with k from the positive channel means."""
    rho = torch.sigmoid if m.base == "silu" else normal_cdf
    out = torch.empty_like(x)
    samples = [x.transpose(0, 1).reshape(1, x.shape[1], -1)] * x.shape[0] if m.proto else x
    for b in range(x.shape[0]):
        xb = samples[b]  # (C, P) or (1, C, B*P) for proto
        xb = xb.reshape(x.shape[1], -1)
        m_c = torch.stack([xc[xc > 0].sum() / ((xc > 0).sum() + m.eps) for xc in xb])
        k = 1 + torch.tanh(m.fc2(F.relu(m.fc1(m_c))))
        k_ve, k_ho = k[: x.shape[1], None], k[x.shape[1]:, None]
        out[b] = k_ve * rho(k_ho * x[b]) * x[b]
    return out


def with_zeros(*shape: int) -> torch.Tensor:
    """Normal values with a quarter set to exactly 0, which the positive count must leave out (x > 0, not >= 0)."""
    x = torch.randn(*shape, dtype=torch.float64)
    return torch.where(torch.rand(shape) < 0.25, 0.0, x)


@pytest.mark.parametrize("base", ["silu", "gelu"])
@pytest.mark.parametrize("proto", [False, True])
def test_images_tokens_vectors_match_equations(base, proto):
    m = randomize_(FleS(16, base=base, proto=proto), 0.3).double()
    img = with_zeros(3, 16, 4, 5)
    torch.testing.assert_close(m(img), fles_reference(m, img.flatten(2)).view_as(img))
    tok = with_zeros(3, 6, 16)
    torch.testing.assert_close(m(tok), fles_reference(m, tok.transpose(1, 2)).transpose(1, 2))
    vec = with_zeros(3, 16)
    torch.testing.assert_close(m(vec), fles_reference(m, vec[:, :, None])[:, :, 0])


@pytest.mark.parametrize("base,fn", [("silu", F.silu), ("gelu", F.gelu)])
def test_function_preserving_init(base, fn):
    m = FleS(64, base=base).double()  # float64: equal up to rounding, whatever the magnitude of x
    x = torch.randn(4, 64, 7, 7, dtype=torch.float64) * 3
    assert (m(x) - fn(x)).abs().max() <= 1e-12


def test_per_sample_statistics_do_not_mix_the_batch():
    m = randomize_(FleS(16), 0.3)
    x = torch.randn(4, 16, 3, 3)
    torch.testing.assert_close(m(x)[1:2], m(x[1:2]))
    proto = randomize_(FleS(16, proto=True), 0.3)
    assert not torch.allclose(proto(x)[1:2], proto(x[1:2]))


def test_gradcheck():
    m = randomize_(FleS(8, base="gelu"), 0.3).double()
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def test_parameter_overhead_matches_the_paper_ratio():
    # hidden = max(C // 32, 8); fc1 C*h + h, fc2 h*2C + 2C
    c = 768
    h = c // 32
    assert sum(p.numel() for p in FleS(c).parameters()) == c * h + h + h * 2 * c + 2 * c


def test_bad_base():
    with pytest.raises(ValueError, match="base must be one of"):
        FleS(16, base="relu")


# The default CPU path is fused (csrc/fles.cpp, coefficient MLP in PyTorch); the plain path is the reference above.

def test_the_fused_kernel_is_built_and_is_the_default():
    from hf_acts.ops import _cpp

    assert _cpp.load("fles") is not None
    y = FleS(16)(torch.randn(2, 5, 16, requires_grad=True))
    assert ran_op(y, "fles")
    for m, x in ((FleS(16, proto=True), torch.randn(2, 5, 16)), (FleS(16), torch.randn(2, 16))):
        # FleS-Proto (an ablation) and vectors (one position per channel) stay on the plain path
        assert not ran_op(m(x.requires_grad_()), "fles")


@pytest.mark.parametrize("base", ["silu", "gelu"])
@pytest.mark.parametrize("shape", [(3, 16, 5, 7), (3, 7, 16), (2, 1, 16), (2, 16, 40, 40)])
def test_fused_path_equals_the_plain_path_in_float64(monkeypatch, base, shape):
    assert_fused_equals_plain(monkeypatch, randomize_(FleS(16, base=base), 0.3), shape)


@pytest.mark.parametrize("shape", [(2, 600, 3, 3), (2, 5, 600)])
def test_fused_path_equals_the_plain_path_with_a_wide_coefficient_mlp(monkeypatch, shape):
    """600 channels: a hidden width of 18 (600 // 32), so the kernel's vectorised dot products over the hidden units
    have whole vectors and a remainder, in float64 as the plain path."""
    m = randomize_(FleS(600), 0.3)
    assert m.fc1.out_features == 18
    assert_fused_equals_plain(monkeypatch, m, shape)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("shape", [(1, 16, 64, 64), (2, 4500, 16)])  # several tasks of 32K elements
def test_fused_path_with_fewer_samples_than_threads(monkeypatch, threads, shape):
    """A batch smaller than the thread count splits each sample's channels or rows over the threads (the per-thread
    partial sums are added afterwards); one thread takes the per-sample path. Both equal the plain path."""
    with num_threads(threads):
        assert_fused_equals_plain(monkeypatch, randomize_(FleS(16), 0.3), shape)


def test_fused_path_gradcheck_including_parameters():
    m = randomize_(FleS(8, base="silu"), 0.3).double()
    names, params = zip(*m.named_parameters(), strict=True)
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)

    def f(x, *p):
        return torch.func.functional_call(m, dict(zip(names, p, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, (x, *(p.detach().requires_grad_() for p in params)))


def test_fused_path_bfloat16(monkeypatch):
    from hf_acts.ops import dispatch

    m = randomize_(FleS(16, base="gelu"), 0.3).bfloat16()
    x = torch.randn(2, 9, 16).bfloat16()
    y = m(x)
    monkeypatch.setattr(dispatch, "FUSED", False)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, m(x), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("shape", [(2, 3, 600), (2, 600, 25, 25), (1, 600, 5, 5)])
def test_fused_path_float16_is_the_float32_kernel_rounded(shape):
    """float16 runs on float blocks of 512 values (F16C, where the build has it): rows of 600 channels and spans of
    625 positions take two blocks each, with per-channel coefficients from a randomised MLP, so a block read at the
    wrong channel offset is far off. The float16 kernel on float16-representable inputs against the float32 kernel,
    output and all gradients (its sums run in another order: to float16's rounding)."""
    torch.manual_seed(0)
    half = randomize_(FleS(600, base="silu"), 0.3).half()
    full = copy.deepcopy(half).float()  # the same (float16-representable) weights
    x = torch.randn(shape).half()
    xh, xf = x.clone().requires_grad_(), x.float().requires_grad_()
    yh, yf = half(xh), full(xf)
    assert ran_op(yh, "fles")
    g = torch.randn(shape).half()
    yh.backward(g)
    yf.backward(g.float())
    torch.testing.assert_close(yh.float(), yf.half().float(), rtol=4e-3, atol=4e-3)
    torch.testing.assert_close(xh.grad.float(), xf.grad.half().float(), rtol=4e-3, atol=4e-3)
    for ph, pf in zip(half.parameters(), full.parameters(), strict=True):
        torch.testing.assert_close(ph.grad.float(), pf.grad, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("shape", [(4, 250, 16), (4, 16, 50, 5)])
def test_gelu_base_kernel_in_float32_at_init_is_gelu_to_float_accuracy(shape):
    """At init (k_ve = k_ho = 1 exactly, and no gradient reaches the statistics through fc2's zero weight) the float32
    kernel is GELU. Its normal CDF and density (Abramowitz & Stegun 7.1.26 sharing one exp, csrc/vec_math.h) stay
    within float accuracy of float64 over [-12, 12]; a wrong coefficient shows up at 1e-5."""
    x = torch.linspace(-12, 12, math.prod(shape)).reshape(shape)
    xf = x.clone().requires_grad_()
    y = FleS(16, base="gelu")(xf)
    y.backward(torch.ones_like(y))
    assert ran_op(y, "fles")
    xd = x.double().requires_grad_()
    ref = xd * normal_cdf(xd)
    ref.backward(torch.ones_like(ref))
    assert (y.double() - ref).abs().max() <= 1e-6
    assert (xf.grad.double() - xd.grad).abs().max() <= 5e-7
