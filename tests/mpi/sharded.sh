#!/usr/bin/env bash
# sharded.sh: --allreduce sharded (ZeRO-1: reduce-scatter of the gradient, each rank updates
# its slice of the parameters with that slice's optimizer state, allgather of the
# parameters) against the replicated step, under real mpirun at 1 to 4 ranks (oversubscribed):
#   - default mode, SGD with momentum and weight decay, uneven slices: 1 and 2 ranks give the
#     replicated run's bits (a + b is b + a); 3 and 4 ranks agree within 1e-4 (the ring adds
#     in another order than Open MPI's allreduce);
#   - deterministic mode with Adam, clipping and accumulation: 2, 3 and 4 sharded ranks give
#     the 1-rank replicated run's bits: parameters, the optimizer state in the checkpoints
#     (gathered from the slices: the same file) and the metrics log;
#   - a sharded run stopped at step 15 on 4 ranks resumes replicated on 1 rank, and a
#     replicated one stopped on 2 ranks resumes sharded on 3, both to the uninterrupted bits;
#   - slices larger than the ring's pieces, uneven by one float (no hang);
#   - the loss, stop request and divergence still reach every rank (the tail's allreduce);
#   - negative control: with the test hook that skips the gradient's reduction, the sharded
#     run differs from the summed one (the comparisons above would see a missing sum).
source "$(dirname "$0")/lib.sh"
cd "$WORK"
"$DPTRAIN" synth blobs --features 7 --classes 3 --n-train 600 --n-test 150 --out blobs.h5 >/dev/null
# 7-29-13-3: 232 + 390 + 42 = 664 parameters, cut 166 per rank at 4, 222/221/221 at 3.
T=(train --data blobs.h5 --layers 7,29:relu,13:tanh,3 --epochs 3 --batch 50 --seed 5 --quiet
   --checkpoint-epochs 1)
SGD=(--optimizer sgd --lr 0.05 --momentum 0.9 --weight-decay 1e-3)
ADAM=(--optimizer adam --lr 0.01 --clip-norm 0.5 --accumulate 2)
same_model() { "$DPTRAIN" compare "$1" "$2" --atol 0 --rtol 0 >/dev/null; }
close_model() { "$DPTRAIN" compare "$1" "$2" --atol 1e-6 --rtol 1e-4 >/dev/null; }
figures() { sed -E 's/"samples_per_s":[^,}]*//; s/"seconds":[^,}]*//' "$1"; }
last_ckpt() { ls "$1"/checkpoints/ckpt-*.h5 | tail -1; }
same_state() { h5diff -q "$1" "$2" /state/optimizer && h5diff -q "$1" "$2" /layers; }

# Default mode.
for n in 1 2 3 4; do
    run_np "$n" "${T[@]}" "${SGD[@]}" --allreduce blocking --out rep$n >/dev/null
    run_np "$n" "${T[@]}" "${SGD[@]}" --allreduce sharded --out sh$n >/dev/null
done
for n in 1 2; do
    if same_model rep$n/model.h5 sh$n/model.h5 &&
       same_state "$(last_ckpt rep$n)" "$(last_ckpt sh$n)"
    then pass "$n rank(s), SGD momentum: sharded = replicated, parameters and momentum bit for bit"
    else fail "$n rank(s): sharded differs from replicated"; fi
done
for n in 3 4; do
    if close_model sh$n/model.h5 rep$n/model.h5 && close_model sh$n/model.h5 rep1/model.h5
    then pass "$n ranks, SGD momentum: sharded within 1e-4 of replicated at $n ranks and at 1"
    else fail "$n ranks: sharded far from replicated"; fi
done
run_np 3 train --data blobs.h5 --layers 7,3 --epochs 1 --allreduce sharded --out banner >banner.log
if grep -q "gradient sum: MPI_Reduce_scatter.*ZeRO-1" banner.log; then
    pass "the banner names the sharded step"
else fail "banner: $(grep 'gradient sum' banner.log)"; fi

