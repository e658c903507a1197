"""The op layer (hf_acts/ops): torch.library checks for every op, fullgraph compile without graph breaks, the
device/dtype dispatch, export to plain aten ops and ONNX, and the CUDA path of each module (GPU only)."""

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ran_op, randomize_

from hf_acts import ADReLU, DynActGLU, DynActivation, FleS, SwishBeta
from hf_acts.activations._base import from_nchw, to_nchw
from hf_acts.activations.adrelu import adrelu_threshold
from hf_acts.ops import _cpp, direct, dispatch, pointwise
from hf_acts.ops import adrelu as adrelu_op
from hf_acts.ops import fles as fles_op

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU: CI has none; scripts/gpu_checks.sh runs these on one")


def _coef(c: int, *values: float) -> list[torch.Tensor]:
    return [torch.full((c,), v, requires_grad=True) for v in values]


def _op_samples() -> list[tuple]:
    """(op, args) for every op, off their init values (the init shortcut would skip the kernels)."""
    x4, x3 = torch.randn(2, 6, 5, 5, requires_grad=True), torch.randn(2, 7, 6, requires_grad=True)
    w = [torch.randn(8, 6) * 0.3, torch.randn(8) * 0.3, torch.randn(12, 8) * 0.3, torch.randn(12) * 0.3]
    w = [p.requires_grad_() for p in w]
    return [
        (pointwise.dynact, (x4, *_coef(1, 1.3, 0.2), "silu")),
        (pointwise.dynact, (x4, *_coef(6, 0.7, 0.4), "gelu")),
        (pointwise.dynact, (x3, *_coef(6, 1.1, -0.3), "mish")),
        (pointwise.swish_beta, (x4, *_coef(6, 1.4))),
        (pointwise.swish_beta, (x3, *_coef(1, 0.6))),
        (pointwise.dynact_glu, (x3, torch.randn(2, 7, 6, requires_grad=True), *_coef(1, 1.2, 0.1), "silu")),
        (fles_op.fles, (x4, *w, "silu", 1e-6)),
        (fles_op.fles, (torch.randn(2, 9, 6, requires_grad=True), *w, "gelu", 1e-6)),
        (adrelu_op.adrelu, (torch.randn(2, 16, 5, 5, requires_grad=True), *_adrelu_weights(), 4, 8, 4, 1e-6, 1e-5,
                            1e-5)),
    ]


def _adrelu_weights() -> list[torch.Tensor]:
    params, _ = randomize_(ADReLU(16), 0.3).parameters_and_config()
    return [p.detach().clone().requires_grad_() for p in params]


