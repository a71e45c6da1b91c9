#!/usr/bin/env bash
# fuzz.sh: a short run of the libFuzzer targets (tests/fuzz/fuzz_*.c, built and run by
# launch/fuzz.sh) as a test: the targets build; every seed of the corpus runs and the valid
# ones load (so the fuzzer starts from files that reach deep into the loaders); each target
# fuzzes for about 15 s without a crash of ours; and a bug planted on purpose in the harness
# is found and reported, so this test can fail.
#
# usage: bash tests/fuzz/fuzz.sh SCRATCH_DIR
# Crashes inside HDF5, zlib or MPI (the first stack frame past the sanitizer runtime is in
# that library: HDF5 1.10's own bugs on damaged files, e.g. a heap overflow in H5Aexists)
# are listed as known and do not fail the test (launch/fuzz.sh --ignore-foreign).
# Exit: 0 all passed; 1 a check failed; 77 clang with libFuzzer cannot be installed.
set -uo pipefail
{ # one block, read before it runs (edits to this file cannot change a run under way)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${1:?usage: fuzz.sh SCRATCH_DIR}
SECONDS_EACH=${FUZZ_TEST_SECONDS:-15}
rm -rf "$WORK" && mkdir -p "$WORK"
BUILD=$WORK/build
N_PASS=0
N_FAIL=0
fail() { echo "FAIL: $*" >&2; N_FAIL=$((N_FAIL + 1)); }
pass() { echo "ok: $*"; N_PASS=$((N_PASS + 1)); }
finish() {
    echo "$N_PASS passed, $N_FAIL failed"
    [ "$N_FAIL" = 0 ]
}
TARGETS=(dataset ckpt csv idx args)

# --- the targets build ------------------------------------------------------------------------
rc=0
timeout -k 10 900 "$ROOT/launch/fuzz.sh" --build "$BUILD" --no-run >"$WORK/build.out" 2>&1 || rc=$?
if [ "$rc" = 77 ]; then
    echo "skip: clang with libFuzzer is not available and cannot be installed"
    tail -3 "$WORK/build.out"
    exit 77
fi
if [ "$rc" != 0 ]; then
    fail "build: launch/fuzz.sh --no-run exit $rc"; tail -20 "$WORK/build.out" >&2
    finish; exit 1
fi
pass "build: ${TARGETS[*]/#/fuzz_} with ASan, UBSan and libFuzzer"

# --- every seed and regression input runs; valid ones load, bad- ones are refused -------------
# The call each seed of a target is judged by (the harness prints fuzz-result lines with
# DPTRAIN_FUZZ_VERBOSE=1): valid seeds must pass GOOD, seeds named bad-* or raw-bad-* must
# fail BAD; checkpoint seeds ((rebuild|raw)-ckpt-*) must also pass dp_ckpt_load.
declare -A GOOD=([dataset]=dp_dataset_load_inputs [ckpt]=dp_model_load [csv]=dp_convert_csv
                 [idx]=dp_convert_idx [args]=dp_cli_parse_run)
declare -A BAD=([dataset]=dp_dataset_load_inputs [ckpt]=dp_ckpt_load [csv]=dp_convert_csv
                [idx]=dp_convert_idx [args]=dp_cli_parse_run)
export ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1:intercept_tls_get_addr=0  # see launch/test.sh
export LSAN_OPTIONS=suppressions=$ROOT/tests/fuzz/lsan.supp
export HDF5_USE_FILE_LOCKING=FALSE OPENBLAS_NUM_THREADS=1
for t in "${TARGETS[@]}"; do
    seeds=("$ROOT/tests/fuzz/corpus/$t"/* $(ls -d "$ROOT/tests/fuzz/regress/$t"/* 2>/dev/null))
    out=$WORK/seeds-$t.out
    rc=0
    DPTRAIN_FUZZ_VERBOSE=1 timeout -k 5 300 "$BUILD/fuzz_$t" "${seeds[@]}" >"$out" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
        fail "seeds of $t: fuzz_$t exit $rc on its own seeds"; grep -E 'ERROR|Running' "$out" | tail -5 >&2
        continue
    fi
    bad=$(awk -v good="${GOOD[$t]}" -v badc="${BAD[$t]}" '
        /^Running: / { n = split($2, p, "/"); name = p[n]; seen[name] = 1; next }
        $1 == "fuzz-result" && !((name, $2) in got) { got[name, $2] = ($3 == "ok") }
        function need(name, call, want) {
            if (!((name, call) in got)) print name ": " call " never ran"
            else if (got[name, call] != want) print name ": " call (want ? " refused it" : " accepted it")
        }
        END {
            for (name in seen) {
                if (name ~ /^(raw-)?bad-/) need(name, badc, 0)
                else need(name, good, 1)
                if (name ~ /^(rebuild|raw)-ckpt-/) need(name, "dp_ckpt_load", 1)
            }
        }' "$out")
    if [ -n "$bad" ]; then
        fail "seeds of $t:"; echo "$bad" | sed 's/^/    /' >&2
    else
        pass "seeds of $t: ${#seeds[@]} run (regression inputs included); valid ones pass ${GOOD[$t]}, bad ones fail ${BAD[$t]}"
    fi
done

# --- a short fuzzing run of each target ---------------------------------------------------------
# A fixed seed: the same mutations every run, so a failure here is a bug of a given input,
# reproducible, not the luck of one run (longer runs with other seeds: launch/fuzz.sh).
export FUZZ_SEED=${FUZZ_SEED:-1}
rc=0
timeout -k 10 $((${#TARGETS[@]} * (SECONDS_EACH + 200) + 120)) "$ROOT/launch/fuzz.sh" \
    --build "$BUILD" --seconds "$SECONDS_EACH" --jobs 1 --ignore-foreign >"$WORK/run.out" 2>&1 || rc=$?
sed 's/^/    /' "$WORK/run.out"
for t in "${TARGETS[@]}"; do
    # the lines of this target's section of the report
    sec=$(awk -v h="== fuzz_$t:" 'index($0, h) == 1 { on = 1; print; next } /^== / { on = 0 } on' "$WORK/run.out")
    execs=$(sed -nE "1s/^== fuzz_$t: ([0-9]+) executions.*/\1/p" <<<"$sec")
    if [ -z "$execs" ] || [ "$execs" -lt 100 ]; then
        fail "fuzz $t: ${execs:-no} executions in ${SECONDS_EACH} s"
        continue
    fi
    ours=$(grep -c 'CRASH \[\(ours\|unknown\)\]' <<<"$sec")
    foreign=$(grep -c 'CRASH \[\(hdf5\|zlib\|mpi\)\]' <<<"$sec")
    if [ "$ours" -gt 0 ]; then
        fail "fuzz $t: $ours distinct crash(es) of ours in $execs executions (see above; inputs in $BUILD/crashes/$t)"
    else
        pass "fuzz $t: $execs executions in ${SECONDS_EACH} s, no crash of ours$([ "$foreign" -gt 0 ] && echo " ($foreign distinct known crash(es) inside HDF5/zlib/MPI, listed above)")"
    fi
done
if [ "$rc" != 0 ] && [ "$N_FAIL" = 0 ]; then
    fail "launch/fuzz.sh exit $rc"
fi

# --- the test can fail: a bug planted in the harness is found and reported ----------------------
rc=0
DPTRAIN_FUZZ_PLANT_BUG=1 timeout -k 10 300 "$ROOT/launch/fuzz.sh" --build "$BUILD" --target idx \
    --seconds 3 --ignore-foreign >"$WORK/planted.out" 2>&1 || rc=$?
if [ "$rc" = 1 ] && grep -q 'CRASH \[ours\]' "$WORK/planted.out" &&
   grep -q 'heap-buffer-overflow' "$WORK/planted.out" && grep -q 'in fz_write .*fuzz_util.c' "$WORK/planted.out"; then
    pass "a planted one-byte overread (DPTRAIN_FUZZ_PLANT_BUG=1) is found: exit 1, reported as ours with its stack"
else
    fail "the planted bug was not reported (exit $rc)"; tail -15 "$WORK/planted.out" >&2
fi
finish
exit
}
