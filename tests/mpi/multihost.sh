#!/usr/bin/env bash
# Multi-host on one machine: launch/multihost.sh check trains across 2 network namespaces
# ("hosts" joined by a bridge, Open MPI over TCP, also under a 1 Gbit/s limit) and must match
# 1 host with 2 ranks bit for bit and 1 rank within tolerance; an unsummed gradient and
# another seed must be caught. The script must remove every namespace (and so every veth and
# the bridge) after success, failure and SIGTERM, and leftovers of a crashed run at start.
# Needs root and working `ip netns`: otherwise skipped (exit 77).
source "$(dirname "$0")/lib.sh"
MH=$(cd "$(dirname "$0")/../.." && pwd)/launch/multihost.sh
# Names of its own (dpttest-sw, dpttest-h0, ...), so a manual run (prefix dpt) is not touched.
PREFIX=dpttest
MHARGS=(--prefix "$PREFIX" --dptrain "$DPTRAIN" --timeout 60)

# ---- skip when namespaces, bridges or veths cannot be made here --------------------------------
if [ "$(id -u)" != 0 ]; then
    echo "SKIP: multihost needs root (network namespaces, veth, bridge, tc)"; exit 77
fi
for tool in ip tc unshare flock; do
    command -v "$tool" >/dev/null || { echo "SKIP: multihost needs '$tool'"; exit 77; }
done
PROBE=dpttestprobe$$
if ! { ip netns add "$PROBE" && ip -n "$PROBE" link set lo up \
       && ip -n "$PROBE" link add pbr0 type bridge \
       && ip -n "$PROBE" link add pv0 type veth peer name pv1; } 2>/dev/null; then
    ip netns del "$PROBE" 2>/dev/null || true
    echo "SKIP: cannot create a network namespace with a bridge and a veth pair (ip netns add failed: container without CAP_SYS_ADMIN/CAP_NET_ADMIN?)"
    exit 77
fi
ip netns del "$PROBE"

# leftovers: the names of our namespaces that still exist (empty = clean).
leftovers() { ip netns list | awk '{print $1}' | grep -E "^$PREFIX-(sw|h[0-9]+)\$" | tr '\n' ' ' || true; }
expect_clean() {   # expect_clean NAME
    local left
    left=$(leftovers)
    if [ -z "$left" ]; then pass "$1: no namespace left"; else fail "$1: namespaces left: $left"; fi
}

# ---- 2 hosts x 2 ranks: ranks on a host and across hosts in one job ---------------------------
"$DPTRAIN" synth blobs --features 64 --classes 3 --n-train 410 --n-test 60 --noise 0.8 --seed 5 \
    --out "$WORK/wide.h5" >/dev/null
WIDE=(train --data "$WORK/wide.h5" --layers 64,256,64,3 --batch 50 --epochs 3 --lr 0.05
      --momentum 0.9 --seed 11 --checkpoint-epochs 0 --threads 1)
run_np 1 "${WIDE[@]}" --quiet --out "$WORK/wide1" >/dev/null
"$MH" "${MHARGS[@]}" --hosts 2 --ranks-per-host 2 -- "${WIDE[@]}" --out "$WORK/wide22" \
    >"$WORK/wide22.log" 2>&1 || true
if grep -q '^dptrain .*: 4 ranks (2 on this node)' "$WORK/wide22.log"; then
    pass "2 hosts x 2 ranks: 4 ranks, 2 per node"
else
    fail "2 hosts x 2 ranks: $(grep -E '^dptrain|error' "$WORK/wide22.log" | head -3)"
fi
if out=$("$DPTRAIN" compare "$WORK/wide1/model.h5" "$WORK/wide22/model.h5" --atol 1e-5 --rtol 1e-4 2>&1); then
    pass "2 hosts x 2 ranks = 1 rank"
else
    fail "2 hosts x 2 ranks differ from 1 rank"; echo "$out" | tail -4 >&2
fi
expect_clean "after 2 x 2"

# ---- a crashed run's leftovers are removed at start; check passes -----------------------------
# The "crashed run": a namespace of ours with a process still inside.
ip netns add "$PREFIX-h7"
ip netns exec "$PREFIX-h7" sleep 300 &
STALE=$!
rc=0
out=$(timeout -k 5 110 "$MH" "${MHARGS[@]}" --workdir "$WORK/check" check 2>&1) || rc=$?
grep "^multihost:" <<<"$out" || true
if grep -q "removing leftovers of an earlier run: .*$PREFIX-h7" <<<"$out" && ! kill -0 "$STALE" 2>/dev/null; then
    pass "leftovers of a crashed run (namespace and its process) removed at start"
else
    fail "leftover namespace $PREFIX-h7 or its process (pid $STALE) survived"
    kill "$STALE" 2>/dev/null || true
