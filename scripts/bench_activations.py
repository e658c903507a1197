"""Activation cost: every hf-acts activation vs its native base and a memory-bound floor (ratios, one run).

    python scripts/bench_activations.py [--quick] [--output-dir benchmarks]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_acts.bench import bench_activations, machine

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output-dir", default="benchmarks")
    args = parser.parse_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = bench_activations(args.quick)
    (out / "activations.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    print(json.dumps(rows, indent=1))
