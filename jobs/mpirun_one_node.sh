#!/usr/bin/env bash
# Trains on one node with Open MPI: RANKS processes, THREADS OpenMP threads each, every rank
# bound to its own THREADS cores.
#
#   jobs/mpirun_one_node.sh INPUT.h5ad --batch-key KEY --output OUT.h5ad --model-out MODEL.h5 \
#       [--max-epochs N] [--batch-size 128]
#
# Everything after the script name goes to `atlasvi train` unchanged.
#
# Environment (all optional):
#   RANKS     MPI ranks (default: one per NUMA domain, as lscpu reports them)
#   THREADS   OpenMP threads per rank (default: physical cores / RANKS)
#   ATLASVI   the binary (default: build/atlasvi next to this script, else atlasvi on PATH)
#   DRY_RUN=1 print the command instead of running it
#   VERBOSE=1 ask Open MPI to print each rank's core binding
#
# Sizing: RANKS x THREADS should equal the physical cores you want to use (not hardware
# threads). One rank per NUMA domain (or per socket) with all of its cores as threads is a
# good start: each rank's shard and model then live in memory next to its cores. More ranks
# with fewer threads help when one rank's threads stop scaling (small layers, small
# per-rank batch); they cost a model copy and an all-reduce participant each. Memory per
# rank is about its shard (non-zeros x 8 bytes: 4 for the value, 4 for the column index)
# plus the model, optimiser state and activations (see docs/hpc.md).
# --batch-size is the global minibatch: each rank takes batch-size / RANKS cells a step,
# so keep batch-size / RANKS well above ~32 cells or the threads have little to do.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${ATLASVI:-}" ]; then
    if [ -x "$here/../build/atlasvi" ]; then ATLASVI="$here/../build/atlasvi"; else ATLASVI=atlasvi; fi
fi

cores=$(lscpu -p=CORE,SOCKET 2>/dev/null | grep -v '^#' | sort -u | wc -l)
[ "$cores" -gt 0 ] 2>/dev/null || cores=$(nproc)
numa=$(lscpu 2>/dev/null | awk -F: '/^NUMA node\(s\)/ {gsub(/ /, "", $2); print $2}')
[ -n "$numa" ] && [ "$numa" -gt 0 ] 2>/dev/null || numa=1
RANKS=${RANKS:-$numa}
THREADS=${THREADS:-$((cores / RANKS > 0 ? cores / RANKS : 1))}

if [ $((RANKS * THREADS)) -gt "$cores" ]; then
    echo "mpirun_one_node: RANKS x THREADS = $((RANKS * THREADS)) exceeds the $cores physical cores;" \
        "Open MPI will refuse to bind (lower THREADS or RANKS)" >&2
fi

args=(--np "$RANKS" --bind-to core --map-by "ppr:${RANKS}:node:pe=${THREADS}")
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root) # containers often run as root
[ "${VERBOSE:-0}" = 1 ] && args+=(--report-bindings)

# Threads stay on their rank's cores; OpenBLAS (pthread build) gets the same count. If a
# build calls BLAS from inside its own OpenMP loops, set OPENBLAS_NUM_THREADS=1.
export OMP_NUM_THREADS=$THREADS
export OMP_PLACES=${OMP_PLACES:-cores}
export OMP_PROC_BIND=${OMP_PROC_BIND:-close}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$THREADS}
for v in OMP_NUM_THREADS OMP_PLACES OMP_PROC_BIND OPENBLAS_NUM_THREADS; do args+=(-x "$v"); done

cmd=(mpirun "${args[@]}" "$ATLASVI" train "$@")
echo "mpirun_one_node: $RANKS rank(s) x $THREADS thread(s) on $cores core(s)" >&2
if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%q ' "${cmd[@]}"
    echo
    exit 0
fi
exec "${cmd[@]}"