fi
wait "$STALE" 2>/dev/null || true
# Every check of the check mode counts here: "ok: ..." passes, "FAIL: ..." fails.
while IFS= read -r line; do
    case $line in
        "ok: "*) pass "check: ${line#ok: }" ;;
        "FAIL: "*) fail "check: ${line#FAIL: }" ;;
    esac
done <<<"$out"
if [ "$rc" = 0 ] && grep -Eq '^[0-9]+ passed, 0 failed$' <<<"$out"; then pass "check exits 0"
else fail "check exit $rc"; fi
if grep -q '^ok: 2 hosts x 1 rank == 1 host x 2 ranks, bit for bit' <<<"$out"; then
    pass "2 hosts match 1 host x 2 ranks bit for bit"
else
    fail "no bit-for-bit 2-host result"
fi
if grep -q '^ok: negative control' <<<"$out"; then pass "another seed is detected"
else fail "the seed negative control did not run or pass"; fi
expect_clean "after check"

# ---- negative control: without the allreduce the check must fail ---------------------------------
# (also shows that the environment reaches the ranks on the other host through the agent)
rc=0
out=$(DPTRAIN_TEST_FAULT=skip-allreduce timeout -k 5 110 "$MH" "${MHARGS[@]}" check 2>&1) || rc=$?
if [ "$rc" = 1 ] && grep -q '^FAIL: 2 hosts x 1 ranks == 1 rank' <<<"$out" \
   && grep -q '^FAIL: hosts: host 1 sent only' <<<"$out"; then
    pass "unsummed gradients across the hosts are detected (check exits 1)"
else
    fail "skip-allreduce went unnoticed (exit $rc)"; echo "$out" | grep -E '^(ok|FAIL)' >&2
fi
expect_clean "after a failing check"

# ---- a failing dptrain command: its exit status, and cleanup -------------------------------------
expect_exit 1 "run: a missing data file exits 1 across the hosts" "nonexistent.h5" -- \
    timeout -k 5 60 "$MH" "${MHARGS[@]}" -- train --data "$WORK/nonexistent.h5" \
    --layers 8,16,3 --out "$WORK/missing"
expect_exit 2 "usage error: --hosts 0" "--hosts must be" -- "$MH" "${MHARGS[@]}" --hosts 0 check
expect_clean "after a failed run"

# ---- SIGTERM to the script while ranks train on both hosts: a checkpoint, then everything goes ---
"$DPTRAIN" synth blobs --features 8 --classes 3 --n-train 610 --n-test 90 --seed 3 \
    --out "$WORK/blobs.h5" >/dev/null
"$MH" "${MHARGS[@]}" --timeout 100 -- train --data "$WORK/blobs.h5" --layers 8,16,3 --batch 50 \
    --epochs 1000000 --checkpoint-epochs 0 --threads 1 --out "$WORK/long" >"$WORK/long.log" 2>&1 &
MHPID=$!
for _ in $(seq 100); do   # wait (up to 20 s) until the first epoch is done
    if grep -q '^epoch' "$WORK/long.log" 2>/dev/null; then break; fi
    sleep 0.2
done
if grep -q '^dptrain .*: 2 ranks (1 on this node)' "$WORK/long.log"; then
    pass "long run started on 2 hosts"
else
    fail "long run did not start"; tail -5 "$WORK/long.log" >&2
fi
kill -TERM "$MHPID"
rc=0
wait "$MHPID" || rc=$?
if [ "$rc" = 143 ]; then pass "SIGTERM: multihost.sh exits 143"; else fail "SIGTERM: exit $rc, expected 143"; fi
# It asks mpirun with SIGUSR1, so the ranks on both hosts stop after a step with a checkpoint.
if grep -q 'mpirun exited 3 ' "$WORK/long.log" && compgen -G "$WORK/long/checkpoints/ckpt-*.h5" >/dev/null; then
    pass "SIGTERM: the ranks stopped together and wrote a checkpoint (exit 3)"
else
    fail "SIGTERM: no checkpoint or mpirun did not exit 3"; grep -E '^(multihost|dptrain|checkpoint|stopped)' "$WORK/long.log" >&2
fi
expect_clean "after SIGTERM"
# The script has exited; processes it killed may take a moment to be reaped: 10 s at most.
for _ in $(seq 100); do
    pgrep -f -- "--out $WORK/long" >/dev/null || break
    sleep 0.1
done
if pgrep -f -- "--out $WORK/long" >/dev/null; then
    fail "SIGTERM: processes of the run are still alive: $(pgrep -f -- "--out $WORK/long" | tr '\n' ' ')"
else
    pass "SIGTERM: no process of the run is left"
fi
finish
