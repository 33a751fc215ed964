#!/usr/bin/env bash
# CTest test_fuzz_regressions: each crash the fuzzer found and that was fixed, as an input
# generated here (no binary files in the repository), replayed through the fuzz target's
# replay build (tests/fuzz/replay_main.c). Passes when every target returns normally:
# the readers may reject the input, but must not crash, abort, run out of memory or (in
# the ATLASVI_SANITIZE and fuzz builds) trip a sanitizer.
# usage: regressions.sh BIN_DIR WORK_DIR MAKE_REGRESSIONS SUFFIX [ATLASVI]
# SUFFIX: "_replay" (normal build: fuzz_mtx_replay, ...) or "" (fuzz build: libFuzzer
# binaries, which run the files given to them once each).
set -euo pipefail
bin=$1 work=$2 gen=$3 sfx=${4-_replay} atlasvi=${5:-}
rm -rf "$work"
mkdir -p "$work"
"$gen" "$work"
# Address space for the unsanitized build: an allocation sized by a crafted header fails
# here (atlasvi exits "out of memory") instead of succeeding lazily on a large machine.
# Sanitizer builds reserve terabytes of address space; they run without the limit.
if ! grep -qa __asan_init "$bin/fuzz_mtx$sfx"; then
    ulimit -v 4000000
fi
fail=0
# file NAME TARGET: replays $work/NAME (written by make_regressions or case_)
file_() {
    local name=$1 target=$2
    if "$bin/${target}$sfx" "$work/$name" >"$work/$name.log" 2>&1; then
        echo "ok   $name ($target)"
    else
        echo "FAIL $name ($target): exit $?"
        tail -20 "$work/$name.log"
        fail=1
    fi
}
# case NAME TARGET: the input is on stdin
case_() {
    cat >"$work/$1"
    file_ "$1" "$2"
}
MM='%%MatrixMarket matrix coordinate integer general'

# F1 fuzz_mtx: a cell (column) without entries before the first cell with entries: the
# row normalizer called qsort(NULL, 0, ...) (UBSan: null pointer argument), io/mtx.c.
printf '%s\n1 3 1\n1 3 3\n~~~\nc1\nc2\nc3\n~~~\ng1\tG1\tGene Expression\n' "$MM" |
    case_ mtx_empty_first_cells fuzz_mtx

# F2 fuzz_mtx: the size line claims 4e11 entries in a 100-byte file: the entry arrays were
# allocated from the claim (3.2 TB: "out of memory", exit 2, or libFuzzer's malloc limit).
printf '%s\n3 2 400000000000\n1 1 5\n~~~\nc1\nc2\n~~~\ng1\ng2\ng3\n' "$MM" |
    case_ mtx_huge_nnz fuzz_mtx
printf 'GZ\n%s\n3 2 400000000000\n1 1 5\n2 2 1\n~~~\nc1\nc2\n~~~\ng1\ng2\ng3\n' "$MM" |
    case_ mtx_huge_nnz_gz fuzz_mtx

# F3 fuzz_mtx: the size line claims 2e9 barcodes, barcodes.tsv lists one: the CSR row
# pointer (16 GB) was allocated before the barcodes were counted.
printf '%s\n1 2000000000 0\n~~~\nc1\n~~~\ng1\n' "$MM" | case_ mtx_huge_barcodes fuzz_mtx

# F4 fuzz_h5ad: CSR indptr[0] = INT64_MIN + 1: av_input_read_indptr rebased the row pointer
# before checking it (signed overflow, UBSan), io/input.c.
file_ h5ad_indptr_min.h5ad fuzz_h5ad
# F5: a shape of INT64_MAX cells or features (h5ad shape attribute, 10x matrix/shape):
# shape + 1 overflowed (UBSan) before the indptr length was compared, io/input.c.
file_ h5ad_shape_max.h5ad fuzz_h5ad
file_ h5ad_shape_max_cols.h5ad fuzz_h5ad # did not crash; rejected by the same check now
file_ tenx_shape_max.h5 fuzz_10x
# F6: a dense X / loom matrix declared 3*2^30 x 2^32 (nothing stored): n_obs * n_vars
# overflowed (UBSan), io/input.c.
file_ h5ad_dense_huge.h5ad fuzz_h5ad
file_ loom_huge.loom fuzz_loom

# F11 fuzz_10x: a string dataset declaring 2^40 strings with nothing stored (10x
# matrix/barcodes; h5ad obs/_index): h5u_read_strings allocated 2^40 pointers first
# (allocation-size-too-big / calloc-overflow), io/h5util.c.
file_ tenx_barcodes_huge.h5 fuzz_10x
file_ h5ad_index_huge.h5ad fuzz_h5ad # did not crash (the length check comes first); guard

# Model-file cases: a copy of a tiny model written by atlasvi train, one change each.
if [ -n "$atlasvi" ] && [ -x "$atlasvi" ]; then
    ASAN_OPTIONS=detect_leaks=0 "$atlasvi" simulate "$work/sim.h5ad" --n-cells 16 --n-genes 8 \
        --n-batches 2 >/dev/null
    ASAN_OPTIONS=detect_leaks=0 "$atlasvi" train "$work/sim.h5ad" --n-hidden 4 --n-latent 2 \
        --max-epochs 2 --model-out "$work/model.h5" >/dev/null 2>&1
    "$gen" model "$work/model.h5" "$work"
    # F7 fuzz_model (found reading the loader, reproduced with the target): a history
    # array of 0 x 50 values was read as 50 epochs (heap-buffer-overflow read).
    file_ model_history_0rows.h5 fuzz_model
    file_ model_history_other_0rows.h5 fuzz_model
    # F8 fuzz_model: a float array declaring far more values than the file stores was
    # allocated from its declared shape (allocation-size-too-big / out of memory).
    file_ model_array_huge.h5 fuzz_model
    file_ model_array_2e9.h5 fuzz_model
    # F9 fuzz_model: a weight of the wrong shape: the loader's failure path freed the
    # setup it had not initialised (SEGV in av_setup_free); atlasvi export passes an
    # uninitialised one, so the command itself must fail cleanly too.
    file_ model_bad_weight.h5 fuzz_model
    if ASAN_OPTIONS=detect_leaks=0 "$atlasvi" export "$work/model_bad_weight.h5" "$work/exp" \
        >"$work/export.log" 2>&1; then
        echo "FAIL export of model_bad_weight.h5 succeeded"
        fail=1
    elif [ "$(grep -c '^atlasvi: error: .*\(expected\|declares\)' "$work/export.log")" = 1 ]; then
        echo "ok   model_bad_weight.h5 (atlasvi export: $(grep -m1 '^atlasvi: error' "$work/export.log"))"
    else
        echo "FAIL model_bad_weight.h5 (atlasvi export):"
        tail -5 "$work/export.log"
        fail=1
    fi
else
    echo "(model-file cases skipped: no atlasvi binary given)"
fi

exit $fail
