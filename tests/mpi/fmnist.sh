#!/usr/bin/env bash
# A short real-data run: Fashion-MNIST from the Debian package, converted and trained for
# one epoch on 2 ranks; it must pass 0.80 test accuracy. Skipped (exit 77) without the data.
source "$(dirname "$0")/lib.sh"
DIR=/usr/share/datasets/fashion-mnist
if [ ! -e "$DIR/train-images-idx3-ubyte.gz" ] && [ ! -e "$DIR/train-images-idx3-ubyte" ]; then
    echo "skipped: $DIR not installed (apt-get install dataset-fashion-mnist)"
    exit 77
fi
"$DPTRAIN" convert idx --dir "$DIR" --out "$WORK/fm.h5" >/dev/null
run_np 2 train --data "$WORK/fm.h5" --layers 784,256,128,10 --lr 0.05 --momentum 0.9 \
    --batch 128 --epochs 1 --seed 1 --out "$WORK/run" --quiet
acc=$(grep -o '"test_accuracy":[0-9.e+-]*' "$WORK/run/metrics.jsonl" | cut -d: -f2)
if awk -v a="$acc" 'BEGIN{exit !(a >= 0.80)}'; then pass "1 epoch: test accuracy $acc >= 0.80"
else fail "1 epoch: test accuracy $acc < 0.80"; fi
finish
