"""The C++ kernels built with and without one compiler flag, on the same machine: fwd+bwd of dynActivation, FleS,
Swish-beta (vs SiLU) and ADReLU (vs ReLU) at the activation benchmark's CNN and LLM shapes, and a ResNet-8 ADReLU
training step vs ReLU's. Run it twice side by side, e.g. pinned to two cores each::

    OMP_NUM_THREADS=2 taskset -c 0,1 python scripts/bench_build_flags.py --drop -mprefer-vector-width=512 &
    OMP_NUM_THREADS=2 taskset -c 2,3 python scripts/bench_build_flags.py &

``--drop PREFIX`` builds without the flags of :func:`hf_acts.ops._cpp.target_flags` that start with PREFIX (the build
cache is keyed on the flags, so both builds coexist). Ratios divide times measured in the same process."""

import argparse
import json

import timm
import torch
import torch.nn.functional as F

from hf_acts.bench import (
    SHAPES,
    _ce,
    _step,
    interleaved_times,
    machine,
    medians,
    paired_ratio,
    steady_allocator,
    train_step,
)
from hf_acts.ops import _cpp
from hf_acts.registry import create_activation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drop", default=None, help="build without the target flags starting with this")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.drop:
        default_flags = _cpp.target_flags
        _cpp.target_flags = lambda: [f for f in default_flags() if not f.startswith(args.drop)]
    steady_allocator()
    flags = _cpp.target_flags()
    print("flags", flags, flush=True)
    rows = []
    for shape_name, shape in SHAPES.items():
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(shape, dtype=dtype)
            ch = x.shape[-1] if x.ndim == 3 else x.shape[1]
            fns = {"silu": F.silu, "relu": F.relu,
                   "dynactivation": create_activation("dynactivation", channels=ch, base="silu", alpha_init=1.1,
                                                      beta_init=0.1),
                   "fles": create_activation("fles", channels=ch, base="silu"),
                   "swish_beta": create_activation("swish_beta", channels=ch, beta_init=1.1)}
            if x.ndim == 4:
                fns["adrelu"] = create_activation("adrelu", channels=ch)
            fns = {k: f.to(dtype=dtype) if isinstance(f, torch.nn.Module) else f for k, f in fns.items()}
            times = interleaved_times({k: _step(f, x, True) for k, f in fns.items()}, args.reps)
            for name, t in medians(times).items():
                base = "relu" if name == "adrelu" else "silu"
                rows.append({"what": name, "shape": shape_name, "dtype": str(dtype)[6:], "fwd_bwd_ms": t * 1e3,
                             "vs_base": paired_ratio(times, name, base)})
            print(shape_name, str(dtype)[6:], {r["what"]: round(r["vs_base"], 2) for r in rows[-len(times):]},
                  flush=True)
    cifar = (torch.randn(128, 3, 32, 32), torch.randint(0, 100, (128,)))
    models = {v: timm.create_model(v, num_classes=100) for v in ("resnet8_cifar", "resnet8_cifar_adrelu")}
    times = interleaved_times({k: train_step(m, cifar, _ce) for k, m in models.items()}, 8)
    rows.append({"what": "resnet8_cifar_adrelu step", "step_ms": medians(times)["resnet8_cifar_adrelu"] * 1e3,
                 "vs_base": paired_ratio(times, "resnet8_cifar_adrelu", "resnet8_cifar")})
    print("resnet8 step ratio", round(rows[-1]["vs_base"], 3), flush=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"machine": machine(), "flags": flags, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
