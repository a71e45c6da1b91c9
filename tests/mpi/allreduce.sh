#!/usr/bin/env bash
# The gradient sum's two paths give the same training: one blocking MPI_Allreduce after the
# backward pass (default) and the bucketed MPI_Iallreduce overlapped with it (--allreduce
# overlap), at 1 to 4 ranks, with one bucket per layer, one bucket for all, accumulation and
# batch norm (whose statistics are summed while the buckets are in flight).
source "$(dirname "$0")/lib.sh"
TOL=(--atol 1e-5 --rtol 1e-4)
"$DPTRAIN" synth blobs --features 64 --classes 3 --n-train 410 --n-test 60 --noise 0.8 --seed 5 \
    --out "$WORK/blobs.h5" >/dev/null
# 64*256+256 + 256*64+64 + 64*3+3 = 33283 parameters: layers of 65, 64 and 0.8 KiB.
# Batch 50: 17/17/16 on 3 ranks, 13/13/12/12 on 4; the last batch has 10 rows.
ARGS=(train --data "$WORK/blobs.h5" --layers 64,256,64,3 --batch 50 --epochs 3 --lr 0.05
      --momentum 0.9 --seed 11 --checkpoint-epochs 0 --quiet)

same() { # same NAME A B [compare options]: the two models match
    local name=$1 a=$2 b=$3; shift 3
    if out=$("$DPTRAIN" compare "$a/model.h5" "$b/model.h5" "$@"); then
        pass "$name ($(grep -o 'max |a-b| [0-9.e+-]*' <<<"$out" | sort -k3 -g | tail -1))"
    else
        fail "$name"; echo "$out" >&2
    fi
}

run_np 1 "${ARGS[@]}" --out "$WORK/np1" >/dev/null
for n in 2 3 4; do
    run_np "$n" "${ARGS[@]}" --out "$WORK/blk$n" >/dev/null
    run_np "$n" "${ARGS[@]}" --allreduce overlap --bucket-kb 0 --out "$WORK/ovl$n" >/dev/null
    same "np$n blocking = np1" "$WORK/np1" "$WORK/blk$n" "${TOL[@]}"
    same "np$n overlap (3 buckets) = np1" "$WORK/np1" "$WORK/ovl$n" "${TOL[@]}"
done
# Two ranks: both paths compute a + b, so they agree bit for bit.
same "np2 overlap = blocking, bit for bit" "$WORK/blk2" "$WORK/ovl2"
# The run says which path it took.
for mode in blocking overlap; do
    out=$(run_np 2 train --data "$WORK/blobs.h5" --layers 64,256,64,3 --epochs 0 --allreduce "$mode" \
          --out "$WORK/say-$mode" 2>&1)
    want=$([ "$mode" = overlap ] && echo 'MPI_Iallreduce per bucket' || echo 'MPI_Allreduce after')
    grep -q "gradient sum: $want" <<<"$out" && pass "--allreduce $mode says: $want" \
        || fail "--allreduce $mode: $(grep 'gradient sum' <<<"$out")"
done

run_np 3 "${ARGS[@]}" --allreduce overlap --bucket-kb 100000 --out "$WORK/ovl_big" >/dev/null
same "np3 overlap (1 bucket) = np1" "$WORK/np1" "$WORK/ovl_big" "${TOL[@]}"
run_np 1 "${ARGS[@]}" --accumulate 2 --batchnorm on --out "$WORK/acc1" >/dev/null
run_np 4 "${ARGS[@]}" --accumulate 2 --batchnorm on --allreduce overlap --bucket-kb 64 \
    --out "$WORK/acc4" >/dev/null
same "np4 overlap (2 buckets) + accumulate 2 + batch norm = np1" "$WORK/acc1" "$WORK/acc4" \
    --atol 2e-5 --rtol 2e-4

# Negative control: the comparisons above can fail (unsummed gradients on the overlap path).
DPTRAIN_TEST_FAULT=skip-allreduce run_np 2 "${ARGS[@]}" --allreduce overlap --out "$WORK/bad" >/dev/null
if "$DPTRAIN" compare "$WORK/np1/model.h5" "$WORK/bad/model.h5" "${TOL[@]}" >/dev/null; then
    fail "unsummed gradients were not noticed"
else
    pass "negative control: unsummed gradients differ from np1"
fi
expect_exit 2 "unknown --allreduce" "blocking, overlap or sharded" -- \
    run_np 2 "${ARGS[@]}" --allreduce fast --out "$WORK/x"
finish
