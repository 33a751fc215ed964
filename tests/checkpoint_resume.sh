#!/bin/sh
# A run killed with SIGKILL after a checkpoint resumes with --resume and finishes, with
# 1 rank and with a different number of ranks (the model file does not depend on ranks).
# usage: checkpoint_resume.sh ATLASVI DATA_DIR WORKDIR [MPIEXEC...]
set -u
atlasvi=$1 data=$2 work=$3
shift 3
input=$data/starmap_mpfc_3704x158.loom
[ -f "$input" ] || { echo "SKIP: $input not found"; exit 77; }
mkdir -p "$work" && cd "$work" || exit 1
rm -f ck.h5 ck.h5.tmp done.h5
"$atlasvi" train "$input" --batch-key BatchID --max-epochs 400 --model-out ck.h5 \
    --checkpoint-every 2 --no-progress >run.log 2>&1 &
pid=$!
# wait for the first checkpoint, then kill mid-run
i=0
while [ ! -f ck.h5 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.3
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
[ -f ck.h5 ] || { echo "FAIL: no checkpoint written"; exit 1; }
[ ! -f ck.h5.tmp ] || echo "note: a temporary file was left by the killed run (expected when killed mid-write)"
done_epochs=$(h5dump -a /epochs_done ck.h5 2>/dev/null | grep -o '"[0-9]*"' | tr -d '"')
echo "killed after $done_epochs epochs were checkpointed"
[ -n "$done_epochs" ] && [ "$done_epochs" -lt 400 ] || { echo "FAIL: bad epochs_done '$done_epochs'"; exit 1; }
target=$((done_epochs + 3))
"$@" "$atlasvi" train "$input" --resume ck.h5 --max-epochs $target --model-out done.h5 \
    --no-progress --metrics m.jsonl >resume.log 2>&1 || { cat resume.log; echo "FAIL: resume"; exit 1; }
first=$(head -1 m.jsonl | sed 's/.*"epoch": \([0-9]*\).*/\1/')
lines=$(wc -l <m.jsonl)
final=$(h5dump -a /epochs_done done.h5 2>/dev/null | grep -o '"[0-9]*"' | tr -d '"')
echo "resumed at epoch $first, ran $lines epochs, model has $final epochs"
[ "$first" = "$done_epochs" ] && [ "$lines" -eq 3 ] && [ "$final" = "$target" ] || { echo FAIL; exit 1; }
echo PASS
