#!/usr/bin/env bash
# Trains on several Slurm nodes: 4 nodes x 2 ranks x 16 OpenMP threads (edit to fit).
#
#   sbatch jobs/slurm_multi_node.sh INPUT.h5ad --batch-key KEY --output OUT.h5ad \
#       --model-out MODEL.h5 [--max-epochs N] [--batch-size 1024]
#
# Everything after the script name goes to `atlasvi train` unchanged. INPUT, OUT and MODEL
# must be on a file system every node sees (Lustre, GPFS, NFS): every rank opens INPUT and
# reads its own rows; rank 0 writes the outputs.
#
# Sizing:
# - ntasks-per-node x cpus-per-task = physical cores per node; one rank per NUMA domain or
#   socket is a good start (2 on a common dual-socket node).
# - --batch-size is global: each step each rank takes batch-size / total ranks cells and the
#   gradients are summed across all ranks. With 8 ranks, 128 leaves 16 cells a rank, too
#   few to keep 16 threads busy; raise it (and consider the learning rate) or use fewer
#   ranks. Results with a different global batch size are not the same training run.
# - Memory per rank: its shard (about total non-zeros / ranks x 8 bytes) plus the model,
#   optimiser state and activations; see docs/hpc.md. --mem=0 takes the whole node.
# - Every step ends in one all-reduce of all gradients: 3 to 4 x 128 x n_genes floats for
#   default scVI (45-60 MB at 30,000 genes, 6-8 MB at 4,000 highly variable genes). Over a
#   network that is comparable to a step's compute at small batches: select highly variable
#   genes, use bigger global batches, and prefer fewer, fatter ranks on slow networks.
#
# Environment: ATLASVI (binary), SRUN_MPI (srun --mpi=...: pmix or pmi2 where needed),
# LAUNCHER=mpirun (use Open MPI's mpirun inside the allocation instead of srun),
# STRIPE=1 (stripe the output directory over STRIPE_COUNT Lustre OSTs, default 8, before the
# run; see docs/hpc.md).
#SBATCH --job-name=atlasvi-train
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=16
#SBATCH --exclusive
#SBATCH --mem=0
#SBATCH --time=08:00:00
#SBATCH --output=atlasvi-%j.out
set -euo pipefail

if [ -z "${ATLASVI:-}" ]; then
    if command -v atlasvi >/dev/null; then ATLASVI=atlasvi
    else ATLASVI="${SLURM_SUBMIT_DIR:-.}/build/atlasvi"; fi
fi
T=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=$T
export OMP_PLACES=${OMP_PLACES:-cores}
export OMP_PROC_BIND=${OMP_PROC_BIND:-close}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$T}
export SRUN_CPUS_PER_TASK=$T # srun no longer inherits --cpus-per-task (Slurm >= 22.05)

# Optional: stripe the output's directory over several Lustre OSTs (new files only).
if [ "${STRIPE:-0}" = 1 ] && command -v lfs >/dev/null; then
    out=""
    prev=""
    for a in "$@"; do
        [ "$prev" = --output ] && out=$a
        case $a in --output=*) out=${a#--output=} ;; esac
        prev=$a
    done
    if [ -n "$out" ]; then
        lfs setstripe -c "${STRIPE_COUNT:-8}" -S 4M "$(dirname "$out")" ||
            echo "atlasvi: lfs setstripe failed; continuing with the default layout" >&2
    fi
fi

echo "atlasvi: ${SLURM_NNODES:-?} node(s), ${SLURM_NTASKS:-?} rank(s) x $T thread(s)" >&2
if [ "${LAUNCHER:-srun}" = mpirun ]; then
    exec mpirun --bind-to core --map-by "ppr:${SLURM_NTASKS_PER_NODE:-1}:node:pe=$T" \
        -x OMP_NUM_THREADS -x OMP_PLACES -x OMP_PROC_BIND -x OPENBLAS_NUM_THREADS \
        "$ATLASVI" train "$@"
fi
# --kill-on-bad-exit: a rank that exits with an error (out of memory) ends the others,
# which would otherwise wait in the next all-reduce until the time limit.
exec srun ${SRUN_MPI:+--mpi=$SRUN_MPI} --cpus-per-task="$T" --cpu-bind=cores --kill-on-bad-exit=1 \
    "$ATLASVI" train "$@"
