"""Scale-out on CPU processes: the tiny-LM finetune run (finetune/lm.py, dynActGLU) under one process, two DDP
processes, FSDP2 and DeepSpeed ZeRO-3 (2 processes each), same global batch; writes steps/s and each process's peak
RSS as JSON and a markdown table, with the CPU recorded. ``--repeats`` runs each launch that many times (ranges).

    python scripts/bench_scaling.py --output benchmarks/scaling --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LM = ["--model", "tiny", "--mlp", "dynactglu", "--hidden-size", "128", "--intermediate-size", "352", "--num-layers",
      "4", "--num-heads", "4", "--vocab-size", "1024", "--block-size", "128", "--epochs", "1", "--max-steps", "20",
      "--report-to", "none"]
# name -> (launch config, extra launch arguments, per-process batch); the global batch is 16 everywhere
LAUNCHES = {
    "1 process": ("cpu_single.yaml", (), 16),
    "2 processes, DDP": ("cpu_2proc.yaml", (), 8),
    "2 processes, FSDP2": ("fsdp2_cpu.yaml", (), 8),
    "2 processes, ZeRO-3": ("zero3_cpu.yaml", (), 8),
}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def run(config: str, extra: tuple[str, ...], batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "finetune" / "configs" / config), *extra, str(ROOT / "finetune" / "lm.py"), *LM,
               "--batch-size", str(batch), "--output-dir", f"{tmp}/run"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DS_ACCELERATOR": "cpu",
               "OMP_NUM_THREADS": str(max(1, os.cpu_count() // (1 if config == "cpu_single.yaml" else 2)))}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-3000:])
        return json.loads(Path(f"{tmp}/run/metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="benchmarks/scaling")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for name, (config, extra, batch) in LAUNCHES.items():
        runs = [run(config, extra, batch) for _ in range(args.repeats)]
        rows.append({"launch": name, "engine": runs[0]["distributed_type"], "processes": runs[0]["num_processes"],
                     "steps_per_second": [r["steps_per_second"] for r in runs],
                     "peak_rss_mb_per_process": [r["peak_rss_mb_per_process"] for r in runs],
                     "eval_loss": [r["eval_loss"] for r in runs]})
        print(rows[-1], flush=True)
    result = {"machine": f"{cpu_name()}, {os.cpu_count()} CPUs", "torch_threads_per_process": "CPUs / processes",
              "model": " ".join(LM), "global_batch": 16, "rows": rows}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [f"Machine: {result['machine']}; tiny dynActGLU LM (4 layers, 128 wide), 20 optimizer steps of global "
             f"batch 16, eval included; {args.repeats} runs per launch (range).", "",
             "| launch | engine | steps/s | peak RSS per process (MB) | final eval loss |", "|---|---|---|---|---|"]
    for r in rows:
        sps = r["steps_per_second"]
        rss = [x for run_rss in r["peak_rss_mb_per_process"] for x in run_rss]
        lines.append(f"| {r['launch']} | {r['engine']} | {min(sps):.2f}-{max(sps):.2f} | {min(rss):.0f}-{max(rss):.0f} "
                     f"| {min(r['eval_loss']):.4f}-{max(r['eval_loss']):.4f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
