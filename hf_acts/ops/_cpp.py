"""Hand-written CPU kernels (``hf_acts/csrc``), compiled on first use by ``torch.utils.cpp_extension``.

The build lands in torch's extension cache (``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``)
under a name that includes the host's CPU features, since it is built with ``-march=native``, and a hash of the
shared headers. Where it cannot be built (no C++ compiler or OpenMP), callers fall back to their plain PyTorch
path, with one warning.
Which ops call them, and when, is decided in :mod:`hf_acts.ops.dispatch`.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import warnings
from pathlib import Path
from types import ModuleType

CSRC = Path(__file__).resolve().parent.parent / "csrc"
_modules: dict[str, ModuleType | None] = {}
logger = logging.getLogger(__name__)


def _build_tag() -> str:
    """A hash of the host's CPU features, the shared headers (torch rebuilds on source changes only) and where the
    sources live (two installs side by side, e.g. editable and wheel, would otherwise rebuild each other's build)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor()
    headers = "".join(p.read_text() for p in sorted(CSRC.glob("*.h")))
    return hashlib.sha1(f"{platform.machine()} {flags} {headers} {CSRC}".encode()).hexdigest()[:8]


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
                # -fno-trapping-math: without it GCC 12 vectorises none of the select-and-exp loops (the ReLU-family
                # selects and the inlined exp), 5-7x slower on a Zen 3 VM; nothing here reads floating-point flags
                extra_cflags=["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp"],
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
        except Exception as e:  # noqa: BLE001 - any build failure: the plain PyTorch path is always correct
            warnings.warn(f"hf-acts: the fused {name} CPU kernel could not be built ({type(e).__name__}: {e}); "
                          "using the plain PyTorch path", stacklevel=2)
            _modules[name] = None
    return _modules[name]
