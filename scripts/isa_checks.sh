#!/usr/bin/env bash
# The CPU kernels on an x86 host under its own instruction set and as an AVX2-only CPU would run them
# (ATEN_CPU_CAPABILITY=avx2: ATen dispatches to AVX2 and hf-acts builds for x86-64-v3; ONEDNN_MAX_CPU_ISA=AVX2 and
# MKL_ENABLE_INSTRUCTIONS=AVX2: the base models' convolutions and GEMMs too, which ATen's cap does not reach): the
# kernel tests against the plain formulas, and the activation, training-step and inference benchmarks. Every kernel
# is built for both targets first, all builds at once. Then each benchmark runs on two physical cores of its own
# (OMP_NUM_THREADS=2), all six side by side, while the kernel tests of both targets run one after the other on a
# seventh pair: a machine with 14+ cores keeps them apart, and on 16 the last pair is left for other work
# (scripts/gpu_checks.sh on a GPU machine). Then, on the tests' pair, scripts/profile_step.py (ViT-Tiny FleS / GELU).
# Usage: scripts/isa_checks.sh OUTPUT_DIR [SECONDS]   (SECONDS: the time every part ends within, counted after the
# kernel builds; default 1800)
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
as_isa() {  # as_isa CAPABILITY COMMAND...: the command under that capability ('' for the host's own)
    local cap=$1; shift
    if [ -n "$cap" ]; then
        ATEN_CPU_CAPABILITY=$cap ONEDNN_MAX_CPU_ISA=${cap^^} MKL_ENABLE_INSTRUCTIONS=${cap^^} "$@"
    else "$@"; fi
}
for entry in "${isas[@]}"; do
    dir="$out/${entry%%:*}"
    mkdir -p "$dir"
    for source in hf_acts/csrc/*.cpp; do
        kernel=$(basename "$source" .cpp)
        as_isa "${entry#*:}" $py -c "import torch; from hf_acts.ops import _cpp; print('ATen', \
torch.backends.cpu.get_cpu_capability(), _cpp.target_flags()); _cpp.load('$kernel')" > "$dir/build_$kernel.log" 2>&1 &
    done
done
wait
deadline=$(($(date +%s) + limit))  # every part below ends by then (tests: what is left of it)
slot=1
for entry in "${isas[@]}"; do
    cap=${entry#*:} dir="$out/${entry%%:*}"
    for bench in activations models inference; do
        as_isa "$cap" timeout "$limit" taskset -c "$(pair $slot)" $py "scripts/bench_$bench.py" --no-compile \
            --output-dir "$dir" > "$dir/bench_$bench.log" 2>&1 &
        slot=$((slot + 1))
    done
done
# on_test_pair CAP COMMAND...: the command under that cap on pair 0, within what is left of the deadline
on_test_pair() {
    local left=$((deadline - $(date +%s)))
    [ "$left" -gt 0 ] && as_isa "$1" timeout "$left" taskset -c "$(pair 0)" "${@:2}"
}
for entry in "${isas[@]}"; do
    on_test_pair "${entry#*:}" $py -m pytest -q -p no:cacheprovider -m "not slow" tests/test_ops.py tests/test_fles.py \
        tests/test_adrelu.py tests/test_dynactivation.py > "$out/${entry%%:*}/tests.log" 2>&1
done
for entry in "${isas[@]}"; do  # where the ViT-Tiny FleS step's time goes, if time is left
    on_test_pair "${entry#*:}" $py scripts/profile_step.py --output "$out/${entry%%:*}/profile_vit_tiny_fles.txt" \
        > "$out/${entry%%:*}/profile.log" 2>&1
done
wait
for d in "$out"/*/; do
    echo "== $d"; head -1 "$d/build_adrelu.log"; tail -1 "$d/tests.log"
    cat "$d/activations.md" "$d/models.md" "$d/inference.md" 2>/dev/null
done