@pytest.mark.parametrize("op,args", _op_samples())
def test_opcheck(op, args):
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch of each op."""
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("make,shape", [
    (lambda: DynActivation("silu", alpha_init=1.2, beta_init=0.3), (2, 8, 5, 5)),
    (lambda: DynActivation("gelu", alpha_init=0.9, per_channel=True, channels=8), (2, 5, 8)),
    (lambda: SwishBeta(beta_init=1.5, per_channel=True, channels=8), (2, 8, 5, 5)),
    (lambda: randomize_(DynActGLU(8, 16), 0.3), (2, 5, 8)),
    (lambda: randomize_(FleS(8), 0.3), (2, 8, 5, 5)),
    (lambda: randomize_(ADReLU(16), 0.3), (2, 16, 5, 5)),
])
def test_fullgraph_compile_traces_the_ops_without_graph_breaks(make, shape):
    module = make()
    x = torch.randn(*shape, requires_grad=True)
    explained = torch._dynamo.explain(module)(x)
    assert explained.graph_break_count == 0
    assert any("hf_acts." in str(n.target) for g in explained.graphs for n in g.graph.nodes), "the op is not traced"
    eager = module(x)
    (eager_grad,) = torch.autograd.grad(eager.sum(), x)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")(x)
    (compiled_grad,) = torch.autograd.grad(compiled.sum(), x)
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(compiled_grad, eager_grad)


def test_dispatch_matrix():
    """Which implementation runs where (hf_acts/ops/dispatch.py); checked here without a GPU."""
    for kernel in ("pointwise", "fles"):  # where a C++ compiler exists (CI has one; tests elsewhere check the build)
        assert dispatch.select("cpu", torch.bfloat16, kernel) == ("cpp" if dispatch.cpp_available(kernel) else "plain")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert dispatch.select("cuda", dtype, "pointwise") == ("triton" if dispatch.triton_available() else "plain")
    assert dispatch.select("cuda", torch.float64, "pointwise") == "plain"  # Triton kernels compute in float32
    assert dispatch.select("mps", torch.float32, "pointwise") == "plain"
    assert dispatch.implementation(torch.empty(0, 4), "pointwise") == "plain"


def test_dispatch_off_switch_and_missing_triton(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    assert dispatch.select("cuda", torch.bfloat16, "pointwise") == "plain"
    monkeypatch.setattr(dispatch, "FUSED", False)
    assert dispatch.select("cpu", torch.float32, "pointwise") == "plain"
    x = torch.randn(3, 4, requires_grad=True)
    assert not ran_op(DynActivation(alpha_init=1.5)(x), "dynact")


def _zoo_piece() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), randomize_(FleS(8), 0.3),
                               DynActivation("silu", alpha_init=1.2, beta_init=0.2),
                               SwishBeta(beta_init=1.3, per_channel=True, channels=8)).eval()


def test_export_decomposes_to_aten_ops():
    model, x = _zoo_piece(), torch.randn(2, 3, 6, 6)
    program = torch.export.export(model, (x,))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any("hf_acts" in t for t in targets), targets
    torch.testing.assert_close(program.module()(x), model(x))


def test_onnx_export_matches_onnxruntime(tmp_path):
    import onnxruntime as ort  # the test extra installs onnxruntime and onnxscript
    model, x = _zoo_piece(), torch.randn(2, 3, 6, 6)
    torch.onnx.export(model, (x,), tmp_path / "m.onnx", dynamo=True)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make,shape,op", [
    *[(lambda b=b: DynActivation(b, alpha_init=1.2, beta_init=0.3), (2, 6, 5, 5), "dynact")
      for b in ("relu", "leaky_relu", "silu", "gelu", "gelu_tanh", "mish")],
    (lambda: SwishBeta(beta_init=1.5, per_channel=True, channels=6), (2, 6, 5, 5), "swish_beta"),
    (lambda: randomize_(DynActGLU(6, 8), 0.3), (2, 7, 6), "dynact_glu"),
    (lambda: randomize_(FleS(6), 0.3), (2, 6, 5, 5), "fles"),
    (lambda: randomize_(FleS(6, base="gelu"), 0.3), (2, 7, 6), "fles"),
    (lambda: randomize_(ADReLU(16), 0.3), (2, 16, 5, 5), "adrelu"),
])
def test_cpu_kernels_give_nan_where_the_plain_formula_does(make, shape, op):
    """A NaN input gives NaN in the same outputs and input gradients as the plain formula (the kernels' exp has no
    NaN select of its own: csrc/vec_math.h), and inputs of +-100, beyond exp's range, give the same finite values."""
    module = make()
    x = torch.randn(shape)
    x.view(-1)[[3, 7, 11]] = torch.tensor([float("nan"), 100.0, -100.0])

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        xg = x.clone().requires_grad_()
        y = module(xg)
        y.backward(torch.ones_like(y))
        return y, xg.grad

    y, gx = run()
    assert ran_op(y, op)
    with dispatch.plain_formulas():
        y_ref, gx_ref = run()
    assert y.isnan().any()
    for got, want in ((y, y_ref), (gx, gx_ref)):
        assert torch.equal(got.isnan(), want.isnan())
        torch.testing.assert_close(got.detach().nan_to_num(), want.detach().nan_to_num(), rtol=1e-4, atol=1e-4)


