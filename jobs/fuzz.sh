#!/usr/bin/env bash
# Coverage-guided fuzzing of the readers and the model-file loader (docs/fuzzing.md).
#
#   jobs/fuzz.sh build          clang + libFuzzer + ASan/UBSan build into build-fuzz
#   jobs/fuzz.sh seeds          seed corpus into build-fuzz/seeds/<target> and from there
#                               into build-fuzz/corpus/<target> (small files made from
#                               ../shared/data and by atlasvi simulate/train)
#   jobs/fuzz.sh ci             build, seeds, then each target for AV_FUZZ_CI_RUNS (300)
#                               inputs over its seeds, and the regressions, through CTest
#                               (label fuzz); fails on a crash in atlasvi's code only
#   jobs/fuzz.sh run [SECONDS]  build, seeds, then each target in turn for SECONDS (600)
#                               in libFuzzer's fork mode, going on past crashes; corpus
#                               grows in place, crashes in build-fuzz/artifacts/<target>/,
#                               logs in build-fuzz/logs/<target>.<time>.log and
#                               build-fuzz/logs/campaign.log (FUZZ_LEAKS=1: with LSan)
#   jobs/fuzz.sh replay TARGET FILE...   run one target on given inputs (a crash's stack)
#   jobs/fuzz.sh triage         one line per crash artifact: summary, top frame, first
#                               frame in atlasvi's code
#
# TARGETS="fuzz_mtx fuzz_model" limits run/ci to some targets. Without clang or the
# libFuzzer runtime (Debian: clang, libclang-rt-14-dev) it says so and exits 77 (ci, run)
# unless INSTALL=1, which installs them with apt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
B=${BUILD:-$ROOT/build-fuzz}
DATA=${AV_DATA:-$ROOT/../shared/data}
ALL_TARGETS="fuzz_h5ad fuzz_10x fuzz_loom fuzz_mtx fuzz_model"
TARGETS=${TARGETS:-$ALL_TARGETS}
JOBS=${JOBS:-2}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

have_libfuzzer() {
    command -v "${CC:-clang}" >/dev/null 2>&1 || return 1
    local t
    t=$(mktemp -d)
    printf 'int LLVMFuzzerTestOneInput(const char *d, long n) { (void)d; (void)n; return 0; }\n' \
        >"$t/f.c"
    "${CC:-clang}" -fsanitize=fuzzer,address,undefined -fopenmp "$t/f.c" -o "$t/f" >/dev/null 2>&1
    local rc=$?
    rm -rf "$t"
    return $rc
}

need_fuzzer() {
    if ! have_libfuzzer; then
        if [ "${INSTALL:-0}" = 1 ]; then
            SUDO=""
            [ "$(id -u)" -ne 0 ] && SUDO="sudo"
            # Debian 12 names; elsewhere (other clang versions) this may fail: then skipped
            $SUDO apt-get update -qq || true
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
                clang libclang-rt-14-dev libomp-dev >/dev/null || true
        fi
        if ! have_libfuzzer; then
            echo "jobs/fuzz.sh: clang with libFuzzer not found (Debian: apt-get install clang" \
                "libclang-rt-14-dev, or INSTALL=1 jobs/fuzz.sh ...): fuzzing skipped" >&2
            exit 77
        fi
    fi
}

build() {
    need_fuzzer
    CC=${CC:-clang} cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DATLASVI_FUZZ=ON \
        -DATLASVI_CUDA=OFF >/dev/null
    cmake --build "$B" -j"$JOBS"
}

