"""Training-step cost of hf-acts models vs their base models (ratios, one run), and ADReLU vs input size.

    python scripts/bench_models.py [--quick] [--output-dir benchmarks]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_acts.bench import bench_models, machine

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output-dir", default="benchmarks")
    args = parser.parse_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = bench_models(args.quick)
    (out / "models.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    print(json.dumps(rows, indent=1))
