#!/bin/sh
# Builds benchmarks/step_bench against a CMake build directory's static libraries:
#   sh benchmarks/build_step_bench.sh [BUILD_DIR]   (default build-perf; run cmake --build first)
set -e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-$ROOT/build-perf}
cmake --build "$B" -j2 --target av_core >/dev/null
INC=$(sed -n 's/^OPENBLAS_INCLUDE:PATH=//p' "$B/CMakeCache.txt")
${CC:-cc} -O3 -g -march=x86-64-v2 -fopenmp -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror \
    -I"$ROOT" -I"$INC" "$ROOT/benchmarks/step_bench.c" -o "$B/step_bench" \
    "$B/libav_core.a" "$B/libav_base.a" -lopenblas -lm
echo "$B/step_bench"