# (module factory, input shape, the op its default CUDA path runs): every fused module, images and tokens
CUDA_MODULES = [
    (lambda: DynActivation("silu", alpha_init=1.2, beta_init=0.3), (4, 16, 9, 9), "dynact"),
    (lambda: DynActivation("gelu", alpha_init=0.9, beta_init=0.1, per_channel=True, channels=16), (4, 7, 16),
     "dynact"),
    (lambda: SwishBeta(beta_init=1.5, per_channel=True, channels=16), (4, 16, 9, 9), "swish_beta"),
    (lambda: randomize_(DynActGLU(16, 40), 0.3), (4, 7, 16), "dynact_glu"),
    (lambda: randomize_(FleS(16), 0.3), (4, 16, 9, 9), "fles"),
    (lambda: randomize_(FleS(16, base="gelu"), 0.3), (4, 7, 16), "fles"),
    (lambda: randomize_(ADReLU(16), 0.3), (4, 16, 9, 9), "adrelu"),
    (lambda: randomize_(ADReLU(16, spatial_dims=1), 0.3), (4, 7, 16), "adrelu"),
]


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("make,shape,op", CUDA_MODULES)
def test_cuda_modules_run_the_triton_ops_and_match_the_plain_formula(monkeypatch, make, shape, op, dtype):
    module = make().cuda()
    x = torch.randn(*shape, device="cuda", dtype=dtype, requires_grad=True)
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        y = module(x)
    assert ran_op(y, op)
    got = (y, *torch.autograd.grad(y.float().sum(), (x, *module.parameters())))
    monkeypatch.setattr(dispatch, "FUSED", False)
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        y = module(x)
    want = (y, *torch.autograd.grad(y.float().sum(), (x, *module.parameters())))
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=3e-2, atol=3e-2)
    if op == "adrelu" and dtype != torch.float32:
        # max(x, tau) sends each gradient to x or to tau; where bf16 rounding of tau (a chain of five layers, the
        # Triton path keeping float32 inside) can flip that choice, the input gradient is compared nowhere and the
        # weight gradients, sums over those choices, loosely (as tests/test_triton.py does for the kernels alone)
        params, config = module.parameters_and_config()
        x4 = to_nchw(x.detach().double())
        tau = from_nchw(adrelu_threshold(x4, *(p.double() for p in params), *config), x)
        decided = (x.double() - tau).abs() > 3e-2 * (1 + tau.abs())
        got, want = (got[0], got[1][decided], *got[2:]), (want[0], want[1][decided], *want[2:])
        tol = dict(rtol=6e-2, atol=6e-2)
    for a, b in zip(got, want, strict=True):
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(a.float() / scale, b.float() / scale, **tol)


@needs_cuda
@pytest.mark.parametrize("make,shape,op", CUDA_MODULES)
def test_cuda_modules_never_wait_for_the_device(make, shape, op):
    """A training step's forward and backward through each fused module queue their kernels without a host-device
    synchronisation (an ``.item()``, a device-to-host copy): one per call would stall every step."""
    module = make().cuda()
    x = torch.randn(*shape, device="cuda", requires_grad=True)
    torch.autograd.grad(module(x).sum(), (x, *module.parameters()))  # first calls: compile and cache the kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y = module(x)
        torch.autograd.grad(y.sum(), (x, *module.parameters()))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert ran_op(y, op)


