#!/usr/bin/env bash
# Every optimizer through the trainer: its state stays identical on every rank, so 3 ranks
# end with the 1-rank parameters; the loss goes down; the schedule counts epochs in
# optimizer steps (with accumulation too).
source "$(dirname "$0")/lib.sh"
TOL=(--atol 2e-5 --rtol 1e-4)
"$DPTRAIN" synth blobs --features 8 --classes 3 --n-train 300 --n-test 60 --noise 0.6 --seed 3 \
    --out "$WORK/blobs.h5" >/dev/null
BASE=(train --data "$WORK/blobs.h5" --layers 8,16,3 --activation tanh --batch 30 --epochs 3
      --seed 5 --quiet)
loss_of() { sed -n "$2p" "$1/metrics.jsonl" | grep -o '"train_loss":[0-9.e+-]*' | cut -d: -f2; }
for spec in "sgd --lr 0.1 --momentum 0.9 --nesterov" "adagrad --lr-decay 0.01" \
            "rmsprop --centered --momentum 0.5" "adadelta" "adam --amsgrad" "adamw" \
            "nadam" "adamax"; do
    name=${spec%% *}
    read -r -a extra <<<"${spec#$name}"
    run_np 1 "${BASE[@]}" --optimizer $spec --out "$WORK/$name.1" >/dev/null
    run_np 3 "${BASE[@]}" --optimizer $spec --out "$WORK/$name.3" >/dev/null
    if "$DPTRAIN" compare "$WORK/$name.1/model.h5" "$WORK/$name.3/model.h5" "${TOL[@]}" >/dev/null
    then pass "$name: np3 = np1"; else fail "$name: np3 differs from np1"; fi
    a=$(loss_of "$WORK/$name.1" 1); b=$(loss_of "$WORK/$name.1" 3)
    if awk -v a="$a" -v b="$b" 'BEGIN{exit !(b < a)}'; then pass "$name: loss $a -> $b"
    else fail "$name: loss did not go down ($a -> $b)"; fi
done
# Step schedule: lr 0.1 halves every 2 epochs; the metrics record the last step's lr.
# 300 rows / batch 30 = 10 batches; --accumulate 2 makes 5 optimizer steps per epoch.
run_np 2 "${BASE[@]}" --optimizer sgd --lr 0.1 --lr-schedule step --step-size 2 --gamma 0.5 \
    --accumulate 2 --epochs 6 --out "$WORK/step" >/dev/null
got=$(grep -o '"lr":[0-9.e+-]*' "$WORK/step/metrics.jsonl" | cut -d: -f2 | tr '\n' ' ')
steps=$(grep -o '"step":[0-9]*' "$WORK/step/metrics.jsonl" | cut -d: -f2 | tr '\n' ' ')
if [ "$got" = "0.100000001 0.100000001 0.0500000007 0.0500000007 0.0250000004 0.0250000004 " ] &&
   [ "$steps" = "5 10 15 20 25 30 " ]; then
    pass "step schedule per epoch: $got"
else
    fail "step schedule: lr '$got' at steps '$steps'"
fi
finish
