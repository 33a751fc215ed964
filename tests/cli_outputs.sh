#!/bin/sh
# Outputs that are not plain new files (issue 12): a FIFO, a symbolic link to a character
# device (/dev/null, /dev/full), a device node made in the work folder (as root), a full
# file system (a small tmpfs in a private mount namespace, where unshare and mount work),
# names at the file system's limit, bad keys, and two runs writing one output at once.
# Special files are written in place and stay what they were; every failure is one
# "atlasvi: error:" line and exit 1 with no temporary left (in the folder or in TMPDIR).
# Nothing outside WORK_DIR is written: /dev/null and /dev/full are only reached through
# links in WORK_DIR, and they are checked to be character devices afterwards.
# usage: cli_outputs.sh WORK_DIR
. "$AV_SRC/tests/cli_lib.sh"
W=$1
fresh_dir "$W"
mkdir -p "$W/tmpdir" "$W/small"
TMPDIR=$W/tmpdir
export TMPDIR
N=300
G=60
S=$W/sim.h5ad
if ! timeout "$CLI_TIMEOUT" "$AV_BIN" simulate "$S" --n-cells $N --n-genes $G --n-batches 2 \
    --seed 5 >"$W/simulate.out" 2>&1; then
    fail "simulate"
    cat "$W/simulate.out"
    finish
fi
TRAIN="train $S --batch-key batch --max-epochs 1 --no-progress"

# still_char NAME PATH: PATH is (or links to) a character device
still_char() {
    [ -c "$2" ] && ok "$1: $2 is still a character device" || fail "$1: $2 is no longer a character device"
}

# a FIFO: the output is streamed into it; it stays a FIFO
mkfifo "$W/fifo"
cat "$W/fifo" >"$W/from_fifo.h5ad" &
reader=$!
# shellcheck disable=SC2086
expect_ok fifo $TRAIN --output "$W/fifo"
wait $reader
[ -p "$W/fifo" ] && ok "fifo: still a FIFO" || fail "fifo: replaced by a regular file"
check_h5ad "$W/from_fifo.h5ad" --cells $N --genes $G --obsm X_scVI 10 --like "$S"

# a link to /dev/null: written through, the link and the device stay
ln -s /dev/null "$W/null_link"
# shellcheck disable=SC2086
expect_ok null_link $TRAIN --output "$W/null_link" --model-out "$W/null_link" \
    --metrics "$W/null_link"
[ -L "$W/null_link" ] && ok "null_link: still a link" || fail "null_link: the link was replaced"
still_char null_link /dev/null

# a device node of our own (root only): /dev/null's numbers, in the work folder
if [ "$(id -u)" = 0 ] && mknod "$W/null_node" c 1 3 2>/dev/null; then
    # shellcheck disable=SC2086
    expect_ok null_node $TRAIN --output "$W/null_node" --model-out "$W/null_node"
    still_char null_node "$W/null_node"
else
    echo "skip null_node: not root or mknod refused"
fi

# a link to /dev/full: every kind of output fails with one line
ln -s /dev/full "$W/full_link"
# shellcheck disable=SC2086
expect_train_error full_output "full_link" $TRAIN --output "$W/full_link"
# shellcheck disable=SC2086
expect_train_error full_model "full_link" $TRAIN --model-out "$W/full_link"
# shellcheck disable=SC2086
expect_train_error full_metrics "cannot write metrics" $TRAIN --model-out "$W/outmodel_full.h5" \
    --metrics "$W/full_link"
[ ! -e "$W/outmodel_full.h5" ] && ok "full_metrics: no model written after the failure" ||
    fail "full_metrics: a model was written although the run failed"
# metrics on stdout, stdout on a full device
# shellcheck disable=SC2086
timeout "$CLI_TIMEOUT" "$AV_BIN" $TRAIN --model-out "$W/outmodel_stdout.h5" --metrics - \
    >"$W/full_link" 2>"$W/full_stdout.err"
rc=$?
grep -v '^atlasvi: training ' "$W/full_stdout.err" >"$W/full_stdout.err_only"
if [ $rc -eq 1 ] && check_one_error full_stdout "$W/full_stdout.err_only" "cannot write metrics"; then
    ok "full_stdout: $(cat "$W/full_stdout.err_only")"
