# resume.sh: checkpoints and exact resume. A run stopped in the middle of an epoch and
# resumed must end with the same weights, optimizer state and metrics log as the run that
# never stopped (bit for bit at the same number of ranks; within float tolerance at another
# number); a kill -9 during a checkpoint write must leave the previous checkpoint usable;
# SIGTERM/SIGUSR1 must stop every rank with a checkpoint and exit 3; a checkpoint of another
# model, dataset or configuration, a damaged one and a future format are refused.
source "$(dirname "$0")/lib.sh"
cd "$WORK"

"$DPTRAIN" synth spirals --out sp.h5 --n-train 600 --n-test 100 --seed 5 >/dev/null
"$DPTRAIN" synth spirals --out other.h5 --n-train 600 --n-test 100 --seed 6 >/dev/null
# Momentum SGD and Adam; dropout, batch norm, a warmup + cosine schedule, reduce-on-plateau,
# a validation split with early stopping (patience long enough not to end the run).
# 540 training rows, batch 50: 11 batches per epoch, the last one partial (40 rows).
SGD=(--data sp.h5 --layers 2,32:dropout=0.2:bn,32:tanh,2 --lr 0.05 --momentum 0.9 --nesterov
     --batch 50 --epochs 5 --seed 3 --warmup-steps 6 --val-fraction 0.1 --patience 20
     --plateau-factor 0.5 --plateau-patience 1)
ADAM=(--data sp.h5 --layers 2,32:dropout=0.1,32,2 --optimizer adam --lr 0.01 --batch 50
      --epochs 5 --seed 4 --lr-schedule step --step-size 2 --gamma 0.5 --accumulate 2)

# strip_timing FILE: the metrics log without its timings (the only fields a resumed run
# cannot repeat).
strip_timing() { sed -E 's/,"samples_per_s":[^,}]*//; s/,"seconds":[^,}]*//' "$1"; }

# same_state A B: the optimizer slots, step, epoch and loss sum of two checkpoints are
# identical; each dump must hold data (so that two failed dumps cannot compare equal).
dump_data() { # FILE h5dump-args...: the DATA lines of an h5dump, or failure if there are none
    local f=$1 out; shift
    out=$(h5dump "$@" "$f" | grep -A1000000 DATA) && [ -n "$out" ] && echo "$out"
}
same_state() {
    local a=$1 b=$2 slot n=0 da db
    for slot in $(h5ls "$a/state/optimizer" | awk '{print $1}'); do
        n=$((n + 1))
        da=$(dump_data "$a" -d "/state/optimizer/$slot") && db=$(dump_data "$b" -d "/state/optimizer/$slot") &&
            [ "$da" = "$db" ] || { echo "optimizer slot $slot differs or is missing" >&2; return 1; }
    done
    [ "$n" -ge 1 ] || { echo "no optimizer slot in $a" >&2; return 1; }
    da=$(dump_data "$a" -a /state/step -a /state/epoch -a /state/loss_sum) &&
        db=$(dump_data "$b" -a /state/step -a /state/epoch -a /state/loss_sum) && [ "$da" = "$db" ]
}

newest() { ls "$1"/checkpoints/ckpt-*.h5 | tail -1; }

