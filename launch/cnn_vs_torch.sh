#!/usr/bin/env bash
# cnn_vs_torch.sh: dptrain against PyTorch 1.13 (Debian python3-torch) on the issue's CNN,
# conv(1->32,3x3,p1)-relu-maxpool2-conv(32->64,3x3,p1)-relu-maxpool2-flatten-128-relu-10,
# SGD with momentum, global batch 64, Fashion-MNIST, side by side in one run: REPEATS rounds,
# each running the five configurations one after the other (dptrain on 2 ranks and on 1, and
# on 2 ranks with its im2col + OpenBLAS convolutions (DPTRAIN_CONV=im2col) instead of
# oneDNN's; torch on 2 gloo ranks and on 1 thread, both with --malloc-keep, torch's fastest
# here). A
# figure is the training loop's samples/s of the epochs after the first (evaluation
# excluded, as in both programs' own reports); the table gives medians over the rounds and
# the ratios. Minutes: not part of test.sh.
#   launch/cnn_vs_torch.sh [OUT_DIR]        (REPEATS=3 EPOCHS=2 by default)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/runs/cnn-vs-torch}
REPEATS=${REPEATS:-3}
EPOCHS=${EPOCHS:-2}
DPTRAIN=$ROOT/build/dptrain
DATA=$ROOT/datasets/fashion_mnist.h5
PY=/usr/bin/python3
"$ROOT/launch/setup.sh" python3-torch python3-h5py >/dev/null
[ -x "$DPTRAIN" ] || "$ROOT/launch/build.sh"
if [ ! -f "$DATA" ]; then
    "$DPTRAIN" convert idx --dir /usr/share/datasets/fashion-mnist --out "$DATA"
fi
MPI=(mpirun --oversubscribe)
if [ "$(id -u)" = 0 ]; then MPI+=(--allow-run-as-root); fi
rm -rf "$OUT" && mkdir -p "$OUT"
LAYERS=1x28x28,conv32k3p1,maxpool2,conv64k3p1,maxpool2,flatten,128,10

# dp NP: dptrain's median samples/s over the epochs after the first.
# dp NP [ENGINE]: ENGINE (DPTRAIN_CONV) auto by default.
dp() {
    local d=$OUT/dp$1${2:-}
    rm -rf "$d"
    DPTRAIN_CONV=${2:-auto} "${MPI[@]}" -np "$1" "$DPTRAIN" train --data "$DATA" --layers "$LAYERS" --optimizer sgd \
        --lr 0.05 --momentum 0.9 --batch 64 --epochs "$EPOCHS" --seed 1 --threads 1 \
        --out "$d" --quiet >/dev/null
    sed -nE 's/.*"samples_per_s":([0-9.eE+-]+).*/\1/p' "$d/metrics.jsonl" | tail -n +2 |
        sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
# torch ARGS...: torch_cnn.py's figure.
torch_run() {
    "$PY" "$ROOT/launch/torch_cnn.py" --data "$DATA" --batch 64 --lr 0.05 --epochs "$EPOCHS" \
        --malloc-keep "$@" | sed -nE 's/^TORCH samples_per_s=([0-9.]+).*/\1/p'
}
declare -A fig
for r in $(seq 1 "$REPEATS"); do
    fig[dp2]+="$(dp 2) "
    fig[torch2]+="$(torch_run --ranks 2) "
    fig[dp1]+="$(dp 1) "
    fig[torch1]+="$(torch_run --threads 1) "
    fig[dp2i]+="$(dp 2 im2col) "
    echo "after round $r: dp2 ${fig[dp2]}| torch2 ${fig[torch2]}| dp1 ${fig[dp1]}| torch1 ${fig[torch1]}| dp2-im2col ${fig[dp2i]}"
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo
printf '%-28s %12s   %s\n' configuration samples/s "each round"
for k in dp2 torch2 dp1 torch1 dp2i; do
    case $k in
    dp2) name="dptrain, 2 ranks" ;; torch2) name="torch, 2 gloo ranks" ;;
    dp1) name="dptrain, 1 rank" ;; torch1) name="torch, 1 thread" ;;
    dp2i) name="dptrain im2col, 2 ranks" ;;
    esac
    printf '%-28s %12.0f   %s\n' "$name" "$(median "${fig[$k]}")" "${fig[$k]}"
done
awk -v a="$(median "${fig[dp2]}")" -v b="$(median "${fig[torch2]}")" \
    -v c="$(median "${fig[dp1]}")" -v d="$(median "${fig[torch1]}")" \
    -v e="$(median "${fig[dp2i]}")" \
    'BEGIN { printf "dptrain / torch: %.2fx on 2 cores (2 ranks each), %.2fx on 1 core; oneDNN / im2col convolutions: %.2fx on 2 ranks\n", a / b, c / d, a / e }'
