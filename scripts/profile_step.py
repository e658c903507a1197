"""Where a model's training step spends its time against its base's: torch.profiler's table of ops (self time) over a
few steps (forward + backward + AdamW, as `hf-acts bench` times them) of each model, one after the other in one
process, written to one text file. For rows such as ViT-Tiny FleS / GELU, whose ratio differs between CPUs (1.00-1.03
on the project's AVX2 VM, 1.07 on an AVX-512 Xeon), the tables show which ops take the difference. One op's time can
move 2-3x between runs on a shared VM: compare several runs, and time a suspect op alone.

    python scripts/profile_step.py [--model vit_tiny_patch16_224_fles] [--base vit_tiny_patch16_224] [--output FILE]
"""

import argparse
from pathlib import Path

import timm
import torch
from torch.profiler import ProfilerActivity, profile

import hf_acts  # noqa: F401  (registers the zoo)
from hf_acts.bench import _ce, machine, steady_allocator, train_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_tiny_patch16_224_fles")
    parser.add_argument("--base", default="vit_tiny_patch16_224")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--output", default="profile_step.txt")
    args = parser.parse_args()
    steady_allocator()
    torch.manual_seed(0)
    batch = (torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 10, (args.batch,)))
    m = machine()
    parts = [f"{m['cpu']}, ATen {m['isa']} (caps: {m['isa_limits'] or 'none'}), {m['threads']} threads, torch "
             f"{m['torch']}; batch {args.batch}, {args.size} px, {args.steps} profiled steps each (after 2 unprofiled)"]
    for name in (args.base, args.model):
        step = train_step(timm.create_model(name, num_classes=10), batch, _ce)
        for _ in range(2):
            step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                step()
        parts.append(f"== {name}\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    Path(args.output).write_text("\n\n".join(parts) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
