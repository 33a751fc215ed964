#!/bin/sh
# Crafted model files (make_bad_inputs model, written by cli_setup.sh from a good
# base_model.h5): every attribute and every dataset shape is checked against the
# configuration the file declares, before anything is allocated for it. Each variant
# gives one "atlasvi: error:" line naming the file and exit 1, without a crash or a hang,
# for latent, normalize and train --resume, on one process or under mpiexec -n CLI_NP;
# nothing is written.
# usage: cli_bad_model.sh INPUT_DIR WORK_DIR
. "$AV_SRC/tests/cli_lib.sh"
D=$1
W=$2
fresh_dir "$W"
B=$D/base.h5ad
# file, then a fragment of the expected message
for v in "m_layers n_layers is 100000" \
    "m_latent_neg n_latent is -3" \
    "m_latent_12 z_encoder.mean_encoder.weight" \
    "m_hidden_text 'n_hidden' is '12abc'" \
    "m_param_huge impossible shape" \
    "m_param_unstored stores 0 bytes" \
    "m_history_huge impossible shape" \
    "m_batch_3 n_batch = 2" \
    "m_nan 'px_r' is not finite"; do
    m=${v%% *}
    needle=${v#* }
    [ -f "$D/$m.h5" ] || fail "$m.h5: not made by cli_setup.sh"
    expect_error "latent_$m" "$needle" latent "$D/$m.h5" "$B" --output "$W/out_latent_$m.h5ad"
    expect_error "normalize_$m" "$needle" normalize "$D/$m.h5" "$B" \
        --output "$W/out_normalize_$m.h5ad"
    expect_error "resume_$m" "$needle" train "$B" --resume "$D/$m.h5" --max-epochs 2 \
        --no-progress --output "$W/out_resume_$m.h5ad" --model-out "$W/outmodel_$m.h5"
    grep -q "$m.h5" "$W/latent_$m.err" || fail "latent_$m: the error does not name $m.h5"
done
left=$(find "$W" -name 'out_*' -o -name 'outmodel_*' -o -name '*.tmp*')
[ -z "$left" ] && ok "no output files from failed runs" || fail "files written by failed runs: $left"
finish
