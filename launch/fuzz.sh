#!/usr/bin/env bash
# fuzz.sh: builds the libFuzzer targets of tests/fuzz (the HDF5 dataset loader, checkpoints
# and model files, the CSV and IDX converters) with clang, AddressSanitizer and UBSan, and
# runs them on the seed corpus in tests/fuzz/corpus; args: dptrain train's option and INI
# parser. Outside CMake, like launch/simulate.sh.
#
# usage: launch/fuzz.sh [--seconds N] [--target NAME]... [--jobs J] [--build DIR]
#                       [--ignore-foreign] [--no-run] [--report-only]
#   --seconds N       fuzzing time per target                          [30]
#   --target NAME     dataset, ckpt, csv, idx or args (repeat, or a comma list)  [all]
#   --jobs J          targets fuzzed at the same time (one process each) [1]
#   --build DIR       build and work directory                         [build-fuzz]
#   --ignore-foreign  crashes whose crashing frame is inside HDF5, zlib or MPI are listed
#                     but do not make the exit status 1 (tests/fuzz/fuzz.sh uses it)
#   --no-run          build only
#   --report-only     no build, no run: report every crash input kept in DIR/crashes
#
# What it does:
#   1. installs clang, libclang-rt-14-dev (libFuzzer, sanitizer runtimes) and llvm-14
#      (llvm-symbolizer) through launch/setup.sh if clang cannot link a fuzzer;
#   2. compiles src/core, src/data, src/io, src/train and src/dist (dp_train_check, which the
#      dataset target calls, lives in src/train and links src/dist) with
#      -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -g -O1
#      into DIR/libdptrain-fuzz.a (a generated Makefile: only changed files are rebuilt),
#      and links DIR/fuzz_<target> against it, parallel HDF5, Open MPI, OpenBLAS and zlib;
#   3. runs each target in libFuzzer's fork mode (crashes, leaks, timeouts and
#      out-of-memory do not stop the run: every input that fails is kept) on DIR/corpus/<t>
#      (grows from run to run) plus the seeds in tests/fuzz/corpus/<t> and the regression
#      inputs of bugs found and fixed in tests/fuzz/regress/<t> (both read only);
#   4. reproduces each kept crash input once and prints per target: executions, coverage
#      (libFuzzer's cov: edges in our instrumented code; HDF5 itself is not instrumented),
#      new corpus entries, and each distinct crash with the first lines of its report and
#      where it crashed: "ours" (the crashing frame is in src/ or tests/fuzz/, a UBSan
#      error, a promise the harness checks; "unknown" counts as ours), "hdf5", "zlib",
#      "mpi" (the first frame outside the sanitizer runtime and libc is in that library; the
#      stack below it shows which of our calls led there), or "irreproducible" (no failure
#      when the input runs alone: it needed state earlier inputs left inside HDF5, which is
#      not instrumented, so its own bad writes show up later).
# Limits: an input may take 20 s (-timeout), one allocation 2 GB and the process 2 GB of
# memory (-rss_limit_mb; beyond: an oom-* finding). Leaks of memory HDF5 itself allocated
# are suppressed (tests/fuzz/lsan.supp: its error paths leak on damaged files); leaks of
# ours are findings, and the harnesses check that we close every HDF5 object we open.
# Crash inputs: DIR/crashes/<target>/ (crash-*, leak-*, timeout-*, oom-*, slow-unit-*);
# the full report of each: the same name + .txt. Reproduce one by hand with
#   DIR/fuzz_<target> DIR/crashes/<target>/crash-...
# FUZZ_SEED=N in the environment: libFuzzer's -seed=N (the same mutations run after run; the
# short test run uses it so that it fails on a bug, not on luck).
# Exit: 0 no crash; 1 a crash (with --ignore-foreign: a crash of ours) or a failed build;
# 2 usage; 77 clang with libFuzzer is missing and cannot be installed.
set -euo pipefail
# The whole script is one block, read before it runs: editing this file while a long run is
# under way cannot change what the run does next.
{
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_PER_TARGET=30
JOBS=1
BUILD=$ROOT/build-fuzz
IGNORE_FOREIGN=0
RUN=1
ALL_TARGETS=(dataset ckpt csv idx args)
TARGETS=()
log() { echo "fuzz: $*" >&2; }
usage() { sed -n '6,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
    case $1 in
    --seconds) SECONDS_PER_TARGET=${2:?}; shift 2 ;;
    --target) IFS=, read -ra t <<<"${2:?}"; TARGETS+=("${t[@]}"); shift 2 ;;
    --jobs) JOBS=${2:?}; shift 2 ;;
    --build) BUILD=${2:?}; shift 2 ;;
    --ignore-foreign) IGNORE_FOREIGN=1; shift ;;
    --no-run) RUN=0; shift ;;
    --report-only) RUN=report; shift ;;
    -h|--help) usage ;;
    *) log "unknown argument '$1'"; usage ;;
    esac
