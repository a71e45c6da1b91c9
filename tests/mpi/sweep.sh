# sweep.sh: dptrain sweep. Groups partition the ranks (4 ranks in groups of 1 and of 2); the
# table does not depend on how many groups ran it; a trial is bit-identical to its
# configuration trained alone; successive halving keeps exactly the trials its rule names;
# kill -9 and SIGTERM mid-sweep, then a rerun, give the uninterrupted sweep's table and
# model; selection reads the validation split, never the test split; refusals.
source "$(dirname "$0")/lib.sh"
cd "$WORK"

"$DPTRAIN" synth spirals --out sp.h5 --n-train 2000 --n-test 200 --classes 3 --seed 2 >/dev/null
# 8 trials, 9 epochs, rungs at 1, 3, 9 (eta 3): 8 -> 3 -> 1. 25 steps an epoch.
SW=(--data sp.h5 --layers 2,32:relu,3 --val-fraction 0.2 --epochs 9 --batch 64 --seed 3
    --param 'lr=0.3|0.1|0.03|0.01' --param 'optimizer=sgd|adam')

# table FILE: the results table without the seconds column (a time).
table() { cut -d, -f1-6,8- "$1"; }

# --- groups partition the ranks; the table does not depend on the groups ------------------------
run_np 1 sweep "${SW[@]}" --out g1x1 >g1x1.log 2>&1 || fail "1 rank, groups of 1: exit $?"
run_np 4 sweep "${SW[@]}" --out g4x1 >g4x1.log 2>&1 || fail "4 ranks, groups of 1: exit $?"
run_np 4 sweep "${SW[@]}" --group 2 --out g4x2 >g4x2.log 2>&1 || fail "4 ranks, groups of 2: exit $?"
run_np 2 sweep "${SW[@]}" --group 2 --out g2x2 >g2x2.log 2>&1 || fail "2 ranks, groups of 2: exit $?"
# members LOG: the world ranks each group's leader named, one group a line, sorted.
members() { sed -nE 's/^sweep: group ([0-9]+): world ranks (.*)$/\1:\2/p' "$1" | sort -n | tr '\n' ';'; }
if [ "$(members g4x1.log)" = "0:0;1:1;2:2;3:3;" ] && [ "$(members g4x2.log)" = "0:0,1;1:2,3;" ] &&
   [ "$(members g2x2.log)" = "0:0,1;" ]; then
    pass "groups partition the ranks: 4 ranks in 4 groups of 1 and in 2 groups of 2, each rank in one"
else
    fail "groups: '$(members g4x1.log)', '$(members g4x2.log)', '$(members g2x2.log)'"
fi
# Each (trial, rung) job ran exactly once: 8 + 3 + 1 job lines.
jobs() { grep -c "training to epoch" "$1" || true; }
if [ "$(jobs g4x1.log)" = 12 ] && [ "$(jobs g4x2.log)" = 12 ]; then
    pass "each of the 12 jobs (8 + 3 + 1) taken once from the shared queue"
else
    fail "job lines: $(jobs g4x1.log) and $(jobs g4x2.log), expected 12"
fi
if [ -s g1x1/results.csv ] && [ "$(table g1x1/results.csv)" = "$(table g4x1/results.csv)" ] &&
   [ "$(table g2x2/results.csv)" = "$(table g4x2/results.csv)" ]; then
    pass "the table is the same whether 1 or 4 groups ran it (groups of 1 and of 2)"
else
    fail "tables differ across group counts"; diff <(table g1x1/results.csv) <(table g4x1/results.csv) >&2 || true
fi

# --- a trial equals its configuration trained alone, bit for bit ------------------------------
best=$(sed -nE 's/^best: trial ([0-9]+),.*/\1/p' g4x2.log)
t=$(printf %03d "$best")
run_np 2 train --config "g4x2/trials/$t/config.json" --out alone_cfg --quiet >/dev/null
lr=$(sed -nE "s/^1,$best,finished,.*,\"([^\"]*)\",\"([^\"]*)\"$/\1/p" g4x2/results.csv)
opt=$(sed -nE "s/^1,$best,finished,.*,\"([^\"]*)\",\"([^\"]*)\"$/\2/p" g4x2/results.csv)
run_np 2 train --data sp.h5 --layers 2,32:relu,3 --val-fraction 0.2 --epochs 9 --batch 64 \
    --seed 3 --lr "$lr" --optimizer "$opt" --threads 1 --out alone_opts --quiet >/dev/null
