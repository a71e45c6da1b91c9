#!/bin/bash
# lr_find.sh: the learning-rate range test. $1: dptrain, $2: a scratch directory, $3: the
# lr_find_ranks binary (tests/mpi/lr_find_ranks.c: the library call at 1, 2 and 3 ranks on a
# linear regression whose stable range it computes). Then dptrain lr-find itself: the CSV and
# the printed suggestion agree, 1 and 2 ranks give the same bits in deterministic mode and
# the same suggestion by default, training at the suggested rate learns where the first
# rate of the test does not, SIGTERM ends it with the points so far (exit 3), a loss that
# never falls gives no suggestion (exit 1), and bad options are refused (exit 2).
source "$(dirname "$0")/lib.sh"
RANKS_BIN=$(readlink -f "$3")
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$WORK"

# --- the library at 1, 2 and 3 ranks ---------------------------------------------------------
rc=0
timeout -k 5 300 "${MPIRUN[@]}" -np 3 "$RANKS_BIN" "$WORK" >ranks.log 2>&1 || rc=$?
cat ranks.log
n_ok=$(grep -c '^ok:' ranks.log || true)
if [ "$rc" = 0 ] && [ "$n_ok" = 11 ] && grep -q '^lr_find_ranks: all passed$' ranks.log; then
    pass "lr_find_ranks under mpirun -np 3: $n_ok checks"
else
    fail "lr_find_ranks: exit $rc, $n_ok of 11 checks passed"
fi

# --- dptrain lr-find -------------------------------------------------------------------------
"$DPTRAIN" synth blobs --n-train 1200 --n-test 300 --features 8 --classes 4 --noise 0.5 \
    --out blobs.h5 >/dev/null
"$REPO/launch/setup.sh" gnuplot-nox >/dev/null 2>&1 || true
RUN=(--data blobs.h5 --layers 8,32,4 --batch 64 --optimizer sgd --momentum 0.9 --seed 4)
# suggested FILE: the rate of the "suggested --lr X" line.
suggested() { sed -nE 's/^suggested --lr ([^ ]+) .*/\1/p' "$1"; }

run_np 1 lr-find "${RUN[@]}" --deterministic --out det1 >det1.log 2>&1 || fail "lr-find, 1 rank: exit $?"
run_np 2 lr-find "${RUN[@]}" --deterministic --out det2 >det2.log 2>&1 || fail "lr-find, 2 ranks: exit $?"
n_lines=$(wc -l <det1/lr_find.csv)
step=$(sed -nE 's/^suggested --lr [^ ]+ \(.*step ([0-9]+)\)$/\1/p' det1.log)
lr_at=$(awk -F, -v s="$step" 'NR > 1 && $1 == s { printf "%.3g", $2 }' det1/lr_find.csv)
if [ "$(head -1 det1/lr_find.csv)" = "step,lr,loss,smoothed" ] && [ "$n_lines" -ge 20 ] &&
   [ "$n_lines" -le 201 ] && [ -n "$step" ] && [ "$lr_at" = "$(suggested det1.log)" ] &&
   awk -F, 'NR == 2 { exit !($2 > 0.99e-7 && $2 < 1.01e-7) }' det1/lr_find.csv; then
    pass "lr-find: CSV (header, $((n_lines - 1)) points from 1e-7); the suggestion $(suggested det1.log) is the CSV's rate at step $step"
else
    fail "lr-find: CSV or suggestion: $n_lines lines, step '$step', CSV rate '$lr_at', printed '$(suggested det1.log)'"
    tail -5 det1.log >&2
fi
if cmp -s det1/lr_find.csv det2/lr_find.csv && [ "$(suggested det1.log)" = "$(suggested det2.log)" ]; then
    pass "lr-find --deterministic: 2 ranks write 1 rank's CSV byte for byte"
else
    fail "lr-find --deterministic: 1 and 2 ranks differ"; diff det1/lr_find.csv det2/lr_find.csv | head -5 >&2
fi
run_np 1 lr-find "${RUN[@]}" --out np1 >np1.log 2>&1 || fail "lr-find default mode, 1 rank: exit $?"
run_np 2 lr-find "${RUN[@]}" --out np2 >np2.log 2>&1 || fail "lr-find default mode, 2 ranks: exit $?"
if [ -n "$(suggested np1.log)" ] && [ "$(suggested np1.log)" = "$(suggested np2.log)" ]; then
    pass "lr-find: 1 and 2 ranks suggest the same rate ($(suggested np1.log))"
