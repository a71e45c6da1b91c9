#!/usr/bin/env bash
# compare_optimizers.sh: trains the Fashion-MNIST MLP once with each optimizer config
# (launch/configs/optim_*.ini, 5 epochs each) and prints their test accuracies as a Markdown
# table, also written to runs/compare_optimizers.md, and draws every optimizer's per-epoch
# curves (loss, accuracy, learning rate; from runs/optim_*/metrics.jsonl) into one picture,
# runs/compare_optimizers.png (dptrain plot, gnuplot).
#   NP=2 EPOCHS=5 launch/compare_optimizers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NP=${NP:-2}
EPOCHS=${EPOCHS:-5}
DATA=datasets/fashion_mnist.h5
launch/setup.sh gnuplot-nox >/dev/null
launch/build.sh >/dev/null
[ -s "$DATA" ] || build/dptrain convert idx --dir /usr/share/datasets/fashion-mnist --out "$DATA"
MPI=(mpirun -np "$NP")
[ "$(id -u)" = 0 ] && MPI+=(--allow-run-as-root)
[ "$NP" -gt "$(nproc)" ] && MPI+=(--oversubscribe)
field() { tail -1 "$1" | grep -o "\"$2\":[0-9.e+-]*" | cut -d: -f2; }
mkdir -p runs # tee opens runs/compare_optimizers.md before the first run makes runs/
{
    echo "| optimizer | hyperparameters | train loss | test loss | test accuracy | seconds |"
    echo "| --- | --- | --- | --- | --- | --- |"
    for cfg in launch/configs/optim_*.ini; do
        name=$(basename "$cfg" .ini); name=${name#optim_}
        rm -rf "runs/optim_$name" # a fresh run each time (a new run will not prune old checkpoints)
        "${MPI[@]}" build/dptrain train --config "$cfg" --epochs "$EPOCHS" --quiet >/dev/null
        m=runs/optim_$name/metrics.jsonl
        hp=$(sed -n '/^\[optimizer\]/,/^\[/p' "$cfg" | grep -v '^\[\|^optimizer\|^lr-schedule\|^$' | tr '\n' ' ')
        secs=$(awk -F'"seconds":' '{split($2,a,/[,}]/); s+=a[1]} END{printf "%.1f", s}' "$m")
        printf '| %s | %s| %.4f | %.4f | %.4f | %s |\n' "$name" "$hp" "$(field "$m" train_loss)" \
            "$(field "$m" test_loss)" "$(field "$m" test_accuracy)" "$secs"
    done
} | tee runs/compare_optimizers.md
echo "(Fashion-MNIST, 784-256-128-10 ReLU, batch 128, cosine schedule, seed 1, $EPOCHS epochs, $NP ranks)"
runs=()
labels=()
for cfg in launch/configs/optim_*.ini; do
    name=$(basename "$cfg" .ini); name=${name#optim_}
    runs+=("runs/optim_$name")
    labels+=(--label "$name")
done
build/dptrain plot "${runs[@]}" "${labels[@]}" --out runs/compare_optimizers.png \
    --title "optimizers on Fashion-MNIST (784-256-128-10, batch 128, $EPOCHS epochs, $NP ranks)" >/dev/null
echo "curves of every optimizer (loss, accuracy, learning rate per epoch): runs/compare_optimizers.png"
