#!/usr/bin/env bash
# sweep_fmnist.sh: a hyperparameter sweep on Fashion-MNIST and what it saves. Runs
#   1. dptrain sweep: TRIALS random trials (lr log-uniform, optimizer, batch, dropout) of the
#      quickstart network on NP ranks in groups of GROUP, without early stopping (--eta 0), so
#      that every trial trains every epoch;
#   2. the same trials one after another, each on all NP ranks (mpirun -np NP dptrain train
#      --config trials/NNN/config.json): what a user does without a sweep;
#   3. the sweep again with successive halving (--eta 3, rungs at 1 and 3 epochs of 9... as
#      EPOCHS gives);
# and prints the table, the wall times and their ratio. Long (minutes): not part of test.sh.
#   launch/sweep_fmnist.sh [OUT_DIR]      (NP=2 GROUP=1 TRIALS=12 EPOCHS=3 by default)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/runs/sweep-fmnist}
NP=${NP:-2}
GROUP=${GROUP:-1}
TRIALS=${TRIALS:-12}
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
BASE=(--data "$DATA" --layers 784,256,128,10 --activation relu --val-fraction 0.1
      --epochs "$EPOCHS" --seed 1)
SPACE=(--search random --trials "$TRIALS" --param lr=loguniform:1e-3:3e-1
       --param 'optimizer=sgd|adam' --param 'batch=64|128|256' --param dropout=uniform:0:0.3)

t0=$(date +%s.%N)
"${MPI[@]}" "$DPTRAIN" sweep "${BASE[@]}" "${SPACE[@]}" --group "$GROUP" --eta 0 \
    --out "$OUT/sweep" | tee "$OUT/sweep.log" | grep -v '^sweep: group'
t1=$(date +%s.%N)
for cfg in "$OUT"/sweep/trials/*/config.json; do
    t=$(basename "$(dirname "$cfg")")
    rc=0
    "${MPI[@]}" "$DPTRAIN" train --config "$cfg" --threads 0 --out "$OUT/alone/$t" --quiet \
        >"$OUT/alone-$t.log" 2>&1 || rc=$?
    case $rc in 0) what=finished ;; 4) what=diverged ;; *) what=failed ;; esac
    echo "alone: trial $t: exit $rc ($what)"
done
t2=$(date +%s.%N)
"${MPI[@]}" "$DPTRAIN" sweep "${BASE[@]}" "${SPACE[@]}" --group "$GROUP" --eta 3 \
    --out "$OUT/halving" | tee "$OUT/halving.log" | grep -v '^sweep: group'
t3=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v n="$TRIALS" -v np="$NP" -v g="$GROUP" -v e="$EPOCHS" 'BEGIN {
    printf "\nwall time, %d trials of %d epochs on %d ranks:\n", n, e, np
    printf "  sweep, groups of %d, every trial every epoch:  %7.1f s\n", g, b - a
    printf "  the same trials one after another on %d ranks: %7.1f s  (sweep / sequential %.2f)\n", np, c - b, (b - a) / (c - b)
    printf "  sweep with successive halving (--eta 3):        %7.1f s\n", d - c }'
