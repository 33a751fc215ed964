# Shared helpers of the CLI tests (tests/cli_*.sh), sourced with ". cli_lib.sh".
# Environment (set by tests/cli.cmake):
#   AV_BIN       the atlasvi binary
#   AV_CHECK     check_h5ad_structure    AV_MAKE_BAD  make_bad_inputs
#   AV_MPIEXEC   mpiexec with its flags (space separated)
#   AV_PY        a Python with anndata (skipped where "import anndata" fails)
#   AV_SRC       the source tree         AV_DATA      the shared data folder
#   CLI_NP       1 or more: run atlasvi under "$AV_MPIEXEC -n CLI_NP"
#   CLI_TIMEOUT  seconds one atlasvi command may take (default 60)
set -u
FAILS=0
CLI_NP=${CLI_NP:-1}
CLI_TIMEOUT=${CLI_TIMEOUT:-60}
if [ "$CLI_NP" -gt 1 ]; then
    LAUNCH="$AV_MPIEXEC -n $CLI_NP"
else
    LAUNCH=""
fi

# np1_only && CMD: runs CMD only when not under MPI
np1_only() { [ "$CLI_NP" -eq 1 ]; }

fail() {
    echo "FAIL: $*"
    FAILS=$((FAILS + 1))
}
ok() { echo "ok   $*"; }

finish() {
    run_anndata_checks
    if [ "$FAILS" -ne 0 ]; then
        echo "$FAILS failure(s)"
        exit 1
    fi
    echo "all passed"
    exit 0
}

# fresh_dir DIR: an empty work folder in the build tree
fresh_dir() {
    rm -rf "$1" && mkdir -p "$1" || {
        echo "cannot create $1"
        exit 1
    }
}

# run_av NAME ARGS...: runs atlasvi (under mpiexec when CLI_NP > 1) with a time limit;
# stdout and stderr go to $W/NAME.out and $W/NAME.err; returns the exit code.
run_av() {
    _name=$1
    shift
    # shellcheck disable=SC2086
    timeout -k 5 "$CLI_TIMEOUT" $LAUNCH "$AV_BIN" "$@" >"$W/$_name.out" 2>"$W/$_name.err"
    _rc=$?
    if [ $_rc -eq 124 ] || [ $_rc -eq 137 ]; then
        fail "$_name: timed out after ${CLI_TIMEOUT}s (hang?): atlasvi $*"
    fi
    return $_rc
}

# expect_ok NAME ARGS...: exit 0 and no error line
expect_ok() {
    _n=$1
    run_av "$@"
    _rc=$?
    shift
    if [ $_rc -ne 0 ]; then
        fail "$_n: exit $_rc: atlasvi $*"
        sed 's/^/    /' "$W/$_n.err" | head -20
        return 1
    fi
    if grep -q '^atlasvi: error' "$W/$_n.err"; then
        fail "$_n: exit 0 but an error line: $(grep '^atlasvi: error' "$W/$_n.err")"
        return 1
    fi
    ok "$_n"
    return 0
}

# check_one_error NAME FILE NEEDLE: FILE (stderr) holds exactly one "atlasvi: error:" line,
# containing NEEDLE and no empty detail "()", and no other atlasvi line (mpiexec's own
# notices are allowed), and no sign of a crash.
check_one_error() {
    _n=$1
    _f=$2
    _needle=$3
    _errs=$(grep -c '^atlasvi: error: ' "$_f")
    _all=$(grep -c '^atlasvi' "$_f")
    if [ "$_errs" -ne 1 ] || [ "$_all" -ne 1 ]; then
        fail "$_n: want one 'atlasvi: error:' line, got $_errs error line(s), $_all atlasvi line(s):"
        sed 's/^/    /' "$_f" | head -20
        return 1
    fi
    if [ -z "$LAUNCH" ] && [ "$(wc -l <"$_f")" -ne 1 ]; then
        fail "$_n: stderr has $(wc -l <"$_f") lines, want 1:"
        sed 's/^/    /' "$_f" | head -20
        return 1
    fi
    if grep -qiE 'segmentation|core dumped|signal [0-9]|MPI_ABORT|backtrace|HDF5-DIAG|sanitizer' "$_f"; then
        fail "$_n: crash or library noise on stderr:"
        sed 's/^/    /' "$_f" | head -20
        return 1
    fi
    if grep '^atlasvi: error: ' "$_f" | grep -qE -- '(^|[^A-Za-z0-9_])\(\)'; then
        fail "$_n: the error line has an empty detail '()': $(grep '^atlasvi: error' "$_f")"
        return 1
    fi
    if ! grep '^atlasvi: error: ' "$_f" | grep -qF -- "$_needle"; then
        fail "$_n: the error line lacks '$_needle': $(grep '^atlasvi: error' "$_f")"
        return 1
    fi
    return 0
}

