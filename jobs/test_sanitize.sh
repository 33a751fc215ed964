#!/usr/bin/env bash
# Builds atlasvi with AddressSanitizer + UBSan (build-asan) and runs the fast subset of the
# tests under it: everything but the long training-quality runs and the repeats of tests on
# the lower CPU paths (tests/zz_isa_paths.cmake), which exercise no other code. Any
# sanitizer report fails the test it occurs in (halt_on_error; tests/CMakeLists.txt).
#   jobs/test_sanitize.sh [extra ctest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
jobs/setup.sh
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Release -DATLASVI_SANITIZE=ON -DATLASVI_CUDA=OFF \
    >/dev/null
cmake --build build-asan -j"$(nproc)" >/dev/null
cd build-asan && ctest --output-on-failure -j"$(nproc)" \
    -E '^(test_quality.*|.*_avx2|.*_generic)$' "$@"
