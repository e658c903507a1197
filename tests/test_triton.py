"""The Triton kernels (hf_acts/ops/triton_*.py) against the plain formulas: on CUDA tensors where a GPU exists,
elsewhere on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, set in conftest). Shapes are small (the
interpreter is slow) and never a multiple of the block sizes, so every kernel runs its masked tails. The shapes fit
one tile or a few, so the kernels' tests run twice (the ``tiles`` fixture): with the launch's own tile sizes and with
tiles of a few dozen elements, where every kernel runs many programs along each axis, the loops over position blocks,
and the pointwise backward's row-strided loop and partial sums over several programs, as real shapes do.

Tolerances: float32 inputs against a float64 reference 1e-5 (the kernels compute in float32); bfloat16 / float16
inputs against the float64 reference of the same rounded inputs 2e-2 / 4e-3 relative (one rounding of each output
to the storage dtype: bf16 has 8 mantissa bits, fp16 11), sums over a few hundred elements included.
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import TRITON_DEVICE

from hf_acts.activations.dynactivation import DYN_BASES, dynact_formula
from hf_acts.ops import fles_math, pointwise, triton_adrelu, triton_fles, triton_pointwise

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
       torch.float16: dict(rtol=4e-3, atol=4e-3)}
# (shape, channels): per-channel images (channels on rows), tokens and vectors (channels last), one coefficient
LAYOUTS = [((2, 5, 7, 9), 5), ((3, 13, 37), 37), ((5, 11), 11), ((2, 5, 7, 9), 1), ((3, 13, 37), 1)]

# tile sizes that cut the test shapes into many tiles: (3, 13, 37) tokens become 10 row blocks of 4 x 16 over 3
# column blocks, shared by 2 row programs; FleS's 35 positions 5 blocks of 8, its 6-11 channels 2-3 blocks of 4
SMALL_TILES = {
    triton_pointwise: dict(TILE=64, MAX_BLOCK_K=16, MAX_ROW_PROGRAMS=2),
    triton_fles: dict(TILE=32, MAX_BLOCK_P=8, MAX_BLOCK_C=4),
    triton_adrelu: dict(TILE=32, MIN_BLOCK_P=4, ROW_BLOCK=8),
}


@pytest.fixture(params=["default", "small"])
def tiles(request, monkeypatch) -> str:  # noqa: ANN001
    """The kernels' launch sizes: their own, or :data:`SMALL_TILES`."""
    if request.param == "small":
        for module, sizes in SMALL_TILES.items():
            for name, value in sizes.items():
                assert hasattr(module, name), name
                monkeypatch.setattr(module, name, value)
    return request.param


