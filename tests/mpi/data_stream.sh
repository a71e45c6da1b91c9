#!/bin/bash
# data_stream.sh: --data-memory stream. The same weights as the in-memory modes at the same N,
# bit for bit (1, 2 and 3 ranks; with a validation split, batch norm and dropout; in the old
# Fisher-Yates order; in deterministic mode, where 1 and 3 ranks agree too), and across N; a
# resume may switch modes; a rank's private memory stays far below the dataset's size; under
# an address-space limit smaller than the file, replicate is refused up front, auto picks
# stream and trains to the weights of an unlimited run; a chunked file is refused by name; a
# file truncated while a run is held at a step stops every rank with a message naming it.
source "$(dirname "$0")/lib.sh"
cd "$WORK"

# 200 000 rows x 64 float features: 51 MB of x.
"$DPTRAIN" synth blobs --n-train 200000 --n-test 2000 --features 64 --classes 4 --noise 0.8 \
    --out d.h5 >/dev/null
MB=$(( $(stat -c %s d.h5) / 1000000 ))
L=(--data d.h5 --layers 64,32,4 --epochs 2 --batch 2000 --lr 0.05 --seed 3 --quiet)

same() { "$DPTRAIN" compare "$1" "$2" --atol 0 --rtol 0 >/dev/null; }

for n in 1 2 3; do
    run_np "$n" train "${L[@]}" --data-memory stream --out "s$n" >/dev/null 2>&1 || fail "$n ranks, stream: exit $?"
    run_np "$n" train "${L[@]}" --data-memory replicate --out "r$n" >/dev/null 2>&1 || fail "$n ranks, replicate: exit $?"
    if same "s$n/model.h5" "r$n/model.h5"; then
        pass "$n rank(s): stream and replicate give the same weights, bit for bit"
    else fail "$n rank(s): stream and replicate differ"; fi
done
run_np 2 train "${L[@]}" --data-memory node --out n2 >/dev/null 2>&1 || fail "2 ranks, node: exit $?"
if same s2/model.h5 n2/model.h5; then pass "2 ranks: stream and node give the same weights"
else fail "2 ranks: stream and node differ"; fi
run_np 4 train "${L[@]}" --data-memory stream --out s4 >/dev/null 2>&1 || fail "4 ranks, stream: exit $?"
if "$DPTRAIN" compare s4/model.h5 s1/model.h5 --atol 1e-5 --rtol 1e-4 >/dev/null; then
    pass "4 ranks in stream mode match 1 rank (atol 1e-5, rtol 1e-4)"
else fail "4 ranks in stream mode differ from 1 rank"; fi

# Validation rows (evaluated from the file), batch norm, dropout; the old order.
V=("${L[@]}" --layers 64,32:relu:bn:dropout=0.2,4 --val-fraction 0.1)
for m in stream replicate; do
    run_np 2 train "${V[@]}" --data-memory "$m" --out "v_$m" >/dev/null 2>&1 || fail "val, $m: exit $?"
    run_np 2 train "${L[@]}" --shuffle fisher-yates --data-memory "$m" --out "fy_$m" >/dev/null 2>&1 || fail "fisher-yates, $m: exit $?"
done
if same v_stream/model.h5 v_replicate/model.h5 &&
   grep -q '"val_loss"' v_stream/metrics.jsonl &&
   [ "$(grep -o '"val_loss":[^,]*' v_stream/metrics.jsonl)" = "$(grep -o '"val_loss":[^,]*' v_replicate/metrics.jsonl)" ]; then
    pass "validation split, batch norm and dropout: stream = replicate (weights and validation losses)"
else fail "validation split, batch norm and dropout: stream and replicate differ"; fi
if same fy_stream/model.h5 fy_replicate/model.h5; then pass "Fisher-Yates order: stream = replicate"
else fail "Fisher-Yates order: stream and replicate differ"; fi

# Deterministic mode: bit for bit across modes and across N.
D=("${L[@]}" --deterministic)
run_np 1 train "${D[@]}" --data-memory replicate --out d1 >/dev/null 2>&1 || fail "deterministic, 1 rank: exit $?"
run_np 3 train "${D[@]}" --data-memory stream --out d3 >/dev/null 2>&1 || fail "deterministic, 3 ranks stream: exit $?"
if same d1/model.h5 d3/model.h5; then pass "deterministic: 3 ranks streaming = 1 rank in memory, bit for bit"
else fail "deterministic: 3 ranks streaming differ from 1 rank in memory"; fi

# A resume may switch modes: stopped at step 150 in stream mode, resumed in replicate mode.
DPTRAIN_TEST_STOP_AT=150:1 run_np 2 train "${L[@]}" --data-memory stream --out sw >/dev/null 2>&1 || true
run_np 2 train "${L[@]}" --data-memory replicate --resume auto --out sw >/dev/null 2>&1 ||
    fail "resume in another mode: exit $?"
