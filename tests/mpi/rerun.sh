#!/usr/bin/env bash
# rerun.sh: a run's saved config.json reruns it bit for bit (also at another rank count, and
# with paths that JSON must escape); a new run into a finished run's --out is refused with
# what it holds and the ways forward; --overwrite moves the old run aside; --init-from starts
# a new run from a model's weights and refuses another architecture.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
"$DPTRAIN" synth blobs --features 6 --classes 3 --n-train 600 --n-test 120 --out blobs.h5 >/dev/null
# A directory whose name needs escaping in JSON: quotes, a backslash, non-ASCII.
odd='out "quoted" \ back é'
mkdir -p "$odd"
cp blobs.h5 "$odd/data \"x\".h5"
# (No batch norm with Adam here: a bias before batch norm has a zero gradient up to rounding,
# which Adam scales up to whole steps, so its value would depend on the summation order.)
T=(train --data "$odd/data \"x\".h5" --layers 6,24:tanh,3 --dropout 0.1 --epochs 3 --batch 50
   --optimizer adam --lr 0.01 --amsgrad --lr-schedule multistep --milestones 1,2 --seed 9
   --val-fraction 0.2 --quiet)
run_np 2 "${T[@]}" --out "$odd/first" >/dev/null
if python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); assert c["data"]["path"].endswith("data \"x\".h5")' "$odd/first/config.json"
then pass "config.json is valid JSON with a path holding quotes, a backslash and é"
else fail "config.json: $(head -c 300 "$odd/first/config.json")"; fi
same() { # A B: model files with bit-identical parameters
    "$DPTRAIN" compare "$1" "$2" --atol 0 --rtol 0 >/dev/null
}
run_np 2 train --config "$odd/first/config.json" --out again2 --quiet >/dev/null
if same "$odd/first/model.h5" again2/model.h5 &&
   cmp -s <(grep -o '"train_loss":[^,]*' "$odd/first/metrics.jsonl") <(grep -o '"train_loss":[^,]*' again2/metrics.jsonl)
then pass "--config RUN/config.json reruns the run bit for bit (2 ranks)"
else fail "rerun from config.json differs"; fi
run_np 3 train --config "$odd/first/config.json" --out again3 --quiet >/dev/null
if "$DPTRAIN" compare "$odd/first/model.h5" again3/model.h5 --atol 1e-5 --rtol 1e-4 >/dev/null
then pass "the rerun at 3 ranks equals it up to summation order"
else fail "rerun at 3 ranks"; fi
# The command line overrides the saved config: another seed gives other weights.
run_np 2 train --config "$odd/first/config.json" --seed 10 --out seed10 --quiet >/dev/null
if ! same "$odd/first/model.h5" seed10/model.h5 && grep -q '"seed":10' seed10/config.json
then pass "an option after --config RUN/config.json overrides it"
else fail "--seed over config.json"; fi

# The same command again: refused, saying what the directory holds and the ways forward.
expect_exit 2 "a new run into a finished run's directory" \
    "holds checkpoints of an earlier run \(a finished run: 3 epochs, 30 steps, test loss [0-9.]+, test accuracy [0-9.]+\).*--resume auto.*--init-from.*--overwrite" \
    -- run_np 2 "${T[@]}" --out "$odd/first"
out=$(run_np 2 "${T[@]}" --out "$odd/first" --resume auto 2>&1)
if grep -q "the run is complete (3 epochs, step 30)" <<<"$out" && same "$odd/first/model.h5" again2/model.h5
then pass "--resume auto on a finished run reports it and keeps its weights"
else fail "--resume auto on a finished run: $out"; fi
before=$(find "$odd" -maxdepth 1 -name 'first.old-*' | wc -l)
run_np 2 "${T[@]}" --out "$odd/first" --overwrite --epochs 1 >/dev/null
moved=$(find "$odd" -maxdepth 1 -name 'first.old-*' | head -1)
if [ "$before" = 0 ] && [ -n "$moved" ] && same "$moved/model.h5" again2/model.h5 &&
   [ "$(grep -c . "$odd/first/metrics.jsonl")" = 1 ]
then pass "--overwrite moves the old run aside ($(basename "$moved")) and starts over"
else fail "--overwrite: moved '$moved'"; fi
expect_exit 2 "--overwrite with --resume is refused" "give one of them" \
    -- run_np 1 "${T[@]}" --out x --overwrite --resume auto

# --init-from: a new run from the weights of a model file with the same layers.
run_np 2 "${T[@]}" --epochs 0 --init-from again2/model.h5 --out init0 >/dev/null
if same again2/model.h5 init0/model.h5
then pass "--init-from with 0 epochs keeps the weights exactly"
else fail "--init-from 0 epochs changed the weights"; fi
run_np 2 "${T[@]}" --epochs 2 --lr 0.001 --init-from again2/model.h5 --out tuned >/dev/null
first=$(head -1 tuned/metrics.jsonl | grep -o '"train_loss":[^,]*' | cut -d: -f2)
fresh=$(head -1 again2/metrics.jsonl | grep -o '"train_loss":[^,]*' | cut -d: -f2)
if ! same again2/model.h5 tuned/model.h5 && awk -v a="$first" -v b="$fresh" 'BEGIN { exit !(a < b) }' &&
   grep -q '"init_from":"again2/model.h5"' tuned/config.json
then pass "--init-from fine-tunes: first epoch's loss $first, below a fresh run's $fresh"
else fail "--init-from fine-tuning: $first vs $fresh"; fi
expect_exit 2 "--init-from a model of other layers is refused" \
    "--init-from again2/model.h5: the file's model is 6,24:tanh:dropout=0.1,3:identity, this run's is 6,32:tanh,3:identity" \
    -- run_np 2 train --data blobs.h5 --layers 6,32:tanh,3 --init-from again2/model.h5 --out bad
expect_exit 1 "--init-from a missing file is refused" "nothing.h5" \
    -- run_np 2 train --data blobs.h5 --layers 6,32,3 --init-from nothing.h5 --out bad2
finish