def _view(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A coefficient shaped to broadcast against ``x`` as the modules do."""
    if p.numel() == 1:
        return p.view(())
    return p.view(-1, 1, 1) if x.ndim == 4 else p


def _reference(fn, *inputs, grad):  # noqa: ANN001, ANN202
    """Output and input gradients of ``fn`` in float64 (inputs rounded to their dtype first)."""
    leaves = [t.detach().double().requires_grad_() for t in inputs]
    y = fn(*leaves)
    return y.detach(), torch.autograd.grad(y, leaves, grad.double())


def _close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    torch.testing.assert_close(got.double(), want, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,channels", LAYOUTS)
# every base with the launch's tiles; the small tiles (the same indexing for every base) with SiLU
@pytest.mark.parametrize("base,tiles", [(base, "default") for base in DYN_BASES] + [("silu", "small")],
                         indirect=["tiles"])
def test_dynact(base, shape, channels, dtype, tiles):
    x = (torch.randn(shape) * 2).to(TRITON_DEVICE, dtype)
    grad = torch.randn(shape).to(TRITON_DEVICE, dtype)
    alpha, beta = torch.randn(2, channels, device=TRITON_DEVICE)
    y = pointwise.dynact_triton(x, alpha, beta, base)
    gx, ga, gb = pointwise.dynact_backward_triton(grad, x, alpha, beta, base)
    ref, (rx, ra, rb) = _reference(lambda x, a, b: dynact_formula(x, _view(a, x), _view(b, x), base), x, alpha,
                                   beta, grad=grad)
    assert y.dtype == gx.dtype == dtype and ga.dtype == gb.dtype == torch.float32 and ga.shape == (channels,)
    _close(y, ref, dtype)
    _close(gx, rx, dtype)
    scale = max(1.0, ra.abs().max().item(), rb.abs().max().item())  # sums of many terms: relative to their size
    torch.testing.assert_close(ga.double() / scale, ra / scale, **TOL[dtype])
    torch.testing.assert_close(gb.double() / scale, rb / scale, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,channels", LAYOUTS)
def test_swish_beta(shape, channels, dtype, tiles):
    x = torch.randn(shape).to(TRITON_DEVICE, dtype)
    grad = torch.randn(shape).to(TRITON_DEVICE, dtype)
    beta = (torch.rand(channels) + 0.5).to(TRITON_DEVICE)
    y = pointwise.swish_beta_triton(x, beta)
    gx, gbeta = pointwise.swish_beta_backward_triton(grad, x, beta)
    ref, (rx, rbeta) = _reference(lambda x, b: x * torch.sigmoid(_view(b, x) * x), x, beta, grad=grad)
    _close(y, ref, dtype)
    _close(gx, rx, dtype)
    scale = max(1.0, rbeta.abs().max().item())
    torch.testing.assert_close(gbeta.double() / scale, rbeta / scale, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels", [1, 37])
@pytest.mark.parametrize("base", ["silu", "gelu_tanh"])
def test_dynact_glu(base, channels, dtype, tiles):
    shape = (3, 5, 37)
    gate, up, grad = (torch.randn(shape).to(TRITON_DEVICE, dtype) for _ in range(3))
    alpha, beta = torch.randn(2, channels, device=TRITON_DEVICE)
    y = pointwise.dynact_glu_triton(gate, up, alpha, beta, base)
    d_gate, d_up, d_alpha, d_beta = pointwise.dynact_glu_backward_triton(grad, gate, up, alpha, beta, base)
    ref, (rg, ru, ra, rb) = _reference(
        lambda g, u, a, b: dynact_formula(g, _view(a, g), _view(b, g), base) * u, gate, up, alpha, beta, grad=grad)
    for got, want in ((y, ref), (d_gate, rg), (d_up, ru)):
        assert got.shape == shape
        _close(got, want, dtype)
    scale = max(1.0, ra.abs().max().item(), rb.abs().max().item())
    torch.testing.assert_close(d_alpha.double() / scale, ra / scale, **TOL[dtype])
    torch.testing.assert_close(d_beta.double() / scale, rb / scale, **TOL[dtype])


def _fles_plain(x, w1, b1, w2, b2, base):  # noqa: ANN001, ANN202
    """The poster's practical FleS, written out: positive channel means, MLP, phi."""
    dims = (2, 3) if x.ndim == 4 else (1,)
    m = x.clamp_min(0).sum(dims) / ((x > 0).to(x.dtype).sum(dims) + 1e-6)
    k_ve, k_ho = (1 + torch.tanh(F.linear(F.relu(F.linear(m, w1, b1)), w2, b2))).chunk(2, dim=-1)
    shape = (x.shape[0], -1, 1, 1) if x.ndim == 4 else (x.shape[0], 1, -1)
    k_ve, k_ho = k_ve.reshape(shape), k_ho.reshape(shape)
    u = k_ho * x
    rho = torch.sigmoid(u) if base == "silu" else 0.5 * (1 + torch.erf(u / 2**0.5))
    return k_ve * rho * x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 6, 5, 7), (3, 11, 6)])