@needs_cuda
@pytest.mark.parametrize("make,shape,op", CUDA_MODULES)
def test_cuda_graphs_replay_the_fused_modules(make, shape, op):
    """``torch.compile(mode="reduce-overhead")`` (inductor's CUDA graphs, the usual cure for host-bound inference)
    captures each fused module's op and replays it with the eager outputs."""
    module = make().cuda().eval()
    compiled = torch.compile(module, mode="reduce-overhead", fullgraph=True)
    with torch.no_grad():
        for seed in range(3):  # warm-up, capture, replay
            x = torch.randn(*shape, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
            torch.testing.assert_close(compiled(x).clone(), module(x), rtol=1e-5, atol=1e-5)


@needs_cuda
def test_cuda_fullgraph_compile_with_inductor():
    module = randomize_(DynActGLU(16, 40), 0.3).cuda()
    x = torch.randn(4, 7, 16, device="cuda")
    torch.testing.assert_close(torch.compile(module, fullgraph=True)(x), module(x))


def test_fles_op_under_autocast_keeps_its_coefficient_mlp_in_float32():
    """Autocast would run the op's inner linears in bf16, against what its fake implementation promises."""
    module = randomize_(FleS(8), 0.3)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, m, denom, h, t = fles_op.fles(x, module.fc1.weight, module.fc1.bias, module.fc2.weight, module.fc2.bias,
                                         "silu", 1e-6)
    assert {m.dtype, denom.dtype, h.dtype, t.dtype} == {torch.float32}
    y.sum().backward()
    assert x.grad.dtype == torch.float32 and module.fc1.weight.grad.dtype == torch.float32


def test_torch_compile_is_not_taken_for_export_on_old_torch(monkeypatch):
    """torch < 2.12 says is_exporting() under any dynamo trace (pytorch#176347): compile must still trace the op."""
    monkeypatch.setattr(dispatch, "EXPORT_FLAG_RELIABLE", False)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    monkeypatch.setattr(torch.compiler, "is_dynamo_compiling", lambda: True)
    assert not dispatch.exporting()
    monkeypatch.setattr(torch.compiler, "is_dynamo_compiling", lambda: False)
    assert dispatch.exporting()  # non-strict export: no dynamo trace, the flag holds


@pytest.mark.parametrize("machine,capability,march,wide", [
    ("x86_64", "AVX512", "x86-64-v4", True), ("x86_64", "AVX2", "x86-64-v3", False),
    ("x86_64", "DEFAULT", "x86-64-v2", False), ("aarch64", "DEFAULT", "native", False),
])
def test_cpu_kernels_target_atens_instruction_set(monkeypatch, machine, capability, march, wide):
    """The C++ kernels are built for the instruction set ATen dispatches to (ATEN_CPU_CAPABILITY overrides both),
    with 512-bit vectors where that is AVX-512 (GCC's tunings would otherwise keep them at 256 bits)."""
    monkeypatch.setattr(_cpp.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    flags = _cpp.target_flags()
    assert f"-march={march}" in flags
    assert ("-mprefer-vector-width=512" in flags) == wide


def test_each_torch_install_builds_the_kernels_in_a_folder_of_its_own(monkeypatch):
    """torch's extension cache folder names only Python's and CUDA's versions: torch 2.11 waited forever on the
    ``lock`` file torch 2.14 leaves in a build folder (session 18), and one torch could load another's build. Two
    virtualenvs of one torch release (`make test` and `make test-lowest`) rebuilt each other's kernels at every
    switch, their include paths differing (session 26)."""
    tag = _cpp._build_tag()
    with monkeypatch.context() as patch:
        patch.setattr(torch, "__version__", "2.11.0+cpu")
        assert _cpp._build_tag() != tag
    assert _cpp._build_tag() == tag
    monkeypatch.setattr(torch, "__file__", "/elsewhere/venv/lib/python3.11/site-packages/torch/__init__.py")
    assert _cpp._build_tag() != tag


# C++20-only names and syntax. torch up to 2.11 builds extensions with -std=c++17 and torch 2.14's headers refuse
# C++17, so a kernel using one of these builds on this machine and not for users of an older torch (session 18:
# fles.cpp's std::make_unique_for_overwrite on torch 2.11). scripts/check_cxx17.sh compiles them against older
# torch headers; this test is the quick guard.
CXX20_ONLY = re.compile(
    r"std::(make_unique_for_overwrite|make_shared_for_overwrite|bit_cast|span|ranges|views|popcount|countl_zero|"
    r"countr_zero|has_single_bit|bit_width|bit_ceil|bit_floor|erase_if|midpoint|lerp|numbers|format|"
    r"source_location|to_array|ssize|assume_aligned|is_constant_evaluated|jthread|latch|barrier|counting_semaphore)\b"
    r"|#include\s*<(bit|span|ranges|concepts|numbers|format|source_location|compare|version|barrier|latch)>"
    r"|\b(consteval|constinit|co_await|co_yield|co_return|concept|requires)\b|<=>|\[\[(un)?likely\]\]"
    r"|\.(contains|starts_with|ends_with)\(")


@pytest.mark.parametrize("source", sorted(p.name for p in _cpp.CSRC.iterdir()))
def test_kernels_use_no_cxx20_only_names(source):
    lines = (_cpp.CSRC / source).read_text().splitlines()
    code = [(n, line.split("//")[0]) for n, line in enumerate(lines, 1)]
    assert [(n, line) for n, line in code if CXX20_ONLY.search(line)] == []


def test_the_cxx20_guard_sees_what_broke_the_torch_2_11_build():
    for bad in ("auto b = std::make_unique_for_overwrite<T[]>(n);", "return std::bit_cast<float>(u);",
                "#include <bit>", "if (m.contains(k)) {", "[[likely]] x = 0;"):
        assert CXX20_ONLY.search(bad), bad
    for fine in ("return bit_cast_<float>(u);", "std::unique_ptr<T[]> b(new T[n]);", "#include <bitset>"):
        assert not CXX20_ONLY.search(fine), fine


@pytest.mark.slow
def test_cpu_kernels_built_for_an_older_instruction_set_match_the_plain_formula(tmp_path):
    """ATEN_CPU_CAPABILITY=default: the kernels build for x86-64-v2 (SSE4.2) in a fresh cache and agree with the
    plain formulas, as on a CPU without AVX (ADReLU's register blocks are sized per instruction set). Then the float16
    tests run on that build: without F16C the kernels convert half by bit arithmetic inside their loops."""
    code = """
import torch
from hf_acts import ADReLU, DynActivation, FleS
from hf_acts.ops import _cpp, dispatch
assert _cpp.target_flags()[0] == "-march=x86-64-v2", _cpp.target_flags()
torch.manual_seed(0)
fles = FleS(16)
torch.nn.init.normal_(fles.fc2.weight, std=0.3)
# ADReLU in float64 (its tolerance stays float64's): 12 channels per group, 81 positions, so the 1x1 convs' 6-row
# blocks and 8-position strips (SSE) both leave a remainder
adrelu = ADReLU(24, groups=2, head_dim=4).double()
for p in adrelu.parameters():
    torch.nn.init.normal_(p, mean=float(p.mean()), std=0.3)
for module, x in ((DynActivation("silu", alpha_init=1.2, beta_init=0.3), torch.randn(3, 16, 9, 9)),
                  (fles, torch.randn(3, 16, 9, 9)), (fles, torch.randn(3, 10, 16)),
                  (adrelu, torch.randn(3, 24, 9, 9, dtype=torch.float64))):
    outs = []
    for fused in (True, False):
        dispatch.FUSED = fused
        xg = x.clone().requires_grad_()
        y = module(xg)
        y.backward(torch.ones_like(y))
        outs.append((y, xg.grad))
    for got, want in zip(*outs):
        if got.dtype == torch.float64:
            torch.testing.assert_close(got, want)
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
assert all(_cpp.built().values()), _cpp.built()
print("ok")
"""
    if platform.machine() != "x86_64":
        pytest.skip("x86-64 targets only")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
    tests = Path(__file__).parent
    files = [str(tests / "test_dynactivation.py"), str(tests / "test_fles.py")]
    half = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files,
                           "-k", "every_half_precision or float16_is"],
                          env=env, capture_output=True, text=True, timeout=900, cwd=tests.parent)
    assert half.returncode == 0 and re.search(r"^5 passed", half.stdout, re.M), half.stdout[-3000:]


