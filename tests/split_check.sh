#!/bin/sh
# The train/validation split holds out exactly n - ceil(train_size * n) cells (scvi-tools'
# DataSplitter), whatever the number of ranks. usage: split_check.sh ATLASVI DATA WORK [MPIEXEC...]
set -u
atlasvi=$1 data=$2 work=$3
shift 3
input=$data/heart_hca_fibro_endo_320x136.h5ad
[ -f "$input" ] || { echo "SKIP: $input not found"; exit 77; }
mkdir -p "$work" && cd "$work" || exit 1
check() { # expected n_validation, then train options
    want=$1
    shift
    got=$("$@" --max-epochs 1 --model-out m.h5 --no-progress --metrics - 2>/dev/null |
        head -1 | sed -n 's/.*"n_validation": \([0-9]*\).*/\1/p')
    echo "$* -> n_validation $got (want $want)"
    [ "$got" = "$want" ] || fail=1
}
fail=0
# 320 cells: ceil(0.9 * 320) = 288 train, 32 validation; ceil(0.995 * 320) = 319, 1
check 32 "$@" "$atlasvi" train "$input" --batch-key assay_ontology_term_id
check 1 "$@" "$atlasvi" train "$input" --batch-key assay_ontology_term_id --train-size 0.995
# 320 cells, batch 159: ceil(288) % 159 = 129 -> no move; batch 286: 288 % 286 = 2 -> the
# 2 cells of a tiny last batch move to validation (train_size not given)
check 34 "$@" "$atlasvi" train "$input" --batch-size 286
check 32 "$@" "$atlasvi" train "$input" --batch-size 286 --train-size 0.9
[ $fail -eq 0 ] && echo PASS
exit $fail
