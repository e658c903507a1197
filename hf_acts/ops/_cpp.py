"""Hand-written CPU kernels (``hf_acts/csrc``), compiled on first use by ``torch.utils.cpp_extension``.

The build lands in torch's extension cache (``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``)
under a name that hashes the host's CPU features, the target instruction set, the shared headers and the torch
version.

The target follows ATen's own runtime choice (``torch.backends.cpu.get_cpu_capability()``, which
``ATEN_CPU_CAPABILITY`` overrides): AVX512 builds for ``x86-64-v4``, AVX2 for ``x86-64-v3``, anything else on x86-64
for ``x86-64-v2``; other architectures build for the host (``-march=native``). AVX512 builds also ask for 512-bit
vectors, which GCC's tunings otherwise avoid (on a Xeon with AVX-512 that cut every kernel's time relative to
ATen's base activation by 12-27%: ``benchmarks/isa/``). So the kernels vectorise as wide as PyTorch's own
kernels do, and ``ATEN_CPU_CAPABILITY=avx2`` on an AVX-512 machine runs both as an AVX2-only CPU would.
Where a kernel cannot be built (no C++ compiler, OpenMP, or a GCC older than 11 for the ``x86-64-v*`` targets),
callers fall back to their plain PyTorch path, with one warning.
Which ops call them, and when, is decided in :mod:`hf_acts.ops.dispatch`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
import warnings
from pathlib import Path
from types import ModuleType

CSRC = Path(__file__).resolve().parent.parent / "csrc"
_modules: dict[str, ModuleType | None] = {}
logger = logging.getLogger(__name__)


X86_TARGETS = {"AVX512": "x86-64-v4", "AVX2": "x86-64-v3"}


def target_flags() -> list[str]:
    """The ``-march`` for this process: ATen's CPU capability on x86-64 (see the module docstring), else the host."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return ["-march=native"]
    import torch

    isa = torch.backends.cpu.get_cpu_capability()
    # GCC's x86 tunings prefer 256-bit vectors even where AVX-512 is enabled; ATen's AVX512 kernels use 512-bit ones
    wide = ["-mprefer-vector-width=512"] if isa == "AVX512" else []
    return [f"-march={X86_TARGETS.get(isa, 'x86-64-v2')}", *wide, "-mtune=native"]


def _build_tag() -> str:
    """A hash of the host's CPU features, the target, the shared headers (torch rebuilds on source changes only),
    where the sources and torch live (two installs side by side, e.g. editable and wheel, or two virtualenvs of the
    same torch sharing one editable checkout, would otherwise rebuild each other's build at every switch: its include
    paths differ) and the torch version. torch's cache folder names only Python's and CUDA's versions, so without it
    two torch releases share a build folder: torch 2.11 waits forever on the ``lock`` file that torch 2.14 leaves
    there (seen in session 18), and a build for one torch's ABI could be loaded by another."""
    import torch

    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor()
    headers = "".join(p.read_text() for p in sorted(CSRC.glob("*.h")))
    torch_dir = Path(torch.__file__).parent
    key = f"{platform.machine()} {flags} {target_flags()} {headers} {CSRC} {torch_dir} {torch.__version__}"
    return hashlib.sha1(key.encode()).hexdigest()[:8]


@functools.cache
def _compiler_is_gcc() -> bool:
    from torch.utils.cpp_extension import check_compiler_is_gcc, get_cxx_compiler

    return check_compiler_is_gcc(get_cxx_compiler())


# GCC's partial redundancy elimination and jump threading see that the inlined exp's clamps select constants and
# rebuild each clamp as compares, mask logic and blends after the polynomial (9 vector instructions where two
# compare-and-blend clamps take 4). The pointwise and FleS loops are bound by those instructions (README, "How"); the
# ADReLU kernel, whose time is in its matmul and depthwise loops, ran 3-10% slower without these passes.
GCC_EXP_FLAGS = dict.fromkeys(("pointwise", "fles"), ["-fno-tree-pre", "-fno-thread-jumps"])


def compile_flags(name: str) -> list[str]:
    """The compiler flags of kernel ``csrc/<name>.cpp``'s build in this process."""
    # -fno-trapping-math: without it GCC 12 vectorises none of the select-and-exp loops (the ReLU-family selects and
    # the inlined exp), 5-7x slower on a Zen 3 VM; nothing here reads floating-point flags
    flags = ["-O3", *target_flags(), "-fno-math-errno", "-fno-trapping-math", "-fopenmp"]
    return flags + GCC_EXP_FLAGS.get(name, []) if _compiler_is_gcc() else flags


def load(name: str) -> ModuleType | None:
    """The compiled extension ``csrc/<name>.cpp``, or None (with one warning) where it cannot be built."""
    if name not in _modules:
        cpp_logger = logging.getLogger("torch.utils.cpp_extension")
        level = cpp_logger.level
        cpp_logger.setLevel(logging.ERROR)  # its import warns "No CUDA runtime is found" on CPU-only machines
        try:
            from torch.utils.cpp_extension import load as build
        finally:
            cpp_logger.setLevel(level)
        logger.info("hf-acts: loading the fused %s CPU kernel (built once, ~30 s, on first use)", name)
        try:
            _modules[name] = build(
                name=f"hf_acts_{name}_{_build_tag()}", sources=[str(CSRC / f"{name}.cpp")],
                extra_cflags=compile_flags(name), extra_ldflags=["-fopenmp"],
                verbose=False,
            )
        except Exception as e:  # noqa: BLE001 - any build failure: the plain PyTorch path is always correct
            warnings.warn(f"hf-acts: the fused {name} CPU kernel could not be built ({type(e).__name__}: {e}); "
                          "using the plain PyTorch path", stacklevel=2)
            _modules[name] = None
    return _modules[name]


def built() -> dict[str, bool]:
    """Each kernel in ``csrc`` and whether it builds and loads in this process (False: its ops run the plain
    formula, as :func:`load` warns once). Benchmarks record it, so a result cannot pass off the plain path as the
    kernel's."""
    return {path.stem: load(path.stem) is not None for path in sorted(CSRC.glob("*.cpp"))}