def _op_cases(device: str) -> list:
    """``(op, args)`` for each op that has an eager fast path, coefficients off their init, on ``device``."""
    def t(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape) * scale).to(device)

    params, config = randomize_(ADReLU(channels=16)).parameters_and_config()
    fles_params = [p.detach().to(device) for p in randomize_(FleS(8), 0.3).parameters()]
    return [(pointwise.dynact, (t(2, 8, 5, 5), 1 + t(8, scale=0.2), t(8, scale=0.2), "gelu")),
            (pointwise.dynact, (t(3, 7, 8), 1 + t(1, scale=0.2), t(1, scale=0.2), "silu")),
            (pointwise.swish_beta, (t(2, 8, 5, 5), 1 + t(8, scale=0.3))),
            (pointwise.dynact_glu, (t(2, 5, 8), t(2, 5, 8), 1 + t(8, scale=0.2), t(8, scale=0.2), "silu")),
            (adrelu_op.adrelu, (t(2, 16, 6, 6), *(p.detach().to(device) for p in params), *config)),
            (fles_op.fles, (t(2, 5, 8), *fles_params, "gelu", 1e-6)),  # returns its intermediates after phi(x)
            (fles_op.fles, (t(3, 8, 4, 4), *fles_params, "silu", 1e-6))]