@pytest.mark.parametrize("base", ["silu", "gelu"])
def test_fles(base, shape, dtype, tiles):
    channels = shape[1] if len(shape) == 4 else shape[-1]
    x = torch.randn(shape).to(TRITON_DEVICE, dtype)
    grad = torch.randn(shape).to(TRITON_DEVICE, dtype)
    params = [torch.randn(8, channels) * 0.3, torch.randn(8) * 0.3, torch.randn(2 * channels, 8) * 0.3,
              torch.randn(2 * channels) * 0.3]
    params = [p.to(TRITON_DEVICE) for p in params]
    y, m, denom, h, t = fles_math.fles_forward(x, *params, base, 1e-6, triton_fles)
    grads = fles_math.fles_backward_with(grad, x, *params, m, denom, h, t, base, triton_fles)
    ref, rgrads = _reference(lambda x, *p: _fles_plain(x, *p, base), x, *params, grad=grad)
    _close(y, ref, dtype)
    # the positive count plus eps, exactly (eps' 1e-6 is below the outputs' tolerance; the 11-token rows show it)
    count = (x > 0).sum((2, 3) if x.ndim == 4 else (1,))
    assert torch.equal(denom, count.float() + 1e-6)
    assert grads[0].dtype == dtype and all(g.dtype == torch.float32 for g in grads[1:])
    for got, want in zip(grads, rgrads, strict=True):
        scale = max(1.0, want.abs().max().item())
        torch.testing.assert_close(got.double() / scale, want / scale, **TOL[dtype])


@pytest.mark.parametrize("kernel", ["dynact_relu", "fles"])
def test_nan_inputs_give_nan_where_the_plain_formula_does(kernel):
    """A NaN input passes the ReLUs as in torch.relu and its backward (dynActivation's relu base; FleS' positive
    statistics, whose sample then turns NaN), so the outputs and input gradients are NaN where the plain formula's
    are."""
    x = torch.randn(2, 6, 5, 7)
    x[0, 2, 1, 3] = float("nan")
    x, grad = x.to(TRITON_DEVICE), torch.randn(2, 6, 5, 7, device=TRITON_DEVICE)
    if kernel == "fles":
        params = [(torch.randn(*s) * 0.3).to(TRITON_DEVICE) for s in ((8, 6), (8,), (12, 8), (12,))]
        y, m, denom, h, t = fles_math.fles_forward(x, *params, "silu", 1e-6, triton_fles)
        gx = fles_math.fles_backward_with(grad, x, *params, m, denom, h, t, "silu", triton_fles)[0]
        ref, (rx, *_) = _reference(lambda x, *p: _fles_plain(x, *p, "silu"), x, *params, grad=grad)
    else:
        alpha, beta = torch.randn(2, 6, device=TRITON_DEVICE)
        y = pointwise.dynact_triton(x, alpha, beta, "relu")
        gx = pointwise.dynact_backward_triton(grad, x, alpha, beta, "relu")[0]
        ref, (rx, _, _) = _reference(lambda x, a, b: dynact_formula(x, _view(a, x), _view(b, x), "relu"), x, alpha,
                                     beta, grad=grad)
    assert y.isnan().any()
    for got, want in ((y, ref), (gx, rx)):
        assert torch.equal(got.isnan(), want.isnan())
        _close(got.nan_to_num(), want.nan_to_num(), torch.float32)


def test_the_coefficient_gradients_are_deterministic():
    """Two-stage sums, no atomics: the same inputs give bit-identical alpha/beta gradients."""
    x, grad = torch.randn(2, 7, 33, 40, device=TRITON_DEVICE), torch.randn(2, 7, 33, 40, device=TRITON_DEVICE)
    alpha, beta = torch.randn(2, 7, device=TRITON_DEVICE)
    first = pointwise.dynact_backward_triton(grad, x, alpha, beta, "silu")
    second = pointwise.dynact_backward_triton(grad, x, alpha, beta, "silu")
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_channel_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="5 coefficients do not match"):
        pointwise.dynact_triton(torch.randn(2, 4, 3, 3, device=TRITON_DEVICE),
                                torch.ones(5, device=TRITON_DEVICE), torch.zeros(5, device=TRITON_DEVICE), "silu")


