#!/usr/bin/env bash
# The stuck-rank watchdog: a rank stopped with SIGSTOP (as a hung file system, a swapping node
# or a stuck NIC would) ends the job within --step-timeout with exit 5 and a message naming
# the stopped rank, at 2 and 3 ranks; nothing of the job is left; the newest checkpoint is
# valid and --resume auto continues from it to the same weights as a run never stopped.
source "$(dirname "$0")/lib.sh"
cd "$WORK"

"$DPTRAIN" synth blobs --features 32 --classes 4 --n-train 6000 --n-test 200 --out blobs.h5 >/dev/null
# Effectively endless (1000 epochs): the run is certainly still going when a rank is stopped.
RUN=(--data blobs.h5 --layers 32,64,4 --lr 0.02 --momentum 0.9 --batch 64 --epochs 1000
     --seed 1 --threads 1 --checkpoint-every 50 --checkpoint-epochs 0 --quiet --step-timeout 3)
LIMIT=3

newest_step() { # the step of the newest checkpoint in DIR (0 if none)
    local f
    f=$(ls "$1/checkpoints/" 2>/dev/null | grep -E '^ckpt-[0-9]+\.h5$' | sort | tail -1)
    [ -n "$f" ] && echo $((10#$(sed -E 's/ckpt-0*([0-9]+)\.h5/\1/' <<<"$f"))) || echo 0
}

for np in 2 3; do
    out=stuck$np
    timeout -k 5 120 "${MPIRUN[@]}" -np "$np" "$DPTRAIN" train "${RUN[@]}" --out "$out" \
        >"$out.log" 2>&1 &
    job=$!
    for _ in $(seq 600); do # 60 s at most for the first checkpoint
        [ "$(newest_step "$out")" -ge 50 ] && break
        sleep 0.1
    done
    mpirun_pid=$(pgrep -P "$job")
    ranks=$(pgrep -P "$mpirun_pid" | tr '\n' ' ')
    victim=$(awk '{ print $NF }' <<<"$ranks")
    if [ "$(newest_step "$out")" -lt 50 ] || [ "$(wc -w <<<"$ranks")" != "$np" ]; then
        fail "$np ranks: the run did not start (ranks: $ranks)"; tail -5 "$out.log" >&2
        kill -9 "$job" 2>/dev/null; wait "$job" 2>/dev/null; continue
    fi
    t0=$(date +%s.%N)
    kill -STOP "$victim"
    rc=0
    wait "$job" || rc=$?
    took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    # The job ends within the limit plus the watchdog's polling (a tenth of the limit) and
    # mpirun's teardown: 10 s of slack on a loaded 2-core machine.
    if [ "$rc" = 5 ] && awk -v t="$took" -v l="$LIMIT" 'BEGIN { exit !(t >= l && t < l + 10) }' &&
       grep -Eq "watchdog: it waits for rank [0-9]+ \(pid $victim, this node\), which is stopped" "$out.log" &&
       grep -Eq "watchdog: waited [0-9.]+ s in an allreduce" "$out.log" &&
       ! grep -q "watchdog: every rank on this node waits too" "$out.log"; then
        pass "$np ranks: a stopped rank (pid $victim) ends the job in $took s (limit $LIMIT s), exit 5, named"
    else
        fail "$np ranks: exit $rc after $took s"; grep -E 'watchdog|error' "$out.log" >&2 || tail -5 "$out.log" >&2
    fi
    gone=no
    for _ in $(seq 100); do
        if ! kill -0 "$victim" 2>/dev/null; then gone=yes; break; fi
        sleep 0.1
    done
    if [ "$gone" = yes ] && [ -z "$(pgrep -P "$mpirun_pid" 2>/dev/null)" ]; then
        pass "$np ranks: no process of the job is left, the stopped one included"
    else
        fail "$np ranks: processes left: $victim $(pgrep -P "$mpirun_pid" 2>/dev/null | tr '\n' ' ')"
        kill -9 "$victim" 2>/dev/null || true
    fi
    # The newest checkpoint is whole, and resuming from it reaches the same weights as a run
    # that was never stopped (both stop at the same later step through the test hook).
    k=$(newest_step "$out")
    target=$((k + 20))
    ck=$(printf '%s/checkpoints/ckpt-%010d.h5' "$out" "$k")
    rc_r=0
    DPTRAIN_TEST_STOP_AT=$target run_np "$np" train "${RUN[@]}" --out "$out" --resume auto \
        >"$out.resume.log" 2>&1 || rc_r=$?
    rc_f=0
    DPTRAIN_TEST_STOP_AT=$target run_np "$np" train "${RUN[@]}" --out "fresh$np" \
        >"fresh$np.log" 2>&1 || rc_f=$?
    a=$(printf '%s/checkpoints/ckpt-%010d.h5' "$out" "$target")
    b=$(printf 'fresh%s/checkpoints/ckpt-%010d.h5' "$np" "$target")
    if "$DPTRAIN" info "$ck" >/dev/null && [ "$rc_r" = 3 ] && [ "$rc_f" = 3 ] &&
       "$DPTRAIN" compare "$a" "$b" --atol 0 --rtol 0 >/dev/null; then
        pass "$np ranks: checkpoint of step $k valid; --resume auto continues to step $target bit-identical to a run never stopped"
    else
        fail "$np ranks: after the watchdog: checkpoint $ck, resume exit $rc_r, fresh exit $rc_f"
        tail -3 "$out.resume.log" >&2
    fi
done

# A rank killed with kill -9: mpirun ends the others with SIGTERM, and they say which rank was
# lost (from the watchdog's table of the node's ranks). The ranks are held at step 30 by the
# test hook, so all three are certainly alive when rank 1 is killed.
DPTRAIN_TEST_HOLD_AT=30 timeout -k 5 120 "${MPIRUN[@]}" -np 3 "$DPTRAIN" train "${RUN[@]}" \
    --out killed >killed.log 2>&1 &
job=$!
if held=$(held_pids killed.log 3); then
    victim=$(sed -nE 's/.*rank 1 \(pid ([0-9]+)\) holding.*/\1/p' killed.log)
    kill -9 "$victim"
    rc=0
    wait "$job" || rc=$?
    if [ "$rc" != 0 ] && [ "$rc" != 124 ] &&
       grep -Eq "dptrain: rank [02]: rank 1 \(pid $victim, this node\) is gone: it was killed or crashed" killed.log; then
        pass "kill -9 of rank 1: the surviving ranks name it (pid $victim), the job ends (exit $rc)"
    else
        fail "kill -9 of rank 1: exit $rc"; grep -v '^$' killed.log | tail -8 >&2
    fi
else
    fail "kill -9 of a rank: the ranks never reached the hold"; kill -9 "$job" 2>/dev/null; wait "$job" 2>/dev/null
fi

# No spurious stop: a healthy run under a 3 s limit ends normally (3 epochs, 282 steps with
# checkpoints and evaluations between them; the final line is printed even with --quiet).
expect_exit 0 "a healthy run with --step-timeout 3 is not stopped" "^done: 3 epochs" -- \
    run_np 2 train "${RUN[@]}" --epochs 3 --out healthy
expect_exit 2 "--step-timeout must be a number of seconds, auto or 0" "--step-timeout" -- \
    run_np 1 train "${RUN[@]}" --step-timeout soon --out bad
finish
