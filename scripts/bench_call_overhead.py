"""Where a small activation call's time goes: dynActivation on a tensor small enough (8K elements) that the arithmetic
is negligible, timed at each layer of the call against SiLU: the kernel alone (CUDA: the Triton launch; CPU: the C++
function), the registered op without autograd, the module without autograd, and the module's forward + backward.
Each row is microseconds per call (medians of alternating repeats, synchronised on CUDA), so the difference between
two layers is what that layer adds per call."""

import argparse
import json

import torch
import torch.nn.functional as F

from hf_acts import ADReLU, DynActivation
from hf_acts.bench import _step, interleaved_medians, machine
from hf_acts.ops import _cpp
from hf_acts.ops.ids import POINTWISE_OPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--reps", type=int, default=500)
    parser.add_argument("--output", default=None)
    parser.add_argument("--profile", default=None,
                        help="also write torch.profiler's tables of 50 forward + backward calls here: this "
                             "dynActivation's, and ADReLU's at ResNet-8's first stage (128, 16, 32, 32) (time per op "
                             "and Python function: where the backward's time goes)")
    args = parser.parse_args()
    x = torch.randn(8, 1024, device=args.device)
    act = DynActivation("silu", 1.1, 0.1).to(args.device)
    alpha, beta, op = act.alpha.detach(), act.beta.detach(), POINTWISE_OPS["silu"]
    if args.device == "cuda":
        from hf_acts.ops import triton_pointwise

        def kernel(t: torch.Tensor) -> torch.Tensor:
            return triton_pointwise.forward(t, alpha, beta, op)
    else:
        cpp = _cpp.load("pointwise")

        def kernel(t: torch.Tensor) -> torch.Tensor:
            return cpp.forward(t, alpha, beta, op, t.numel())

    fns = {"silu forward": F.silu,
           "dynact kernel": kernel,
           "dynact op": lambda t: torch.ops.hf_acts.dynact(t, alpha, beta, "silu"),
           "dynact module": act}
    times = interleaved_medians({k: _step(f, x, False) for k, f in fns.items()}, args.reps)
    times |= interleaved_medians({"silu fwd+bwd": _step(F.silu, x, True), "dynact fwd+bwd": _step(act, x, True)},
                                 args.reps)
    rows = [{"call": k, "us": t * 1e6} for k, t in times.items()]
    for r in rows:
        print(f"{r['call']:>16}: {r['us']:8.1f} us")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"machine": machine(args.device), "rows": rows}, f, indent=2)
    if args.profile:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if args.device == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        adrelu = ADReLU(16).to(args.device)
        tables = []
        for name, step in (("dynActivation, 8K elements", _step(act, x, True)),
                           ("ADReLU, (128, 16, 32, 32)", _step(adrelu, torch.randn(128, 16, 32, 32,
                                                                                   device=args.device), True))):
            step()
            with torch.profiler.profile(activities=activities) as prof:
                for _ in range(50):
                    step()
            tables.append(f"## {name}: 50 forward + backward calls\n\n"
                          + prof.key_averages().table(sort_by="cpu_time_total", row_limit=40))
        with open(args.profile, "w") as f:
            f.write("\n\n".join(tables) + "\n")


if __name__ == "__main__":
    main()
