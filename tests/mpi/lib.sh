# lib.sh: helpers for the multi-rank tests (sourced). Each test script gets the dptrain
# binary as $1 and a scratch directory as $2, and exits non-zero on the first failure.
set -euo pipefail
DPTRAIN=$(readlink -f "$1")
WORK=$2
rm -rf "$WORK" && mkdir -p "$WORK"
MPIRUN=(mpirun --oversubscribe)
if [ "$(id -u)" = 0 ]; then MPIRUN+=(--allow-run-as-root); fi
# Keep ranks from fighting over 2 cores, and make runs quiet and bounded.
export OMPI_MCA_rmaps_base_oversubscribe=1
N_PASS=0
N_FAIL=0

fail() { echo "FAIL: $*" >&2; N_FAIL=$((N_FAIL + 1)); }
pass() { echo "ok: $*"; N_PASS=$((N_PASS + 1)); }

# run_np N ARGS...: dptrain under mpirun with N ranks, 120 s at most (a hang is a failure).
run_np() {
    local n=$1; shift
    timeout -k 5 120 "${MPIRUN[@]}" -np "$n" "$DPTRAIN" "$@"
}

# expect_exit CODE NAME PATTERN -- COMMAND...: COMMAND exits CODE and its stderr+stdout
# contains PATTERN (extended regex).
expect_exit() {
    local want=$1 name=$2 pattern=$3; shift 4
    local out rc=0
    out=$("$@" 2>&1) || rc=$?
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        fail "$name: timed out (hang?)"; echo "$out" | tail -5 >&2; return
    fi
    if [ "$rc" != "$want" ]; then
        fail "$name: exit $rc, expected $want"; echo "$out" | tail -5 >&2; return
    fi
    if ! grep -Eq -- "$pattern" <<<"$out"; then
        fail "$name: output lacks /$pattern/"; echo "$out" | tail -5 >&2; return
    fi
    if grep -Eq 'core dumped|Segmentation|signal [0-9]+' <<<"$out"; then
        fail "$name: crashed"; echo "$out" | tail -5 >&2; return
    fi
    pass "$name"
}

# held_pids LOG N: waits (60 s at most) until N ranks have said in LOG that they hold at the
# step of DPTRAIN_TEST_HOLD_AT (the run's test hook), then prints their PIDs. Fails at the
# deadline. A run held there is certainly still going when the test signals it.
held_pids() {
    local log=$1 n=$2 deadline=$((SECONDS + 60)) pids
    while [ "$SECONDS" -lt "$deadline" ]; do
        pids=$(sed -nE 's/.*test hook: rank [0-9]+ \(pid ([0-9]+)\) holding at step.*/\1/p' "$log" 2>/dev/null)
        if [ "$(wc -w <<<"$pids")" -ge "$n" ]; then
            echo $pids
            return 0
        fi
        sleep 0.05
    done
    echo "held_pids: $n ranks did not reach the hold in 60 s; $log ends with:" >&2
    tail -5 "$log" >&2
    return 1
}

finish() {
    echo "$N_PASS passed, $N_FAIL failed"
    [ "$N_FAIL" = 0 ]
}
