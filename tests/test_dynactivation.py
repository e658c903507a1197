"""dynActivation and dynActGLU against the abstract's formula and a hand-written SwiGLU."""

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_fused_equals_plain, num_threads, ran_op
from torch import nn

from hf_acts import DynActGLU, DynActivation, SwishBeta

BASES = {"relu": F.relu, "leaky_relu": lambda t: F.leaky_relu(t, 0.01), "silu": lambda t: t * torch.sigmoid(t),
         "gelu": lambda t: 0.5 * t * (1 + torch.erf(t / 2**0.5)), "mish": lambda t: t * torch.tanh(F.softplus(t)),
         "gelu_tanh": lambda t: 0.5 * t * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (t + 0.044715 * t**3)))}


@pytest.mark.parametrize("base", ["relu", "leaky_relu", "silu", "gelu", "mish"])
def test_formula(base):
    m = DynActivation(base, alpha_init=1.3, beta_init=0.4)
    x = torch.randn(4, 10, 3) * 2
    ref = BASES[base](x) * (1.3 - 0.4) + 0.4 * x
    torch.testing.assert_close(m(x), ref)


@pytest.mark.parametrize("base", ["relu", "leaky_relu", "silu", "gelu", "mish"])
def test_default_init_is_the_base_exactly(base):
    x = torch.randn(8, 64) * 3
    assert (DynActivation(base)(x) - BASES[base](x)).abs().max() <= 1e-6


def test_identity_init():
    x = torch.randn(5, 7)
    torch.testing.assert_close(DynActivation("silu", alpha_init=1.0, beta_init=1.0)(x), x)


def test_per_channel_images_and_tokens():
    m = DynActivation("relu", per_channel=True)
    x = torch.randn(2, 6, 4, 4)
    m(x)  # builds for 6 channels
    with torch.no_grad():
        m.alpha.copy_(torch.arange(6.0))
        m.beta.copy_(torch.linspace(-1, 1, 6))
    a, b = m.alpha.view(1, 6, 1, 1), m.beta.view(1, 6, 1, 1)
    torch.testing.assert_close(m(x), F.relu(x) * (a - b) + b * x)
    tok = torch.randn(2, 3, 6)
    torch.testing.assert_close(m(tok), F.relu(tok) * (m.alpha - m.beta) + m.beta * tok)
    with pytest.raises(ValueError, match="channels=6"):
        m(torch.randn(2, 5, 4, 4))


@pytest.mark.parametrize("per_channel", [False, True])
def test_alpha_at_init_with_beta_moved_is_not_the_base(per_channel):
    """The kernels return the base itself at alpha = 1, beta = 0 (bit-exact swaps); alpha alone at 1 is not that."""
    m = DynActivation("silu", beta_init=0.25, per_channel=per_channel, channels=6 if per_channel else None)
    x = torch.randn(2, 6, 4, 4)
    torch.testing.assert_close(m(x), F.silu(x) * 0.75 + 0.25 * x)


@pytest.mark.parametrize("base", ["relu", "leaky_relu", "silu", "gelu", "gelu_tanh", "mish"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_gradcheck_including_alpha_beta(base, per_channel):
    m = DynActivation(base, alpha_init=0.8, beta_init=0.3, per_channel=per_channel, channels=5).double()
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    a, b = (p.detach().clone().requires_grad_() for p in (m.alpha, m.beta))
    fn = lambda x, a, b: torch.func.functional_call(m, {"alpha": a, "beta": b}, (x,))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, a, b))


def test_bad_base():
    with pytest.raises(ValueError, match="base must be one of"):
        DynActivation("tanh")


class SwiGLU(nn.Module):
    def __init__(self, h, i):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(h, i, bias=False), nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


