#!/bin/sh
# atlasvi end to end on a simulated file, on one process or under mpiexec -n CLI_NP:
# simulate -> train (output, model, metrics) -> latent -> normalize -> resume ->
# --write-input -> info. Checks exit codes, the metrics JSON lines, the written .h5ad
# (C structural check, and anndata.read_h5ad where present), the model history, that
# the input is unchanged and that no .tmp file is left. Under MPI the results are
# written once, and latent agrees with a one-process run of the same model.
# usage: cli_e2e.sh WORK_DIR
. "$AV_SRC/tests/cli_lib.sh"
W=$1
fresh_dir "$W"
N=600
G=300
S=$W/sim.h5ad
# simulate runs on one process (it is not an MPI command)
if timeout "$CLI_TIMEOUT" "$AV_BIN" simulate "$S" --n-cells $N --n-genes $G --n-batches 3 \
    --n-cell-types 4 --seed 3 >"$W/simulate.out" 2>&1; then
    ok "simulate $N x $G"
else
    fail "simulate"
    cat "$W/simulate.out"
    finish
fi
SUM0=$(sums "$S" | cut -d' ' -f1,2)

# train
expect_ok train train "$S" --batch-key batch --max-epochs 3 --output "$W/out.h5ad" \
    --model-out "$W/m.h5" --metrics "$W/m.jsonl" --no-progress
metrics_ok "$W/m.jsonl" 0 2
check_h5ad "$W/out.h5ad" --cells $N --genes $G --obsm X_scVI 10 --like "$S"
[ "$(grep -c '^trained scVI' "$W/train.out")" -eq 1 ] && ok "one summary line" ||
    fail "train: want one 'trained scVI' line on stdout, got: $(cat "$W/train.out")"
[ "$(grep -c '^atlasvi: wrote model' "$W/train.err")" -eq 1 ] && ok "model written once" ||
    fail "train: want one 'wrote model' line: $(cat "$W/train.err")"
[ "$("$AV_CHECK" --dims "$W/m.h5" history/elbo_train)" = "1 3" ] && ok "history: 3 epochs" ||
    fail "m.h5 history/elbo_train is not 1 x 3"

# --max-steps at an epoch boundary stops there: no empty (NaN) epoch after it
STEPS=$(head -1 "$W/m.jsonl" | sed 's/.*"steps": \([0-9]*\).*/\1/')
expect_ok max_steps train "$S" --batch-key batch --max-epochs 3 --max-steps "$STEPS" \
    --model-out "$W/ms.h5" --metrics "$W/ms.jsonl" --no-progress
metrics_ok "$W/ms.jsonl" 0 0
[ "$("$AV_CHECK" --dims "$W/ms.h5" history/elbo_train)" = "1 1" ] && ok "max_steps: 1 epoch" ||
    fail "ms.h5 history/elbo_train is not 1 x 1"

# latent and normalize with the saved model
expect_ok latent latent "$W/m.h5" "$S" --output "$W/L.h5ad"
check_h5ad "$W/L.h5ad" --cells $N --genes $G --obsm X_scVI 10 --like "$S"
expect_ok normalize normalize "$W/m.h5" "$S" --output "$W/N.h5ad" --library-size 10000
check_h5ad "$W/N.h5ad" --cells $N --genes $G --obsm X_scVI 10 --layer scvi_normalized \
    --row-sum 10000 --like "$S"

# resume: the history continues (epochs 3 and 4, five in the new model)
expect_ok resume train "$S" --resume "$W/m.h5" --max-epochs 5 --model-out "$W/m2.h5" \
    --metrics "$W/m2.jsonl" --no-progress
metrics_ok "$W/m2.jsonl" 3 4
[ "$("$AV_CHECK" --dims "$W/m2.h5" history/elbo_train)" = "1 5" ] && ok "resumed history: 5 epochs" ||
    fail "m2.h5 history/elbo_train is not 1 x 5"
[ "$("$AV_CHECK" --dims "$W/m.h5" history/elbo_train)" = "1 3" ] && ok "m.h5 untouched by resume" ||
    fail "m.h5 changed by the resumed run"

# the input was read only
[ "$(sums "$S" | cut -d' ' -f1,2)" = "$SUM0" ] && ok "input unchanged" || fail "the input changed"

# --write-input (with --output too): obsm written into a copy, every other dataset as it
# was, and the same latent in the new file
cp "$S" "$W/w.h5ad"
expect_ok write_input train "$W/w.h5ad" --batch-key batch --max-epochs 2 --write-input \
    --output "$W/both.h5ad" --no-progress
check_h5ad "$W/both.h5ad" --cells $N --genes $G --obsm X_scVI 10 --like "$S"
if "$AV_CHECK" --same "$S" "$W/w.h5ad" --except obsm; then ok "write-input: rest unchanged"; else
    fail "write-input changed more than obsm"; fi
check_h5ad "$W/w.h5ad" --cells $N --genes $G --obsm X_scVI 10 --like "$S"
cp "$W/w.h5ad" "$W/w_before.h5ad"
expect_ok latent_write_input latent "$W/m.h5" "$W/w.h5ad" --write-input --latent-key X_again
if "$AV_CHECK" --same "$W/w_before.h5ad" "$W/w.h5ad" --except obsm/X_again; then
    ok "second write-input: only obsm/X_again added"
else
    fail "second write-input changed more than obsm/X_again"
fi
check_h5ad "$W/w.h5ad" --cells $N --obsm X_again 10

# info on the input and on outputs
expect_ok info_input info "$S"
expect_ok info_write_input info "$W/w.h5ad"
expect_ok info_normalized info "$W/N.h5ad" --layer scvi_normalized
grep -q "600 cells x 300" "$W/info_normalized.out" && ok "info reads the written layer" ||
    fail "info N.h5ad: $(cat "$W/info_normalized.out")"

if [ "$CLI_NP" -gt 1 ]; then
    # the same model on one process gives the same latent
    if timeout "$CLI_TIMEOUT" "$AV_BIN" latent "$W/m.h5" "$S" --output "$W/L1.h5ad" \
        >"$W/latent1.out" 2>&1 && "$AV_CHECK" --same "$W/L.h5ad" "$W/L1.h5ad" --tol 1e-4; then
        ok "latent under np $CLI_NP equals one process"
    else
        fail "latent under np $CLI_NP differs from one process"
    fi
fi
no_tmp "$W"
finish
