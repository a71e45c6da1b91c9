#!/usr/bin/env bash
# Every loss through the trainer: regression losses recover y = 2x + 1, binary losses learn
# two blobs, categorical cross-entropy on one-hot rows equals sparse cross-entropy on the
# same labels, and 3 ranks match 1 rank for each (the rmse gradient is rescaled after the
# allreduce, so this checks that too).
source "$(dirname "$0")/lib.sh"
TOL=(--atol 1e-5 --rtol 1e-4)
value() { h5dump -d "$2" -y -w 0 "$1" | awk '/^ *DATA \{/{getline; gsub(/[ ,]/,""); print; exit}'; }
same_np() { # same_np NAME ARGS...: np1 and np3 runs give the same model
    local name=$1; shift
    run_np 1 "$@" --out "$WORK/$name.1" >/dev/null
    run_np 3 "$@" --out "$WORK/$name.3" >/dev/null
    if "$DPTRAIN" compare "$WORK/$name.1/model.h5" "$WORK/$name.3/model.h5" "${TOL[@]}" >/dev/null
    then pass "$name: np3 = np1"; else fail "$name: np3 differs from np1"; fi
}
acc_of() { tail -1 "$1/metrics.jsonl" | grep -o '"test_accuracy":[0-9.e+-]*' | cut -d: -f2; }

"$DPTRAIN" synth line --slope 2 --intercept 1 --noise 0.05 --n-train 500 --seed 5 --out "$WORK/line.h5" >/dev/null
for loss in rmse mae; do
    same_np "$loss" train --data "$WORK/line.h5" --layers 1,1 --loss "$loss" --lr 0.05 \
        --momentum 0.9 --batch 25 --epochs 30 --seed 2 --quiet
    w=$(value "$WORK/$loss.1/model.h5" /layers/0/weight); b=$(value "$WORK/$loss.1/model.h5" /layers/0/bias)
    if awk -v w="$w" -v b="$b" 'BEGIN{exit !((w-2)^2 < 0.05^2 && (b-1)^2 < 0.05^2)}'
    then pass "$loss: slope $w, intercept $b"; else fail "$loss: slope $w, intercept $b (want 2, 1)"; fi
done

"$DPTRAIN" synth blobs --features 4 --classes 2 --noise 0.3 --n-train 600 --n-test 200 --seed 9 --out "$WORK/two.h5" >/dev/null
for loss in binary-cross-entropy binary-cross-entropy-probs; do
    same_np "$loss" train --data "$WORK/two.h5" --layers 4,8,1 --activation tanh --loss "$loss" \
        --lr 0.1 --batch 30 --epochs 10 --seed 2 --quiet
    a=$(acc_of "$WORK/$loss.1")
    if awk -v a="$a" 'BEGIN{exit !(a >= 0.9)}'; then pass "$loss: test accuracy $a"
    else fail "$loss: test accuracy $a < 0.9"; fi
done

# The same points as CSV twice: an integer label column, and one-hot target columns.
awk 'BEGIN{srand(3); for(i=0;i<400;i++){x=rand()*2-1; y=rand()*2-1; c=(x+y>0)?1:(x>y?2:0);
     printf "%d,%.6f,%.6f\n", c, x, y > "/dev/stdout";
     printf "%.6f,%.6f,%d,%d,%d\n", x, y, c==0, c==1, c==2 > "'"$WORK"'/onehot.csv"}}' > "$WORK/labels.csv"
"$DPTRAIN" convert csv --train "$WORK/labels.csv" --label-col 0 --out "$WORK/labels.h5" >/dev/null
"$DPTRAIN" convert csv --train "$WORK/onehot.csv" --targets 3 --out "$WORK/onehot.h5" >/dev/null
COMMON=(--layers 2,8,3 --lr 0.1 --batch 40 --epochs 5 --seed 4 --quiet)
run_np 2 train --data "$WORK/labels.h5" --loss sparse-categorical-cross-entropy "${COMMON[@]}" --out "$WORK/sparse" >/dev/null
run_np 2 train --data "$WORK/onehot.h5" --loss categorical-cross-entropy "${COMMON[@]}" --out "$WORK/cce" >/dev/null
if "$DPTRAIN" compare "$WORK/sparse/model.h5" "$WORK/cce/model.h5" "${TOL[@]}" >/dev/null
then pass "categorical CE on one-hot rows = sparse CE on labels"
else fail "categorical CE on one-hot rows differs from sparse CE"; fi
run_np 2 train --data "$WORK/labels.h5" --loss mse --layers 2,3 --epochs 1 --out "$WORK/x" >/dev/null 2>&1 \
    && fail "mse on integer labels was accepted" || pass "mse on integer labels is refused"
expect_exit 2 "step activation cannot be trained" "gradient is zero almost everywhere" -- \
    run_np 2 train --data "$WORK/two.h5" --layers 4,8,1 --activation step --loss binary-cross-entropy --out "$WORK/x"
finish