# --- bitwise resume at the same number of ranks -------------------------------------------
for n in 1 2; do
    for opt in SGD ADAM; do
        declare -n A=$opt
        run_np "$n" train "${A[@]}" --quiet --out "full_${opt}_$n" >/dev/null
        # Step 17 is inside epoch 2 (SGD: 11 steps per epoch; Adam with --accumulate 2: 6).
        rc=0
        DPTRAIN_TEST_STOP_AT=17:1 run_np "$n" train "${A[@]}" --quiet --out "part_${opt}_$n" \
            >"stop_${opt}_$n.log" 2>&1 || rc=$?
        if [ "$rc" != 3 ] || ! grep -q "stopped by a signal at epoch" "stop_${opt}_$n.log"; then
            fail "$opt at $n ranks: stop at step 17: exit $rc, expected 3"; continue
        fi
        ck=$(newest "part_${opt}_$n")
        if [ "$(basename "$ck")" != ckpt-0000000017.h5 ]; then
            fail "$opt at $n ranks: newest checkpoint is $ck, expected step 17"; continue
        fi
        if [ "$(h5dump -a /state/next_batch "$ck" | grep -Eo '\(0\): [0-9]+' | grep -Eo '[0-9]+$')" = 0 ]; then
            fail "$opt at $n ranks: the stop was not inside an epoch"
        fi
        run_np "$n" train "${A[@]}" --quiet --out "part_${opt}_$n" --resume auto >/dev/null
        if "$DPTRAIN" compare "full_${opt}_$n/model.h5" "part_${opt}_$n/model.h5" >/dev/null &&
           same_state "$(newest "full_${opt}_$n")" "$(newest "part_${opt}_$n")" &&
           cmp -s <(strip_timing "full_${opt}_$n/metrics.jsonl") \
                  <(strip_timing "part_${opt}_$n/metrics.jsonl"); then
            pass "$opt at $n ranks: stopped at step 17, resumed: bit-identical weights, optimizer state and metrics log"
        else
            fail "$opt at $n ranks: resumed run differs from the uninterrupted one"
        fi
    done
done
# The check can fail: a run with another seed is not bit-identical.
run_np 2 train "${SGD[@]}" --quiet --seed 9 --out seed9 >/dev/null
if "$DPTRAIN" compare full_SGD_2/model.h5 seed9/model.h5 >/dev/null; then
    fail "negative control: another seed compares equal"
else
    pass "negative control: another seed is noticed"
fi

# --- written at 4 ranks, continued at 2 and 3 -----------------------------------------------
run_np 4 train "${SGD[@]}" --quiet --out full4 >/dev/null
rc=0
DPTRAIN_TEST_STOP_AT=20:3 run_np 4 train "${SGD[@]}" --quiet --out stop4 >/dev/null 2>&1 || rc=$?
[ "$rc" = 3 ] || fail "4 ranks: stop at step 20: exit $rc"
for n in 2 3; do
    mkdir -p "from4_$n" && cp -r stop4/checkpoints "from4_$n/"
    out=$(run_np "$n" train "${SGD[@]}" --out "from4_$n" --resume auto 2>&1)
    if grep -q "written by 4 ranks" <<<"$out" &&
       "$DPTRAIN" compare full4/model.h5 "from4_$n/model.h5" --atol 1e-5 --rtol 1e-4 >/dev/null; then
        pass "checkpoint written at 4 ranks, continued at $n: weights within 1e-5 + 1e-4 rel"
    else
        fail "checkpoint written at 4 ranks, continued at $n: weights differ"
        "$DPTRAIN" compare full4/model.h5 "from4_$n/model.h5" | tail -3 >&2
    fi
done

# --- kill -9 of the whole job while a checkpoint is being written ---------------------------
# Checkpoints every 4 steps; the 3rd write (step 12) pauses half-way; the job is killed.
rm -rf killed
DPTRAIN_TEST_CKPT_PAUSE=3 setsid "${MPIRUN[@]}" -np 2 "$DPTRAIN" train "${SGD[@]}" --quiet \
    --out killed --checkpoint-every 4 >killed.log 2>&1 &
job=$!
paused=no
for _ in $(seq 600); do # 60 s at most; the writer then stays paused for an hour
    if grep -q "pausing inside the write" killed.log 2>/dev/null; then paused=yes; break; fi
    sleep 0.1
done
[ "$paused" = yes ] || fail "kill -9 during a checkpoint write: the write never paused"
# The whole job: mpirun and its ranks, by PID (Open MPI puts each rank in a process group of
# its own, so killing mpirun's group alone would leave them), then wait until all are gone.
ranks=$(pgrep -P "$job" | tr '\n' ' ')
kill -9 "$job" $ranks 2>/dev/null || true
wait "$job" 2>/dev/null || true
for _ in $(seq 100); do
    alive=""
    for p in $ranks; do
        if kill -0 "$p" 2>/dev/null && [ "$(awk '{ print $3 }' /proc/"$p"/stat 2>/dev/null)" != Z ]; then
            alive="$alive $p"
        fi
    done
    [ -z "$alive" ] && break
    sleep 0.1
