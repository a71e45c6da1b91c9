#!/bin/bash
# shuffle.sh: --shuffle feistel (the default) and fisher-yates (the order of runs from before
# the option). The two orders give different runs; feistel matches across 1, 2 and 3 ranks; a
# config.json without training.shuffle (as older versions wrote it) reruns in Fisher-Yates
# order, bit for bit; a checkpoint of a Fisher-Yates run is refused by a default resume with a
# message naming the option, and resumes with it to the uninterrupted run's weights.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
"$DPTRAIN" synth blobs --n-train 999 --n-test 100 --features 6 --classes 3 --noise 0.7 \
    --out blobs.h5 >/dev/null
A=(--data blobs.h5 --layers 6,16,3 --epochs 3 --batch 50 --lr 0.1 --momentum 0.9 --seed 7
   --val-fraction 0.1 --quiet)

run_np 2 train "${A[@]}" --out feistel2 >/dev/null 2>&1 || fail "feistel, 2 ranks: exit $?"
run_np 2 train "${A[@]}" --shuffle fisher-yates --out fy2 >/dev/null 2>&1 || fail "fisher-yates, 2 ranks: exit $?"
if grep -q '"shuffle":"feistel"' feistel2/config.json && grep -q '"shuffle":"fisher-yates"' fy2/config.json &&
   ! "$DPTRAIN" compare feistel2/model.h5 fy2/model.h5 --atol 1e-4 --rtol 1e-3 >/dev/null; then
    pass "feistel is the default and recorded; the two orders give different runs"
else fail "feistel vs fisher-yates: the same weights, or not recorded"; fi
for n in 1 3; do
    run_np "$n" train "${A[@]}" --out "feistel$n" >/dev/null 2>&1 || fail "feistel, $n ranks: exit $?"
    if "$DPTRAIN" compare "feistel$n/model.h5" feistel2/model.h5 --atol 1e-5 --rtol 1e-4 >/dev/null; then
        pass "feistel: $n ranks match 2 ranks"
    else fail "feistel: $n ranks differ from 2"; fi
done

# A config.json as dptrain wrote it before --shuffle: no training.shuffle.
sed -E 's/,"shuffle":"fisher-yates"//; s/"shuffle":"fisher-yates",//' fy2/config.json >old.json
if grep -q shuffle old.json; then fail "could not strip training.shuffle from config.json"; fi
run_np 2 train --config old.json --out old --quiet >/dev/null 2>&1 || fail "rerun of an old config.json: exit $?"
if "$DPTRAIN" compare old/model.h5 fy2/model.h5 --atol 0 --rtol 0 >/dev/null &&
   grep -q '"shuffle":"fisher-yates"' old/config.json; then
    pass "a config.json without training.shuffle reruns in Fisher-Yates order, bit for bit"
else fail "an old config.json did not rerun as before"; fi

# A Fisher-Yates checkpoint: refused by a default resume (naming --shuffle), resumed with it.
DPTRAIN_TEST_STOP_AT=25:1 run_np 2 train "${A[@]}" --shuffle fisher-yates --out part >/dev/null 2>&1 || true
expect_exit 2 "a default resume of a Fisher-Yates checkpoint is refused, naming --shuffle fisher-yates" \
    'training.shuffle "fisher-yates" \(now "feistel"\).*add --shuffle fisher-yates' -- \
    run_np 2 train "${A[@]}" --resume auto --out part
run_np 2 train "${A[@]}" --shuffle fisher-yates --resume auto --out part >/dev/null 2>&1 || fail "resume with --shuffle fisher-yates: exit $?"
if "$DPTRAIN" compare part/model.h5 fy2/model.h5 --atol 0 --rtol 0 >/dev/null; then
    pass "resumed with --shuffle fisher-yates: the uninterrupted run's weights, bit for bit"
else fail "resumed Fisher-Yates run differs from the uninterrupted one"; fi
expect_exit 2 "--shuffle random is refused with the choices" "feistel or fisher-yates" -- \
    run_np 1 train "${A[@]}" --shuffle random --out bad
finish
