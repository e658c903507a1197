"""ADReLU's sparsity vs expressivity analysis (papers/adrelu.md, Eq. 7 and Fig. 2) with a CIFAR-style ResNet-8.

Claim: ReLU is the sparsest (fewest features kept, lowest accuracy), PReLU and Dy-ReLU keep nearly every feature and
widen the train-test gap, ADReLU sits between them (moderate sparsity) with the best test accuracy. Here: the zoo's
ResNet-8 on MNIST-1D signals as one-row images (1 x 40; CIFAR is not available offline and the 8x8 digits saturate
near 98% for every activation), 3 seeds. Sparsity ``S`` (Eq. 7) is the share of exactly-zero outputs over every
activation layer and every test sample. ADReLU's ``max(x, tau)`` with a learned, continuous ``tau`` is almost never
exactly zero, so its ``S`` is near 0 by construction; we also report the share of its units on the threshold
branch (``x < tau``: the input is not passed on), the reading under which "moderate sparsity" can hold.

    python scripts/reproduce/adrelu_sparsity.py [--quick] [--seeds 0 1 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from hf_acts.cards import count_parameters  # noqa: E402

ACTIVATIONS = ("relu", "prelu", "dyrelu", "adrelu")
ACT_CLASSES = ("ReLU", "PReLU", "DyReLU", "ADReLU")


def build(act: str) -> torch.nn.Module:
    if act in ("adrelu", "dyrelu"):
        return common.swap(common.resnet8("relu"), act, "relu")
    return common.resnet8(act)


@torch.no_grad()
def sparsity(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Eq. 7 (``sparsity``: share of exactly-zero outputs over all activation layers and samples) and, for ADReLU,
    ``threshold_share``: the share of outputs on the threshold branch (``output != input``)."""
    counts = {"zero": 0, "threshold": 0, "total": 0}

    def count(module, inputs, output):
        counts["zero"] += (output == 0).sum().item()
        counts["total"] += output.numel()
        if type(module).__name__ == "ADReLU":  # not in place: its input is intact
            counts["threshold"] += (output != inputs[0]).sum().item()

    hooks = [m.register_forward_hook(count) for m in model.modules() if type(m).__name__ in ACT_CLASSES]
    model.eval()
    model(x)
    for h in hooks:
        h.remove()
    return {"sparsity": counts["zero"] / counts["total"], "threshold_share": counts["threshold"] / counts["total"]}


def main(argv: list[str] | None = None) -> dict:
    args = common.parse(__doc__, argv, epochs=15)
    data = common.mnist1d(args.samples)
    rows = []
    for act in ACTIVATIONS:
        runs = []
        for seed in args.seeds:
            common.set_seed(seed)
            model = build(act)
            result = common.train_classifier(model, data, epochs=args.epochs, lr=3e-3, weight_decay=5e-4, seed=seed)
            runs.append({**result, **sparsity(model, data[2]), "parameters": count_parameters(model)})
        rows.append({"activation": act, "runs": runs})
        print(act, common.pm([r["test_acc"] for r in runs]), common.pm([r["sparsity"] for r in runs]), flush=True)
    common.save("adrelu_sparsity", args, {"rows": rows})
    return {"rows": rows}


if __name__ == "__main__":
    main()