done
[ -z "$alive" ] || fail "kill -9 of the job: ranks$alive still alive after 10 s"
tmp=$(ls killed/checkpoints/ | grep -c '\.tmp\.' || true)
last=$(newest killed)
if [ "$tmp" -ge 1 ] && [ "$(basename "$last")" = ckpt-0000000008.h5 ] &&
   "$DPTRAIN" info "$last" | grep -Eq "^position: .*step 8(,|$)"; then
    pass "kill -9 during a checkpoint write: half-written file only under a temporary name; step 8 intact"
else
    fail "kill -9 during a checkpoint write: tmp files $tmp, newest $last"
fi
run_np 2 train "${SGD[@]}" --quiet --out killed --checkpoint-every 4 --resume auto >/dev/null
if "$DPTRAIN" compare full_SGD_2/model.h5 killed/model.h5 >/dev/null &&
   [ "$(ls killed/checkpoints/ | grep -c '\.tmp\.' || true)" = 0 ]; then
    pass "after kill -9: --resume auto continues from step 8 to the uninterrupted result; temporary file removed"
else
    fail "after kill -9: resume did not reproduce the uninterrupted run"
fi

# A kill -9 while the final model.h5 was being written leaves model.h5.tmp.<pid> of a dead
# process; running the finished run again with --resume auto writes model.h5 again and
# removes it (a live writer's temporary file would stay).
rm -rf stale && cp -r full_SGD_2 stale && touch stale/model.h5.tmp.999999
run_np 2 train "${SGD[@]}" --quiet --out stale --resume auto >/dev/null
if [ ! -e stale/model.h5.tmp.999999 ] && "$DPTRAIN" compare full_SGD_2/model.h5 stale/model.h5 >/dev/null; then
    pass "--resume auto on a finished run removes a dead writer's model.h5.tmp.<pid>"
else
    fail "stale model.h5.tmp.999999: $(ls stale)"
fi

# --- signals -------------------------------------------------------------------------------
"$DPTRAIN" synth blobs --out big.h5 --n-train 60000 --n-test 100 --features 32 --classes 4 >/dev/null
BIG=(--data big.h5 --layers 32,256,256,4 --lr 0.02 --momentum 0.9 --batch 64 --epochs 3 --seed 1
     --quiet)
run_np 2 train "${BIG[@]}" --out big_full >/dev/null
# signal_run NAME SIGNAL WHO: start a 2-rank run held at step 1200 (inside epoch 2: 938 steps
# an epoch) by the DPTRAIN_TEST_HOLD_AT hook, then send SIGNAL to WHO: the ranks (by the
# PIDs they printed) or mpirun (the child of the timeout wrapper, by parent PID).
signal_run() {
    local name=$1 sig=$2 who=$3 rc=0 pids
    DPTRAIN_TEST_HOLD_AT=1200 timeout -k 5 120 "${MPIRUN[@]}" -np 2 "$DPTRAIN" train "${BIG[@]}" \
        --out "$name" >"$name.log" 2>&1 &
    local job=$!
    if pids=$(held_pids "$name.log" 2); then
        if [ "$who" = ranks ]; then
            kill "-$sig" $pids
        else
            kill "-$sig" "$(pgrep -P "$job")"
        fi
    fi
    wait "$job" || rc=$?
    echo "$rc"
}
rc=$(signal_run sigterm TERM ranks)
ck=$(newest sigterm)
if [ "$rc" = 3 ] && grep -q "stopped by a signal" sigterm.log &&
   [ "$(basename "$ck")" = ckpt-0000001200.h5 ]; then
    pass "SIGTERM to the ranks in epoch 2: exit 3, checkpoint $(basename "$ck") inside the epoch"
else
    fail "SIGTERM to the ranks: exit $rc, newest checkpoint $ck"; tail -5 sigterm.log >&2
