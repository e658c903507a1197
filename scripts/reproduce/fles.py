"""FleS against GELU/SiLU in a small ViT and a small CNN, and FleS-Proto with and without shuffled batches
(papers/fles-poster.md).

Claims: FleS outperforms popular activations (Swin-Mini 71.4%, PoolFormer-S12 79.4% top-1 on ImageNet); FleS-Proto
(statistics over the whole batch) gains a lot when the evaluation batches are not shuffled (Swin-Micro 85.2% vs GELU's
78.7%) and loses it when they are (77.3%): a batch of one class leaks its label through the batch statistics.
Here: MNIST-1D (the 8x8 digits saturate near 98% for every activation), a 4-block ViT (10 tokens of 4 samples, class
token) with GELU -> FleS(GELU) and the zoo's CIFAR ResNet-8 on one-row images with SiLU -> FleS(SiLU), 3 seeds.
FleS-Proto is trained with shuffled batches and evaluated twice: on class-sorted batches (the unshuffled ImageNet
validation order) and on shuffled ones.

    python scripts/reproduce/fles.py [--quick] [--seeds 0 1 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from hf_acts.cards import count_parameters  # noqa: E402

# model -> (builder, base activation, variants: name -> (activation of the builder, FleS kwargs or None))
MODELS = {
    "vit": (common.vit, "gelu", {"gelu": ("gelu", None), "silu": ("silu", None), "fles(gelu)": ("gelu", {}),
                                 "fles-proto(gelu)": ("gelu", {"proto": True})}),
    "resnet8": (common.resnet8, "silu", {"silu": ("silu", None), "gelu": ("gelu", None), "fles(silu)": ("silu", {})}),
}
SETTINGS = {"vit": {"lr": 1e-3, "weight_decay": 0.05}, "resnet8": {"lr": 3e-3, "weight_decay": 5e-4}}


def main(argv: list[str] | None = None) -> dict:
    args = common.parse(__doc__, argv, epochs=10)
    data = common.mnist1d(args.samples)
    x_test, y_test = data[2], data[3]
    sorted_order = torch.argsort(y_test, stable=True)  # batches of (mostly) one class
    rows = []
    for model_name, (build, _, variants) in MODELS.items():
        for name, (act, fles) in variants.items():
            runs = []
            for seed in args.seeds:
                common.set_seed(seed)
                model = build(act)
                if fles is not None:
                    common.swap(model, "fles", act, base=act, **fles)
                result = common.train_classifier(model, data, epochs=args.epochs, seed=seed, **SETTINGS[model_name])
                if fles is not None and fles.get("proto"):
                    shuffled = torch.randperm(len(y_test), generator=torch.Generator().manual_seed(seed))
                    result["test_acc_sorted_batches"] = common.evaluate(model, x_test, y_test, 100, sorted_order)["acc"]
                    result["test_acc_shuffled_batches"] = common.evaluate(model, x_test, y_test, 100, shuffled)["acc"]
                runs.append({**result, "parameters": count_parameters(model)})
            rows.append({"model": model_name, "activation": name, "runs": runs})
            print(model_name, name, common.pm([r["test_acc"] for r in runs]), flush=True)
    common.save("fles", args, {"rows": rows})
    return {"rows": rows}


if __name__ == "__main__":
    main()
