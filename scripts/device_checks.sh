#!/usr/bin/env bash
# Everything a session lent a GPU machine should run, as one call of the device tool (at most 600 s a call, 15 min of
# device time a session, at most 8 files back): scripts/gpu_checks.sh on the GPU, pinned to the host's last two cores,
# beside scripts/isa_checks.sh on the others (the CPU kernel tests and benchmarks under the host's AVX-512 and as an
# AVX2-only CPU), each capped so that both end within LIMIT seconds, then both output folders packed into one archive.
# Usage: scripts/device_checks.sh OUTPUT_DIR [LIMIT]   (LIMIT default 540; e.g. run(command="scripts/device_checks.sh
# $OUT", timeout_s=600), then `tar -xzf device_checks.tar.gz` here)
set -uo pipefail
out=${1:?usage: scripts/device_checks.sh OUTPUT_DIR [LIMIT]}
limit=${2:-540}
start=$(date +%s)
work=$(mktemp -d)
mkdir -p "$out"
export PYTHONUNBUFFERED=1
cores=$(nproc)
timeout "$((limit - 20))" taskset -c "$((cores - 2)),$((cores - 1))" scripts/gpu_checks.sh "$work/gpu" \
    > "$work/gpu.log" 2>&1 &
# isa_checks.sh ends its benchmarks and tests within its second argument, counted after its kernel builds (~1-2 min)
scripts/isa_checks.sh "$work/isa" "$((limit - 150))" > "$work/isa.log" 2>&1
wait
tar -czf "$out/device_checks.tar.gz" -C "$work" .
echo "device_checks: $(($(date +%s) - start)) s; the logs' ends:"
tail -n 40 "$work/isa.log"
tail -n 40 "$work/gpu.log"
