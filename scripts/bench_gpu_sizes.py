"""How the fused ops' cost scales with tensor size on a GPU: fwd+bwd time of dynActivation, Swish-beta and the
dynActGLU gate product against SiLU / SwiGLU's product at 1M to 64M elements (ratios within one run). Small
tensors show the per-call host overhead (op dispatch, kernel launches), large ones the memory traffic."""

import argparse
import json

import torch
import torch.nn.functional as F

from hf_acts import DynActGLU, DynActivation, SwishBeta
from hf_acts.bench import _step, interleaved_times, machine, medians, paired_ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    rows = []
    for numel in (1 << 20, 1 << 23, 1 << 26):
        x = torch.randn(numel // 4096, 4096, device=args.device, dtype=dtype)
        up = torch.randn_like(x).requires_grad_()
        glu = DynActGLU(8, 8, alpha_init=1.1, beta_init=0.1).to(args.device)
        fns = {"silu": F.silu, "dynact": DynActivation("silu", 1.1, 0.1).to(args.device),
               "swish_beta": SwishBeta(1.1).to(args.device), "swiglu_product": lambda g, up=up: F.silu(g) * up,
               "dynactglu_product": lambda g, up=up, glu=glu: glu.gated(g, up)}
        times = interleaved_times({k: _step(f, x, True) for k, f in fns.items()}, reps=21)
        row = {"numel": numel, **{f"{k}_us": t * 1e6 for k, t in medians(times).items()}}
        row.update({"dynact_vs_silu": paired_ratio(times, "dynact", "silu"),
                    "swish_beta_vs_silu": paired_ratio(times, "swish_beta", "silu"),
                    "dynactglu_vs_swiglu": paired_ratio(times, "dynactglu_product", "swiglu_product")})
        rows.append(row)
        print({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()})
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"machine": machine(args.device), "dtype": args.dtype, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
