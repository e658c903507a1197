#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run: the Triton kernels and the ops' CUDA paths (tests marked for CUDA run
# instead of skipping), then `hf-acts bench --device cuda`, where a small call's time goes
# (scripts/bench_call_overhead.py) and the size sweep. Usage: scripts/gpu_checks.sh OUTPUT_DIR
# Runs from a checkout with PYTHONPATH (no install needed where torch, triton, timm and transformers are present).
set -uo pipefail
out=${1:-gpu-results}
mkdir -p "$out"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_triton.py tests/test_ops.py -k "cuda or not opcheck" 2>&1 \
    | tee "$out/tests.log" | tail -25
python3 -m hf_acts.cli bench --device cuda --no-compile --output-dir "$out/bench" > "$out/bench.log" 2>&1
tail -45 "$out/bench.log"
python3 scripts/bench_call_overhead.py --output "$out/call_overhead.json" --profile "$out/call_overhead_profile.txt"
python3 scripts/bench_gpu_sizes.py --output "$out/sizes_bf16.json"
python3 scripts/bench_gpu_sizes.py --dtype float32 --output "$out/sizes_fp32.json"
