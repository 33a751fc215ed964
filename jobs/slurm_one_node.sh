#!/usr/bin/env bash
# Trains on one Slurm node: 4 ranks x 8 OpenMP threads (edit the #SBATCH lines to fit).
#
#   sbatch jobs/slurm_one_node.sh INPUT.h5ad --batch-key KEY --output OUT.h5ad \
#       --model-out MODEL.h5 [--max-epochs N] [--batch-size 128]
#
# Everything after the script name goes to `atlasvi train` unchanged.
#
# Sizing: ntasks-per-node x cpus-per-task = the physical cores to use. One rank per NUMA
# domain (or socket) with its cores as threads is a good start. Memory: each rank holds its
# shard (about non-zeros / ranks x 8 bytes) plus the model, optimiser state and activations;
# --mem asks for the node total (see docs/hpc.md for the arithmetic).
# If the cluster counts hardware threads as CPUs, add --hint=nomultithread.
#
# Environment: ATLASVI (the binary; default: atlasvi on PATH or build/atlasvi of the
# submit directory), SRUN_MPI (passed as srun --mpi=..., e.g. pmix, where the site needs it),
# LAUNCHER=mpirun to start ranks with Open MPI's mpirun inside the allocation instead.
#SBATCH --job-name=atlasvi-train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --mem=0
#SBATCH --time=04:00:00
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
# Since Slurm 22.05 srun no longer inherits --cpus-per-task from sbatch: pass it again.
export SRUN_CPUS_PER_TASK=$T

echo "atlasvi: ${SLURM_NTASKS:-?} rank(s) x $T thread(s) on $(hostname)" >&2
if [ "${LAUNCHER:-srun}" = mpirun ]; then
    # Open MPI reads the Slurm allocation itself.
    exec mpirun --bind-to core --map-by "ppr:${SLURM_NTASKS_PER_NODE:-1}:node:pe=$T" \
        -x OMP_NUM_THREADS -x OMP_PLACES -x OMP_PROC_BIND -x OPENBLAS_NUM_THREADS \
        "$ATLASVI" train "$@"
fi
# --kill-on-bad-exit: a rank that exits with an error (out of memory) ends the others,
# which would otherwise wait in the next all-reduce until the time limit.
exec srun ${SRUN_MPI:+--mpi=$SRUN_MPI} --cpus-per-task="$T" --cpu-bind=cores --kill-on-bad-exit=1 \
    "$ATLASVI" train "$@"
