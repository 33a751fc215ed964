#!/bin/sh
# Every subcommand's --help exits 0 with its usage on stdout; unknown options, commands
# and bad option values exit non-zero with one "atlasvi: error:" line.
. "$AV_SRC/tests/cli_lib.sh"
W=$1
fresh_dir "$W"
for c in train latent normalize info simulate; do
    if run_av "help_$c" "$c" --help && head -1 "$W/help_$c.out" | grep -q "^usage: atlasvi $c" &&
        [ ! -s "$W/help_$c.err" ]; then
        ok "$c --help"
    else
        fail "$c --help: $(head -3 "$W/help_$c.out" "$W/help_$c.err")"
    fi
    expect_error "unknown_option_$c" "'--no-such-option'" "$c" --no-such-option
done
if run_av help_main --help && grep -q '^usage: atlasvi' "$W/help_main.out"; then ok "atlasvi --help"; else
    fail "atlasvi --help"; fi
run_av unknown_command frobnicate
rc=$?
if [ $rc -ne 0 ] && head -1 "$W/unknown_command.err" | grep -q "^atlasvi: error: unknown command 'frobnicate'"; then
    ok "unknown command: exit $rc"
else
    fail "unknown command: exit $rc, $(head -1 "$W/unknown_command.err")"
fi
run_av no_command
[ $? -ne 0 ] && ok "no command: non-zero exit" || fail "no command: exit 0"
expect_error bad_int "'ten'" train x.h5ad --max-epochs ten --output "$W/o.h5ad"
expect_error bad_float "--lr" train x.h5ad --lr -1 --output "$W/o.h5ad"
expect_error bad_choice "--gene-likelihood" train x.h5ad --gene-likelihood gaussian --output "$W/o.h5ad"
expect_error bad_bool "--encode-covariates" train x.h5ad --encode-covariates maybe --output "$W/o.h5ad"
expect_error no_value "needs a value" train x.h5ad --output
expect_error no_input "no input" train --output "$W/o.h5ad"
expect_error latent_one_arg "MODEL.h5 and INPUT" latent m.h5 --output "$W/o.h5ad"
expect_error latent_no_output "--output" latent m.h5 x.h5ad
expect_error simulate_bad "--n-cells" simulate "$W/s.h5ad" --n-cells -5
[ ! -e "$W/s.h5ad" ] && [ ! -e "$W/o.h5ad" ] && ok "no files written" || fail "a usage error wrote a file"
finish
