#!/usr/bin/env bash
# CTest test_fuzz_regressions: each crash the fuzzer found and that was fixed, as an input
# generated here (no binary files in the repository), replayed through the fuzz target's
# replay build (tests/fuzz/replay_main.c). Passes when every target returns normally:
# the readers may reject the input, but must not crash, abort, run out of memory or (in
# the ATLASVI_SANITIZE build) trip a sanitizer. usage: regressions.sh BIN_DIR WORK_DIR
set -euo pipefail
bin=$1 work=$2
rm -rf "$work"
mkdir -p "$work"
# Address space for the unsanitized build: an allocation sized by a crafted header fails
# here (atlasvi exits "out of memory") instead of succeeding lazily on a large machine.
# Sanitizer builds reserve terabytes of address space; they run without the limit.
if ! nm "$bin/fuzz_mtx_replay" 2>/dev/null | grep -q __asan_init; then
    ulimit -v 4000000
fi
fail=0
# case NAME TARGET: the input is on stdin
case_() {
    local name=$1 target=$2
    cat >"$work/$name"
    if "$bin/${target}_replay" "$work/$name" >"$work/$name.log" 2>&1; then
        echo "ok   $name ($target)"
    else
        echo "FAIL $name ($target): exit $?"
        tail -20 "$work/$name.log"
        fail=1
    fi
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

exit $fail