@pytest.mark.parametrize("mode", ["gate", "both"])
def test_dynactglu_equals_swiglu_at_init_with_the_same_keys(mode):
    ref = SwiGLU(16, 40)
    m = DynActGLU(16, 40, mode=mode)
    missing, unexpected = m.load_state_dict(ref.state_dict(), strict=False)
    assert not unexpected and all(k.split(".")[-1] in ("alpha", "beta") for k in missing)
    x = torch.randn(2, 5, 16)
    assert (m(x) - ref(x)).abs().max() <= 1e-6


def test_dynactglu_formula_after_training_moves_alpha_beta():
    m = DynActGLU(8, 12, mode="both")
    with torch.no_grad():
        m.act_fn.alpha.fill_(1.5)
        m.act_fn.beta.fill_(0.2)
        m.up_act.alpha.fill_(0.7)
        m.up_act.beta.fill_(0.9)
    x = torch.randn(3, 8)
    g, u = m.gate_proj(x), m.up_proj(x)
    act = F.silu(g) * 1.3 + 0.2 * g
    up = F.silu(u) * (0.7 - 0.9) + 0.9 * u
    torch.testing.assert_close(m(x), m.down_proj(act * up))


@pytest.mark.parametrize("base", ["relu", "leaky_relu", "silu", "gelu", "gelu_tanh", "mish"])
@pytest.mark.parametrize("channels", [1, 6])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dynactglu_fused_gate_product_matches_the_formula(base, channels, dtype):
    """The one-pass gate product ``dynact(gate) * up`` and its one-pass backward (d gate, d up, d alpha, d beta)
    against autograd through the formula written here (in float64; bfloat16 kernels against the float64 formula)."""
    from hf_acts.ops import pointwise

    gate, up, grad = (torch.randn(3, 5, 6, dtype=torch.float64) * 2 for _ in range(3))
    alpha = torch.linspace(0.7, 1.4, channels, dtype=torch.float64)
    beta = torch.linspace(-0.3, 0.4, channels, dtype=torch.float64)
    leaves = [t.to(dtype).requires_grad_() for t in (gate, up, alpha, beta)]
    y = pointwise.dynact_glu(*leaves, base)
    y.backward(grad.to(dtype))
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    g, u, a, b = ref_leaves
    ref = (BASES[base](g) * (a - b) + b * g) * u
    ref.backward(grad.to(dtype).double())
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 2e-2, "atol": 5e-2}
    torch.testing.assert_close(y.double(), ref, **tol)
    for got, want in zip(leaves, ref_leaves, strict=True):
        scale = 1 if got.numel() > channels else want.grad.abs().max().item() + 1  # coefficient grads sum 90 terms
        torch.testing.assert_close(got.grad.double() / scale, want.grad / scale, **tol)


@pytest.mark.parametrize("channels", [1, 6])
def test_dynactglu_fused_gate_product_on_strided_4d_inputs(channels):
    """The CPU kernel takes the gate and up as they are laid out (no per-call view): per-channel coefficients on the
    last dim of a 4-D tensor, and transposed (non-contiguous) inputs, give the formula, in shape."""
    from hf_acts.ops import pointwise

    gate, up = (torch.randn(2, 6, 3, 4, dtype=torch.float64).transpose(1, 3).requires_grad_() for _ in range(2))
    alpha = torch.linspace(0.7, 1.4, channels, dtype=torch.float64, requires_grad=True)
    beta = torch.linspace(-0.3, 0.4, channels, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 4, 3, 6, dtype=torch.float64)
    y = pointwise.dynact_glu(gate, up, alpha, beta, "silu")
    ref = (F.silu(gate) * (alpha - beta) + beta * gate) * up
    assert y.shape == gate.shape
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    got = torch.autograd.grad(y, (gate, up, alpha, beta), grad)
    want = torch.autograd.grad(ref, (gate, up, alpha, beta), grad)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


def test_dynact_kernel_refuses_coefficients_of_two_dtypes():
    """The C++ kernel reads alpha and beta in their own dtype: two dtypes are a clear error, not a misread."""
    from hf_acts.ops import pointwise

    x = torch.randn(2, 3, 8)
    with pytest.raises(RuntimeError, match="one dtype"):
        pointwise.dynact(x, torch.full((1,), 1.2), torch.full((1,), 0.1, dtype=torch.float64), "silu")