if [ -n "$lr" ] && "$DPTRAIN" compare "g4x2/trials/$t/model.h5" alone_cfg/model.h5 --atol 0 --rtol 0 >/dev/null &&
   "$DPTRAIN" compare g4x2/model.h5 alone_opts/model.h5 --atol 0 --rtol 0 >/dev/null &&
   cmp -s <(cut -d, -f1-8 "g4x2/trials/$t/metrics.jsonl") <(cut -d, -f1-8 alone_opts/metrics.jsonl); then
    pass "trial $best (lr $lr, $opt; stopped at rungs 1 and 3, resumed) = the same run alone on 2 ranks, bit for bit"
else
    fail "trial $best differs from its configuration trained alone (lr '$lr', '$opt')"
fi

# --- successive halving stops the trials its rule names -------------------------------------
# val_loss at epoch E of trial T, from its metrics.jsonl.
val_at() { sed -nE "s/^\{\"epoch\":$2,.*\"val_loss\":([^,]*),.*/\1/p" "g1x1/trials/$(printf %03d "$1")/metrics.jsonl"; }
expect1=$(for t in 0 1 2 3 4 5 6 7; do echo "$(val_at $t 1) $t"; done | sort -g -k1,1 -k2,2n | head -3 | awk '{print $2}' | sort -n | tr '\n' ' ')
expect3=$(for t in $expect1; do echo "$(val_at $t 3) $t"; done | sort -g -k1,1 -k2,2n | head -1 | awk '{print $2}')
went3=$(awk -F, 'NR > 1 && $4 >= 3 {print $2}' g1x1/results.csv | sort -n | tr '\n' ' ')
went9=$(awk -F, 'NR > 1 && $4 == 9 {print $2}' g1x1/results.csv)
n_stopped=$(grep -c ',stopped,' g1x1/results.csv || true)
if [ "$went3" = "$expect1" ] && [ "$went9" = "$expect3" ] && [ "$n_stopped" = 7 ]; then
    pass "successive halving: the 3 best of 8 at epoch 1 ($expect1) went on, the best of them ($expect3) finished, 7 stopped"
else
    fail "successive halving: went past epoch 1: '$went3' (expected '$expect1'), finished '$went9' (expected '$expect3'), stopped $n_stopped"
fi

