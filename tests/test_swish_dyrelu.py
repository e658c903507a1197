"""Swish-beta and the Dy-ReLU-B baseline against their formulas."""

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_fused_equals_plain, ran_op, randomize_

from hf_acts import DyReLU, SwishBeta


def test_swish_beta_formula_and_silu_init():
    x = torch.randn(4, 9) * 3
    assert (SwishBeta()(x) - F.silu(x)).abs().max() <= 1e-6
    torch.testing.assert_close(SwishBeta(beta_init=2.5)(x), x * torch.sigmoid(2.5 * x))


def test_swish_beta_per_channel():
    m = SwishBeta(per_channel=True, channels=3)
    with torch.no_grad():
        m.beta.copy_(torch.tensor([0.5, 1.0, 2.0]))
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(m(x), x * torch.sigmoid(m.beta.view(1, 3, 1, 1) * x))


def test_swish_beta_fused_kernel_is_the_default_and_exactly_silu_at_init():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    assert torch.equal(SwishBeta()(x), F.silu(x))
    assert ran_op(SwishBeta(beta_init=1.3)(x), "swish_beta")


@pytest.mark.parametrize("shape,per_channel", [((3, 6, 5, 5), True), ((3, 5, 6), True), ((4, 6), True),
                                               ((2, 6, 64, 64), True), ((2, 6, 64, 64), False)])
def test_swish_beta_fused_path_equals_the_formula_in_float64(monkeypatch, shape, per_channel):
    m = SwishBeta(beta_init=1.4, per_channel=per_channel, channels=6 if per_channel else None)
    with torch.no_grad():
        m.beta.add_(torch.randn_like(m.beta) * 0.3)
    assert_fused_equals_plain(monkeypatch, m, shape)


@pytest.mark.parametrize("per_channel", [False, True])
def test_swish_beta_gradcheck_including_beta(per_channel):
    m = SwishBeta(beta_init=0.7, per_channel=per_channel, channels=5).double()
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    beta = m.beta.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, b: torch.func.functional_call(m, {"beta": b}, (x,)), (x, beta))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_swish_beta_half_precision(dtype):
    m = SwishBeta(beta_init=1.5, per_channel=True, channels=8).to(dtype)
    x = torch.randn(2, 8, 4, 4, dtype=dtype, requires_grad=True)
    y = m(x)
    y.float().sum().backward()
    assert y.dtype == dtype and m.beta.grad.dtype == dtype
    torch.testing.assert_close(y.float(), x.float() * torch.sigmoid(1.5 * x.float()), rtol=2e-2, atol=2e-2)


def test_swish_beta_gradcheck():
    m = SwishBeta(beta_init=1.7).double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def dyrelu_reference(m: DyReLU, x: torch.Tensor) -> torch.Tensor:
    """x (B, C, P): y_c = max_k(a_c^k x_c + b_c^k), coefficients from GAP -> FC -> ReLU -> FC."""
    b_, c, _ = x.shape
    theta = 2 * torch.sigmoid(m.fc2(F.relu(m.fc1(x.mean(-1))))) - 1  # (B, 2KC)
    theta = theta.view(b_, c, 2 * m.k)
    a = torch.stack([(1.0 if i == 0 else 0.0) + m.lambda_a * theta[..., i] for i in range(m.k)], -1)
    b = torch.stack([m.lambda_b * theta[..., m.k + i] for i in range(m.k)], -1)
    return (x[..., None] * a[:, :, None] + b[:, :, None]).amax(-1)


def test_dyrelu_matches_formula_in_all_layouts():
    m = randomize_(DyReLU(16)).double()
    img = torch.randn(2, 16, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(m(img), dyrelu_reference(m, img.flatten(2)).view_as(img))
    tok = torch.randn(2, 5, 16, dtype=torch.float64)
    torch.testing.assert_close(m(tok), dyrelu_reference(m, tok.transpose(1, 2)).transpose(1, 2))
    vec = torch.randn(2, 16, dtype=torch.float64)
    torch.testing.assert_close(m(vec), dyrelu_reference(m, vec[:, :, None])[:, :, 0])


def test_dyrelu_parameter_count_reproduces_table5():
    # ResNet-8's seven activation sites: 3 x 16, 2 x 32, 2 x 64 channels; Table 5: 98,672 - 83,892
    added = sum(sum(p.numel() for p in DyReLU(c).parameters()) for c in [16] * 3 + [32] * 2 + [64] * 2)
    assert added == 98_672 - 83_892


def test_dyrelu_gradcheck():
    m = randomize_(DyReLU(8)).double()
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def test_dyrelu_bad_channels():
    with pytest.raises(ValueError, match="reduction=4"):
        DyReLU(2)
