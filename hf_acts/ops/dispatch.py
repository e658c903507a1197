"""Which implementation runs an hf-acts op on a given tensor: the device/dtype matrix, in one place.

=====================================  ==========================================================
tensor                                 what runs
=====================================  ==========================================================
CPU float32 / float64 / bf16 / fp16    the op's C++ kernel (``hf_acts/csrc``, built on first use)
CUDA float32 / bf16 / fp16             the op's Triton kernels (``hf_acts/ops/triton_*.py``)
CUDA float64, any other device         the module's plain PyTorch formula
=====================================  ==========================================================

The plain formula (the tests' reference) also runs with ``HF_ACTS_FUSED=0``; under ``torch.export`` and ONNX
export (so exported graphs hold only aten ops: the formula is the ops' decomposition); under a dispatch mode such
as ``FlopCounterMode``; inside ``torch.func`` transforms (the ops are first-order); on empty tensors; and where a
kernel cannot be built (no C++ compiler) or Triton is not installed. Under ``torch.compile`` the ops are traced as
single graph nodes (no graph break).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Literal

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from . import _cpp

FUSED = os.environ.get("HF_ACTS_FUSED", "1") != "0"
# torch < 2.12 reports is_exporting() True under every dynamo trace, torch.compile included (pytorch#176347): there a
# dynamo trace counts as compiling, so strict export on those versions keeps the ops (non-strict export, the default
# and what torch.onnx uses, is unaffected)
EXPORT_FLAG_RELIABLE = torch.torch_version.TorchVersion(torch.__version__) >= "2.12"
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
Impl = Literal["cpp", "triton", "plain"]


@torch.compiler.assume_constant_result
def cpp_available(kernel: str) -> bool:
    """Whether ``csrc/<kernel>.cpp`` is built or can be built here (builds it on the first call)."""
    return _cpp.load(kernel) is not None


@torch.compiler.assume_constant_result
def triton_available() -> bool:
    """Whether Triton can be imported (the CUDA kernels need it)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def select(device_type: str, dtype: torch.dtype, kernel: str) -> Impl:
    """The implementation for a tensor of ``device_type`` and ``dtype``; ``kernel`` names the C++ source."""
    if not FUSED:
        return "plain"
    if device_type == "cpu":
        return "cpp" if cpp_available(kernel) else "plain"
    if device_type == "cuda" and dtype in TRITON_DTYPES:
        return "triton" if triton_available() else "plain"
    return "plain"


def exporting() -> bool:
    """Whether ``torch.export`` is tracing (see ``EXPORT_FLAG_RELIABLE``)."""
    if torch.compiler.is_dynamo_compiling() and not EXPORT_FLAG_RELIABLE:
        return False
    return torch.compiler.is_exporting()


def implementation(x: torch.Tensor, kernel: str) -> Impl:
    """:func:`select` for ``x``, or ``"plain"`` where the formula must run (see the module docstring)."""
    if x.numel() == 0 or exporting():
        return "plain"
    if not torch.compiler.is_compiling() and (
            _get_current_dispatch_mode() is not None or torch._C._are_functorch_transforms_active()):
        return "plain"
    return select("cpu" if x.is_cpu else x.device.type, x.dtype, kernel)  # .is_cpu: no device string per call


def fused(x: torch.Tensor, kernel: str) -> bool:
    """Whether an op (C++ or Triton) runs on ``x`` rather than the plain formula."""
    return implementation(x, kernel) != "plain"


@contextlib.contextmanager
def plain_formulas() -> Iterator[None]:
    """Run the plain PyTorch formulas inside the block, as ``HF_ACTS_FUSED=0`` does for a whole process (benchmarks
    time both paths in one process this way)."""
    global FUSED
    saved, FUSED = FUSED, False
    try:
        yield
    finally:
        FUSED = saved
