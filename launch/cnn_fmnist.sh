#!/usr/bin/env bash
# cnn_fmnist.sh: the shipped Fashion-MNIST CNN (launch/configs/fashion_mnist_cnn.ini) for
# several seeds on NP ranks, one after the other; prints every run's epochs, then a table:
# final test accuracy, the first epoch at 0.92 and the training time until then (the sum of
# the epochs' "seconds": training and evaluation), and the whole run's wall time (process
# start to exit). Minutes: not part of test.sh.
#   launch/cnn_fmnist.sh [OUT_DIR]        (NP=2 SEEDS="1 2 3" by default; EPOCHS: the config's)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/runs/cnn-fmnist}
NP=${NP:-2}
SEEDS=${SEEDS:-1 2 3}
DPTRAIN=$ROOT/build/dptrain
DATA=$ROOT/datasets/fashion_mnist.h5
MPI=(mpirun --oversubscribe -np "$NP")
if [ "$(id -u)" = 0 ]; then MPI+=(--allow-run-as-root); fi
[ -x "$DPTRAIN" ] || "$ROOT/launch/build.sh"
if [ ! -f "$DATA" ]; then
    "$DPTRAIN" convert idx --dir /usr/share/datasets/fashion-mnist --out "$DATA"
fi
rm -rf "$OUT" && mkdir -p "$OUT"
EXTRA=()
[ -n "${EPOCHS:-}" ] && EXTRA+=(--epochs "$EPOCHS")
rows=()
for seed in $SEEDS; do
    t0=$(date +%s%N)
    "${MPI[@]}" "$DPTRAIN" train --config "$ROOT/launch/configs/fashion_mnist_cnn.ini" \
        --data "$DATA" --seed "$seed" --out "$OUT/seed$seed" "${EXTRA[@]}" | grep -E '^(epoch|done|dptrain)'
    wall=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    m=$OUT/seed$seed/metrics.jsonl
    rows+=("$(awk -v seed="$seed" -v wall="$wall" '
        { match($0, /"test_accuracy":[0-9.eE+-]+/); a = substr($0, RSTART + 16, RLENGTH - 16) + 0
          match($0, /"seconds":[0-9.eE+-]+/); t += substr($0, RSTART + 10, RLENGTH - 10)
          match($0, /"epoch":[0-9]+/); e = substr($0, RSTART + 8, RLENGTH - 8)
          if (a >= 0.92 && !hit) { hit = e; th = t } last = a }
        END { printf "%-5s %9.4f %12s %14s %10.1f", seed, last, hit ? hit : "-",
                     hit ? sprintf("%.1f", th) : "-", wall }' "$m")")
done
echo
printf '%-5s %9s %12s %14s %10s\n' seed test_acc epoch_0.92 seconds_0.92 wall_s
printf '%s\n' "${rows[@]}"
