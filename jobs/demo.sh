#!/usr/bin/env bash
# Sets up, builds and runs the main job: trains scVI (2 MPI ranks) on a built-in realistic
# simulated dataset, or on a file you give, writes the latent and prints the result.
#
#   jobs/demo.sh                                   # simulated 20k cells x 2000 genes
#   jobs/demo.sh data.h5ad --batch-key sample      # your file, any `atlasvi train` options
#
# Environment: RANKS (default 2), THREADS per rank (default: cores / RANKS), OUT (out/).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target atlasvi >/dev/null
out=${OUT:-out}
mkdir -p "$out"
ranks=${RANKS:-2}
threads=${THREADS:-$(( $(nproc) / ranks > 0 ? $(nproc) / ranks : 1 ))}
# ranks that wait in an all-reduce yield their core instead of busy-polling: on a laptop
# or a shared node this was 3x faster per step (docs/benchmarks.md, scaling)
mpiflags=(--oversubscribe --mca mpi_yield_when_idle 1)
[ "$(id -u)" -eq 0 ] && mpiflags+=(--allow-run-as-root)

if [ $# -ge 1 ]; then
    input=$1
    shift
    args=("$@")
else
    input=$out/simulated.h5ad
    [ -f "$input" ] || build/atlasvi simulate "$input" --n-cells 20000 --n-genes 2000 \
        --n-batches 4 --n-cell-types 10 --seed 0
    args=(--batch-key batch --max-epochs 10)
fi
OMP_NUM_THREADS=$threads mpiexec "${mpiflags[@]}" -n "$ranks" build/atlasvi train "$input" \
    "${args[@]}" --output "$out/latent.h5ad" --model-out "$out/model.h5" \
    --metrics "$out/metrics.jsonl"
echo "latent: $out/latent.h5ad (obsm/X_scVI), model: $out/model.h5, metrics: $out/metrics.jsonl"