# expect_error NAME NEEDLE ARGS...: exit 1, one "atlasvi: error:" line holding NEEDLE.
expect_error() {
    _n=$1
    _needle=$2
    shift 2
    run_av "$_n" "$@"
    _rc=$?
    if [ $_rc -ne 1 ]; then
        fail "$_n: exit $_rc, want 1: atlasvi $*"
        sed 's/^/    /' "$W/$_n.err" | head -20
        return 1
    fi
    check_one_error "$_n" "$W/$_n.err" "$_needle" || return 1
    ok "$_n: $(grep '^atlasvi: error' "$W/$_n.err")"
    return 0
}

# expect_train_error NAME NEEDLE ARGS...: as expect_error for a failure during or after
# training (writing results): the training banner ("atlasvi: training scVI on ...") and,
# with --resume, the resume line ("atlasvi: resuming ...") may precede the one error line.
expect_train_error() {
    _n=$1
    _needle=$2
    shift 2
    run_av "$_n" "$@"
    _rc=$?
    if [ $_rc -ne 1 ]; then
        fail "$_n: exit $_rc, want 1: atlasvi $*"
        sed 's/^/    /' "$W/$_n.err" | head -20
        return 1
    fi
    grep -v -e '^atlasvi: training scVI on ' -e '^atlasvi: resuming ' "$W/$_n.err" \
        >"$W/$_n.err.nobanner"
    check_one_error "$_n" "$W/$_n.err.nobanner" "$_needle" || return 1
    ok "$_n: $(grep '^atlasvi: error' "$W/$_n.err")"
    return 0
}

# sums FILE...: one checksum line per file (to compare before/after)
sums() { cksum "$@" 2>/dev/null; }

# no_tmp DIR: no temporary files left behind
no_tmp() {
    _t=$(find "$1" -name '*.tmp*' 2>/dev/null)
    if [ -n "$_t" ]; then
        fail "temporary files left in $1: $_t"
    else
        ok "no .tmp files in $1"
    fi
}

# metrics_ok FILE FIRST LAST: JSON lines, one per epoch FIRST..LAST, each with epoch,
# elbo_train, reconstruction_loss_train, kl_local_train (parsed with Python's json
# module when a python3 is present, by pattern otherwise).
metrics_ok() {
    _f=$1
    _first=$2
    _last=$3
    _want=$((_last - _first + 1))
    _got=$(wc -l <"$_f")
    if [ "$_got" -ne "$_want" ]; then
        fail "$_f: $_got lines, want $_want (epochs $_first..$_last)"
        return 1
    fi
    _e=$_first
    while IFS= read -r _line; do
        case "$_line" in
        "{\"epoch\": $_e, \"elbo_train\": "*"}") ;;
        *)
            fail "$_f: line for epoch $_e is not as expected: $_line"
            return 1
            ;;
        esac
        for _k in reconstruction_loss_train kl_local_train; do
            case "$_line" in
            *"\"$_k\": "[0-9-]*) ;;
            *)
                fail "$_f: no numeric $_k in: $_line"
                return 1
                ;;
            esac
        done
        _e=$((_e + 1))
    done <"$_f"
    if command -v python3 >/dev/null 2>&1; then
        if ! python3 - "$_f" "$_first" <<'EOF'; then
import json, math, sys
e = int(sys.argv[2])
for line in open(sys.argv[1]):
    r = json.loads(line)
    assert r["epoch"] == e, (r["epoch"], e)
    for k in ("elbo_train", "reconstruction_loss_train", "kl_local_train"):
        assert isinstance(r[k], (int, float)) and math.isfinite(r[k]), (k, r[k])
    e += 1
EOF
            fail "$_f: not valid JSON lines"
            return 1
        fi
    fi
    ok "$_f: $_want JSON lines, epochs $_first..$_last"
    return 0
}

# have_anndata: a Python with anndata is present
have_anndata() {
    [ -n "${AV_PY:-}" ] && [ -x "$AV_PY" ] && "$AV_PY" -c "import anndata" >/dev/null 2>&1
}

# check_h5ad FILE ARGS...: the C structural check (tests/check_h5ad_structure.c) now and,
# where anndata is present, anndata.read_h5ad (tests/cli_check_anndata.py) at finish (one
# Python start for all files), with the same ARGS:
# [--cells N] [--genes G] [--obsm KEY K] [--layer NAME] [--row-sum S] [--like INPUT].
# Files are copied aside so that later steps may change them.
ANNDATA_N=0
check_h5ad() {
    if ! "$AV_CHECK" "$@"; then
        fail "$1: structural check"
    fi
    ANNDATA_N=$((ANNDATA_N + 1))
    _copy="$W/anndata_check_$ANNDATA_N.h5ad"
    cp "$1" "$_copy"
    shift
    _line="$_copy"
    for _a in "$@"; do _line="$_line$(printf '\t')$_a"; done
    printf '%s\n' "$_line" >>"$W/anndata_checks.txt"
}

run_anndata_checks() {
    [ -f "$W/anndata_checks.txt" ] || return 0
    if have_anndata; then
        "$AV_PY" "$AV_SRC/tests/cli_check_anndata.py" --list "$W/anndata_checks.txt" ||
            fail "anndata.read_h5ad checks"
    else
        echo "skip anndata checks: no $AV_PY with anndata (the C structural checks ran)"
    fi
    rm -f "$W"/anndata_check_*.h5ad "$W/anndata_checks.txt"
}
