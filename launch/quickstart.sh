#!/usr/bin/env bash
# quickstart.sh: from a fresh Debian 12 machine to a trained Fashion-MNIST model.
# Installs what is missing, builds, converts the dataset once, trains a 784-256-128-10 MLP
# (or, with MODEL=cnn, the CNN of launch/configs/fashion_mnist_cnn.ini) with mpirun. Each
# step is skipped when it is already done.
#   NP=4 EPOCHS=20 SEED=3 launch/quickstart.sh     (defaults: NP=2, EPOCHS=15, SEED=1)
#   MODEL=cnn launch/quickstart.sh                 (defaults: NP=2, EPOCHS=15, SEED=1)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-mlp}
case "$MODEL" in
mlp|cnn) ;;
*) echo "quickstart.sh: MODEL=$MODEL: use mlp (the default) or cnn" >&2; exit 2 ;;
esac
NP=${NP:-2}
EPOCHS=${EPOCHS:-15}
SEED=${SEED:-1}
# One directory per (model, epochs, seed): run again, it continues an interrupted run
# (--resume auto) or reports the finished one; other settings make a new run.
OUT=runs/fmnist-${EPOCHS}e-seed${SEED}
[ "$MODEL" = cnn ] && OUT=runs/fmnist-cnn-${EPOCHS}e-seed${SEED}
IDX=/usr/share/datasets/fashion-mnist
DATA=datasets/fashion_mnist.h5

echo "== 1/4 packages"
launch/setup.sh
echo "== 2/4 build"
launch/build.sh
echo "== 3/4 dataset"
if [ -s "$DATA" ] && [ "$DATA" -nt "$IDX/train-images-idx3-ubyte.gz" ]; then
    echo "$DATA is up to date"
else
    build/dptrain convert idx --dir "$IDX" --out "$DATA"
fi
echo "== 4/4 training on $NP ranks"
MPI=(mpirun -np "$NP")
[ "$(id -u)" = 0 ] && MPI+=(--allow-run-as-root)
[ "$NP" -gt "$(nproc)" ] && MPI+=(--oversubscribe)
if [ "$MODEL" = cnn ]; then
    "${MPI[@]}" build/dptrain train --config launch/configs/fashion_mnist_cnn.ini \
        --data "$DATA" --epochs "$EPOCHS" --seed "$SEED" --out "$OUT" --resume auto
else
    "${MPI[@]}" build/dptrain train --data "$DATA" --layers 784,256,128,10 --activation relu \
        --loss cross-entropy --optimizer sgd --lr 0.05 --momentum 0.9 --lr-schedule cosine \
        --batch 128 --epochs "$EPOCHS" --seed "$SEED" --out "$OUT" --resume auto
fi
echo "model, metrics, config and checkpoints: $OUT/"