fi
run_np 2 train "${BIG[@]}" --out sigterm --resume auto >/dev/null
if "$DPTRAIN" compare big_full/model.h5 sigterm/model.h5 >/dev/null; then
    pass "SIGTERM then --resume auto: bit-identical to the uninterrupted run"
else
    fail "SIGTERM then --resume auto: weights differ from the uninterrupted run"
fi
rc=$(signal_run sigusr1 USR1 mpirun)
if [ "$rc" = 3 ] && grep -q "stopped by a signal" sigusr1.log; then
    pass "SIGUSR1 to mpirun (forwarded to the ranks): exit 3 with a checkpoint"
else
    fail "SIGUSR1 to mpirun: exit $rc"; tail -5 sigusr1.log >&2
fi

# --- refusals -------------------------------------------------------------------------------
ck=part_SGD_2/checkpoints/ckpt-0000000017.h5
[ -e "$ck" ] || ck=$(newest part_SGD_2)
refuse() { # NAME CODE PATTERN ARGS...: a resume from a copy of $ck is refused
    local name=$1 code=$2 pattern=$3; shift 3
    rm -rf "ref_$name" && mkdir -p "ref_$name/checkpoints" && cp "$ck" "ref_$name/checkpoints/"
    expect_exit "$code" "refused: $name" "$pattern" -- run_np 2 train "$@" --quiet --out "ref_$name" --resume auto
}
refuse architecture 2 "model is 2,32:relu:dropout=0.2:bn,32:tanh,2:identity, this run's is 2,64" \
    "${SGD[@]}" --layers 2,64:dropout=0.2:bn,32:tanh,2
refuse dataset 2 "another dataset" "${SGD[@]}" --data other.h5
refuse option 2 "other options: optimizer.lr 0.05 \(now 0.1\)" "${SGD[@]}" --lr 0.1
refuse schedule 2 "schedule.kind \"cosine\" \(now \"constant\"\)" "${SGD[@]}" --lr-schedule constant
expect_exit 2 "refused: a new run into a directory with checkpoints" "already holds checkpoints" \
    -- run_np 2 train "${SGD[@]}" --quiet --out part_SGD_2
cp "$ck" damaged.h5
size=$(stat -c %s damaged.h5)
printf '\xff\xff\xff\xff' | dd of=damaged.h5 bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
expect_exit 1 "refused: damaged checkpoint" "damaged checkpoint: CRC-32" \
    -- run_np 2 train "${SGD[@]}" --quiet --out ref_damaged --resume damaged.h5
head -c $((size - 100)) "$ck" >truncated.h5
expect_exit 1 "refused: truncated checkpoint" "truncated or damaged checkpoint" \
    -- run_np 2 train "${SGD[@]}" --quiet --out ref_trunc --resume truncated.h5
cp "$ck" future.h5
printf 'format_version 9' | dd of=future.h5 bs=1 seek=19 conv=notrunc 2>/dev/null
expect_exit 1 "refused: a future format version" "format version 9; this dptrain reads version 1" \
    -- run_np 2 train "${SGD[@]}" --quiet --out ref_future --resume future.h5
expect_exit 1 "refused: not a checkpoint" "not a dptrain checkpoint" \
    -- run_np 2 train "${SGD[@]}" --quiet --out ref_model --resume full_SGD_2/model.h5
# --resume auto skips a damaged newest checkpoint, uses the one before and keeps the damaged
# one (renamed), deleting nothing.
rm -rf skip && cp -r part_SGD_1 skip && rm -f skip/model.h5
lastck=$(newest skip)
printf '\xff\xff\xff\xff' | dd of="$lastck" bs=1 seek=4000 conv=notrunc 2>/dev/null
out=$(run_np 1 train "${SGD[@]}" --out skip --resume auto 2>&1) || true
if grep -q "skipping a damaged checkpoint" <<<"$out" && [ -e "$lastck.superseded" ] &&
   "$DPTRAIN" compare full_SGD_1/model.h5 skip/model.h5 >/dev/null; then
    pass "--resume auto: damaged newest checkpoint skipped (kept as .superseded), the one before used, same result"
else
    fail "--resume auto with a damaged newest checkpoint"; tail -5 <<<"$out" >&2
fi
finish
