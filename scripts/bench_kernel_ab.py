"""A CPU kernel (ADReLU's, FleS' or the pointwise one) against an older revision's, in one process, calls alternating
(kernel changes are judged this way: the VM's speed moves between runs by more than one change does).

    python scripts/bench_kernel_ab.py --against <git revision> [--kernel fles] [--dtype bfloat16] [--steps]

Kernel rows: forward and backward medians, this tree's kernel / the revision's, and the largest difference of the
outputs (relative to the largest value); ADReLU at CIFAR ResNet and ImageNet shapes, FleS at ViT-Tiny's tokens (GELU
and SiLU) and image shapes, the pointwise kernel (dynActivation, Swish-beta, dynActGLU's gate product) at the
benchmark's CNN and LLM shapes. ``--steps`` adds training steps (forward + backward + AdamW) with each kernel against
the base model's, alternating: ResNet-8/32 CIFAR (batch 128) for ADReLU, ViT-Tiny (batch 16) for FleS. Both kernels
are built with this process's flags (``hf_acts.ops._cpp``), or with ``--revision-flags`` the revision's kernel with the
revision's own ``compile_flags`` (to judge a change of flags); the revision's kernel must take the same arguments
(ADReLU: session 8 on; FleS: session 10 on; pointwise: session 14 on).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import tempfile
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.cpp_extension import load

from hf_acts import ADReLU, FleS
from hf_acts.bench import _ce, interleaved_times, medians, paired_ratio, steady_allocator, train_step
from hf_acts.ops import _cpp
from hf_acts.ops import adrelu as adrelu_op
from hf_acts.ops import fles as fles_op
from hf_acts.ops.fles_math import inner_positions
from hf_acts.ops.ids import FLES_GATES, POINTWISE_OPS

ROOT = Path(__file__).resolve().parent.parent
ADRELU_SHAPES = [(128, 16, 32, 32), (128, 32, 16, 16), (128, 64, 8, 8), (8, 64, 64, 64), (1, 64, 56, 56)]
FLES_CASES = [((16, 197, 768), "gelu"), ((16, 197, 768), "silu"), ((32, 64, 56, 56), "silu"),
              ((128, 64, 32, 32), "silu"), ((1, 2048, 7, 7), "silu"), ((32, 2048, 7, 7), "silu"),
              ((1, 4096, 1376), "silu")]  # + ResNet-50's last stage at batch 1 and 32, where the coefficient MLP
# (2048 -> 64 -> 4096 per sample) is most of the work, and the activation benchmark's LLM shape (one 22 MB sample)
POINTWISE_CASES = [((128, 64, 32, 32), "silu", False), ((1, 4096, 1376), "silu", False),
                   ((128, 64, 32, 32), "gelu", False), ((128, 64, 32, 32), "swish_beta", False),
                   ((1, 4096, 1376), "silu", True)]  # (shape, op, dynActGLU's gate product), one coefficient pair


def git(*args: str) -> str:
    """The output of ``git *args`` in this repository."""
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def git_show(sha: str, path: str) -> str:
    return git("show", f"{sha}:{path}")


def revision_flags(sha: str, kernel: str) -> list[str]:
    """The kernel's compiler flags in the revision's ``hf_acts/ops/_cpp.py``."""
    path = Path(tempfile.mkdtemp(prefix=f"cpp_{sha}_")) / "_cpp.py"
    path.write_text(git_show(sha, "hf_acts/ops/_cpp.py"))
    spec = importlib.util.spec_from_file_location(f"_cpp_at_{sha}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return module.compile_flags(kernel)
    except TypeError:  # before session 16, one set of flags for every kernel
        return module.compile_flags()


def build_at(revision: str, kernel: str, own_flags: bool = False) -> types.ModuleType:
    """The revision's ``csrc/<kernel>.cpp`` (with its headers), compiled as this process compiles its own, or with
    ``own_flags`` as the revision compiled it."""
    sha = git("rev-parse", "--short", revision).strip()
    src = Path(tempfile.mkdtemp(prefix=f"{kernel}_{sha}_"))
    files = git("ls-tree", "--name-only", sha, "hf_acts/csrc/").split()
    for path in files:
        if path.endswith((".cpp", ".h")):
            (src / Path(path).name).write_text(git_show(sha, path))
    flags = revision_flags(sha, kernel) if own_flags else _cpp.compile_flags(kernel)
    print(f"revision {sha} built with {flags}", flush=True)
    return load(name=f"hf_acts_{kernel}_at_{sha}", sources=[str(src / f"{kernel}.cpp")], extra_cflags=flags,
                extra_ldflags=["-fopenmp"])


def compare(label: str, new: types.ModuleType, old: types.ModuleType, forward_args: tuple, backward_args: tuple,
            reps: int) -> None:
    """Prints both kernels' forward and backward medians (calls alternating), their ratios (medians of the ratios
    within a round), and the largest difference of their outputs relative to the largest value."""
    def outputs(m: types.ModuleType) -> tuple[torch.Tensor, ...]:
        y = m.forward(*forward_args)
        return (*(y if isinstance(y, (list, tuple)) else (y,)), *m.backward(*backward_args))

    diff = max(((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()
               for a, b in zip(outputs(new), outputs(old), strict=True))
    times = interleaved_times({"new f": lambda: new.forward(*forward_args),
                               "old f": lambda: old.forward(*forward_args),
                               "new b": lambda: new.backward(*backward_args),
                               "old b": lambda: old.backward(*backward_args)}, reps, warmup=3)
    t = medians(times)
    print(f"{label}: forward {t['new f'] * 1e3:.2f} / {t['old f'] * 1e3:.2f} ms = "
          f"{paired_ratio(times, 'new f', 'old f'):.2f}, backward {t['new b'] * 1e3:.2f} / {t['old b'] * 1e3:.2f} ms = "
          f"{paired_ratio(times, 'new b', 'old b'):.2f}; largest difference {diff:.1e}", flush=True)


def adrelu_rows(new: types.ModuleType, old: types.ModuleType, dtype: torch.dtype, reps: int) -> None:
    for shape in ADRELU_SHAPES:
        act = ADReLU(shape[1])
        with torch.no_grad():
            for p in act.parameters():
                p.add_(torch.randn_like(p), alpha=0.1)  # off the init
        params, config = act.parameters_and_config()
        params = [p.detach().float().contiguous() for p in params]
        x, g = torch.randn(shape).to(dtype), torch.randn(shape).to(dtype)
        compare(f"{shape} {str(dtype)[6:]}", new, old, (x, params, *config), (g, x, params, *config), reps)


def fles_rows(new: types.ModuleType, old: types.ModuleType, dtype: torch.dtype, reps: int) -> None:
    for shape, base in FLES_CASES:
        act = FleS(shape[-1] if len(shape) == 3 else shape[1], base=base)
        with torch.no_grad():
            act.fc2.weight.normal_(0, 0.3)  # off the init (k = 1 there)
        w1, b1, w2, b2 = (p.detach().float().contiguous() for p in (act.fc1.weight, act.fc1.bias, act.fc2.weight,
                                                                     act.fc2.bias))
        x, g = torch.randn(shape).to(dtype), torch.randn(shape).to(dtype)
        config = (FLES_GATES[base], inner_positions(x))
        forward_args = (x, w1, b1, w2, b2, *config, act.eps)
        _, _, denom, h, t = new.forward(*forward_args)  # the intermediates both backwards take
        compare(f"{shape} {base} {str(dtype)[6:]}", new, old, forward_args, (g, x, w1, w2, denom, h, t, *config),
                reps)


def pointwise_rows(new: types.ModuleType, old: types.ModuleType, dtype: torch.dtype, reps: int) -> None:
    for shape, op, gated in POINTWISE_CASES:
        c0, c1 = torch.tensor([1.2]), torch.tensor([0.3])  # off the init (alpha = 1, beta = 0)
        x, g = torch.randn(shape).to(dtype), torch.randn(shape).to(dtype)
        up = (torch.randn(shape).to(dtype),) if gated else ()
        config = (c0, c1, POINTWISE_OPS[op], x.numel(), *up)  # one pair: the whole tensor is one span
        compare(f"{shape} {op}{' gate product' if gated else ''} {str(dtype)[6:]}", new, old, (x, *config),
                (g, x, *config), reps)


def using(op_module: types.ModuleType, name: str, kernel: types.ModuleType, step: Callable[[], None]
          ) -> Callable[[], None]:
    """``step`` with ``op_module`` loading ``kernel`` for ``csrc/<name>.cpp``."""
    shim = types.SimpleNamespace(load=lambda n: kernel if n == name else _cpp.load(n))

    def run() -> None:
        op_module._cpp = shim
        try:
            step()
        finally:
            op_module._cpp = _cpp
    return run


STEPS = {  # kernel: (op module, [(label, base model, hf-acts model, batch, image size)])
    "adrelu": (adrelu_op, [(f"ResNet-{d} CIFAR", f"resnet{d}_cifar", f"resnet{d}_cifar_adrelu", 128, 32)
                           for d in (8, 32)]),
    "fles": (fles_op, [("ViT-Tiny 224px", "vit_tiny_patch16_224", "vit_tiny_patch16_224_fles", 16, 224)]),
}


def step_rows(kernel: str, new: types.ModuleType, old: types.ModuleType, reps: int) -> None:
    import timm

    op_module, cases = STEPS[kernel]
    for label, base, model_name, batch_size, size in cases:
        batch = (torch.randn(batch_size, 3, size, size), torch.randint(0, 100, (batch_size,)))
        fns = {"base": train_step(timm.create_model(base, num_classes=100), batch, _ce)}
        for which, built in (("new", new), ("old", old)):
            torch.manual_seed(0)
            model = timm.create_model(model_name, num_classes=100)
            fns[which] = using(op_module, kernel, built, train_step(model, batch, _ce))
        times = interleaved_times(fns, reps)
        print(f"{label} step: {model_name} / {base} {paired_ratio(times, 'new', 'base'):.3f} (this tree), "
              f"{paired_ratio(times, 'old', 'base'):.3f} (revision); base "
              f"{medians(times)['base'] * 1e3:.0f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", required=True, help="git revision whose kernel to compare with")
    parser.add_argument("--kernel", default="adrelu", choices=["adrelu", "fles", "pointwise"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--steps", action="store_true",
                        help="also training steps (ResNet-8/32 CIFAR or ViT-Tiny; not for the pointwise kernel)")
    parser.add_argument("--revision-flags", action="store_true",
                        help="build the revision's kernel with the revision's own compiler flags")
    parser.add_argument("--reps", type=int, default=25)
    args = parser.parse_args()
    steady_allocator()
    torch.manual_seed(0)
    new, old = _cpp.load(args.kernel), build_at(args.against, args.kernel, args.revision_flags)
    rows = {"adrelu": adrelu_rows, "fles": fles_rows, "pointwise": pointwise_rows}[args.kernel]
    rows(new, old, getattr(torch, args.dtype), args.reps)
    if args.steps and args.kernel in STEPS:
        step_rows(args.kernel, new, old, max(args.reps // 2, 8))


if __name__ == "__main__":
    main()
