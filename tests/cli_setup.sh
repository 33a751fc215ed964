#!/bin/sh
# Fixture of the CLI bad-input tests: writes the bad inputs into DIR (argument 1) with
# make_bad_inputs (no Python), a text file named .h5ad, truncated and corrupted copies,
# and a model trained on base.h5ad (plus a copy claiming another model file version and
# the crafted copies of make_bad_inputs model).
. "$AV_SRC/tests/cli_lib.sh"
D=$1
W=$D
CLI_NP=1
LAUNCH=""
fresh_dir "$D"
"$AV_MAKE_BAD" data "$D" || {
    echo "make_bad_inputs failed"
    exit 1
}
echo "this is a text file, not HDF5" >"$D/text.h5ad"
# truncated: the first half of a real file (or of base.h5ad without the shared data)
REAL="$AV_DATA/heart_hca_fibro_endo_320x136.h5ad"
[ -f "$REAL" ] || REAL="$D/base.h5ad"
sz=$(wc -c <"$REAL")
head -c $((sz / 2)) "$REAL" >"$D/trunc.h5ad"
sz=$(wc -c <"$D/base.h5ad")
head -c $((sz * 95 / 100)) "$D/base.h5ad" >"$D/trunc95.h5ad"
# corrupted: 2000 bytes of text written over the gzip-compressed X at three places
for pct in 30 55 80; do
    cp "$D/base.h5ad" "$D/corrupt$pct.h5ad"
    yes 'garbage!' | head -c 2000 |
        dd of="$D/corrupt$pct.h5ad" bs=1 seek=$((sz * pct / 100)) conv=notrunc 2>/dev/null
done
expect_ok setup_train train "$D/base.h5ad" --batch-key batch --max-epochs 1 \
    --model-out "$D/base_model.h5" --no-progress
"$AV_MAKE_BAD" version "$D/base_model.h5" "$D/model_v99.h5" || fail "make_bad_inputs version"
"$AV_MAKE_BAD" model "$D/base_model.h5" "$D" || fail "make_bad_inputs model"
rm -f "$D"/*.out "$D"/*.err
finish
