#!/usr/bin/env bash
# Trainer features: validation hold-out, early stopping, gradient clipping and accumulation
# keep the result independent of N, and each does what it says.
source "$(dirname "$0")/lib.sh"

"$DPTRAIN" synth blobs --features 8 --classes 3 --n-train 610 --n-test 90 --noise 0.6 \
    --seed 3 --out "$WORK/blobs.h5" >/dev/null
BASE=(train --data "$WORK/blobs.h5" --layers 8,16,3 --activation tanh --seed 11 --quiet)
TOL=(--atol 1e-5 --rtol 1e-4)

# 1. All features on: 2, 3 and 4 ranks give the 1-rank parameters.
ALL=("${BASE[@]}" --batch 20 --accumulate 2 --clip-norm 0.5 --val-fraction 0.2 --patience 2
     --epochs 6 --lr 0.1 --momentum 0.9)
for n in 1 2 3 4; do run_np "$n" "${ALL[@]}" --out "$WORK/all$n" >/dev/null; done
for n in 2 3 4; do
    if "$DPTRAIN" compare "$WORK/all1/model.h5" "$WORK/all$n/model.h5" "${TOL[@]}" >/dev/null
    then pass "np$n = np1 with val split, early stopping, clipping and accumulation"
    else fail "np$n differs from np1 with all trainer features on"; fi
done

# 2. --batch 20 --accumulate 2 visits the same 40 rows per step as --batch 40: same weights.
run_np 2 "${BASE[@]}" --batch 20 --accumulate 2 --epochs 3 --lr 0.1 --out "$WORK/acc" >/dev/null
run_np 2 "${BASE[@]}" --batch 40 --epochs 3 --lr 0.1 --out "$WORK/b40" >/dev/null
run_np 2 "${BASE[@]}" --batch 20 --epochs 3 --lr 0.1 --out "$WORK/b20" >/dev/null
if "$DPTRAIN" compare "$WORK/b40/model.h5" "$WORK/acc/model.h5" "${TOL[@]}" >/dev/null
then pass "accumulate 2 x batch 20 = batch 40"; else fail "accumulate 2 x batch 20 != batch 40"; fi
if "$DPTRAIN" compare "$WORK/b20/model.h5" "$WORK/acc/model.h5" "${TOL[@]}" >/dev/null
then fail "accumulation changed nothing (same as batch 20)"; else pass "accumulation is not batch 20"; fi

# 3. Clipping bounds every step: plain SGD moves the weights by at most lr * clip per step.
#    31 steps (610 rows, batch 20) * 0.1 * 0.01 = 0.031, an upper bound on every element.
run_np 2 "${BASE[@]}" --epochs 0 --out "$WORK/init" >/dev/null
run_np 2 "${BASE[@]}" --epochs 1 --batch 20 --lr 0.1 --momentum 0 --lr-schedule constant \
    --clip-norm 0.01 --out "$WORK/clip" >/dev/null
run_np 2 "${BASE[@]}" --epochs 1 --batch 20 --lr 0.1 --momentum 0 --lr-schedule constant \
    --out "$WORK/noclip" >/dev/null
if "$DPTRAIN" compare "$WORK/init/model.h5" "$WORK/clip/model.h5" --atol 0.031 >/dev/null
then pass "clipped steps stay within lr * clip-norm"; else fail "clipped steps moved too far"; fi
if "$DPTRAIN" compare "$WORK/init/model.h5" "$WORK/noclip/model.h5" --atol 0.031 >/dev/null
then fail "the clipping check cannot fail (unclipped run also within bound)"
else pass "unclipped steps exceed the bound (the check can fail)"; fi

# 4. Early stopping keeps the best weights: a large learning rate makes validation loss
#    rise after a few epochs; the run stops and the kept model's validation loss is the
#    best epoch's.
out=$(run_np 2 "${BASE[@]}" --epochs 40 --batch 10 --lr 0.5 --momentum 0.9 \
      --lr-schedule constant --val-fraction 0.3 --patience 3 --out "$WORK/es" 2>&1)
best=$(grep -o 'best validation loss at epoch [0-9]*' <<<"$out" | grep -o '[0-9]*$' || true)
epochs=$(wc -l < "$WORK/es/metrics.jsonl")
if [ -n "$best" ] && [ "$epochs" -lt 40 ] && [ "$epochs" = $((best + 3)) ]; then
    pass "stopped after epoch $epochs, 3 epochs after the best ($best)"
else
    fail "early stopping: best '$best', ran $epochs epochs: $out"