else
    [ $rc -ne 1 ] && fail "full_stdout: exit $rc, want 1"
fi
[ -L "$W/full_link" ] && ok "full_link: still a link" || fail "full_link: the link was replaced"
still_char full_link /dev/full

# a full file system: a 64 KiB tmpfs in a private mount namespace (gone when it exits)
if unshare -m sh -c "mount -t tmpfs -o size=64k tmpfs '$W/small'" 2>/dev/null; then
    for what in "--output" "--model-out"; do
        name=small_${what#--}
        # shellcheck disable=SC2086
        unshare -m sh -c "mount -t tmpfs -o size=64k tmpfs '$W/small' &&
            timeout $CLI_TIMEOUT '$AV_BIN' $TRAIN $what '$W/small/big.h5' \
                >'$W/$name.out' 2>'$W/$name.err'; echo \$? >'$W/$name.rc'; ls '$W/small' >'$W/$name.ls'"
        rc=$(cat "$W/$name.rc")
        grep -v '^atlasvi: training ' "$W/$name.err" >"$W/$name.err_only"
        if [ "$rc" -eq 1 ] && check_one_error "$name" "$W/$name.err_only" "big.h5"; then
            ok "$name: $(grep '^atlasvi: error' "$W/$name.err")"
        else
            [ "$rc" -ne 1 ] && fail "$name: exit $rc, want 1: $(cat "$W/$name.err")"
        fi
        [ ! -s "$W/$name.ls" ] && ok "$name: nothing left on the full file system" ||
            fail "$name: left on the full file system: $(cat "$W/$name.ls")"
    done
else
    echo "skip full file system: no private mount namespace with tmpfs here"
fi

# names: the longest a file system allows works (temporaries are cut to fit), a longer
# one is refused before training; bad keys too
long=$(printf '%0250d' 0)
# shellcheck disable=SC2086
expect_ok long_name $TRAIN --output "$W/$long.h5ad" --model-out "$W/m$long.h5"
[ -f "$W/$long.h5ad" ] && [ -f "$W/m$long.h5" ] && ok "long_name: both written" ||
    fail "long_name: outputs missing"
rm -f "$W/$long.h5ad" "$W/m$long.h5"
# shellcheck disable=SC2086
expect_error too_long "too long" $TRAIN --output "$W/${long}_and_more.h5ad"
# shellcheck disable=SC2086
expect_error bad_latent_key "--latent-key" $TRAIN --output "$W/out_bad_key.h5ad" --latent-key a/b
# shellcheck disable=SC2086
expect_error bad_layer_key "--normalized-layer" $TRAIN --output "$W/out_bad_key.h5ad" \
    --normalized-layer .hidden

# two runs writing one output at once: both succeed, the file is whole, a temporary of
# the old fixed name (another program's, say) is left alone
echo "not ours" >"$W/both.h5ad.tmp"
# shellcheck disable=SC2086
timeout "$CLI_TIMEOUT" "$AV_BIN" $TRAIN --output "$W/both.h5ad" >"$W/both1.out" 2>"$W/both1.err" &
first=$!
# shellcheck disable=SC2086
timeout "$CLI_TIMEOUT" "$AV_BIN" $TRAIN --output "$W/both.h5ad" --seed 1 >"$W/both2.out" 2>"$W/both2.err"
rc2=$?
wait $first
rc1=$?
[ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && ok "both: two concurrent runs succeed" ||
    fail "both: exits $rc1 and $rc2: $(cat "$W/both1.err" "$W/both2.err")"
check_h5ad "$W/both.h5ad" --cells $N --genes $G --obsm X_scVI 10 --like "$S"
[ "$(cat "$W/both.h5ad.tmp")" = "not ours" ] && ok "both: the foreign .tmp is untouched" ||
    fail "both: the foreign .tmp was changed"
rm -f "$W/both.h5ad.tmp"

left=$(find "$W" -name 'out_*' -o -name 'outmodel_*' -o -name '*.tmp*')
[ -z "$left" ] && ok "no output or temporary from failed runs" || fail "left behind: $left"
finish
