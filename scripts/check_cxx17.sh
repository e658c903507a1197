#!/usr/bin/env bash
# Compiles the CPU kernels (hf_acts/csrc) as older torch releases build them: torch's extension builder passes
# -std=c++17 up to torch 2.11 (2.14 passes -std=c++20, whose headers refuse C++17), so a C++20-only construct builds
# here and breaks every user of an older torch (session 18: fles.cpp's std::make_unique_for_overwrite, seen on torch
# 2.11). For each torch version named (default: 2.4.0, the oldest pyproject.toml allows, and 2.11.0) this downloads
# its wheel once (pip download, ~0.5-0.8 GB, cached under CACHE), takes its headers, and syntax-checks every kernel
# with -std=c++17 and the project's own flags for each x86-64 target (SSE4.2, AVX2, AVX-512), in parallel.
# Usage: scripts/check_cxx17.sh [TORCH_VERSION...]   (CACHE: default ~/.cache/hf-acts/torch-headers; PYTHON: a Python
# with torch, default the project's .venv, else python3)
set -uo pipefail
default_py=python3
[ -x .venv/bin/python ] && default_py=.venv/bin/python
py=${PYTHON:-$default_py}
cache=${CACHE:-$HOME/.cache/hf-acts/torch-headers}
versions=("$@")
[ ${#versions[@]} -eq 0 ] && versions=(2.4.0 2.11.0)
pyinc=$($py -c "import sysconfig; print(sysconfig.get_paths()['include'])")
tag=$($py -c "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")
# the project's flags for every kernel and target, from one Python call per target: "target kernel flags..."
flags=$(for cap in default avx2 avx512; do ATEN_CPU_CAPABILITY=$cap PYTHONPATH=$PWD $py -c "from hf_acts.ops import _cpp
for path in sorted(_cpp.CSRC.glob('*.cpp')): print('$cap', path.stem, *_cpp.compile_flags(path.stem))" 2>/dev/null; done)
[ -n "$flags" ] || { echo "$py could not import hf_acts.ops with torch: set PYTHON to a Python that has torch" >&2; exit 2; }
status=0
for v in "${versions[@]}"; do
    inc=$cache/$v/torch/include
    if [ ! -d "$inc" ]; then
        mkdir -p "$cache/$v"
        $py -m pip download -q --no-deps --only-binary=:all: --python-version "${tag#cp}" --platform manylinux_2_28_x86_64 \
            --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$cache/$v" "torch==$v" || exit 1
        unzip -q -o "$cache/$v"/torch-*.whl 'torch/include/*' -d "$cache/$v" && rm "$cache/$v"/torch-*.whl
    fi
    logs=()
    while read -r cap name kernel_flags; do
        log=$(mktemp)
        logs+=("$log")
        ( g++ -std=c++17 -fsyntax-only $kernel_flags -isystem "$inc" -isystem "$inc/torch/csrc/api/include" \
            -isystem "$pyinc" -DTORCH_EXTENSION_NAME=check "hf_acts/csrc/$name.cpp" > "$log" 2>&1 \
            && echo "ok      torch $v, $cap: $name" || { echo "FAILED  torch $v, $cap: $name"; touch "$log.failed"; } ) &
    done <<< "$flags"
    wait
    for log in "${logs[@]}"; do
        [ -e "$log.failed" ] && { grep -m5 error: "$log"; status=1; }
        rm -f "$log" "$log.failed"
    done
done
exit $status