done
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")
for i in "${!TARGETS[@]}"; do
    TARGETS[$i]=${TARGETS[$i]#fuzz_}
    case " ${ALL_TARGETS[*]} " in
    *" ${TARGETS[$i]} "*) ;;
    *) log "unknown target '${TARGETS[$i]}' (${ALL_TARGETS[*]})"; exit 2 ;;
    esac
done
[[ $SECONDS_PER_TARGET =~ ^[0-9]+$ ]] && [ "$SECONDS_PER_TARGET" -ge 1 ] || { log "--seconds: a positive integer"; exit 2; }
[[ $JOBS =~ ^[0-9]+$ ]] && [ "$JOBS" -ge 1 ] || { log "--jobs: a positive integer"; exit 2; }
mkdir -p "$BUILD"
BUILD=$(cd "$BUILD" && pwd)

if [ "$RUN" = report ]; then
    for t in "${TARGETS[@]}"; do
        [ -x "$BUILD/fuzz_$t" ] || { log "no $BUILD/fuzz_$t: build and run first"; exit 1; }
    done
fi
# --- 1. clang with libFuzzer --------------------------------------------------------------
CC=${CC_FUZZ:-clang}
can_fuzz() {
    command -v "$CC" >/dev/null || return 1
    printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' \
        >"$BUILD/probe.c"
    "$CC" -fsanitize=fuzzer,address,undefined "$BUILD/probe.c" -o "$BUILD/probe" 2>/dev/null
}
if [ "$RUN" != report ] && ! can_fuzz; then
    log "installing clang, libclang-rt-14-dev and llvm-14 (libFuzzer, sanitizers, llvm-symbolizer)"
    "$ROOT/launch/setup.sh" clang libclang-rt-14-dev llvm-14 >&2 ||
        { log "cannot install clang (need root or sudo, and Debian's apt)"; exit 77; }
    can_fuzz || { log "clang cannot link a libFuzzer target even after installing"; exit 77; }
fi
SYMBOLIZER=$(command -v llvm-symbolizer || command -v llvm-symbolizer-14 || true)
if [ -z "$SYMBOLIZER" ]; then
    "$ROOT/launch/setup.sh" llvm-14 >&2 || true
    SYMBOLIZER=$(command -v llvm-symbolizer || command -v llvm-symbolizer-14 ||
                 ls /usr/lib/llvm-*/bin/llvm-symbolizer 2>/dev/null | head -1 || true)
fi