def _adrelu_plain(config: tuple):  # noqa: ANN202
    """ADReLU's plain formula ``max(x, tau)`` as a function of ``x`` and the weights (ties to tau, as the modules)."""
    from hf_acts.activations.adrelu import adrelu_threshold

    def plain(x, *weights):  # noqa: ANN001, ANN202
        tau = adrelu_threshold(x, *weights, *config)
        return torch.where(x > tau, x, tau)
    return plain


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels,groups,head_dim,shape", [
    (16, 4, 8, (2, 16, 5, 7)),  # heads straddle groups (4 channels per group, heads of 8)
    (32, 2, 8, (2, 32, 3, 3)),  # heads nest inside groups
    (24, 4, 6, (3, 24, 1, 9)),  # tokens as a 1 x N map; head_dim not a power of 2
])
def test_adrelu_cuda_path(channels, groups, head_dim, shape, dtype, tiles):
    """The CUDA implementation (Triton attention and GroupNorm + max between cuBLAS/cuDNN convolutions) and its
    recomputing backward against ADReLU's plain formula ``max(x, tau)``."""
    from hf_acts import ADReLU
    from hf_acts.activations.adrelu import adrelu_threshold
    from hf_acts.ops import adrelu as adrelu_op

    spatial = {"spatial_dims": 1} if shape[2] == 1 else {}
    module = ADReLU(channels, groups=groups, head_dim=head_dim, **spatial)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5)
    params, config = module.to(TRITON_DEVICE).parameters_and_config()
    x = torch.randn(shape).to(TRITON_DEVICE, dtype)
    if spatial:  # tokens reach the op as the module passes them: a transposed (B, C, 1, N) view of (B, N, C)
        x = x.squeeze(2).transpose(1, 2).contiguous().transpose(1, 2).unsqueeze(2)
    grad = torch.randn(shape).to(TRITON_DEVICE, dtype)
    with torch._C._AutoDispatchBelowAutograd():  # where the dispatcher runs a kernel: no autograd graph there
        y = adrelu_op.adrelu_cuda(x, *params, *config)
        grads = adrelu_op.adrelu_backward_cuda(grad, x, *params, *config)

    ref, rgrads = _reference(_adrelu_plain(config), x, *params, grad=grad)
    assert y.dtype == dtype and grads[0].dtype == dtype
    _close(y, ref, dtype)
    # max(x, tau) sends each element's gradient to x or to tau; where bf16 rounding of tau can flip that choice
    # (|x - tau| within bf16's resolution) the input gradient is compared nowhere, the weight sums loosely
    tau = adrelu_threshold(x.double(), *(p.double() for p in params), *config)
    decided = (x.double() - tau).abs() > (0.0 if dtype == torch.float32 else 3e-2 * (1 + tau.abs()))
    tol = TOL[dtype] if dtype == torch.float32 else dict(rtol=6e-2, atol=6e-2)  # bf16 through the whole chain
    for i, (got, want) in enumerate(zip(grads, rgrads, strict=True)):
        got, want = (got.double(), want) if i else (got.double()[decided], want[decided])
        scale = max(1.0, want.abs().max().item())
        torch.testing.assert_close(got / scale, want / scale, **tol)


def test_adrelu_cuda_path_at_zero_heads_and_ties():
    """The CUDA implementation's backward where Q = K = 0 at a position (subgradient 0 of ``||q||``) and where x equals
    tau (the gradient goes to tau), against the plain formula's autograd in float64: the same cases as
    tests/test_adrelu.py's, through the Triton kernels."""
    from test_adrelu import zero_heads_and_ties

    from hf_acts.ops import adrelu as adrelu_op

    m, x = zero_heads_and_ties()  # in float32 (the kernels compute in float32); ties stay ties
    params, config = m.to(TRITON_DEVICE, torch.float32).parameters_and_config()
    x, grad = x.to(TRITON_DEVICE, torch.float32), torch.randn(x.shape, device=TRITON_DEVICE)
    with torch._C._AutoDispatchBelowAutograd():
        grads = adrelu_op.adrelu_backward_cuda(grad, x, *params, *config)

    _, want = _reference(_adrelu_plain(config), x, *params, grad=grad)
    assert grads[-1][:8].abs().sum() > 0  # the ties' gradient reached tau's bias
    for got, ref in zip(grads, want, strict=True):
        assert got.isfinite().all()
        scale = max(1.0, ref.abs().max().item())
        torch.testing.assert_close(got.double() / scale, ref / scale, **TOL[torch.float32])