# --- kill -9 and SIGTERM mid-sweep, then a rerun ----------------------------------------------
# The hold (step 60 is in epoch 3) is reached only by rung 2's jobs: rung 1's are done by then.
interrupted() {
    local name=$1 sig=$2 rc=0 pids
    DPTRAIN_TEST_HOLD_AT=60 timeout -k 5 120 "${MPIRUN[@]}" -np 2 "$DPTRAIN" sweep "${SW[@]}" \
        --out "$name" >"$name.log" 2>&1 &
    local job=$!
    if pids=$(held_pids "$name.log" 2); then
        kill "-$sig" $pids
    fi
    wait "$job" || rc=$?
    echo "$rc"
}
rc=$(interrupted killed KILL)
n_rung1=$(ls killed/trials/*/rung-1.json 2>/dev/null | wc -l)
run_np 2 sweep "${SW[@]}" --out killed >killed2.log 2>&1 || fail "rerun after kill -9: exit $?"
if [ "$rc" != 0 ] && [ "$n_rung1" = 8 ] && [ "$(jobs killed2.log)" = 4 ] &&
   grep -q "continuing the sweep" killed2.log &&
   [ "$(table killed/results.csv)" = "$(table g1x1/results.csv)" ] &&
   "$DPTRAIN" compare killed/model.h5 g1x1/model.h5 --atol 0 --rtol 0 >/dev/null; then
    pass "kill -9 in rung 2 (exit $rc), rerun: rung 1's 8 jobs kept, 3 + 1 run; same table and model as uninterrupted"
else
    fail "kill -9 then rerun: exit $rc, rung-1 files $n_rung1, rerun jobs $(jobs killed2.log)"
    diff <(table killed/results.csv) <(table g1x1/results.csv) >&2 || true
fi
rc=$(interrupted termed TERM)
run_np 2 sweep "${SW[@]}" --out termed >termed2.log 2>&1 || fail "rerun after SIGTERM: exit $?"
if [ "$rc" = 3 ] && grep -q "sweep stopped" termed.log &&
   [ "$(table termed/results.csv)" = "$(table g1x1/results.csv)" ] &&
   "$DPTRAIN" compare termed/model.h5 g1x1/model.h5 --atol 0 --rtol 0 >/dev/null; then
    pass "SIGTERM in rung 2: exit 3 with checkpoints; rerun: same table and model as uninterrupted"
else
    fail "SIGTERM then rerun: exit $rc"; tail -3 termed.log >&2
fi

# --- selection reads the validation split, never the test split -----------------------------
# Three Gaussian blobs; the test file's labels are shifted (y+1 mod 3), so the better a model
# is on validation data, the worse it is on the test split: choosing on test data would pick
# another trial.
awk 'BEGIN { srand(7); for (i = 0; i < 1500; i++) { y = i % 3;
       printf "%d,%.5f,%.5f\n", y, 2*cos(2.1*y) + 0.9*(rand()+rand()-1), 2*sin(2.1*y) + 0.9*(rand()+rand()-1) } }' >blobs_train.csv
awk 'BEGIN { srand(8); for (i = 0; i < 300; i++) { y = i % 3;
       printf "%d,%.5f,%.5f\n", (y+1)%3, 2*cos(2.1*y) + 0.9*(rand()+rand()-1), 2*sin(2.1*y) + 0.9*(rand()+rand()-1) } }' >blobs_test.csv
"$DPTRAIN" convert csv --train blobs_train.csv --test blobs_test.csv --out shifted.h5 >/dev/null
run_np 2 sweep --data shifted.h5 --layers 2,16:relu,3 --val-fraction 0.2 --epochs 3 --batch 32 \
    --eta 0 --param 'lr=0.003|0.03|0.3' --out shifted >shifted.log 2>&1 || fail "shifted sweep: exit $?"
last() { tail -1 "shifted/trials/$(printf %03d "$1")/metrics.jsonl" | sed -nE "s/.*\"$2\":([^,}]*).*/\1/p"; }
by_val=$(for t in 0 1 2; do echo "$(last $t val_loss) $t"; done | sort -g | head -1 | awk '{print $2}')
by_test=$(for t in 0 1 2; do echo "$(last $t test_loss) $t"; done | sort -g | head -1 | awk '{print $2}')
chosen=$(sed -nE 's/^best: trial ([0-9]+),.*/\1/p' shifted.log)
if [ -n "$chosen" ] && [ "$by_val" != "$by_test" ] && [ "$chosen" = "$by_val" ] &&
   "$DPTRAIN" compare shifted/model.h5 "shifted/trials/$(printf %03d "$chosen")/model.h5" --atol 0 --rtol 0 >/dev/null; then
    pass "chosen by validation loss: trial $chosen (test loss would pick trial $by_test); its model is the sweep's"
else
    fail "selection: chose '$chosen', best by validation '$by_val', by test '$by_test'"
fi

# --- random search and refusals -------------------------------------------------------------
R=(--data sp.h5 --layers 2,16:relu,3 --val-fraction 0.2 --epochs 1 --batch 64)
run_np 2 sweep "${R[@]}" --trials 5 --param lr=loguniform:1e-3:1e-1 --param 'batch=int:16:64' \
    --out rand >rand.log 2>&1 || fail "random search: exit $?"
lrs=$(awk -F, 'NR > 1 {gsub(/"/, "", $8); print $8}' rand/results.csv)
if [ "$(wc -l <<<"$lrs")" = 5 ] && awk '{ if ($1 < 1e-3 || $1 > 1e-1) bad = 1 } END { exit bad }' <<<"$lrs" &&
   [ "$(sort -u <<<"$lrs" | wc -l)" = 5 ]; then
    pass "random search: 5 trials, every lr drawn inside [1e-3, 1e-1], all different"
else
    fail "random search: lr values '$lrs'"
fi
expect_exit 2 "refused: groups that do not divide the ranks" "do not split into groups of 3" -- \
    run_np 4 sweep "${R[@]}" --group 3 --param 'lr=0.1|0.01' --out bad1
expect_exit 2 "refused: no validation split" "val-fraction" -- \
    run_np 1 sweep --data sp.h5 --layers 2,16:relu,3 --param 'lr=0.1|0.01' --out bad2
expect_exit 2 "refused: a range in a grid" "a grid takes lists" -- \
    run_np 1 sweep "${R[@]}" --search grid --param lr=loguniform:1e-3:1e-1 --out bad3
expect_exit 2 "refused: a fixed option as a parameter" "same for every trial" -- \
    run_np 1 sweep "${R[@]}" --param 'epochs=1|2' --out bad4
expect_exit 2 "refused: a bad value, named" "--param lr=0.1\|fast.*fast" -- \
    run_np 1 sweep "${R[@]}" --param 'lr=0.1|fast' --out bad5
expect_exit 2 "refused: another sweep in the same --out" "holds another sweep" -- \
    run_np 1 sweep "${R[@]}" --param 'lr=0.1|0.02' --out rand
finish