# --- 2. build -------------------------------------------------------------------------------
DEPS="hdf5-openmpi ompi-c openblas zlib inih jansson"
PKG_CFLAGS=$(pkg-config --cflags $DEPS)
PKG_LIBS=$(pkg-config --libs $DEPS)
mapfile -t LIB_SRC < <(ls "$ROOT"/src/core/*.c "$ROOT"/src/data/*.c "$ROOT"/src/io/*.c \
                          "$ROOT"/src/train/*.c "$ROOT"/src/dist/*.c)
# The option parser's target (args) links the program's sources too, all but main.c.
mapfile -t CLI_SRC < <(ls "$ROOT"/src/cli/*.c | grep -v '/main\.c$')
{
    echo "# generated by launch/fuzz.sh; do not edit"
    echo "CC = $CC"
    echo "SAN = -fsanitize=address,undefined -fno-sanitize-recover=undefined"
    echo "CFLAGS = -g -O1 -fno-omit-frame-pointer -std=gnu11 -Wall -Wextra \$(SAN) -fsanitize=fuzzer-no-link \\"
    echo "  -I$ROOT/include -I$ROOT/src -I$ROOT/src/core -I$ROOT/tests/fuzz $PKG_CFLAGS"
    echo "LIBS = $PKG_LIBS -lm -lpthread"
    echo "all: $(printf 'fuzz_%s ' "${ALL_TARGETS[@]}")"
    # archive NAME EXTRA_CFLAGS SOURCES...: rules for each source's object and the archive
    archive() {
        local name=$1 extra=$2 objs=() s rel o
        shift 2
        for s in "$@"; do
            rel=${s#"$ROOT"/}
            o=obj/${rel%.c}.o
            objs+=("$o")
            echo "$o: $s"
            echo "	@mkdir -p \$(@D) && \$(CC) \$(CFLAGS) $extra -MMD -MP -c \$< -o \$@"
        done
        echo "$name: ${objs[*]}"
        echo "	rm -f \$@ && ar rcs \$@ \$^"
    }
    archive libdptrain-fuzz.a "" "${LIB_SRC[@]}"
    archive libdptrain-cli-fuzz.a "-DDPTRAIN_VERSION='\"fuzz\"'" "${CLI_SRC[@]}"
    echo "obj/fuzz_util.o: $ROOT/tests/fuzz/fuzz_util.c"
    echo "	@mkdir -p \$(@D) && \$(CC) \$(CFLAGS) -MMD -MP -c \$< -o \$@"
    for t in "${ALL_TARGETS[@]}"; do
        echo "obj/fuzz_$t.o: $ROOT/tests/fuzz/fuzz_$t.c"
        echo "	@mkdir -p \$(@D) && \$(CC) \$(CFLAGS) -MMD -MP -c \$< -o \$@"
        echo "fuzz_$t: obj/fuzz_$t.o obj/fuzz_util.o $([ "$t" = args ] && echo libdptrain-cli-fuzz.a) libdptrain-fuzz.a"
        echo "	\$(CC) \$(SAN) -fsanitize=fuzzer \$^ \$(LIBS) -o \$@"
    done
    echo "-include \$(shell find obj -name '*.d' 2>/dev/null)"
} >"$BUILD/Makefile.new"
if ! cmp -s "$BUILD/Makefile.new" "$BUILD/Makefile"; then
    mv "$BUILD/Makefile.new" "$BUILD/Makefile"
    rm -rf "$BUILD/obj" "$BUILD"/libdptrain-fuzz.a # flags or the file list changed
else
    rm -f "$BUILD/Makefile.new"
fi
[ "$RUN" = report ] || log "building ${TARGETS[*]/#/fuzz_} in $BUILD"
if [ "$RUN" != report ] && ! make -s -C "$BUILD" -j"$(nproc)" "${TARGETS[@]/#/fuzz_}" >"$BUILD/build.log" 2>&1; then
    log "build failed; the end of $BUILD/build.log:"
    tail -30 "$BUILD/build.log" >&2
    exit 1
fi
grep -E 'warning:' "$BUILD/build.log" >&2 || true
if [ "$RUN" = 0 ]; then log "built (--no-run)"; exit 0; fi

# --- 3. run -----------------------------------------------------------------------------------
# Sanitizers: huge allocations return NULL as they do without ASan (the loaders must cope),
# and a leak or an error ends the input with a report; libFuzzer counts single allocations
# beyond -malloc_limit_mb (= -rss_limit_mb) as out-of-memory findings.
# Leaks of memory that HDF5 itself allocated (its error paths on damaged files leak a few
# hundred bytes) are suppressed by tests/fuzz/lsan.supp; leaks of our own allocations are
# findings. HDF5 objects left open by our code are caught by the harness itself.
export ASAN_OPTIONS="allocator_may_return_null=1:detect_leaks=1:symbolize=1:intercept_tls_get_addr=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export LSAN_OPTIONS="suppressions=$ROOT/tests/fuzz/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
[ -n "$SYMBOLIZER" ] && export ASAN_SYMBOLIZER_PATH=$SYMBOLIZER
export HDF5_USE_FILE_LOCKING=FALSE
# One OpenBLAS thread (the loaders do no math; the dataset target's one forward pass is tiny).
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

# run_target T: fuzzes T for SECONDS_PER_TARGET seconds; writes DIR/logs/T.{log,before}.
run_target() {
    local t=$1 bin=$BUILD/fuzz_$1 corpus=$BUILD/corpus/$1 crashes=$BUILD/crashes/$1 seeds
    seeds=("$ROOT/tests/fuzz/corpus/$t")
    [ -d "$ROOT/tests/fuzz/regress/$t" ] && seeds+=("$ROOT/tests/fuzz/regress/$t")
    mkdir -p "$corpus" "$crashes" "$BUILD/logs"
    find "$corpus" -type f | wc -l >"$BUILD/logs/$t.before"
    ls "$crashes" >"$BUILD/logs/$t.crashes-before" 2>/dev/null || true
    # fork mode: a crash, leak, timeout or OOM is kept and fuzzing goes on; the outer
    # timeout bounds a run whose child hangs beyond libFuzzer's own -timeout.
    (cd "$BUILD/logs" && timeout -k 10 $((SECONDS_PER_TARGET + 120)) "$bin" -fork=1 \
        -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=20 -rss_limit_mb=2048 \
        ${FUZZ_SEED:+-seed="$FUZZ_SEED"} -artifact_prefix="$crashes/" -print_final_stats=1 \
        "$corpus" "${seeds[@]}" >"$BUILD/logs/$t.log" 2>&1) || true
}
export -f run_target
export BUILD ROOT SECONDS_PER_TARGET
if [ "$RUN" = report ]; then
    for t in "${TARGETS[@]}"; do
        mkdir -p "$BUILD/crashes/$t" "$BUILD/corpus/$t" "$BUILD/logs"
        : >"$BUILD/logs/$t.crashes-before"
        [ -f "$BUILD/logs/$t.before" ] || find "$BUILD/corpus/$t" -type f | wc -l >"$BUILD/logs/$t.before"
        touch "$BUILD/logs/$t.log"
    done
else
    log "fuzzing ${TARGETS[*]} for ${SECONDS_PER_TARGET} s each, $JOBS at a time"
    printf '%s\n' "${TARGETS[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_target {}'
fi

# --- 4. report --------------------------------------------------------------------------------
# Stack frames of the sanitizer runtime, libFuzzer and libc (memcpy, strdup, malloc...):
# skipped when deciding where a crash happened.
RUNTIME_RE='__asan|__sanitizer|__interceptor|__lsan|__ubsan|fuzzer::|libc\.so|libc-|/sysdeps/|csu/|libstdc\+\+| in (malloc|calloc|realloc|free|strdup|strndup|abort|raise|gsignal|__GI_[a-z_]*|__libc_[a-z_]*|_IO_[a-z_]*|__(mem|str)[a-z0-9_]*|(mem|str)[a-z]*|main|_start) '
# where REPORT: ours | hdf5 | zlib | mpi | unknown: the library of the first stack frame that
# is not the runtime (the crashing frame; for a leak, the caller of the allocation); a
# broken promise of the harness or a UBSan error is ours.
where() {
    local r=$1
    if ! grep -qE '^ *#[0-9]+ 0x|runtime error:|==fuzz==' "$r"; then
        echo irreproducible; return
    fi
    if grep -q '==fuzz== BROKEN PROMISE\|==fuzz== .* left .* HDF5 object' "$r" ||
       grep -q 'runtime error:' "$r"; then
        echo ours; return
    fi
    grep -E '^ *#[0-9]+ 0x' "$r" | grep -vE "$RUNTIME_RE" | awk '{
            if ($0 ~ /libhdf5/) print "hdf5"
            else if ($0 ~ /libz\.so/) print "zlib"
            else if ($0 ~ /libmpi|openmpi|libopen-pal|libopen-rte|libpmix|libhwloc|libevent/) print "mpi"
            else if ($0 ~ /\/src\/|\/tests\/fuzz\//) print "ours"
            else print "unknown"
            exit
         }' | grep . || echo unknown
}
# frames REPORT: the stack frames past the runtime, without build ids.
frames() {
    grep -E '^ *#[0-9]+ 0x' "$1" | grep -vE "$RUNTIME_RE" | sed -E 's/ \(BuildId: [0-9a-f]+\)//'
}
# signature REPORT: the kind of failure and the first three frames past the runtime
# (function names; library+offset where HDF5 has no symbol).
signature() {
    local r=$1 kind fr
    kind=$(grep -m1 -oE 'ERROR: AddressSanitizer: [a-zA-Z-]+|ERROR: LeakSanitizer: detected memory leaks|ERROR: libFuzzer: [a-zA-Z -]+|[^ ]+:[0-9]+:[0-9]+: runtime error|BROKEN PROMISE at [^ ]+|left [0-9]+ HDF5 object' "$r")
    fr=$(frames "$r" |
         sed -E 's/^ *#[0-9]+ 0x[0-9a-f]+ in ([^ ]+) .*/\1/; s/^ *#[0-9]+ 0x[0-9a-f]+ +\(([^)]*\/)?([^)/ ]+)\).*/\2/' |
         head -3 | paste -sd' ' - | sed 's/ / < /g')
    echo "${kind:-?} | ${fr:-?}"
}
set +e +o pipefail # reporting: a grep that finds nothing is not an error
FAILED=0
for t in "${TARGETS[@]}"; do
    lg=$BUILD/logs/$t.log crashes=$BUILD/crashes/$t
    execs=$(grep -oE '^#[0-9]+' "$lg" | tail -1 | tr -d '#' || true)
    cov=$(grep -oE 'cov: [0-9]+' "$lg" | tail -1 | awk '{print $2}' || true)
    ft=$(grep -oE 'ft: [0-9]+' "$lg" | tail -1 | awk '{print $2}' || true)
    rate=$(grep -oE 'exec/s:? [0-9]+' "$lg" | awk '$2 > 0 {r = $2} END {print r}' || true)
    before=$(cat "$BUILD/logs/$t.before")
    after=$(find "$BUILD/corpus/$t" -type f | wc -l)
    echo "== fuzz_$t: ${execs:-0} executions (${rate:-?} exec/s), coverage ${cov:-?} edges" \
         "(${ft:-?} features), corpus $after (+$((after - before)) new), seeds $(ls "$ROOT/tests/fuzz/corpus/$t" | wc -l)"
    if [ "$RUN" != report ] && ! grep -qE '^#[0-9]+' "$lg"; then
        echo "   the fuzzer did not run; the end of $lg:"; tail -15 "$lg" | sed 's/^/   | /'
        FAILED=1
        continue
    fi
    mapfile -t new < <(comm -13 "$BUILD/logs/$t.crashes-before" <(ls "$crashes") | grep -v '\.txt$' || true)
    [ ${#new[@]} -gt 0 ] || { echo "   no crash"; continue; }
    declare -A seen=()
    n_ours=0 n_foreign=0 n_irr=0 shown=0
    for f in "${new[@]}"; do
        r=$crashes/$f.txt
        # The report: the input run once more (the fork-mode log does not keep it).
        # Full stacks through HDF5 (no frame pointers there) for the allocation of a leak.
        ASAN_OPTIONS="$ASAN_OPTIONS:fast_unwind_on_malloc=0" timeout -k 5 60 \
            "$BUILD/fuzz_$t" -rss_limit_mb=2048 -timeout=20 "$crashes/$f" >"$r" 2>&1
        w=$(where "$r") sig=$(signature "$r")
        case $w in
        ours|unknown) n_ours=$((n_ours + 1)) ;;
        irreproducible) n_irr=$((n_irr + 1)); sig="irreproducible" ;;
        *) n_foreign=$((n_foreign + 1)) ;;
        esac
        if [ -z "${seen[$sig]:-}" ]; then
            seen[$sig]=1
            shown=$((shown + 1))
            echo "   CRASH [$w] $crashes/$f"
            if [ "$w" = irreproducible ]; then
                echo "     no failure when run alone: it needed the state that earlier inputs left"
                echo "     (HDF5 is not instrumented: a bad write inside it shows up later); see the"
                echo "     errors seen while fuzzing, below"
                continue
            fi
            echo "     $sig"
            grep -m1 -E 'ERROR: |runtime error:|==fuzz==' "$r" | cut -c1-200 | sed 's/^/     /'
            frames "$r" | head -8 | cut -c1-160 | sed 's/^/     /'
        fi
        [ $((n_ours + n_foreign + n_irr)) -lt 40 ] || { echo "   (more crash files not reproduced)"; break; }
    done
    unset seen
    echo "   ${#new[@]} crash input(s): $n_ours ours, $n_foreign inside HDF5/zlib/MPI," \
         "$n_irr irreproducible alone; $shown distinct"
    # What the fuzzing processes reported at the moment of each crash (fork mode keeps the
    # first line of each), counted.
    if [ "$RUN" != report ]; then
        echo "   errors seen while fuzzing:"
        grep -E '==[0-9]+== ?ERROR: |runtime error:|==fuzz== ' "$lg" |
            sed -E 's/==[0-9]+==/==/; s/ on (unknown )?address 0x[0-9a-f]+.*//; s/ \(malloc\([0-9]+\)\)/ (malloc)/' |
            sort | uniq -c | sort -rn | head -12 | sed 's/^/     /'
    fi
    if [ "$n_ours" -gt 0 ] || { [ $((n_foreign + n_irr)) -gt 0 ] && [ "$IGNORE_FOREIGN" = 0 ]; }; then
        FAILED=1
    fi
done
exit $FAILED
}
