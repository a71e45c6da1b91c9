#!/usr/bin/env bash
# The OpenBLAS kernel choice: dptrain re-executes itself with OPENBLAS_CORETYPE before MPI
# starts (forced here with DPTRAIN_BLAS_CORETYPE, since this CPU may be recognised), the
# banner names the kernels in use, and a user's OPENBLAS_CORETYPE is respected.
source "$(dirname "$0")/lib.sh"

"$DPTRAIN" synth blobs --features 4 --classes 2 --n-train 100 --n-test 20 --out "$WORK/b.h5" >/dev/null
ARGS=(train --data "$WORK/b.h5" --layers 4,8,2 --epochs 1 --batch 20)

expect_exit 0 "re-exec selects the requested kernels under mpirun" \
    "OpenBLAS Sandybridge kernels \(set by dptrain; OpenBLAS had chosen [A-Za-z]+\)" -- \
    env DPTRAIN_BLAS_CORETYPE=Sandybridge "${MPIRUN[@]}" -np 2 "$DPTRAIN" "${ARGS[@]}" --out "$WORK/r1"
expect_exit 0 "a user's OPENBLAS_CORETYPE is respected" "OpenBLAS Prescott kernels," -- \
    env OPENBLAS_CORETYPE=Prescott "${MPIRUN[@]}" -np 2 "$DPTRAIN" "${ARGS[@]}" --out "$WORK/r2"
expect_exit 0 "DPTRAIN_BLAS_CORETYPE=off leaves OpenBLAS's choice" "OpenBLAS [A-Za-z]+ kernels, 1 BLAS" -- \
    env DPTRAIN_BLAS_CORETYPE=off "${MPIRUN[@]}" -np 2 "$DPTRAIN" "${ARGS[@]}" --out "$WORK/r3"
expect_exit 0 "one rank alone gets both cores' threads" "1 rank \(1 on this node\).*, $(nproc) BLAS thread" -- \
    "$DPTRAIN" "${ARGS[@]}" --out "$WORK/r4"
finish
