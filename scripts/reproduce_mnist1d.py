"""Small-scale comparison of the activations on MNIST-1D (generated locally) with the paper-style 3-layer MLP.

Every run goes through ``finetune/vision.py`` (same data, schedule and seed for every activation; activations
built with their paper init, not the function-preserving one, since these are trained from scratch).
Writes ``benchmarks/mnist1d.json`` and ``benchmarks/mnist1d.md``.

    python scripts/reproduce_mnist1d.py [--epochs 20] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "finetune"))
import vision  # noqa: E402

ACTIVATIONS = {"relu": None, "dynactivation": '{"base": "relu"}', "adrelu": "{}", "fles": '{"base": "silu"}',
               "swish_beta": "{}", "dyrelu": "{}", "aiec": "{}"}
EXTRA = {"aiec": ["--last", "1"]}  # AIEC on the last layer only, as the paper places it in non-transformers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--output-dir", default="benchmarks")
    args = parser.parse_args()
    rows = []
    for act, kwargs in ACTIVATIONS.items():
        accs = []
        for seed in args.seeds:
            out = ROOT / "outputs" / "mnist1d" / f"{act}-s{seed}"
            run = ["--model", "mlp_mnist1d", "--dataset", "mnist1d", "--epochs", str(args.epochs), "--batch-size",
                   "128", "--lr", "3e-3", "--label-smoothing", "0", "--checkpoint-steps", "1000000", "--report-to",
                   "none", "--seed", str(seed), "--output-dir", str(out)]
            if kwargs is not None:
                run += ["--act", act, "--target", "relu", "--act-kwargs", kwargs, *EXTRA.get(act, [])]
            if (out / "metrics.json").exists():  # reuse finished runs
                metrics = json.loads((out / "metrics.json").read_text())
            else:
                metrics = vision.main(run)
            accs.append(metrics["top1"])
        rows.append({"activation": act, "top1_mean": statistics.mean(accs),
                     "top1_std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "runs": accs,
                     "parameters": metrics["parameters"]})
        print(rows[-1], flush=True)
    out = Path(args.output_dir)
    out.mkdir(exist_ok=True)
    (out / "mnist1d.json").write_text(json.dumps({"epochs": args.epochs, "seeds": args.seeds, "rows": rows}, indent=2))
    lines = ["| activation | top-1 (mean ± std) | runs | parameters |", "|---|---|---|---|"]
    lines += [f"| {r['activation']} | {100 * r['top1_mean']:.1f} ± {100 * r['top1_std']:.1f} | "
              f"{', '.join(f'{100 * a:.1f}' for a in r['runs'])} | {r['parameters']:,} |" for r in rows]
    (out / "mnist1d.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