else
    fail "lr-find: 1 rank suggests '$(suggested np1.log)', 2 ranks '$(suggested np2.log)'"
fi
if command -v gnuplot >/dev/null; then
    magic=$(od -An -tx1 -N8 det1/lr_find.png 2>/dev/null | tr -d ' \n' || true)
    if [ "$magic" = 89504e470d0a1a0a ] && grep -q "picture: det1/lr_find.png" det1.log &&
       ! ls "${TMPDIR:-/tmp}" | grep -q '^dptrain-lrfind\.'; then
        pass "lr-find: the picture is a PNG; no temporary files left"
    else fail "lr-find: no PNG (magic '$magic')"; fi
else
    echo "skip: gnuplot cannot be had: no picture check"
fi

# Training at the suggested rate learns; at the test's first rate (1e-7) it does not.
lr=$(suggested det1.log)
run_np 2 train "${RUN[@]}" --epochs 3 --lr "$lr" --out at_sugg --quiet >at_sugg.log 2>&1 || true
run_np 2 train "${RUN[@]}" --epochs 3 --lr 1e-7 --out at_min --quiet >at_min.log 2>&1 || true
acc() { sed -nE 's/.*"test_accuracy":([0-9.eE+-]+).*/\1/p' "$1/metrics.jsonl" | tail -1; }
if awk -v a="$(acc at_sugg)" -v b="$(acc at_min)" 'BEGIN { exit !(a >= 0.9 && b < 0.6) }'; then
    pass "3 epochs at the suggested rate $lr: test accuracy $(acc at_sugg); at 1e-7: $(acc at_min)"
else
    fail "at the suggested rate $lr: accuracy '$(acc at_sugg)'; at 1e-7: '$(acc at_min)'"
fi

# SIGTERM (the run held at step 5 by the test hook, signalled by PID): exit 3, 5 points.
rc=0
DPTRAIN_TEST_HOLD_AT=5 timeout -k 5 120 "${MPIRUN[@]}" -np 2 "$DPTRAIN" lr-find "${RUN[@]}" \
    --out termed >termed.log 2>&1 &
job=$!
if pids=$(held_pids termed.log 2); then
    kill -TERM $pids
fi
wait "$job" || rc=$?
if [ "$rc" = 3 ] && [ "$(wc -l <termed/lr_find.csv)" = 6 ] && grep -q "stopped by a signal" termed.log &&
   [ "$(head -6 termed/lr_find.csv)" = "$(head -6 np2/lr_find.csv)" ]; then
    pass "lr-find: SIGTERM at step 5: exit 3, the 5 points written (those of the whole test)"
else
    fail "lr-find after SIGTERM: exit $rc, $(wc -l <termed/lr_find.csv 2>/dev/null) CSV lines"; tail -3 termed.log >&2
fi

# A loss that never falls (every rate far too high): no suggestion, exit 1.
expect_exit 1 "lr-find: rates that only diverge give no suggestion" "no suggestion" -- \
    run_np 1 lr-find "${RUN[@]}" --lr-min 50 --lr-max 1e4 --steps 30 --out high --no-plot

# The run's --lr is not used, and says so.
expect_exit 0 "lr-find: a --lr is named as not used" "--lr 0.3 is not used" -- \
    run_np 1 lr-find "${RUN[@]}" --lr 0.3 --steps 60 --out withlr --no-plot

# Refusals.
expect_exit 2 "lr-find --lr-min 0 refused" "--lr-min" -- \
    run_np 1 lr-find "${RUN[@]}" --lr-min 0 --out bad
expect_exit 2 "lr-find --lr-max below --lr-min refused" "--lr-max 1e-08" -- \
    run_np 1 lr-find "${RUN[@]}" --lr-max 1e-8 --out bad
expect_exit 2 "lr-find --steps 1 refused" "--steps" -- \
    run_np 1 lr-find "${RUN[@]}" --steps 1 --out bad
expect_exit 2 "lr-find --resume refused" "starts from the run's initial weights" -- \
    run_np 1 lr-find "${RUN[@]}" --resume auto --out bad
expect_exit 2 "lr-find without --data refused" "--data FILE is required" -- \
    run_np 2 lr-find --layers 8,4 --out bad
expect_exit 1 "lr-find on a missing file names it" "nosuch.h5" -- \
    run_np 2 lr-find --data nosuch.h5 --layers 8,4 --out bad
[ ! -e bad ] && pass "refused runs write nothing" || fail "a refused run wrote $WORK/bad"
finish
