"""FleS against a per-sample transcription of the poster's equations."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_

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


@pytest.mark.parametrize("base", ["silu", "gelu"])
@pytest.mark.parametrize("proto", [False, True])
def test_images_tokens_vectors_match_equations(base, proto):
    m = randomize_(FleS(16, base=base, proto=proto), 0.3).double()
    img = torch.randn(3, 16, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(m(img), fles_reference(m, img.flatten(2)).view_as(img))
    tok = torch.randn(3, 6, 16, dtype=torch.float64)
    torch.testing.assert_close(m(tok), fles_reference(m, tok.transpose(1, 2)).transpose(1, 2))
    vec = torch.randn(3, 16, dtype=torch.float64)
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
