#!/usr/bin/env bash
# lrfind_fmnist.sh: the learning-rate range test on Fashion-MNIST, and what its suggestion is
# worth. For the quickstart network (launch/configs/fashion_mnist_mlp.ini) with SGD + momentum
# 0.9 and with Adam: dptrain lr-find on NP ranks, then EPOCHS epochs of training at the
# suggested rate, at the other rule's rate (the minimum's / 10) and at the configuration's
# hand-set rate (0.05 for SGD; torch's default 0.001 for Adam), and prints a table of
# validation and test accuracy. Minutes: not part of test.sh.
#   launch/lrfind_fmnist.sh [OUT_DIR]        (NP=2 EPOCHS=3 by default)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/runs/lrfind-fmnist}
NP=${NP:-2}
EPOCHS=${EPOCHS:-3}
DPTRAIN=$ROOT/build/dptrain
DATA=$ROOT/datasets/fashion_mnist.h5
MPI=(mpirun --oversubscribe -np "$NP")
if [ "$(id -u)" = 0 ]; then MPI+=(--allow-run-as-root); fi
[ -x "$DPTRAIN" ] || "$ROOT/launch/build.sh"
if [ ! -f "$DATA" ]; then
    "$DPTRAIN" convert idx --dir /usr/share/datasets/fashion-mnist --out "$DATA"
fi
rm -rf "$OUT" && mkdir -p "$OUT"
# The quickstart network of launch/configs/fashion_mnist_mlp.ini, its optimizer set below.
BASE=(--data "$DATA" --layers 784,256,128,10 --activation relu --init he-normal --batch 128
      --lr-schedule cosine --seed 1 --val-fraction 0.1)

# field NAME DIR: the last epoch's NAME from DIR/metrics.jsonl.
field() { sed -nE "s/.*\"$1\":([0-9.eE+-]+).*/\1/p" "$2/metrics.jsonl" | tail -1; }
rows=()
for opt in sgd adam; do
    if [ "$opt" = sgd ]; then OPT=(--optimizer sgd --momentum 0.9); hand=0.05
    else OPT=(--optimizer adam); hand=0.001; fi
    t0=$(date +%s.%N)
    "${MPI[@]}" "$DPTRAIN" lr-find "${BASE[@]}" "${OPT[@]}" --out "$OUT/$opt" | tee "$OUT/$opt.log"
    t1=$(date +%s.%N)
    sugg=$(sed -nE 's/^suggested --lr ([^ ]+) .*/\1/p' "$OUT/$opt.log")
    tenth=$(sed -nE 's/.*that rate \/ 10: ([^ ]+)$/\1/p' "$OUT/$opt.log")
    [ -n "$sugg" ] || { echo "lrfind_fmnist: no suggestion for $opt" >&2; exit 1; }
    for pair in "suggested:$sugg" "minimum/10:$tenth" "hand-set:$hand"; do
        name=${pair%%:*} lr=${pair#*:}
        dir="$OUT/train-$opt-${name//\//-}"
        rc=0
        "${MPI[@]}" "$DPTRAIN" train "${BASE[@]}" "${OPT[@]}" --lr "$lr" --epochs "$EPOCHS" \
            --out "$dir" --quiet >"$dir.log" 2>&1 || rc=$?
        if [ "$rc" = 0 ]; then
            rows+=("$(printf '| %s | %s | %s | %.4f | %.4f | %.4f |' "$opt" "$name" "$lr" \
                "$(field val_loss "$dir")" "$(field val_accuracy "$dir")" "$(field test_accuracy "$dir")")")
        else
            rows+=("| $opt | $name | $lr | exit $rc (4: diverged) | - | - |")
        fi
    done
    awk -v a="$t0" -v b="$t1" -v o="$opt" 'BEGIN { printf "lr-find %s: %.1f s wall\n", o, b - a }'
done
echo
echo "$EPOCHS epochs of the quickstart network on $NP ranks (validation: 10 % of /train):"
echo "| optimizer | rate from | lr | val loss | val accuracy | test accuracy |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
