#!/usr/bin/env bash
# data_memory.sh: what --data-memory costs and saves on Fashion-MNIST (the quickstart
# network). For each mode (replicate, node) at 1 and 2 ranks: each rank's memory while the
# run is held at step 50 (RssAnon: private; RssShmem: the shared pages it has touched,
# counted once per node however many ranks map them; read from /proc/PID/status by PID), and
# the training samples/s of 3 epochs (metrics.jsonl, median over REPEATS runs).
#   launch/data_memory.sh [OUT_DIR]        (REPEATS=3 by default)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/runs/data-memory}
REPEATS=${REPEATS:-3}
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
for np in 1 2; do
    for mode in replicate node; do
        mem=$(held "$np" "$mode")
        rates=()
        for r in $(seq "$REPEATS"); do
            d="$OUT/run-$np-$mode-$r"
            "${MPI[@]}" -np "$np" "$DPTRAIN" train "${RUN[@]}" --epochs 3 --data-memory "$mode" \
                --out "$d" >/dev/null
            rates+=("$(sed -nE 's/.*"samples_per_s":([0-9.eE+]+).*/\1/p' "$d/metrics.jsonl" |
                awk '{ s += $1; n++ } END { printf "%.0f", s / n }')")
        done
        med=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
        echo "| $np | $mode | $mem | $med ($(echo "${rates[@]}" | tr ' ' ',')) |"
    done
done
