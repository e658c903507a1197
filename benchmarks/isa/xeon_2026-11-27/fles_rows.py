"""The FleS rows of the three benchmarks, re-run on their own (``python fles_rows.py OUT.json``, from the repo root
with PYTHONPATH=.): the full run's FleS kernel had not built on torch 2.11 (C++17), so its FleS rows timed the plain
formula. Same measurements as ``hf_acts.bench``: the activation rows at its two shapes in float32 and bfloat16
(21 rounds), the ViT-Tiny training step (10 rounds), and eval latency of ViT-Tiny (batch 1, 32) and ResNet-50
(batch 1) FleS against their bases (7 rounds)."""

import json
import sys

import timm
import torch
import torch.nn.functional as F

from hf_acts import bench
from hf_acts.ops import _cpp
from hf_acts.registry import create_activation

bench.steady_allocator()
assert _cpp.load("fles") is not None, "fles kernel not built"
rows = {"machine": bench.machine(), "activations": [], "models": [], "inference": []}
for shape_name, shape in bench.SHAPES.items():
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(shape, dtype=dtype)
        channels = x.shape[-1] if x.ndim == 3 else x.shape[1]
        act = create_activation("fles", channels=channels, base="silu").to(dtype=dtype)
        row = bench._measure(act, F.silu, bench._plain(act), x, 21)
        rows["activations"].append({"shape": shape_name, "dtype": str(dtype), **row})
        print(shape_name, dtype, {k: round(v, 2) for k, v in row.items()}, flush=True)
vit = (torch.randn(16, 3, 224, 224), torch.randint(0, 10, (16,)))
models = {v: timm.create_model(v, num_classes=10) for v in ("vit_tiny_patch16_224", "vit_tiny_patch16_224_fles")}
times = bench.interleaved_times({k: bench.train_step(m, vit, bench._ce) for k, m in models.items()}, 10)
rows["models"].append({k: [bench.medians(times)[k], bench.paired_ratio(times, k, "vit_tiny_patch16_224")]
                       for k in times})
print(rows["models"], flush=True)
with torch.inference_mode():
    for base, fles, batches in (("vit_tiny_patch16_224", "vit_tiny_patch16_224_fles", (1, 32)),
                                ("resnet50", "resnet50_fles", (1,))):
        models = {n: bench.off_init_(timm.create_model(n)).eval() for n in (base, fles)}
        for batch in batches:
            x = torch.randn(batch, 3, 224, 224)
            times = bench.interleaved_times({k: (lambda m=m, x=x: m(x)) for k, m in models.items()}, 7)
            rows["inference"].append({"model": fles, "batch": batch, "ms": bench.medians(times),
                                      "vs_base": bench.paired_ratio(times, fles, base)})
            print(rows["inference"][-1], flush=True)
with open(sys.argv[1], "w") as f:
    json.dump(rows, f, indent=1)