# Deterministic mode: the same bits at every rank count, optimizer state included.
run_np 1 "${T[@]}" "${ADAM[@]}" --deterministic --out det1 >/dev/null
for n in 2 3 4; do
    run_np "$n" "${T[@]}" "${ADAM[@]}" --deterministic --allreduce sharded --out dsh$n >/dev/null
    if same_model det1/model.h5 dsh$n/model.h5 &&
       same_state "$(last_ckpt det1)" "$(last_ckpt dsh$n)" &&
       cmp -s <(figures det1/metrics.jsonl) <(figures dsh$n/metrics.jsonl)
    then pass "deterministic, Adam + clipping + accumulation: $n sharded ranks = 1 replicated rank (parameters, Adam state in the checkpoint, metrics)"
    else fail "deterministic: $n sharded ranks differ from 1 replicated rank"; fi
done

# Resume across the two ways, both directions.
rc=0
DPTRAIN_TEST_STOP_AT=15 run_np 4 "${T[@]}" "${ADAM[@]}" --deterministic --allreduce sharded \
    --out stop41 >/dev/null 2>&1 || rc=$?
out=$(run_np 1 "${T[@]}" "${ADAM[@]}" --deterministic --out stop41 --resume auto 2>&1) || true
if [ "$rc" = 3 ] && [ -e stop41/checkpoints/ckpt-0000000015.h5 ] &&
   same_model det1/model.h5 stop41/model.h5 && same_state "$(last_ckpt det1)" "$(last_ckpt stop41)"
then pass "sharded on 4 ranks stopped at step 15, resumed replicated on 1: the uninterrupted bits"
else fail "resume sharded 4 -> replicated 1 (stop exit $rc): $out"; fi
rc=0
DPTRAIN_TEST_STOP_AT=15 run_np 2 "${T[@]}" "${ADAM[@]}" --deterministic --out stop23 \
    >/dev/null 2>&1 || rc=$?
out=$(run_np 3 "${T[@]}" "${ADAM[@]}" --deterministic --allreduce sharded --out stop23 \
    --resume auto 2>&1) || true
if [ "$rc" = 3 ] && same_model det1/model.h5 stop23/model.h5 &&
   same_state "$(last_ckpt det1)" "$(last_ckpt stop23)"
then pass "replicated on 2 ranks stopped at step 15, resumed sharded on 3: the uninterrupted bits"
else fail "resume replicated 2 -> sharded 3 (stop exit $rc): $out"; fi

# Slices larger than the reduce-scatter's 65,536-float pieces, one float apart: 766-256-1 has
# 196,609 = 3 x 65,536 + 1 parameters, cut 65,537 / 65,536 / 65,536 at 3 ranks, so the first
# slice takes one piece more (each rank must still make as many exchanges: no deadlock).
"$DPTRAIN" synth blobs --features 766 --classes 2 --n-train 300 --n-test 30 --out wide.h5 >/dev/null
W=(train --data wide.h5 --layers 766,256,1 --loss binary-cross-entropy --epochs 1 --batch 50
   --seed 2 --quiet)
run_np 3 "${W[@]}" --out wrep3 >/dev/null
rc=0
run_np 3 "${W[@]}" --allreduce sharded --out wsh3 >/dev/null 2>&1 || rc=$?
if [ "$rc" = 0 ] && close_model wsh3/model.h5 wrep3/model.h5; then
    pass "slices of two pieces and one (65,537 / 65,536 / 65,536 floats): sharded = replicated within 1e-4"
else fail "uneven multi-piece slices: exit $rc (124, or the watchdog's 5: a hang)"; fi

# The tail: a loss that diverges stops every rank with the usual exit code.
expect_exit 4 "sharded, 3 ranks: a diverging loss stops every rank (exit 4)" "diverged" -- \
    run_np 3 "${T[@]}" --optimizer sgd --lr 1e30 --allreduce sharded --out div

# Negative control: without the reduction the sharded step is not the summed one.
DPTRAIN_TEST_FAULT=skip-allreduce run_np 2 "${T[@]}" "${SGD[@]}" --allreduce sharded \
    --out skip2 >/dev/null
if ! close_model skip2/model.h5 sh2/model.h5; then
    pass "negative control: a sharded run whose gradient is not summed differs"
else fail "the skip-allreduce hook went unnoticed in sharded mode"; fi
finish
