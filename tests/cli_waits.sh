#!/bin/sh
# How idle OpenMP threads wait (src/main.c, reported in the train banner): where the user
# set no policy, passive with a short spin when a rank's threads fit its CPUs, no spin when
# they do not (unbound ranks of one node share its CPUs); the user's OMP_WAIT_POLICY wins.
. "$AV_SRC/tests/cli_lib.sh"
W=$1
fresh_dir "$W"
unset OMP_WAIT_POLICY GOMP_SPINCOUNT OMP_NUM_THREADS
"$AV_BIN" simulate "$W/s.h5ad" --n-cells 300 --n-genes 50 --n-batches 2 --seed 1 \
    >"$W/sim.out" 2>&1 || fail "simulate: $(tail -2 "$W/sim.out")"
N=$(nproc)
train() { # NAME LAUNCH-PREFIX... -- ARGS: the banner line of a one-epoch training
    _n=$1
    shift
    timeout -k 5 "$CLI_TIMEOUT" "$@" --batch-key batch --max-epochs 1 --no-progress \
        --model-out "$W/$_n.h5" >"$W/$_n.out" 2>"$W/$_n.err" || fail "$_n: exit $?"
    grep "training scVI on" "$W/$_n.err"
}
expect_waits() { # NAME WANT LINE
    case "$3" in
    *"OpenMP waits $2"*) ok "$1: OpenMP waits $2" ;;
    *) fail "$1: want 'OpenMP waits $2' in: $3" ;;
    esac
}
expect_waits one_rank_one_thread "passive, spin 30000" \
    "$(train one "$AV_BIN" train "$W/s.h5ad" --threads 1)"
# shellcheck disable=SC2086
expect_waits two_ranks_all_cpus_each "passive, spin 0" \
    "$(train two $AV_MPIEXEC --bind-to none -n 2 "$AV_BIN" train "$W/s.h5ad" --threads "$N")"
expect_waits user_policy "active, spin default" \
    "$(OMP_WAIT_POLICY=active train user "$AV_BIN" train "$W/s.h5ad" --threads 1)"
finish
