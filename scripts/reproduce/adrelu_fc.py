"""ADReLU's fully connected case study (papers/adrelu.md, Table 6) on MNIST-1D.

Claim: in a 3-layer FC network (input -> 512 -> 256 -> 128, each followed by the activation) ADReLU beats ReLU,
PReLU and Dy-ReLU (CIFAR-10: 63.44 vs 62.79 / 63.19 / 61.81). Here: the same network on MNIST-1D (40 inputs instead
of 3,072), 3 seeds, every activation with its paper init; and a ReLU MLP widened to ADReLU's parameter count
(ADReLU adds its attention projections per layer), since a bigger ReLU network is the fair rival.

    python scripts/reproduce/adrelu_fc.py [--quick] [--seeds 0 1 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from hf_acts.cards import count_parameters  # noqa: E402

HIDDEN = (512, 256, 128)


def build(act: str, hidden: tuple[int, ...] = HIDDEN):
    if act in ("adrelu", "dyrelu"):
        return common.swap(common.mlp("relu", hidden), act, "relu")
    return common.mlp(act, hidden)


def mlp_params(hidden: tuple[int, ...], inputs: int = 40, classes: int = 10) -> int:
    sizes = (inputs, *hidden, classes)
    return sum(a * b + b for a, b in zip(sizes, sizes[1:], strict=False))


def matched_hidden(budget: int) -> tuple[int, ...]:
    """The ReLU MLP widths ``HIDDEN * k`` with the parameter count closest to ``budget``."""
    widths = [tuple(round(h * k / 100) for h in HIDDEN) for k in range(100, 1001, 5)]
    return min(widths, key=lambda w: abs(mlp_params(w) - budget))


def main(argv: list[str] | None = None) -> dict:
    args = common.parse(__doc__, argv, epochs=30)
    data = common.mnist1d(args.samples)
    wide = matched_hidden(count_parameters(build("adrelu")))
    rows = []
    for name, make in [("relu", lambda: build("relu")), ("prelu", lambda: build("prelu")),
                       ("dyrelu", lambda: build("dyrelu")), ("adrelu", lambda: build("adrelu")),
                       (f"relu {'-'.join(map(str, wide))}", lambda: build("relu", wide))]:
        runs = []
        for seed in args.seeds:
            common.set_seed(seed)
            model = make()
            runs.append({**common.train_classifier(model, data, epochs=args.epochs, lr=1e-3, seed=seed),
                         "parameters": count_parameters(model)})
        rows.append({"activation": name, "runs": runs})
        print(name, common.pm([r["test_acc"] for r in runs]), runs[0]["parameters"], flush=True)
    common.save("adrelu_fc", args, {"rows": rows})
    return {"rows": rows}


if __name__ == "__main__":
    main()
