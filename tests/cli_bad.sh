#!/bin/sh
# Bad input to `atlasvi train`, `latent` and `normalize`: each gives exactly one
# "atlasvi: error:" line and exit 1 within CLI_TIMEOUT (no hang, no crash), on one
# process or under mpiexec -n CLI_NP; writes no output file and no .tmp file; leaves
# every input unchanged. Non-integer counts only warn; a loss that overflows is an error
# that keeps the last checkpoint. Inputs: cli_setup.sh's folder.
# Under MPI a failing mpiexec takes over a second, so cases that exercise nothing
# distributed beyond what a sibling case does run on one process only (np1_only).
# usage: cli_bad.sh INPUT_DIR WORK_DIR
. "$AV_SRC/tests/cli_lib.sh"
D=$1
W=$2
fresh_dir "$W"
BEFORE=$(cd "$D" && sums ./*)
M=$D/base_model.h5
B=$D/base.h5ad
train_err() { # NAME NEEDLE ARGS...: train with outputs that must not appear
    _tn=$1
    _tneedle=$2
    shift 2
    expect_error "$_tn" "$_tneedle" train "$@" --max-epochs 1 --no-progress \
        --output "$W/out_$_tn.h5ad" --model-out "$W/outmodel_$_tn.h5" --metrics "$W/outmetrics_$_tn.jsonl"
}
latent_err() { # NAME NEEDLE MODEL INPUT ARGS...
    _ln=$1
    _lneedle=$2
    shift 2
    expect_error "$_ln" "$_lneedle" latent "$@" --output "$W/out_$_ln.h5ad"
}

# files that are not what they claim
train_err missing_file "$D/no_such_file.h5ad" "$D/no_such_file.h5ad"
np1_only && train_err not_hdf5 "not an HDF5 file" "$D/text.h5ad"
np1_only && train_err truncated "$D/trunc.h5ad" "$D/trunc.h5ad"
np1_only && train_err truncated95 "$D/trunc95.h5ad" "$D/trunc95.h5ad"
CORRUPT="30 55 80"
np1_only || CORRUPT=55
for pct in $CORRUPT; do
    # overwritten bytes: an error naming the file, or (if they fell on unused space) a
    # normal run; never a crash or a hang
    run_av "corrupt$pct" train "$D/corrupt$pct.h5ad" --batch-key batch --max-epochs 1 \
        --no-progress --output "$W/out_corrupt$pct.h5ad"
    rc=$?
    if [ $rc -eq 0 ]; then
        ok "corrupt$pct: read fine (damage outside the data read)"
        rm -f "$W/out_corrupt$pct.h5ad"
    elif [ $rc -eq 1 ] && check_one_error "corrupt$pct" "$W/corrupt$pct.err" "corrupt$pct.h5ad"; then
        ok "corrupt$pct: $(grep '^atlasvi: error' "$W/corrupt$pct.err")"
    else
        [ $rc -ne 1 ] && fail "corrupt$pct: exit $rc"
    fi
done
# keys
np1_only && train_err no_layer "layer 'nope'" "$B" --layer nope
np1_only && train_err no_batch_key "'nope'" "$B" --batch-key nope
np1_only && train_err no_labels_key "'nolabels'" "$B" --labels-key nolabels
np1_only && train_err no_cont_key "'nocont'" "$B" --continuous-covariate-keys nocont
# counts
train_err negative "negative count" "$D/neg.h5ad" --batch-key batch
train_err nan "NaN" "$D/nan.h5ad" --batch-key batch
np1_only && train_err inf "Inf" "$D/inf.h5ad" --batch-key batch
train_err zero_cell "zero total counts" "$D/zero.h5ad" --batch-key batch
# a finite count of 3.4e38 makes the loss overflow: an error, no latent and no model
expect_train_error diverged "loss is not finite" train "$D/huge.h5ad" --batch-key batch \
    --max-epochs 2 --no-progress --output "$W/out_diverged.h5ad" --model-out "$W/outmodel_diverged.h5"
# ... and resuming a good checkpoint onto itself keeps it (no NaN model replaces it)
cp "$M" "$W/ck.h5"
s0=$(sums "$W/ck.h5" | cut -d' ' -f1,2)
expect_train_error diverged_resume "loss is not finite" train "$D/huge.h5ad" --resume "$W/ck.h5" \
    --model-out "$W/ck.h5" --checkpoint-every 1 --max-epochs 3 --no-progress
[ "$(sums "$W/ck.h5" | cut -d' ' -f1,2)" = "$s0" ] && ok "diverged_resume: the checkpoint is kept" ||
    fail "diverged_resume: the good checkpoint was replaced"
# --write-input on a bad copy leaves it as it was
cp "$D/neg.h5ad" "$W/neg_copy.h5ad"
s0=$(sums "$W/neg_copy.h5ad" | cut -d' ' -f1,2)
expect_error negative_write_input "negative count" train "$W/neg_copy.h5ad" --write-input \
    --max-epochs 1 --no-progress
[ "$(sums "$W/neg_copy.h5ad" | cut -d' ' -f1,2)" = "$s0" ] || fail "negative_write_input: the input changed"
# non-integer counts: one warning, training goes on
if run_av frac train "$D/frac.h5ad" --batch-key batch --max-epochs 1 --no-progress \
    --output "$W/out_frac.h5ad"; then
    nw=$(grep -c '^atlasvi: warning: ' "$W/frac.err")
    ne=$(grep -c '^atlasvi: error' "$W/frac.err")
    if [ "$nw" -ne 1 ] || [ "$ne" -ne 0 ] || ! grep -q 'not integers' "$W/frac.err"; then
        fail "frac: want one 'atlasvi: warning: ... not integers' line, got:"
        sed 's/^/    /' "$W/frac.err"
    elif [ ! -f "$W/out_frac.h5ad" ]; then
        fail "frac: no output written"
    else
        ok "frac: $(grep '^atlasvi: warning' "$W/frac.err")"
    fi
    rm -f "$W/out_frac.h5ad"
else
    fail "frac: non-integer counts must warn, not fail (exit $?)"
    sed 's/^/    /' "$W/frac.err"
fi
# a Matrix Market folder without feature types, some features antibody tags: one warning
if np1_only; then
    if run_av adt train "$D/adt_mtx" --max-epochs 1 --no-progress --output "$W/out_adt.h5ad"; then
        nw=$(grep -c '^atlasvi: warning: ' "$W/adt.err")
        if [ "$nw" -eq 1 ] && grep -q "3 of its 50 features look like antibody tags (e.g. 'CD3_TotalSeqB')" "$W/adt.err"; then
            ok "adt: $(grep '^atlasvi: warning' "$W/adt.err")"
        else
            fail "adt: want one warning about 3 antibody tags, got:"
            sed 's/^/    /' "$W/adt.err"
        fi
    else
        fail "adt: exit $?"
        sed 's/^/    /' "$W/adt.err"
    fi
    rm -f "$W/out_adt.h5ad"
fi
# model files
np1_only && latent_err model_missing "no_model.h5" "$D/no_model.h5" "$B"
np1_only && latent_err model_not_hdf5 "text.h5ad" "$D/text.h5ad" "$B"
np1_only && latent_err model_not_model "notmodel.h5" "$D/notmodel.h5" "$B"
np1_only && latent_err model_is_data "base.h5ad" "$B" "$B"
latent_err model_version "version 99" "$D/model_v99.h5" "$B"
np1_only && train_err resume_not_model "notmodel.h5" "$B" --resume "$D/notmodel.h5"
# --resume keeps the model's configuration and registry: contradicting options are named
train_err resume_contradicts "--n-latent 20 (the model: 10), --gene-likelihood nb (the model: zinb), --batch-key other (the model: batch)" \
    "$B" --resume "$M" --n-latent 20 --gene-likelihood nb --batch-key other
np1_only && train_err resume_contradicts_eq "--use-batch-norm none (the model: both)" "$B" \
    --resume "$M" --use-batch-norm=none
# ... the model's own values and training options are fine; --lr applies and is reported
if expect_ok resume_options train "$B" --resume "$M" --n-latent 10 --batch-key batch \
    --dispersion gene --max-epochs 3 --lr 0.0005 --no-progress --model-out "$W/resumed.h5" \
    --metrics "$W/resumed.jsonl"; then
    grep -q '^atlasvi: resuming .*training options for this run: --max-epochs 3, --lr 0.0005 (the model: 0.001, now 0.0005)$' \
        "$W/resume_options.err" && ok "resume_options: the log names the training options" ||
        fail "resume_options: no resume line naming the options: $(grep resuming "$W/resume_options.err")"
    [ "$(grep -c '"lr": 0.0005,' "$W/resumed.jsonl")" -eq 2 ] && ok "resume_options: --lr 0.0005 used" ||
        fail "resume_options: the metrics do not show lr 0.0005: $(head -c 300 "$W/resumed.jsonl")"
fi
rm -f "$W/resumed.h5" "$W/resumed.jsonl"
# data that does not fit the model
np1_only && latent_err other_genes "other_0" "$M" "$D/genes.h5ad"
# the same genes under a var index anndata 0.13 + pandas 3 writes (nullable-string-array)
np1_only && latent_err other_genes_nullable "other_0" "$M" "$D/nullgenes.h5ad"
np1_only && latent_err fewer_genes "40 genes" "$M" "$D/fewgenes.h5ad"
latent_err new_batch "'b9'" "$M" "$D/newbatch.h5ad"
np1_only && latent_err no_batch_column "'batch'" "$M" "$D/nobatch.h5ad"
np1_only && latent_err latent_negative "negative count" "$M" "$D/neg.h5ad"
np1_only && latent_err latent_truncated "trunc.h5ad" "$M" "$D/trunc.h5ad"
np1_only && train_err resume_other_genes "other_0" "$D/genes.h5ad" --resume "$M"
expect_error transform_batch "'b7'" normalize "$M" "$B" --transform-batch b7 \
    --output "$W/out_transform_batch.h5ad"
# usage errors (option parsing happens before MPI matters: one process only)
np1_only && expect_error no_output "nothing to write" train "$B"
np1_only && expect_error bad_value "--max-epochs" train "$B" --max-epochs zero --output "$W/out_bad_value.h5ad"
np1_only && expect_error missing_value "needs a value" train "$B" --output "$W/out_missing_value.h5ad" --batch-key
# outputs that would overwrite what is read, or cannot be written: refused before any work
cp "$B" "$W/in_copy.h5ad"
cp "$M" "$W/model_copy.h5"
s0=$(sums "$W/in_copy.h5ad" "$W/model_copy.h5" | cut -d' ' -f1,2)
np1_only && expect_error output_is_input "is the input file" train "$W/in_copy.h5ad" --max-epochs 1 \
    --output "$W/in_copy.h5ad"
np1_only && expect_error model_out_is_input "is the input file" train "$W/in_copy.h5ad" --max-epochs 1 \
    --model-out "$W/in_copy.h5ad"
np1_only && expect_error metrics_is_input "is the input file" train "$W/in_copy.h5ad" \
    --max-epochs 1 --model-out "$W/outmodel_x.h5" --metrics "$W/in_copy.h5ad"
np1_only && expect_error output_is_model "model file being read" latent "$W/model_copy.h5" "$B" \
    --output "$W/model_copy.h5"
expect_error output_dir_missing "does not exist" train "$B" --max-epochs 1 \
    --output "$W/no_dir/out.h5ad"
np1_only && expect_error output_is_folder "is a folder" train "$B" --max-epochs 1 --output "$W"
[ "$(sums "$W/in_copy.h5ad" "$W/model_copy.h5" | cut -d' ' -f1,2)" = "$s0" ] &&
    ok "refused outputs: input and model unchanged" || fail "a refused output changed a file"

# the CPU path (src/isa.h): an unknown ATLASVI_ISA ends every rank with one line; a known
# one is named in the training banner
export ATLASVI_ISA=avx9000
expect_error bad_isa "ATLASVI_ISA=avx9000" train "$B" --max-epochs 1 --output "$W/out_bad_isa.h5ad"
export ATLASVI_ISA=generic
expect_ok isa_generic train "$B" --max-epochs 1 --no-progress --output "$W/isa_generic.h5ad" &&
    { grep -q 'CPU kernels generic (ATLASVI_ISA=generic)' "$W/isa_generic.err" &&
        ok "isa_generic: the banner names the path" ||
        fail "isa_generic: no 'CPU kernels generic' in the banner: $(head -3 "$W/isa_generic.err")"; }
rm -f "$W/isa_generic.h5ad"
unset ATLASVI_ISA

# nothing written, nothing left behind, nothing changed
left=$(find "$W" -name 'out_*.h5ad' -o -name 'outmodel_*' -o -name 'outmetrics_*' -o -name '*.tmp*')
[ -z "$left" ] && ok "no output files from failed runs" || fail "files written by failed runs: $left"
no_tmp "$D"
AFTER=$(cd "$D" && sums ./*)
[ "$BEFORE" = "$AFTER" ] && ok "inputs unchanged" || fail "inputs changed: $(echo "$AFTER" | diff - "$BEFORE" 2>&1 | head)"
finish
