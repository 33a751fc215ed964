#!/bin/sh
# atlasvi de end to end: a model trained on simulated data with known cell types, then
# vanilla and change-mode DE tables checked for scvi-tools' columns, order and sanity
# (tests/de_check.py), and the same table byte for byte under mpiexec -n 1, 2 and 3.
# Environment: AV_BIN, AV_MPIEXEC, AV_PY, AV_SRC, WORK (a scratch folder).
set -u
W=${WORK:?}
rm -rf "$W" && mkdir -p "$W" || exit 1
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { echo "ok   $*"; }
B=$AV_BIN
# OMP_NUM_THREADS is set by ctest for every rank alike
MPI="$AV_MPIEXEC -x OMP_NUM_THREADS"

$B simulate "$W/sim.h5ad" --n-cells 1500 --n-genes 200 --n-batches 2 --n-cell-types 3 \
    --seed 7 >"$W/sim.log" 2>&1 || { echo "simulate failed"; cat "$W/sim.log"; exit 1; }
$B train "$W/sim.h5ad" --batch-key batch --max-epochs 40 --model-out "$W/model.h5" \
    --no-progress >"$W/train.log" 2>&1 || { echo "train failed"; cat "$W/train.log"; exit 1; }

de() { # name np args...
    _n=$1; _np=$2; shift 2
    if [ "$_np" -gt 1 ]; then
        $MPI -n "$_np" $B de "$W/model.h5" "$W/sim.h5ad" --groupby cell_type "$@" \
            --output "$W/$_n.csv" >"$W/$_n.log" 2>&1
    else
        $B de "$W/model.h5" "$W/sim.h5ad" --groupby cell_type "$@" --output "$W/$_n.csv" \
            >"$W/$_n.log" 2>&1
    fi
}

de van1 1 && ok "vanilla, 1 rank" || { fail "vanilla, 1 rank"; cat "$W/van1.log"; }
de van2 2 && ok "vanilla, 2 ranks" || { fail "vanilla, 2 ranks"; cat "$W/van2.log"; }
cmp -s "$W/van1.csv" "$W/van2.csv" && ok "vanilla: same table on 1 and 2 ranks" ||
    fail "vanilla: tables differ between 1 and 2 ranks"
CH="--mode change --batch-correction --cred-interval-lvls 0.5,0.9"
de chg1 1 $CH && ok "change mode, 1 rank" || { fail "change, 1 rank"; cat "$W/chg1.log"; }
de chg3 3 $CH && ok "change mode, 3 ranks" || { fail "change, 3 ranks"; cat "$W/chg3.log"; }
cmp -s "$W/chg1.csv" "$W/chg3.csv" && ok "change: same table on 1 and 3 ranks" ||
    fail "change: tables differ between 1 and 3 ranks"
de pair1 1 --mode change --group1 type_1,type_0 --group2 type_2 --seed 3 &&
    de pair2 2 --mode change --group1 type_1,type_0 --group2 type_2 --seed 3 &&
    cmp -s "$W/pair1.csv" "$W/pair2.csv" && ok "group1 vs group2: same on 1 and 2 ranks" ||
    fail "group1 vs group2"
de seed1 1 --seed 5 && ! cmp -s "$W/van1.csv" "$W/seed1.csv" && ok "another seed, other draws" ||
    fail "--seed changes nothing"

# bad input: one error line, exit 1
for args in "--groupby nosuchkey" "--groupby cell_type --group1 type_9" \
    "--groupby cell_type --group2 nope" "--groupby cell_type --mode fast"; do
    if $B de "$W/model.h5" "$W/sim.h5ad" $args --output "$W/bad.csv" >"$W/bad.log" 2>&1; then
        fail "de $args succeeded"
    elif [ "$(grep -c 'atlasvi: error:' "$W/bad.log")" -ne 1 ] || [ -e "$W/bad.csv" ]; then
        fail "de $args: not one error line, or a file was left"; cat "$W/bad.log"
    else
        ok "de $args: $(cat "$W/bad.log")"
    fi
done

# atlasvi posterior: the same scalars on 1 and 2 ranks, predictive layers written
P="posterior $W/model.h5 $W/sim.h5ad --elbo --reconstruction-error --marginal-ll --n-mc-samples 20"
$B $P >"$W/post1.json" 2>"$W/post1.log" && $MPI -n 2 $B $P >"$W/post2.json" 2>"$W/post2.log" &&
    ok "posterior: $(cat "$W/post1.json")" || fail "posterior"
cmp -s "$W/post1.json" "$W/post2.json" && ok "posterior: same JSON on 1 and 2 ranks" ||
    fail "posterior: $(cat "$W/post1.json") vs $(cat "$W/post2.json")"
$MPI -n 2 $B posterior "$W/model.h5" "$W/sim.h5ad" --posterior-predictive 2 \
    --output "$W/pp.h5ad" >"$W/pp.log" 2>&1 && ok "posterior predictive, 2 ranks" ||
    { fail "posterior predictive"; cat "$W/pp.log"; }
$B posterior "$W/model.h5" "$W/sim.h5ad" >"$W/bad.log" 2>&1 && fail "posterior with nothing to do" ||
    ok "posterior without a quantity: $(cat "$W/bad.log")"

if "$AV_PY" -c "import pandas" 2>/dev/null; then
    "$AV_PY" - "$W/post1.json" "$W/sim.h5ad" "$W/pp.h5ad" <<'PY' && ok "posterior values" || fail "posterior values"
import json, sys
import numpy as np
r = json.load(open(sys.argv[1]))
assert r["n_cells"] == 1500, r
assert r["reconstruction_loss"] > 0 and r["elbo"] < -r["reconstruction_loss"], r
assert r["elbo"] <= r["marginal_ll"] < 0, r  # IS estimate above the ELBO
try:
    import anndata as ad
except ImportError:
    sys.exit(0)
x = np.asarray(ad.read_h5ad(sys.argv[2]).X.todense())
p = ad.read_h5ad(sys.argv[3])
a, b = p.layers["posterior_predictive_0"], p.layers["posterior_predictive_1"]
assert a.shape == x.shape and (a == np.round(a)).all() and (a >= 0).all()
assert (a != b).any()
assert abs(a.mean() / x.mean() - 1) < 0.25, (a.mean(), x.mean())
assert np.corrcoef(np.log1p(a.mean(0)), np.log1p(x.mean(0)))[0, 1] > 0.95
PY
fi

if "$AV_PY" -c "import pandas" 2>/dev/null; then
    "$AV_PY" "$AV_SRC/tests/de_check.py" "$W/van1.csv" vanilla 3 200 &&
        ok "vanilla table: columns, order, markers" || fail "vanilla table checks"
    "$AV_PY" "$AV_SRC/tests/de_check.py" "$W/chg1.csv" change 3 200 0.5,0.9 &&
        ok "change table: columns, order, FDR, markers" || fail "change table checks"
    "$AV_PY" "$AV_SRC/tests/de_check.py" "$W/pair1.csv" change-pair 2 200 &&
        ok "group1 vs group2 table" || fail "group1 vs group2 table checks"
else
    echo "skip table checks: no pandas in $AV_PY"
fi
[ "$FAILS" -eq 0 ] && { echo "all passed"; exit 0; }
echo "$FAILS failure(s)"
exit 1
