#!/bin/bash
# data_memory.sh: --data-memory replicate|node|auto. The same weights in both modes at the
# same N (bit for bit) and across N; node mode holds one copy per node: while a 2-rank run is
# held at a step (the test hook, PIDs from its log), each rank's private memory (RssAnon of
# /proc/PID/status) stays far below the dataset's size in node mode and holds it in
# replicate mode; auto picks node with 2 ranks and replicate with 1; a resume may change the
# mode; a missing file and a bad value are refused on every rank together.
source "$(dirname "$0")/lib.sh"
cd "$WORK"

# 200 000 rows x 64 float features: 51 MB of x, enough to see in RSS.
"$DPTRAIN" synth blobs --n-train 200000 --n-test 2000 --features 64 --classes 4 --noise 0.8 \
    --out big.h5 >/dev/null
MB=$(( $(stat -c %s big.h5) / 1000000 ))
L=(--data big.h5 --layers 64,32,4 --epochs 2 --batch 2000 --lr 0.05 --seed 3)
A=("${L[@]}" --quiet)

for m in replicate node; do
    run_np 2 train "${A[@]}" --data-memory "$m" --out "np2_$m" >/dev/null 2>&1 || fail "2 ranks, $m: exit $?"
done
if "$DPTRAIN" compare np2_replicate/model.h5 np2_node/model.h5 --atol 0 --rtol 0 >/dev/null; then
    pass "2 ranks: node and replicate give the same weights, bit for bit"
else fail "2 ranks: node and replicate differ"; fi
run_np 1 train "${A[@]}" --data-memory replicate --out np1 >/dev/null 2>&1 || fail "1 rank: exit $?"
for n in 3 4; do
    run_np "$n" train "${A[@]}" --data-memory node --out "np${n}_node" >/dev/null 2>&1 || fail "$n ranks, node: exit $?"
    if "$DPTRAIN" compare "np${n}_node/model.h5" np1/model.h5 --atol 1e-5 --rtol 1e-4 >/dev/null; then
        pass "$n ranks in node mode match 1 rank (atol 1e-5, rtol 1e-4)"
    else fail "$n ranks in node mode differ from 1 rank"; fi
done

# Private memory while held at step 3 of 2 ranks, read from /proc by PID.
# rss MODE: prints "RssAnon RssShmem" in MB of each rank, one line each.
rss() {
    local m=$1 pids rc=0
    DPTRAIN_TEST_HOLD_AT=3 timeout -k 5 120 "${MPIRUN[@]}" -np 2 "$DPTRAIN" train "${A[@]}" \
        --data-memory "$m" --out "held_$m" >"held_$m.log" 2>&1 &
    local job=$!
    if pids=$(held_pids "held_$m.log" 2); then
        for p in $pids; do
            awk '/^RssAnon:/ { a = $2 } /^RssShmem:/ { s = $2 } END { printf "%d %d\n", a / 1000, s / 1000 }' "/proc/$p/status"
        done
        kill -TERM $pids
    fi
    wait "$job" || rc=$?
    [ "$rc" = 3 ] || echo "exit $rc" >&2
}
node_rss=$(rss node)
repl_rss=$(rss replicate)
echo "dataset file: $MB MB; node mode RssAnon RssShmem per rank (MB): $(echo $node_rss); replicate: $(echo $repl_rss)"
if [ -n "${ASAN_OPTIONS:-}" ]; then
    # AddressSanitizer's own memory (shadow, freed blocks in quarantine) swells RssAnon.
    echo "skip: the sanitizer build's own memory: no private-memory check of node mode"
elif [ "$(wc -l <<<"$node_rss")" = 2 ] && awk -v mb="$MB" '{ if ($1 > mb / 2) bad = 1 } END { exit bad }' <<<"$node_rss"; then
    pass "node mode: each rank's private memory is below half the dataset ($(echo $node_rss | awk '{print $1 "," $3}') of $MB MB)"
else fail "node mode: private memory per rank: '$node_rss' (dataset $MB MB)"; fi
if [ "$(wc -l <<<"$repl_rss")" = 2 ] && awk -v mb="$MB" '{ if ($1 < 0.9 * mb) bad = 1 } END { exit bad }' <<<"$repl_rss"; then
    pass "replicate mode: each rank holds its own copy (the control: RssAnon $(echo $repl_rss | awk '{print $1 "," $3}') MB)"
else fail "replicate mode: private memory per rank: '$repl_rss' (dataset $MB MB)"; fi

# auto: node with 2 ranks on this node, replicate with 1; the banner says which and why.
run_np 2 train "${L[@]}" --epochs 1 --out auto2 >auto2.log 2>&1 || fail "auto, 2 ranks: exit $?"
run_np 1 train "${L[@]}" --epochs 1 --out auto1 >auto1.log 2>&1 || fail "auto, 1 rank: exit $?"
if grep -q "data memory: node (auto: 2 ranks of this job on this node): one copy of" auto2.log &&
   grep -q "data memory: replicate (auto: 1 rank of this job on this node)" auto1.log &&
   grep -q '"data_memory":"auto"' auto2/config.json; then
    pass "auto: node on 2 ranks, replicate on 1, said in the banner; recorded in config.json"
else fail "auto: $(grep 'data memory' auto2.log auto1.log)"; fi

# A resume may change the mode: stopped at step 150 in node mode, resumed in replicate mode,
# it ends where the uninterrupted run did.
DPTRAIN_TEST_STOP_AT=150:1 run_np 2 train "${A[@]}" --data-memory node --out switched >/dev/null 2>&1 || true
run_np 2 train "${A[@]}" --data-memory replicate --resume auto --out switched >/dev/null 2>&1 ||
    fail "resume in another mode: exit $?"
if "$DPTRAIN" compare switched/model.h5 np2_node/model.h5 --atol 0 --rtol 0 >/dev/null; then
    pass "stopped in node mode, resumed in replicate mode: the uninterrupted weights, bit for bit"
else fail "a resume in another mode changed the weights"; fi

expect_exit 1 "node mode: a missing file is named, every rank stops" "nosuch.h5" -- \
    run_np 3 train --data nosuch.h5 --layers 64,4 --data-memory node --out bad
expect_exit 2 "an unknown --data-memory is refused with the choices" "auto, replicate, node or stream" -- \
    run_np 2 train "${A[@]}" --data-memory tape --out bad
finish
