#!/usr/bin/env bash
# determinism.sh: the cross-rank table of deterministic mode against the default mode. One
# epoch of Fashion-MNIST (LAYERS=784,64,10, OPT="--lr 0.05 --momentum 0.9", batch 128,
# constant rate, seed 1; EXTRA adds options; e.g. LAYERS=784,64:relu:bn:dropout=0.2,10
# OPT="--optimizer adam --lr 0.001")
# on 1 to MAXN ranks in each mode; every run is compared with the same mode's 1-rank run:
# bit-identical or not, the largest parameter difference (dptrain compare), whether the
# metrics log (timings aside) is identical, and the test accuracy. Prints a Markdown table,
# also written to runs/determinism.md.
#   MAXN=5 launch/determinism.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MAXN=${MAXN:-5}
LAYERS=${LAYERS:-784,64,10}
OPT=${OPT:---lr 0.05 --momentum 0.9}
EXTRA=${EXTRA:-}
DATA=datasets/fashion_mnist.h5
launch/build.sh >/dev/null
[ -s "$DATA" ] || build/dptrain convert idx --dir /usr/share/datasets/fashion-mnist --out "$DATA"
MPI=(mpirun --oversubscribe)
[ "$(id -u)" = 0 ] && MPI+=(--allow-run-as-root)
OUT=runs/determinism
rm -rf "$OUT" && mkdir -p "$OUT"
# shellcheck disable=SC2206
T=(train --data "$DATA" --layers "$LAYERS" $OPT --batch 128 --epochs 1 --lr-schedule constant
   --seed 1 --quiet $EXTRA)
figures() { sed -E 's/"samples_per_s":[^,}]*//; s/"seconds":[^,}]*//' "$1"; }
field() { tail -1 "$1" | grep -o "\"$2\":[0-9.e+-]*" | cut -d: -f2; }
{
    echo "| mode | ranks | bit-identical to 1 rank | largest parameter difference | metrics log identical | test accuracy | test loss |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    for mode in default deterministic; do
        flag=(); [ "$mode" = deterministic ] && flag=(--deterministic)
        for n in $(seq 1 "$MAXN"); do
            d=$OUT/$mode$n
            "${MPI[@]}" -np "$n" build/dptrain "${T[@]}" "${flag[@]}" --out "$d" >/dev/null
            cmpout=$(build/dptrain compare "$OUT/${mode}1/model.h5" "$d/model.h5" || true)
            same=no; tail -1 <<<"$cmpout" | grep -q MATCH && same=yes
            maxd=$(awk '/max \|a-b\|/ {v = $4 + 0; if (v > m) m = v} END {printf "%.3g", m}' <<<"$cmpout")
            logs=no; cmp -s <(figures "$OUT/${mode}1/metrics.jsonl") <(figures "$d/metrics.jsonl") && logs=yes
            echo "| $mode | $n | $same | $maxd | $logs | $(field "$d/metrics.jsonl" test_accuracy) | $(field "$d/metrics.jsonl" test_loss) |"
        done
    done
} | tee runs/determinism.md
