#!/usr/bin/env bash
# data_memory.sh: what --data-memory costs and saves. Part 1, Fashion-MNIST (the quickstart
# network): for each mode (replicate, node, stream) at 1 and 2 ranks, each rank's memory
# while the run is held at step 50 (RssAnon: private; RssShmem: the shared pages it has
# touched, counted once per node however many ranks map them; read from /proc/PID/status by
# PID), and the training samples/s of 3 epochs (metrics.jsonl, median over REPEATS runs); then
# stream and replicate again with the page cache dropped before each run (root only), the
# cold cache. Part 2 (BIG_GB > 0): a synthetic file of about BIG_GB GB (1024 float features a
# row) trained for one epoch on 2 ranks under an address-space limit of LIMIT_MB per rank
# (prlimit --as): replicate is refused up front, auto streams it; the peak RSS of each rank
# (/usr/bin/time's maximum resident set) next to that of the same run on a 0.6 GB file.
#   launch/data_memory.sh [OUT_DIR]        (REPEATS=3, BIG_GB=4, LIMIT_MB=2000 by default)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/runs/data-memory}
REPEATS=${REPEATS:-3}
BIG_GB=${BIG_GB:-4}
LIMIT_MB=${LIMIT_MB:-2000}
DPTRAIN=$ROOT/build/dptrain
DATA=$ROOT/datasets/fashion_mnist.h5
MPI=(mpirun --oversubscribe)
if [ "$(id -u)" = 0 ]; then MPI+=(--allow-run-as-root); fi
[ -x "$DPTRAIN" ] || "$ROOT/launch/build.sh"
if [ ! -f "$DATA" ]; then
    "$DPTRAIN" convert idx --dir /usr/share/datasets/fashion-mnist --out "$DATA"
fi
rm -rf "$OUT" && mkdir -p "$OUT"
RUN=(--data "$DATA" --layers 784,256,128,10 --activation relu --batch 128 --optimizer sgd
     --lr 0.05 --momentum 0.9 --seed 1 --quiet)

# held NP MODE: "rank: RssAnon RssShmem" (MB) of each rank, held at step 50.
held() {
    local np=$1 mode=$2 log="$OUT/held-$1-$2.log" pids="" deadline=$((SECONDS + 60))
    DPTRAIN_TEST_HOLD_AT=50 "${MPI[@]}" -np "$np" "$DPTRAIN" train "${RUN[@]}" --epochs 1 \
        --data-memory "$mode" --out "$OUT/held-$np-$mode" >"$log" 2>&1 &
    local job=$!
    while [ "$(wc -w <<<"$pids")" -lt "$np" ] && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.1
        pids=$(sed -nE 's/.*\(pid ([0-9]+)\) holding at step.*/\1/p' "$log")
    done
    for p in $pids; do
        awk '/^RssAnon:/ { a = $2 } /^RssShmem:/ { s = $2 } END { printf "%.0f/%.0f ", a / 1024, s / 1024 }' "/proc/$p/status"
    done
    kill -TERM $pids 2>/dev/null || true
    wait "$job" || true
}
echo "| ranks | mode | MB per rank, private/shared (RssAnon/RssShmem) | samples/s (median of $REPEATS) |"
echo "|---|---|---|---|"
# rate NP MODE COLD: the median samples/s of REPEATS runs of 3 epochs (COLD=1: the page
# cache dropped before each), and the runs' figures.
rate() {
    local np=$1 mode=$2 cold=$3 rates=()
    for r in $(seq "$REPEATS"); do
        local d="$OUT/run-$np-$mode-$cold-$r"
        if [ "$cold" = 1 ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi
        "${MPI[@]}" -np "$np" "$DPTRAIN" train "${RUN[@]}" --epochs 3 --data-memory "$mode" \
            --out "$d" >/dev/null
        rates+=("$(sed -nE 's/.*"samples_per_s":([0-9.eE+]+).*/\1/p' "$d/metrics.jsonl" |
            awk '{ s += $1; n++ } END { printf "%.0f", s / n }')")
    done
    local med
    med=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
    echo "$med ($(echo "${rates[@]}" | tr ' ' ','))"
}
for np in 1 2; do
    for mode in replicate node stream; do
        mem=$(held "$np" "$mode")
        echo "| $np | $mode | $mem | $(rate "$np" "$mode" 0) |"
    done
done
if [ -w /proc/sys/vm/drop_caches ]; then
    for mode in replicate stream; do
        echo "| 2 | $mode, cold page cache | | $(rate 2 "$mode" 1) |"
    done
else
    echo "(not root: no cold-cache rows)"
fi

[ "$BIG_GB" != 0 ] || exit 0
# peak NAME DATA ARGS...: trains DATA under the limit on 2 ranks; prints the exit status and
# each rank's peak RSS (MB), the log in OUT/NAME.log.
peak() {
    local name=$1 data=$2; shift 2
    local rc=0
    /usr/bin/time -f "peak RSS %M kB" "${MPI[@]}" -np 2 prlimit --as=$((LIMIT_MB * 1000000)) \
        /usr/bin/time -f "rank peak RSS %M kB" "$DPTRAIN" train --data "$data" \
        --layers 1024,8,4 --epochs 1 --batch 1000 --lr 0.05 --seed 1 --out "$OUT/$name" "$@" \
        >"$OUT/$name.log" 2>&1 || rc=$?
    echo "exit $rc; per rank: $(sed -nE 's/rank peak RSS ([0-9]+) kB/\1/p' "$OUT/$name.log" |
        awk '{ printf "%.0f MB ", $1 / 1000 }')"
}
gen() { # gen FILE ROWS
    [ -f "$1" ] || "$DPTRAIN" synth blobs --n-train "$2" --n-test 10000 --features 1024 \
        --classes 4 --noise 0.8 --out "$1" >/dev/null
}
SMALL=$OUT/small.h5
BIG=$OUT/big.h5
gen "$SMALL" 150000
gen "$BIG" $((BIG_GB * 1000000000 / 4096))
echo
echo "Part 2: 2 ranks under prlimit --as=$LIMIT_MB MB each, 1024-8-4, one epoch, batch 1000"
echo "| file | mode | result |"
echo "|---|---|---|"
for f in "$SMALL" "$BIG"; do
    mb=$(( $(stat -c %s "$f") / 1000000 ))
    echo "| $mb MB | replicate | $(peak "rep-$mb" "$f" --data-memory replicate) $(grep -o 'error: .*' "$OUT/rep-$mb.log" | head -1 | cut -c1-90) |"
    echo "| $mb MB | stream | $(peak "stream-$mb" "$f" --data-memory stream) $(grep -o 'done: .*samples/s' "$OUT/stream-$mb.log") |"
    echo "| $mb MB | auto | $(peak "auto-$mb" "$f") $(grep -o 'data memory: [a-z]* ([^)]*)' "$OUT/auto-$mb.log" | head -1); $(grep -o 'done: .*samples/s' "$OUT/auto-$mb.log") |"
done
