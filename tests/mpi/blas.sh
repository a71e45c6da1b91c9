#!/usr/bin/env bash
# The OpenBLAS kernel choice: dptrain re-executes itself with OPENBLAS_CORETYPE before MPI
# starts (forced here with DPTRAIN_BLAS_CORETYPE, since this CPU may be recognised), the
# banner names the kernels in use, and a user's OPENBLAS_CORETYPE is respected.
source "$(dirname "$0")/lib.sh"
# Each check sets the kernel choice it tests; launch/test.sh's forced modes do not apply here.
unset DPTRAIN_TEST_REEXEC DPTRAIN_BLAS_CORETYPE

"$DPTRAIN" synth blobs --features 4 --classes 2 --n-train 100 --n-test 20 --out "$WORK/b.h5" >/dev/null
ARGS=(train --data "$WORK/b.h5" --layers 4,8,2 --epochs 1 --batch 20)

# (OPENBLAS_CORETYPE is unset for the forced re-exec: a user's value would be respected, and
# some machines set one for everyone.)
expect_exit 0 "re-exec selects the requested kernels under mpirun" \
    "OpenBLAS Sandybridge kernels \(set by dptrain; OpenBLAS had chosen [A-Za-z]+\)" -- \
    env -u OPENBLAS_CORETYPE DPTRAIN_BLAS_CORETYPE=Sandybridge "${MPIRUN[@]}" -np 2 "$DPTRAIN" "${ARGS[@]}" --out "$WORK/r1"
expect_exit 0 "a user's OPENBLAS_CORETYPE is respected" "OpenBLAS Prescott kernels," -- \
    env OPENBLAS_CORETYPE=Prescott "${MPIRUN[@]}" -np 2 "$DPTRAIN" "${ARGS[@]}" --out "$WORK/r2"
expect_exit 0 "DPTRAIN_BLAS_CORETYPE=off leaves OpenBLAS's choice" "OpenBLAS [A-Za-z]+ kernels, 1 BLAS" -- \
    env DPTRAIN_BLAS_CORETYPE=off "${MPIRUN[@]}" -np 2 "$DPTRAIN" "${ARGS[@]}" --out "$WORK/r3"
expect_exit 0 "one rank alone gets both cores' threads" "1 rank \(1 on this node\).*, $(nproc) BLAS thread" -- \
    "$DPTRAIN" "${ARGS[@]}" --out "$WORK/r4"
# --- after a re-exec every rank keeps its name -----------------------------------------
# The ranks are held at step 3 (DPTRAIN_TEST_HOLD_AT) and print their PIDs; their names in
# /proc/PID/comm (what ps -o comm, top and pgrep show) must be the program's, the re-exec
# must have happened, and SIGTERM to those PIDs stops the run with a checkpoint (exit 3).
# held_name NAME EXPECTED_COMM CMD...: runs CMD (a 2-rank training) held, then checks.
held_name() {
    local name=$1 want=$2 rc=0 pids comms="" ok=yes; shift 2
    DPTRAIN_TEST_HOLD_AT=3 "$@" --out "$WORK/$name" >"$WORK/$name.log" 2>&1 &
    local job=$!
    if ! pids=$(held_pids "$WORK/$name.log" 2); then
        kill -9 "$job" 2>/dev/null; wait "$job" 2>/dev/null
        fail "$name: the ranks never reached the hold"; return
    fi
    for p in $pids; do
        comms="$comms $(cat /proc/"$p"/comm)"
        [ "$(cat /proc/"$p"/comm)" = "$want" ] || ok=no
        [ "$(ps -o comm= -p "$p")" = "$want" ] || ok=no
        pgrep -x "$want" | grep -qx "$p" || ok=no
    done
    kill -TERM $pids
    wait "$job" || rc=$?
    if [ "$ok" = yes ] && [ "$rc" = 3 ] && grep -q "set by dptrain" "$WORK/$name.log" &&
       [ -e "$WORK/$name/checkpoints/ckpt-0000000003.h5" ]; then
        pass "$name: ranks named '$want' (comm:$comms), SIGTERM by PID stops them at step 3 (exit 3)"
    else
        fail "$name: comm:$comms (want $want), exit $rc"; tail -3 "$WORK/$name.log" >&2
    fi
}
ARGS=(train --data "$WORK/b.h5" --layers 4,8,2 --epochs 2 --batch 20)
held_name "re-exec for other kernels" dptrain \
    env -u OPENBLAS_CORETYPE DPTRAIN_BLAS_CORETYPE=Sandybridge "${MPIRUN[@]}" -np 2 "$DPTRAIN" "${ARGS[@]}"
held_name "re-exec forced by the test hook" dptrain \
    env DPTRAIN_TEST_REEXEC=1 "${MPIRUN[@]}" -np 2 "$DPTRAIN" "${ARGS[@]}"
# Started through a link of another name, the ranks keep that name, as without a re-exec.
ln -sf "$DPTRAIN" "$WORK/dpt-link"
held_name "re-exec through a link" dpt-link \
    env DPTRAIN_TEST_REEXEC=1 "${MPIRUN[@]}" -np 2 "$WORK/dpt-link" "${ARGS[@]}"
finish
