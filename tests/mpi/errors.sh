#!/usr/bin/env bash
# Bad input under mpirun: one clear message naming the file/field, the documented exit
# code on every rank, no hang (120 s limit) and no crash.
source "$(dirname "$0")/lib.sh"

"$DPTRAIN" synth blobs --features 8 --classes 3 --n-train 200 --n-test 50 --out "$WORK/ok.h5" >/dev/null
OK=(--data "$WORK/ok.h5" --layers 8,16,3 --epochs 1 --batch 20 --quiet)

expect_exit 1 "missing data file" "$WORK/nope.h5" -- \
    run_np 2 train --data "$WORK/nope.h5" --layers 8,3 --out "$WORK/r"
out=$(run_np 2 train --data "$WORK/nope.h5" --layers 8,3 --out "$WORK/r" 2>&1 || true)
if [ "$(grep -c 'error:' <<<"$out")" = 1 ]; then pass "one message, not one per rank"
else fail "expected exactly one error line, got: $out"; fi

printf 'this is not HDF5\n' > "$WORK/text.h5"
expect_exit 1 "not an HDF5 file" "text.h5" -- run_np 2 train --data "$WORK/text.h5" --layers 8,3 --out "$WORK/r"
head -c 3000 "$WORK/ok.h5" > "$WORK/truncated.h5"
expect_exit 1 "truncated HDF5 file" "truncated.h5" -- run_np 2 train --data "$WORK/truncated.h5" --layers 8,3 --out "$WORK/r"
mkdir -p "$WORK/a_directory"
expect_exit 1 "a directory given as the checkpoint to resume" "a_directory: is a directory; expected a checkpoint file" -- \
    run_np 2 train "${OK[@]}" --resume "$WORK/a_directory" --out "$WORK/r"
expect_exit 1 "a directory given as the dataset" "a_directory: is a directory; expected a dataset file" -- \
    run_np 2 train --data "$WORK/a_directory" --layers 8,3 --out "$WORK/r"
expect_exit 1 "a directory given as the model to evaluate" "a_directory: is a directory; expected a model file" -- \
    run_np 2 eval --checkpoint "$WORK/a_directory" --data "$WORK/ok.h5"
expect_exit 2 "input size does not match the data" "takes 5 inputs but /train/x has 8 features" -- \
    run_np 2 train --data "$WORK/ok.h5" --layers 5,3 --out "$WORK/r"
expect_exit 2 "output size does not match the classes" "4 outputs but the data has 3 classes" -- \
    run_np 2 train --data "$WORK/ok.h5" --layers 8,4 --out "$WORK/r"
expect_exit 2 "batch smaller than the ranks" "smaller than the number of ranks \(3\)" -- \
    run_np 3 train "${OK[@]}" --batch 2 --out "$WORK/r"
expect_exit 2 "unknown option" "unknown option '--bogus'" -- run_np 2 train "${OK[@]}" --bogus --out "$WORK/r"
expect_exit 2 "bad number" "--lr: 'fast' is not a number" -- run_np 2 train "${OK[@]}" --lr fast --out "$WORK/r"
expect_exit 2 "bad layer spec" "--layers '8,,3'" -- run_np 2 train --data "$WORK/ok.h5" --layers 8,,3 --out "$WORK/r"
expect_exit 2 "a layer too large is called too large" "size 2000000000 is too large: a layer has at most 16777216 units" -- \
    run_np 2 train --data "$WORK/ok.h5" --layers 8,2000000000,3 --out "$WORK/r"
expect_exit 2 "mse on class labels" "needs float targets" -- \
    run_np 2 train "${OK[@]}" --loss mse --out "$WORK/r"
expect_exit 1 "unwritable output directory" "/proc/dptrain-out" -- \
    run_np 2 train "${OK[@]}" --out /proc/dptrain-out
# A rate so high that the second step's loss is already infinite; a merely huge one grows the
# loss without NaN, which the explosion rule stops (more than 100 x the first step's loss).
expect_exit 4 "divergence stops the run" "became (NaN|infinite).*lower --lr" -- \
    run_np 2 train "${OK[@]}" --lr 1e30 --momentum 0 --out "$WORK/diverged"
expect_exit 4 "a loss that explodes without NaN stops the run" \
    "training loss reached [0-9.e+]+ at epoch 1, step [0-9]+ .*more than 100 times its reference.*lower --lr" -- \
    run_np 2 train "${OK[@]}" --lr 50 --momentum 0.9 --out "$WORK/exploded"
if [ -e "$WORK/diverged/model.h5" ]; then fail "a diverged run wrote a model"
else pass "a diverged run writes no model"; fi
expect_exit 0 "train --help lists options with defaults" "adam +lr 0.001 weight-decay 0 beta1 0.9 beta2 0.999" -- "$DPTRAIN" train --help
expect_exit 2 "a hyperparameter of another optimizer" "--beta1 does not apply to --optimizer sgd" -- \
    run_np 2 train "${OK[@]}" --beta1 0.8 --out "$WORK/r"
expect_exit 2 "AMSGrad on SGD" "amsgrad" -- run_np 2 train "${OK[@]}" --amsgrad --out "$WORK/r"
expect_exit 2 "out-of-range beta2" "beta2" -- run_np 2 train "${OK[@]}" --optimizer adam --beta2 1.5 --out "$WORK/r"
expect_exit 2 "bad milestones" "--milestones '3,x'" -- run_np 2 train "${OK[@]}" --lr-schedule multistep --milestones 3,x --out "$WORK/r"
expect_exit 2 "unknown command" "unknown command 'trian'" -- "$DPTRAIN" trian
expect_exit 2 "convert without --out" "--out FILE.h5 is required" -- "$DPTRAIN" convert idx --dir /nonexistent
expect_exit 1 "convert a missing IDX file" "/nonexistent" -- "$DPTRAIN" convert idx --dir /nonexistent --out "$WORK/x.h5"
finish
