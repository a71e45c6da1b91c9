#!/usr/bin/env bash
# Dropout and synchronized batch normalization keep the result independent of N (masks
# keyed by row, statistics summed over ranks); all-zero weights show the symmetry failure.
source "$(dirname "$0")/lib.sh"
TOL=(--atol 2e-5 --rtol 2e-4)
"$DPTRAIN" synth blobs --features 8 --classes 3 --n-train 610 --n-test 90 --noise 0.6 --seed 3 \
    --out "$WORK/blobs.h5" >/dev/null
# batch 50: 17/17/16 on 3 ranks, 13/13/12/12 on 4; the last batch has 10 rows.
ARGS=(train --data "$WORK/blobs.h5" --layers 8,16,16,3 --activation relu --batch 50 --epochs 3
      --optimizer sgd --lr 0.05 --momentum 0.9 --seed 11 --quiet)
for n in 1 2 3 4; do
    run_np "$n" "${ARGS[@]}" --dropout 0.2 --batchnorm on --out "$WORK/reg$n" >/dev/null
done
for n in 2 3 4; do
    if out=$("$DPTRAIN" compare "$WORK/reg1/model.h5" "$WORK/reg$n/model.h5" "${TOL[@]}"); then
        pass "np$n = np1 with dropout 0.2 and batch norm (running statistics included)"
    else
        fail "np$n differs from np1 with dropout and batch norm"; echo "$out" >&2
    fi
done
if grep -q bn_running_var <<<"$("$DPTRAIN" compare "$WORK/reg1/model.h5" "$WORK/reg2/model.h5" "${TOL[@]}")"
then pass "batch-norm running statistics are in the model file and compared"
else fail "no batch-norm tensors in the model file"; fi
# Each regularizer changes the result (so the equalities above are not vacuous).
run_np 2 "${ARGS[@]}" --out "$WORK/plain" >/dev/null
run_np 2 "${ARGS[@]}" --dropout 0.2 --out "$WORK/drop" >/dev/null
if "$DPTRAIN" compare "$WORK/plain/model.h5" "$WORK/drop/model.h5" "${TOL[@]}" >/dev/null
then fail "dropout changed nothing"; else pass "dropout changes the trajectory"; fi
# Per-layer settings in the --layers spec are the same model as the options for all layers.
run_np 2 "${ARGS[@]}" --layers 8,16:dropout=0.2:bn,16:dropout=0.2:bn,3 --out "$WORK/spec" >/dev/null
if "$DPTRAIN" compare "$WORK/reg2/model.h5" "$WORK/spec/model.h5" >/dev/null
then pass "--layers 8,16:dropout=0.2:bn,... = --dropout 0.2 --batchnorm on (bit for bit)"
else fail "layer spec tokens differ from the equivalent options"; fi
expect_exit 2 "batch norm with a 1-row last batch" "last batch of each epoch has 1 row" -- \
    run_np 2 train --data "$WORK/blobs.h5" --layers 8,16,3 --batch 3 --batchnorm on --out "$WORK/r"
expect_exit 2 "dropout list of the wrong length" "2 values for 1 hidden layers" -- \
    run_np 2 train --data "$WORK/blobs.h5" --layers 8,16,3 --dropout 0.1,0.2 --out "$WORK/r"

# All-zero initialization: every hidden unit gets the same (zero) gradient, so the weights
# never move and the model predicts from the output bias alone: chance accuracy, no crash.
run_np 2 train --data "$WORK/blobs.h5" --layers 8,16,3 --activation tanh --init zero --epochs 0 \
    --out "$WORK/zero0" --quiet >/dev/null
run_np 2 train --data "$WORK/blobs.h5" --layers 8,16,3 --activation tanh --init zero --epochs 5 \
    --lr 0.1 --out "$WORK/zero" --quiet >/dev/null
moved=$("$DPTRAIN" compare "$WORK/zero0/model.h5" "$WORK/zero/model.h5" | grep -Ec 'weight +max \|a-b\| 0.000e\+00' || true)
acc=$(tail -1 "$WORK/zero/metrics.jsonl" | grep -o '"test_accuracy":[0-9.e+-]*' | cut -d: -f2)
if [ "$moved" = 2 ] && awk -v a="$acc" 'BEGIN{exit !(a < 0.5)}'; then
    pass "zero init: weights stay at zero (symmetry), test accuracy $acc (chance 0.33)"
else
    fail "zero init: $moved weight tensors unchanged, accuracy $acc"
fi
finish
