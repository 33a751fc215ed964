#!/usr/bin/env bash
# CTest's CI run of one fuzz target: TARGET CORPUS RUNS ARTIFACTS. Runs every corpus input,
# then RUNS mutated inputs, with a fixed seed; new inputs go to a scratch folder, so the
# corpus is left as it is. Exit 77 (skipped) when the corpus is missing or empty.
set -euo pipefail
target=$1 corpus=$2 runs=$3 artifacts=$4
name=$(basename "$target")
if [ ! -d "$corpus" ] || [ -z "$(ls -A "$corpus" 2>/dev/null)" ]; then
    echo "$name: no corpus in $corpus (run jobs/fuzz.sh seeds): skipped"
    exit 77
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
exec "$target" -runs="$runs" -seed=1 -max_len=262144 -timeout=30 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/$name-" -print_final_stats=1 "$scratch" "$corpus"
