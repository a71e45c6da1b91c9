#!/usr/bin/env bash
# Linear regression y = 2x + 1 with MSE: the single dense unit learns slope and intercept,
# and 3 ranks give the 1-rank parameters.
source "$(dirname "$0")/lib.sh"

"$DPTRAIN" synth line --slope 2 --intercept 1 --noise 0.05 --n-train 500 --n-test 100 \
    --seed 5 --out "$WORK/line.h5" >/dev/null
ARGS=(train --data "$WORK/line.h5" --layers 1,1 --loss mse --lr 0.1 --momentum 0
      --lr-schedule constant --batch 25 --epochs 30 --seed 2 --quiet)
run_np 1 "${ARGS[@]}" --out "$WORK/np1" >/dev/null
run_np 3 "${ARGS[@]}" --out "$WORK/np3" >/dev/null

value() { h5dump -d "$2" -y -w 0 "$1" | awk '/^ *DATA \{/{getline; gsub(/[ ,]/,""); print; exit}'; }
w=$(value "$WORK/np1/model.h5" /layers/0/weight)
b=$(value "$WORK/np1/model.h5" /layers/0/bias)
if awk -v w="$w" -v b="$b" 'BEGIN{exit !((w-2)^2 < 0.02^2 && (b-1)^2 < 0.02^2)}'; then
    pass "learned slope $w and intercept $b (want 2 and 1, within 0.02)"
else
    fail "learned slope $w and intercept $b, want 2 and 1"
fi
if "$DPTRAIN" compare "$WORK/np1/model.h5" "$WORK/np3/model.h5" --atol 1e-5 --rtol 1e-5 >/dev/null; then
    pass "np3 matches np1"
else
    fail "np3 differs from np1"
fi
# The final MSE is near the noise variance (0.05^2 = 0.0025).
loss=$(tail -1 "$WORK/np1/metrics.jsonl" | grep -o '"test_loss":[0-9.e+-]*' | cut -d: -f2)
if awk -v l="$loss" 'BEGIN{exit !(l < 0.004)}'; then pass "test MSE $loss < 0.004"
else fail "test MSE $loss, want < 0.004"; fi
finish
