#!/bin/bash
# split.sh: the library's one job call at 1, 2, 3 and 4 ranks inside one mpirun -np 4, on
# communicators from dp_comm_split, compared with each other; a stop on 2 ranks resumed on 3
# (tests/mpi/split_ranks.c). $1: the split_ranks binary, $2: a scratch directory.
source "$(dirname "$0")/lib.sh"
BIN=$(readlink -f "$1")
rc=0
timeout -k 5 300 "${MPIRUN[@]}" -np 4 "$BIN" "$WORK" >"$WORK/out.log" 2>&1 || rc=$?
cat "$WORK/out.log"
n_ok=$(grep -c '^ok:' "$WORK/out.log" || true)
if [ "$rc" = 0 ] && [ "$n_ok" = 14 ] && grep -q '^split_ranks: all passed$' "$WORK/out.log"; then
    pass "split_ranks under mpirun -np 4: $n_ok checks"
else
    fail "split_ranks: exit $rc, $n_ok of 14 checks passed"
fi
finish
