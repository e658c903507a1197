#!/usr/bin/env bash
# The CPU kernels on an x86 host under its own instruction set and as an AVX2-only CPU would run them
# (ATEN_CPU_CAPABILITY=avx2: ATen dispatches to AVX2 and hf-acts builds for x86-64-v3): the kernel tests against the
# plain formulas, the activation benchmark and the training-step benchmark. Every part runs on two physical cores of
# its own (OMP_NUM_THREADS=2), all six side by side: a machine with 12+ cores keeps them apart.
# Usage: scripts/isa_checks.sh OUTPUT_DIR [SECONDS]   (SECONDS: a time limit for each part, default 1800)
# Runs from a checkout with PYTHONPATH (no install needed where torch, timm and transformers are present).
set -uo pipefail
out=${1:-isa-results}
limit=${2:-1800}
mkdir -p "$out"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
py=${PYTHON:-python3}
lscpu > "$out/lscpu.txt" 2>&1
# one logical CPU per physical core (the first of its siblings)
mapfile -t cores < <(for c in /sys/devices/system/cpu/cpu[0-9]*/topology/thread_siblings_list; do
    cut -d, -f1 "$c" | cut -d- -f1; done | sort -un)
pair() { echo "${cores[$(( 2 * $1 % ${#cores[@]} ))]},${cores[$(( (2 * $1 + 1) % ${#cores[@]} ))]}"; }
native=$($py -c "import torch; print(torch.backends.cpu.get_cpu_capability())")
isas=("$native:")
[ "$native" != AVX2 ] && isas+=("avx2-emulated:avx2")
slot=0
for entry in "${isas[@]}"; do
    name=${entry%%:*} cap=${entry#*:} dir="$out/${entry%%:*}"
    mkdir -p "$dir"
    (
        [ -n "$cap" ] && export ATEN_CPU_CAPABILITY=$cap
        $py -c "import torch; from hf_acts.ops import _cpp; print('ATen', torch.backends.cpu.get_cpu_capability(), \
_cpp.target_flags()); [_cpp.load(k) for k in ('pointwise', 'fles', 'adrelu')]" > "$dir/build.log" 2>&1
        timeout "$limit" taskset -c "$(pair $slot)" $py -m pytest -q -p no:cacheprovider -m "not slow" \
            tests/test_ops.py tests/test_fles.py tests/test_adrelu.py tests/test_dynactivation.py \
            > "$dir/tests.log" 2>&1 &
        timeout "$limit" taskset -c "$(pair $((slot + 1)))" $py scripts/bench_activations.py --no-compile \
            --output-dir "$dir" > "$dir/bench_activations.log" 2>&1 &
        timeout "$limit" taskset -c "$(pair $((slot + 2)))" $py scripts/bench_models.py --output-dir "$dir" \
            > "$dir/bench_models.log" 2>&1 &
        wait
    ) &
    slot=$((slot + 3))
done
wait
for d in "$out"/*/; do
    echo "== $d"; head -1 "$d/build.log"; tail -1 "$d/tests.log"
    cat "$d/activations.md" "$d/models.md" 2>/dev/null
done