def _op_and_fast_path(op, args) -> tuple[list[torch.Tensor], list[torch.Tensor]]:  # noqa: ANN001
    """Output (with a FleS op's intermediates) and gradients of every tensor input through the registered op and
    through ``direct.run``."""
    results, grad = [], None
    for call in (op, lambda *a: direct.run(op, *a)):
        inputs = [a.clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
        out = call(*inputs)
        y, *intermediates = out if isinstance(out, tuple) else (out,)
        tensors = [a for a in inputs if isinstance(a, torch.Tensor)]
        grad = torch.randn_like(y) if grad is None else grad
        results.append([y, *intermediates, *torch.autograd.grad(y, tensors, grad)])
        if call is not op:
            assert type(y.grad_fn).__name__ == "_DirectBackward"
            with torch.inference_mode():
                no_grad = direct.run(op, *args)
            results[-1].append(no_grad[0] if isinstance(no_grad, tuple) else no_grad)
    return results


@pytest.mark.parametrize("case", range(7))
def test_eager_fast_paths_equal_the_op(case):
    """``direct.run`` (the op's kernels without its dispatch: under autograd and without it) gives the op's
    output and gradients bit for bit: it calls the same kernels."""
    torch.manual_seed(case)
    op, args = _op_cases("cpu")[case]
    (y, *grads), (fast, *fast_grads, no_grad) = _op_and_fast_path(op, args)
    for got, want in zip([fast, *fast_grads, no_grad], [y, *grads, y], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@needs_cuda
@pytest.mark.parametrize("case", range(7))
def test_cuda_eager_fast_paths_equal_the_op(case):
    torch.manual_seed(case)
    op, args = _op_cases("cuda")[case]
    (y, *grads), (fast, *fast_grads, no_grad) = _op_and_fast_path(op, args)
    for got, want in zip([fast, *fast_grads, no_grad], [y, *grads, y], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def _dispatched(fn) -> list[str]:  # noqa: ANN001
    """The hf-acts ops the dispatcher ran during ``fn()`` (the profiler records every op it dispatches)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return [e.name for e in prof.events() if e.name.startswith("hf_acts::")]


def test_eager_fast_paths_skip_the_dispatcher():
    """Neither fast path goes through the dispatcher, and the op itself does (so the test can fail)."""
    module = DynActivation("gelu", alpha_init=1.1, beta_init=0.2)
    x = torch.randn(3, 4)
    with torch.inference_mode():
        assert _dispatched(lambda: module(x)) == []
    assert _dispatched(lambda: module(x.clone().requires_grad_()).sum().backward()) == []
    assert "hf_acts::dynact" in _dispatched(lambda: pointwise.dynact(x, module.alpha, module.beta, "gelu"))
    adrelu, maps = ADReLU(channels=16), torch.randn(2, 16, 6, 6)
    with torch.inference_mode():
        assert _dispatched(lambda: adrelu(maps)) == []
    assert _dispatched(lambda: adrelu(maps.clone().requires_grad_()).sum().backward()) == []
    params, config = adrelu.parameters_and_config()
    assert "hf_acts::adrelu" in _dispatched(lambda: adrelu_op.adrelu(maps, *params, *config))


def test_eager_fast_path_refuses_a_second_derivative():
    """The kernels have no derivative of their own: a gradient meant for a second derivative (a gradient penalty)
    raises instead of being treated as a constant, and the plain formulas give one."""
    x = torch.randn(4, 6, requires_grad=True)
    module = DynActivation("silu", alpha_init=1.2, beta_init=0.3)
    with pytest.raises(RuntimeError, match="no second derivative"):
        torch.autograd.grad(module(x).sum(), x, create_graph=True)
    with dispatch.plain_formulas():
        (gx,) = torch.autograd.grad(module(x).sum(), x, create_graph=True)
    (gx.pow(2).sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_tensor_subclasses_go_through_the_op():
    """A tensor subclass (DTensor, ...) dispatches through the op, not the fast path's plain kernels."""
    class Marked(torch.Tensor):
        pass

    x = torch.randn(2, 8, 5, 5).as_subclass(Marked).requires_grad_()
    module = DynActivation("silu", alpha_init=1.2, beta_init=0.3)
    assert "hf_acts::dynact" in _dispatched(lambda: module(x))
    assert _dispatched(lambda: module(x.as_subclass(torch.Tensor))) == []


def test_jit_trace_records_the_op_not_the_fast_paths_constant():
    """torch.jit.trace (legacy ONNX export traces too) runs without autograd: the fast path must stay out of it."""
    module = DynActivation("silu", alpha_init=1.2, beta_init=0.3)
    with torch.no_grad():
        traced = torch.jit.trace(module, torch.randn(2, 3))
        x = torch.randn(4, 3)
        torch.testing.assert_close(traced(x), module(x))


def test_fles_module_takes_the_fast_path_in_training_too():
    """FleS saves its intermediates for its backward (``saves_outputs``), and still takes the eager fast path in
    training as without autograd: no hf-acts op is dispatched, and the module's output and gradients equal the
    op's bit for bit (the op itself dispatches its backward, so the test can fail)."""
    module = randomize_(FleS(16, base="gelu"), 0.3)
    x = torch.randn(2, 5, 16, requires_grad=True)
    params = (module.fc1.weight, module.fc1.bias, module.fc2.weight, module.fc2.bias)
    with torch.inference_mode():
        assert _dispatched(lambda: module(x)) == []
    assert _dispatched(lambda: module(x).sum().backward()) == []
    assert "hf_acts::fles_backward" in _dispatched(lambda: fles_op.fles(x, *params, "gelu", module.eps)[0].sum()
                                                   .backward())
    grad = torch.randn(2, 5, 16)
    y = module(x)
    assert ran_op(y, "fles")
    want = fles_op.fles(x, *params, "gelu", module.eps)[0]
    for got, ref in zip((y, *torch.autograd.grad(y, (x, *params), grad)),
                        (want, *torch.autograd.grad(want, (x, *params), grad)), strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_fast_path_needs_an_ops_tensors_first():
    """``direct.run`` takes an op's tensors as its leading arguments (counted once from the schema): an op with a
    non-tensor argument before a tensor one is refused at registration, not misread at a call."""
    op = torch.library.custom_op("hf_acts_test::scaled", mutates_args=(), schema="(float scale, Tensor x) -> Tensor")(
        lambda scale, x: x * scale)
    with pytest.raises(TypeError, match="tensors first"):
        direct.register(op, op, {"cpu": lambda scale, x: x * scale}, {})