seeds() {
    local s="$B/seedwork"
    rm -rf "$s"
    mkdir -p "$s" "$B/corpus"
    local av="$B/atlasvi"
    # tiny files written by atlasvi itself: a CSR h5ad (gzip and none), its scVI output
    # (obsm) and a model file
    ASAN_OPTIONS=detect_leaks=0 "$av" simulate "$s/sim_gzip.h5ad" --n-cells 16 --n-genes 10 \
        --n-batches 3 --n-cell-types 2 >/dev/null
    ASAN_OPTIONS=detect_leaks=0 "$av" simulate "$s/sim_tiny.h5ad" --n-cells 24 --n-genes 12 \
        --n-batches 2 --n-cell-types 3 --compression none --chunk-cells 8 >/dev/null
    ASAN_OPTIONS=detect_leaks=0 "$av" train "$s/sim_gzip.h5ad" --batch-key batch \
        --labels-key cell_type --n-hidden 8 --n-latent 2 --max-epochs 2 \
        --model-out "$s/model_tiny.h5" --output "$s/sim_scvi.h5ad" >/dev/null 2>&1
    ASAN_OPTIONS=detect_leaks=0 "$av" train "$s/sim_gzip.h5ad" --n-hidden 4 --n-latent 2 \
        --n-layers 2 --gene-likelihood nb --dispersion gene-batch --batch-key batch \
        --max-epochs 1 --model-out "$s/model_nb.h5" >/dev/null 2>&1 || true
    local py=python3
    [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import h5py' 2>/dev/null && py=/usr/bin/python3
    rm -rf "$B/seeds"
    "$py" tests/fuzz/make_seeds.py "$DATA" "$B/seeds" "$s"/*.h5ad "$s"/model_*.h5
    # the seeds stay as they are in seeds/ (the CI runs use them); corpus/ starts from
    # them and grows with each timed run
    for t in $ALL_TARGETS; do
        mkdir -p "$B/corpus/$t"
        cp -n "$B/seeds/$t"/* "$B/corpus/$t"/ 2>/dev/null || true
    done
}

ci() {
    build
    seeds
    local labels=()
    for t in $TARGETS; do labels+=("${t}_ci"); done
    local re
    re=$(IFS='|'; echo "^(${labels[*]}|fuzz_regressions)\$")
    ctest --test-dir "$B" -L fuzz -R "$re" --output-on-failure
}

run() {
    local secs=${1:-600}
    # LeakSanitizer off by default here: libhdf5 leaks on many corrupt files, and each
    # report restarts the fork-mode child (exec/s fell from ~50 to 4); the CI runs and
    # FUZZ_LEAKS=1 check leaks.
    if [ "${FUZZ_LEAKS:-0}" = 1 ]; then
        export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
    else
        export ASAN_OPTIONS=detect_leaks=0:abort_on_error=0
    fi
    build
    [ -d "$B/seeds/fuzz_h5ad" ] || seeds
    mkdir -p "$B/logs" "$B/bin"
    for t in $TARGETS; do cp "$B/tests/$t" "$B/bin/$t"; done # rebuilds don't touch a run
    for t in $TARGETS; do
        mkdir -p "$B/artifacts/$t" "$B/corpus/$t"
        local log
        log="$B/logs/$t.$(date -u +%Y%m%dT%H%M%S).log"
        echo "$(date -u +%FT%TZ) $t: start, ${secs}s, $(basename "$log")" |
            tee -a "$B/logs/campaign.log"
        # fork mode: one child at a time, restarted after a crash, OOM or timeout, so
        # that one finding does not end the run; the corpus grows in place
        "$B/bin/$t" -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
            -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -max_len=262144 \
            -artifact_prefix="$B/artifacts/$t/" -print_final_stats=1 \
            "$B/corpus/$t" >"$log" 2>&1 || true
        echo "$(date -u +%FT%TZ) $t: end ($(ls "$B/artifacts/$t" | wc -l) artifacts," \
            "$(ls "$B/corpus/$t" | wc -l) corpus files)" | tee -a "$B/logs/campaign.log"
    done
}

# One line per artifact: target, file, the sanitizer's summary, the top frame and the
# first frame in atlasvi's own code (io/, src/, models/; "libhdf5 only" when none).
triage() {
    local secs=${1:-60}
    for t in $TARGETS; do
        for f in "$B"/artifacts/"$t"/*; do
            [ -f "$f" ] || continue
            local out
            out=$(timeout "$secs" "$B/tests/$t" -timeout=20 -rss_limit_mb=2048 "$f" 2>&1 || true)
            local sum top ours
            sum=$(grep -m1 -E "^SUMMARY|ERROR: libFuzzer|left [0-9]+ HDF5" <<<"$out" | cut -c1-140 || true)
            top=$(grep -m1 -E "^ +#[0-9]+ " <<<"$out" | sed -E 's/^ +#[0-9]+ 0x[0-9a-f]+ in //' |
                cut -c1-80 || true)
            ours=$(grep -E "^ +#[0-9]+ .* in .*$ROOT/(io|src|models|dist)/" <<<"$out" | head -1 |
                sed -E "s|^ +#[0-9]+ 0x[0-9a-f]+ in ||; s|$ROOT/||" || true)
            if [ -z "$sum" ]; then
                echo "$t $(basename "$f") | no crash on replay (fixed)"
            else
                echo "$t $(basename "$f") | $sum | ${top:-?} | ${ours:-libhdf5 only}"
            fi
        done
    done
}

replay() {
    local t=$1
    shift
    "$B/tests/$t" "$@"
}

cmd=${1:-}
shift || true
case "$cmd" in
build) build ;;
seeds) seeds ;;
ci) ci ;;
run) run "$@" ;;
replay) replay "$@" ;;
triage) triage "$@" ;;
*)
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