fi
want=$(sed -n "${best:-1}p" "$WORK/es/metrics.jsonl" | grep -o '"val_loss":[0-9.e+-]*' | cut -d: -f2)
got=$(grep -o 'val loss [0-9.]*' <<<"$out" | tail -1 | cut -d' ' -f3)
if awk -v a="$want" -v b="$got" 'BEGIN{exit !(a != "" && (a-b)^2 < 1e-8)}'; then
    pass "kept weights have the best epoch's validation loss ($got)"
else
    fail "kept weights' validation loss $got, best epoch's $want"
fi
# 5. Reduce-on-plateau: at lr 1e-8 the loss cannot improve by the relative 1e-4, so with
#    patience 1 the rate halves after every second epoch without improvement.
run_np 2 "${BASE[@]}" --epochs 6 --batch 50 --lr 1e-8 --momentum 0 --lr-schedule constant \
    --plateau-factor 0.5 --plateau-patience 1 --out "$WORK/plateau" >/dev/null
ratios=$(grep -o '"lr":[0-9.e+-]*' "$WORK/plateau/metrics.jsonl" | cut -d: -f2 |
         awk 'NR==1{b=$1} {printf "%.3g ", $1/b}')
if [ "$ratios" = "1 1 1 0.5 0.5 0.25 " ]; then pass "reduce-on-plateau: lr x $ratios"
else fail "reduce-on-plateau: lr ratios '$ratios', want '1 1 1 0.5 0.5 0.25 '"; fi
# 6. Linear scaling rule: lr x (batch x accumulate) / base.
#    The config records the rule and the rate as given (a rerun from it scales once); the
#    rate used is the scaled one.
run_np 2 "${BASE[@]}" --epochs 1 --batch 40 --accumulate 2 --lr 0.1 --lr-scaling linear:16 \
    --lr-schedule constant --out "$WORK/scaled" >/dev/null
if grep -q '"lr":0.1,' "$WORK/scaled/config.json" && grep -q '"lr_scaling":16' "$WORK/scaled/config.json" &&
   grep -q '"lr":0.5[,}]' "$WORK/scaled/metrics.jsonl"; then pass "linear scaling: 0.1 x 80 / 16 = 0.5"
else fail "linear scaling: $(grep -o '"lr":[^,]*' "$WORK/scaled/metrics.jsonl"), config $(cat "$WORK/scaled/config.json")"; fi
# 7. Full-batch gradient descent (--batch full: one step per epoch over all 610 rows) is
#    rank-invariant; online descent (--batch 1, one rank) runs 610 steps per epoch.
run_np 1 "${BASE[@]}" --batch full --epochs 5 --lr 0.5 --out "$WORK/full1" >/dev/null
run_np 3 "${BASE[@]}" --batch full --epochs 5 --lr 0.5 --out "$WORK/full3" >/dev/null
steps=$(tail -1 "$WORK/full1/metrics.jsonl" | grep -o '"step":[0-9]*' | cut -d: -f2)
if [ "$steps" = 5 ] && "$DPTRAIN" compare "$WORK/full1/model.h5" "$WORK/full3/model.h5" "${TOL[@]}" >/dev/null
then pass "full batch: 5 steps in 5 epochs, np3 = np1"; else fail "full batch: $steps steps, or np3 differs"; fi
run_np 1 "${BASE[@]}" --batch 1 --epochs 1 --lr 0.01 --out "$WORK/online" >/dev/null
steps=$(tail -1 "$WORK/online/metrics.jsonl" | grep -o '"step":[0-9]*' | cut -d: -f2)
if [ "$steps" = 610 ]; then pass "online: 610 steps in one epoch"; else fail "online: $steps steps"; fi
expect_exit 2 "patience without a validation split" "needs --val-fraction" -- \
    run_np 1 "${BASE[@]}" --patience 2 --out "$WORK/r"
# 8. --flush-subnormals is part of the run: recorded in its config, ranks still agree, and a
#    resume must use the same setting (subnormal results differ between the two modes).
run_np 1 "${BASE[@]}" --flush-subnormals --epochs 2 --out "$WORK/ftz1" >/dev/null
run_np 3 "${BASE[@]}" --flush-subnormals --epochs 2 --out "$WORK/ftz3" >/dev/null
if grep -q '"flush_subnormals":true' "$WORK/ftz3/config.json" &&
   "$DPTRAIN" compare "$WORK/ftz1/model.h5" "$WORK/ftz3/model.h5" "${TOL[@]}" >/dev/null
then pass "--flush-subnormals: in the config, np3 = np1"; else fail "--flush-subnormals run"; fi
expect_exit 2 "resume without --flush-subnormals refused" "runtime.flush_subnormals true \(now false\)" -- \
    run_np 2 "${BASE[@]}" --epochs 3 --out "$WORK/ftz3" --resume auto
finish