if same sw/model.h5 s2/model.h5; then pass "stopped streaming, resumed in memory: the uninterrupted weights"
else fail "a resume from stream mode into replicate mode changed the weights"; fi

# Private memory while held at step 3 of 2 ranks (PIDs from the hold's lines).
DPTRAIN_TEST_HOLD_AT=3 timeout -k 5 120 "${MPIRUN[@]}" -np 2 "$DPTRAIN" train "${L[@]}" \
    --data-memory stream --out held >held.log 2>&1 &
job=$!
rss=""
if pids=$(held_pids held.log 2); then
    for p in $pids; do rss+="$(awk '/^RssAnon:/ { printf "%d ", $2 / 1000 }' "/proc/$p/status")"; done
    kill -TERM $pids
fi
wait "$job" || true
echo "dataset file: $MB MB; stream mode RssAnon per rank (MB): $rss"
if [ -n "${ASAN_OPTIONS:-}" ]; then
    echo "skip: the sanitizer build's own memory: no private-memory check"
elif [ "$(wc -w <<<"$rss")" = 2 ] && awk -v mb="$MB" '{ for (i = 1; i <= NF; i++) if ($i > mb / 2) bad = 1 } END { exit bad }' <<<"$rss"; then
    pass "stream mode: each rank's private memory is below half the dataset ($rss MB of $MB MB)"
else fail "stream mode: private memory per rank '$rss' (dataset $MB MB)"; fi

# Stored in chunks: refused, naming the dataset and the way out.
h5repack -l /train/x:CHUNK=1000x64 d.h5 chunked.h5
expect_exit 1 "a chunked file is refused in stream mode, by name" \
    "/train/x is stored in chunks.*h5repack -l CONTI" -- \
    run_np 2 train "${L[@]}" --data chunked.h5 --data-memory stream --out bad

# A file truncated under a run held at step 3: every rank stops, with the file's name.
cp d.h5 cut.h5
DPTRAIN_TEST_HOLD_AT=3 DPTRAIN_TEST_HOLD_UNTIL="$WORK/go" timeout -k 5 120 "${MPIRUN[@]}" -np 3 \
    "$DPTRAIN" train "${L[@]}" --data cut.h5 --data-memory stream --out cut >cut.log 2>&1 &
job=$!
if held_pids cut.log 3 >/dev/null; then
    truncate -s 100000 cut.h5
fi
touch go
rc=0
wait "$job" || rc=$?
if [ "$rc" != 0 ] && [ "$rc" != 124 ] && [ "$rc" != 137 ] &&
   grep -q "cut.h5: reading .* shorter than its header says" cut.log &&
   ! grep -Eq "Segmentation|core dumped" cut.log; then
    pass "a file truncated mid-run stops all 3 ranks with a message naming it (exit $rc)"
else fail "truncated mid-run: exit $rc"; tail -5 cut.log >&2; fi

# Larger than the address space a rank may use: 150 000 rows x 1024 floats (623 MB) under a
# 500 MB limit per rank (what an OpenBLAS + Open MPI rank needs, with room for the batch).
if [ -n "${ASAN_OPTIONS:-}" ]; then
    echo "skip: the sanitizer reserves terabytes of address space: no address-space limit"
else
    "$DPTRAIN" synth blobs --n-train 150000 --n-test 2000 --features 1024 --classes 4 \
        --noise 0.8 --out big.h5 >/dev/null
    BIG=$(( $(stat -c %s big.h5) / 1000000 ))
    G=(--data big.h5 --layers 1024,8,4 --epochs 1 --batch 500 --lr 0.05 --seed 2)
    LIM=(prlimit --as=500000000)
    expect_exit 1 "replicate of $BIG MB under a 500 MB address-space limit is refused up front" \
        "does not fit the [0-9]+ MB that this process's address-space limit" -- \
        timeout -k 5 120 "${MPIRUN[@]}" -np 2 "${LIM[@]}" "$DPTRAIN" train "${G[@]}" \
        --data-memory replicate --out big_r
    rc=0
    timeout -k 5 180 "${MPIRUN[@]}" -np 2 "${LIM[@]}" "$DPTRAIN" train "${G[@]}" --out big_auto \
        >big_auto.log 2>&1 || rc=$?
    run_np 2 train "${G[@]}" --data-memory replicate --out big_free >/dev/null 2>&1 || fail "unlimited replicate: exit $?"
    if [ "$rc" = 0 ] && grep -q "data memory: stream (auto: the file's $BIG MB exceed half" big_auto.log &&
       same big_auto/model.h5 big_free/model.h5; then
        pass "$BIG MB under a 500 MB limit per rank: auto streams it, to the unlimited run's weights"
    else fail "under the limit: exit $rc"; tail -5 big_auto.log >&2; fi
fi
finish
