"""Does ``make demo`` give the same answer everywhere? And the ADReLU paper's recipe at small scale.

1. ``make demo``'s recipe (``finetune/configs/demo.args``) through ``accelerate launch``, exactly as the Makefile runs
   it, under the conditions that change floating-point rounding the way another CPU does: seeds, 1 vs 2 threads, the
   fused C++ kernels vs the plain formulas (``HF_ACTS_FUSED=0``), and an older instruction set for ATen and oneDNN
   (``ATEN_CPU_CAPABILITY=default``, ``ONEDNN_MAX_CPU_ISA=SSE41``).
2. ``make demo-swap`` (``finetune/configs/demo_swap_*.args``): train a SiLU ResNet-8, then swap its last three SiLUs
   for ADReLU and fine-tune, against continuing the SiLU model for the same steps (Sec. 4.2's recipe), per seed.

    python scripts/reproduce/demo.py [--quick] [--seeds 0 1 2]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

CONFIGS = common.ROOT / "finetune" / "configs"
QUICK = ["--epochs=1", "--max-train-samples=64", "--max-eval-samples=32", "--report-to=none"]


def launch(args: list[str], out: Path, env: dict[str, str] | None = None) -> dict:
    """``accelerate launch finetune/vision.py ARGS --output-dir OUT`` as ``make demo`` runs it; its metrics."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "cpu_single.yaml"),
           str(common.ROOT / "finetune" / "vision.py"), *args, f"--output-dir={out}"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=common.ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                   stdout=subprocess.DEVNULL)
    return {**json.loads((out / "metrics.json").read_text()), "seconds": time.perf_counter() - start}


def conditions(seeds: list[int], quick: bool) -> list[tuple[str, list[str], dict[str, str]]]:
    """(name, extra arguments, environment) for each ``make demo`` run."""
    out = [(f"seed {s}, 2 threads, fused", [f"--seed={s}"], {"OMP_NUM_THREADS": "2"}) for s in seeds]
    if not quick:
        s = seeds[0]
        out += [(f"seed {s}, 1 thread, fused", [f"--seed={s}"], {"OMP_NUM_THREADS": "1"}),
                (f"seed {s}, 2 threads, plain formulas (HF_ACTS_FUSED=0)", [f"--seed={s}"],
                 {"OMP_NUM_THREADS": "2", "HF_ACTS_FUSED": "0"}),
                (f"seed {s}, 2 threads, an older CPU's kernels (ATen without SIMD, oneDNN SSE4.1)", [f"--seed={s}"],
                 {"OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"})]
    return out


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__)
    p.add_argument("--skip-swap", action="store_true", help="only the make demo conditions")
    args = common.parse(__doc__, argv, p=p)
    quick = QUICK if args.quick else []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i, (name, extra, env) in enumerate(conditions(args.seeds, args.quick)):
            m = launch([f"@{CONFIGS / 'demo.args'}", *extra, *quick], tmp / f"demo{i}", env)
            rows.append({"recipe": "demo", "condition": name, **{k: m[k] for k in ("top1", "top5", "eval_loss")},
                         "seconds": m["seconds"]})
            print(rows[-1], flush=True)
        for seed in [] if args.skip_swap else args.seeds:
            base = tmp / f"base{seed}"
            launch([f"@{CONFIGS / 'demo_swap_base.args'}", f"--seed={seed}", *quick], base)
            for recipe, config in (("swap-adrelu", "demo_swap_adrelu.args"), ("continue-silu", "demo_swap_silu.args")):
                m = launch([f"@{CONFIGS / config}", f"--model=local-dir:{base}", f"--seed={seed}", *quick],
                           tmp / f"{recipe}{seed}")
                rows.append({"recipe": recipe, "condition": f"seed {seed}", "top1": m["top1"], "top5": m["top5"],
                             "eval_loss": m["eval_loss"], "seconds": m["seconds"]})
                print(rows[-1], flush=True)
    common.save("demo", args, {"rows": rows})
    return {"rows": rows}


if __name__ == "__main__":
    main()