def test_dynactglu_fused_gate_product_gradcheck():
    from hf_acts.ops import pointwise

    args = [torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    args += [torch.tensor([1.2, 0.8, 1.1, 0.9], dtype=torch.float64, requires_grad=True),
             torch.tensor([0.1, -0.2, 0.3, 0.05], dtype=torch.float64, requires_grad=True)]
    assert torch.autograd.gradcheck(lambda *t: pointwise.dynact_glu(*t, "gelu"), args)


def test_dynactglu_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        DynActGLU(8, 16, mode="up")


@pytest.mark.parametrize("base", ["relu", "leaky_relu", "silu", "gelu", "gelu_tanh", "mish"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_fused_path_matches_the_reference_formula_and_its_gradients(base, per_channel):
    """The default (fused, custom-backward) path against autograd through the abstract's formula written here."""
    m = DynActivation(base, alpha_init=1.2, beta_init=0.3, per_channel=per_channel, channels=6 if per_channel else None)
    x = torch.randn(3, 6, 5, 5, requires_grad=True)
    grad = torch.randn(3, 6, 5, 5)
    m(x).backward(grad)
    fused = (x.grad.clone(), m.alpha.grad.clone(), m.beta.grad.clone())
    x.grad = m.alpha.grad = m.beta.grad = None
    shape = (-1, 1, 1) if per_channel else ()
    alpha, beta = m.alpha.view(shape), m.beta.view(shape)
    (BASES[base](x) * (alpha - beta) + beta * x).backward(grad)
    for got, want in zip(fused, (x.grad, m.alpha.grad, m.beta.grad), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_path_half_precision_and_tokens(dtype):
    m = DynActivation("silu", alpha_init=0.9, beta_init=0.2, per_channel=True, channels=16).to(dtype)
    x = torch.randn(2, 7, 16, dtype=dtype, requires_grad=True)
    y = m(x)
    y.float().sum().backward()
    assert y.dtype == dtype and m.alpha.grad.dtype == dtype
    ref = F.silu(x.float()) * (m.alpha.float() - m.beta.float()) + m.beta.float() * x.float()
    torch.testing.assert_close(y.float(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_path_reads_and_rounds_every_half_precision_value_exactly(dtype):
    """The kernel's own half / bfloat16 loads and stores (bit arithmetic; F16C for half where the build has it)
    against torch's conversions, on all 65,536 bit patterns. With base ReLU, alpha = 1.5 and beta = 0.5 the forward
    is 1.5 x above 0 and 0.5 x below, and the backward's dx is 1.5 g where x > 0 and 0.5 g where x < 0 (per channel:
    alpha 0.75 or 1.25 too; |g (alpha - beta)| never overflows): all exact in float32, so any load error
    shows (0.5 x tells infinity from 65536), then rounded to the storage type, which takes a tie at every odd last bit
    (1.5 x) and at odd subnormals (0.5 x), and covers overflow to infinity, infinities and NaN. An infinite g is left
    out of the backward's check: the kernel's g (p relu'(x) + q) has inf * 0 there, where autograd's select does not
    (infinite inputs are not covered, README). (Checked once over all 2^32 float32 inputs in C++ against the
    compiler's _Float16 conversion: identical.)"""
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    every = bits.view(dtype)
    c = 1031  # rows longer than a staged block (512), with tails: F16C converts 8 values at a time
    rows = every[: c * (every.numel() // c)].view(-1, c)
    checks = []
    # one coefficient pair over a flat tensor, and one per channel over channels-last rows (alpha 1.5, 0.75 or 1.25
    # by channel: x alpha stays exact)
    for values, alpha in ((every, torch.tensor([1.5])), (rows, torch.tensor([1.5, 0.75, 1.25]).repeat(c)[:c])):
        m = DynActivation("relu", beta_init=0.5, per_channel=values is rows, channels=c if values is rows else None)
        with torch.no_grad():
            m.alpha.copy_(alpha)
        m = m.to(dtype)
        y = m(values)
        assert ran_op(y, "dynact")
        checks.append((y, torch.where(values > 0, values.float() * alpha, values.float() * 0.5)))
        for sign, scale in ((1.0, alpha), (-1.0, 0.5)):
            x = torch.full(values.shape, sign, dtype=dtype, requires_grad=True)
            m(x).backward(values)
            finite_g = ~values.isinf()
            checks.append((x.grad[finite_g], (values.float() * scale)[finite_g]))
        # each channel's d alpha = sum g relu(x) and d beta = sum g x - d alpha (|g| <= 1: no overflow)
        x = torch.where(torch.arange(values.numel()).view(values.shape) % 2 == 0, 1.0, -1.0).to(dtype)
        g = values.nan_to_num(0.0).clamp(-1, 1)
        m.zero_grad()
        m(x).backward(g)
        gd, xd = g.double().view(-1, alpha.numel()), x.double().view(-1, alpha.numel())
        d_alpha = (gd * (xd > 0)).sum(0)
        torch.testing.assert_close(m.alpha.grad.double(), d_alpha, rtol=1e-2, atol=0.5)
        torch.testing.assert_close(m.beta.grad.double(), (gd * xd).sum(0) - d_alpha, rtol=1e-2, atol=0.5)
    for got, exact in checks:
        want = exact.to(dtype)  # torch's float32 -> dtype rounding
        nan = want.isnan()
        assert torch.equal(got.isnan(), nan)
        assert torch.equal(got[~nan], want[~nan])  # equal values (zeros of either sign compare equal)


def test_the_fused_kernel_is_built_and_is_the_default():
    from hf_acts.ops import _cpp

    assert _cpp.load("pointwise") is not None
    y = DynActivation("silu", alpha_init=1.1)(torch.randn(4, 9, requires_grad=True))
    assert ran_op(y, "dynact")


@pytest.mark.parametrize("base", ["relu", "leaky_relu", "silu", "gelu", "gelu_tanh", "mish"])
@pytest.mark.parametrize("shape,per_channel", [((3, 6, 5, 5), True), ((3, 5, 6), True), ((4, 6), True),
                                               ((2, 6, 64, 64), True), ((2, 6, 64, 64), False),
                                               ((1, 5, 91, 91), True), ((4, 1500, 6), True)])
def test_fused_path_equals_the_plain_path_in_float64(monkeypatch, base, shape, per_channel):
    """Every layout, several threads' worth of elements, gradients of x, alpha and beta. The kernel cuts the flat
    tensor into one range per thread, of at least 32768 elements: 41405 elements (five 91x91 planes) are two ranges,
    the second starting inside the third plane, so a thread begins mid-channel (64x64 planes split only at plane
    ends). Channels-last rows go to the threads in ranges of at least 32768 / C rows, whose sums each thread flushes
    every 256 rows: 6000 rows of 6 channels are two ranges of several flushes. Two threads, whatever the machine."""
    channels = shape[1] if len(shape) == 4 else shape[-1]
    m = DynActivation(base, alpha_init=1.2, beta_init=0.3, per_channel=per_channel,
                      channels=channels if per_channel else None)
    with torch.no_grad():
        m.alpha.add_(torch.randn_like(m.alpha) * 0.1)
    with num_threads(2):
        assert_fused_equals_plain(monkeypatch, m, shape)


def test_dispatch_modes_run_the_plain_formula():
    """FlopCounterMode (used by the model cards) counts the formula's ops; the kernel stays the default."""
    from torch.utils.flop_counter import FlopCounterMode

    m = DynActivation("mish", alpha_init=1.3, beta_init=0.2)
    x = torch.randn(5, 11, requires_grad=True)
    with FlopCounterMode(display=False):
        inside = m(x)
    outside = m(x)
    torch.testing.assert_close(inside, outside)
    assert not ran_op(inside, "dynact")
    assert ran_op(outside, "dynact")


@pytest.mark.parametrize("make", [lambda: DynActivation("gelu", alpha_init=1.3, beta_init=0.2),
                                  lambda: SwishBeta(beta_init=1.4)])
def test_0d_coefficients_of_older_checkpoints_load_as_shape_1(make):
    """Per-tensor coefficients are (1,) (FSDP2 and ZeRO-3 refuse 0-d parameters); 0-d ones from older checkpoints
    load unchanged."""
    module = make()
    assert all(p.shape == (1,) for p in module.parameters())
    old = {k: v.reshape(()) for k, v in module.state_dict().items()}
    fresh = type(module)(**({"base": "gelu"} if isinstance(module, DynActivation) else {}))
    fresh.load_state_dict(old)
    assert all(p.shape == (1,) for p in fresh.parameters())
    x = torch.randn(3, 7)
    assert torch.equal(fresh(x), module(x))


def test_gelu_base_kernel_in_float32_is_as_accurate_as_atens_gelu():
    """The float32 kernels evaluate the normal CDF by Abramowitz & Stegun 7.1.26 and its density from the same exp
    (csrc/vec_math.h). Against float64, over the float range where GELU is not yet x or 0, its errors stay within
    those of ATen's float32 GELU (which uses the same erf form): a wrong coefficient shows up at 1e-5."""
    x = torch.linspace(-12, 12, 200_001)
    m = DynActivation("gelu", alpha_init=1.25, beta_init=0.25)
    xf = x.clone().requires_grad_()
    y = m(xf)
    y.backward(torch.ones_like(y))
    assert ran_op(y, "dynact")
    xd = x.double().requires_grad_()
    ref = BASES["gelu"](xd) * (1.25 - 0.25) + 0.25 * xd  # base(x) (alpha - beta) + beta x
    ref.backward(torch.ones_like(ref))
    assert (y.double() - ref).abs().max() <= 1e-6
    assert (xf.grad.double() - xd.grad).abs().max() <= 5e-7


@pytest.mark.parametrize("op", ["dynact", "swish_beta"])
def test_sigmoid_kernels_in_float32_are_as_accurate_as_atens_silu(op):
    """The float32 kernels inline their own exp (csrc/vec_math.h: degree-4 minimax polynomial,
    scripts/fit_exp_polynomial.py) and fold SiLU's product into one division. Against float64, relative errors of the
    output and of dx stay within 10% of ATen's float32 formulas' own (Sleef's exp): a coefficient off in its 5th
    digit fails."""
    x = torch.linspace(-12, 12, 200_001)
    if op == "dynact":
        module = DynActivation("silu", alpha_init=1.25, beta_init=0.25)
        formula = lambda t: F.silu(t) * (1.25 - 0.25) + 0.25 * t  # noqa: E731
    else:
        module = SwishBeta(beta_init=1.4)
        formula = lambda t: t * torch.sigmoid(1.4 * t)  # noqa: E731

    def errors(fn, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        t = x.to(dtype, copy=True).requires_grad_()
        y = fn(t)
        y.backward(torch.ones_like(y))
        return y.detach().double(), t.grad.double()

    (y, dx), (y_aten, dx_aten), (y_ref, dx_ref) = (errors(module, torch.float32),
                                                    errors(formula, torch.float32), errors(formula, torch.float64))
    assert ran_op(module(x), op)

    def rel(a: torch.Tensor, ref: torch.Tensor) -> float:
        return ((a - ref).abs() / ref.abs().clamp_min(1e-3)).max().item()

    assert rel(y, y_ref) <= 1.1 * rel(y_aten, y_ref)
    assert rel(dx, dx_ref) <= 1.1 * rel(dx_aten, dx_ref)
