"""ADReLU's CPU kernel against an older revision's, in one process, calls alternating (kernel changes are judged this
way: the VM's speed moves between runs by more than one change does).

    python scripts/bench_adrelu_ab.py --against <git revision> [--dtype bfloat16] [--steps] [--reps 25]

Kernel rows: forward and backward medians at CIFAR ResNet and ImageNet shapes, this tree's kernel / the revision's,
and the largest difference of the output and the eight gradients (relative to the largest value). ``--steps`` adds
ResNet-8/32 CIFAR training steps (batch 128, forward + backward + AdamW) with each kernel, against ReLU's, alternating.
Both kernels are built with this process's flags (``hf_acts.ops._cpp``); the revision's kernel must take the same
arguments (session 8 on).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import types
from pathlib import Path

import torch
from torch.utils.cpp_extension import load

from hf_acts import ADReLU
from hf_acts.bench import _ce, interleaved_medians, steady_allocator, train_step
from hf_acts.ops import _cpp
from hf_acts.ops import adrelu as adrelu_op

SHAPES = [(128, 16, 32, 32), (128, 32, 16, 16), (128, 64, 8, 8), (8, 64, 64, 64), (1, 64, 56, 56)]


def build_at(revision: str) -> types.ModuleType:
    """The revision's ``csrc/adrelu.cpp`` (with its headers), compiled as this process compiles its own."""
    root = Path(__file__).resolve().parent.parent
    sha = subprocess.run(["git", "rev-parse", "--short", revision], cwd=root, check=True, capture_output=True,
                         text=True).stdout.strip()
    src = Path(tempfile.mkdtemp(prefix=f"adrelu_{sha}_"))
    files = subprocess.run(["git", "ls-tree", "--name-only", sha, "hf_acts/csrc/"], cwd=root, check=True,
                           capture_output=True, text=True).stdout.split()
    for path in files:
        if path.endswith((".cpp", ".h")):
            text = subprocess.run(["git", "show", f"{sha}:{path}"], cwd=root, check=True, capture_output=True,
                                  text=True).stdout
            (src / Path(path).name).write_text(text)
    return load(name=f"hf_acts_adrelu_at_{sha}", sources=[str(src / "adrelu.cpp")], extra_cflags=_cpp.compile_flags(),
                extra_ldflags=["-fopenmp"])


def kernel_rows(new: types.ModuleType, old: types.ModuleType, dtype: torch.dtype, reps: int) -> None:
    for shape in SHAPES:
        act = ADReLU(shape[1])
        with torch.no_grad():
            for p in act.parameters():
                p.add_(torch.randn_like(p), alpha=0.1)  # off the init
        params, config = act.parameters_and_config()
        params = [p.detach().float().contiguous() for p in params]
        x, g = torch.randn(shape).to(dtype), torch.randn(shape).to(dtype)
        outs = [(m.forward(x, params, *config), *m.backward(g, x, params, *config)) for m in (new, old)]
        diff = max(((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()
                   for a, b in zip(*outs, strict=True))
        t = interleaved_medians({
            "new f": lambda: new.forward(x, params, *config), "old f": lambda: old.forward(x, params, *config),  # noqa: B023
            "new b": lambda: new.backward(g, x, params, *config),  # noqa: B023
            "old b": lambda: old.backward(g, x, params, *config)}, reps, warmup=3)  # noqa: B023
        print(f"{shape} {str(dtype)[6:]}: forward {t['new f'] * 1e3:.2f} / {t['old f'] * 1e3:.2f} ms = "
              f"{t['new f'] / t['old f']:.2f}, backward {t['new b'] * 1e3:.2f} / {t['old b'] * 1e3:.2f} ms = "
              f"{t['new b'] / t['old b']:.2f}; largest difference {diff:.1e}", flush=True)


def step_rows(new: types.ModuleType, old: types.ModuleType, reps: int) -> None:
    import timm

    def using(kernel: types.ModuleType, step):
        shim = types.SimpleNamespace(load=lambda name: kernel if name == "adrelu" else _cpp.load(name))

        def run() -> None:
            adrelu_op._cpp = shim
            try:
                step()
            finally:
                adrelu_op._cpp = _cpp
        return run

    batch = (torch.randn(128, 3, 32, 32), torch.randint(0, 100, (128,)))
    for depth in (8, 32):
        fns = {"relu": train_step(timm.create_model(f"resnet{depth}_cifar", num_classes=100), batch, _ce)}
        for label, kernel in (("new", new), ("old", old)):
            torch.manual_seed(0)
            model = timm.create_model(f"resnet{depth}_cifar_adrelu", num_classes=100)
            fns[label] = using(kernel, train_step(model, batch, _ce))
        t = interleaved_medians(fns, reps)
        print(f"ResNet-{depth} CIFAR step: ADReLU / ReLU {t['new'] / t['relu']:.3f} (this tree), "
              f"{t['old'] / t['relu']:.3f} (revision); ReLU {t['relu'] * 1e3:.0f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", required=True, help="git revision whose adrelu.cpp to compare with")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--steps", action="store_true", help="also ResNet-8/32 CIFAR training steps")
    parser.add_argument("--reps", type=int, default=25)
    args = parser.parse_args()
    steady_allocator()
    torch.manual_seed(0)
    new, old = _cpp.load("adrelu"), build_at(args.against)
    kernel_rows(new, old, getattr(torch, args.dtype), args.reps)
    if args.steps:
        step_rows(new, old, max(args.reps // 2, 8))


if __name__ == "__main__":
    main()
