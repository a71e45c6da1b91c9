#!/usr/bin/env bash
# subnormals.sh: what --flush-subnormals (the CPU's flush-to-zero and denormals-are-zero
# modes) changes on every shipped configuration (launch/configs/*.ini): each trains on NP
# ranks twice, IEEE arithmetic (the default) and flushed, and the script prints per
# configuration the wall seconds and samples/s of both, the first and last epoch's samples/s
# of the IEEE run (a slow-down as values sink below 1.2e-38 shows there), the final test
# loss of both, and whether the two models are the same bits (dptrain compare --atol 0
# --rtol 0; else the largest difference). The data sets the configurations name are made
# first (Fashion-MNIST from Debian's dataset-fashion-mnist, spirals and line synthetic).
# Minutes: not part of test.sh.
#   launch/subnormals.sh [OUT_DIR]    (NP=2; CNN_EPOCHS=3 shortens the CNN's 15 epochs)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/runs/subnormals}
NP=${NP:-2}
CNN_EPOCHS=${CNN_EPOCHS:-3}
D=$ROOT/build/dptrain
[ -x "$D" ] || "$ROOT/launch/build.sh"
cd "$ROOT"
mkdir -p datasets
[ -f datasets/fashion_mnist.h5 ] || "$D" convert idx --dir /usr/share/datasets/fashion-mnist --out datasets/fashion_mnist.h5
[ -f datasets/spirals.h5 ] || "$D" synth spirals --classes 2 --n-train 2000 --n-test 400 --out datasets/spirals.h5 >/dev/null
[ -f datasets/line.h5 ] || "$D" synth line --slope 2 --intercept 1 --noise 0.1 --out datasets/line.h5 >/dev/null
MPI=(mpirun -np "$NP")
if [ "$(id -u)" = 0 ]; then MPI+=(--allow-run-as-root); fi
if [ "$NP" -gt "$(nproc)" ]; then MPI+=(--oversubscribe); fi
rm -rf "$OUT" && mkdir -p "$OUT"

# run NAME CONFIG MODE [ARGS...]: trains; prints wall seconds.
run() {
    local name=$1 cfg=$2 mode=$3; shift 3
    local t0 t1 extra=()
    [ "$mode" = ftz ] && extra=(--flush-subnormals)
    t0=$(date +%s.%N)
    if ! "${MPI[@]}" "$D" train --config "$cfg" --out "$OUT/$name-$mode" "${extra[@]}" "$@" \
            >"$OUT/$name-$mode.log" 2>&1; then
        echo "subnormals: $name ($mode) failed:" >&2
        tail -5 "$OUT/$name-$mode.log" >&2
        exit 1
    fi
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}
done_field() { sed -nE "s/^done: .* ([0-9]+) samples\/s.*test loss ([0-9.]+).*/\\$2/p" "$1"; }
epoch_sps() { sed -nE 's/.*"samples_per_s":([0-9.eE+-]+).*/\1/p' "$1/metrics.jsonl" | sed -n "$2"; }

printf '| configuration | IEEE s | flushed s | IEEE samples/s | flushed samples/s | IEEE epoch 1 -> last | test loss IEEE / flushed | models |\n'
printf '| --- | ---: | ---: | ---: | ---: | --- | --- | --- |\n'
for cfg in launch/configs/*.ini; do
    name=$(basename "$cfg" .ini)
    args=()
    [ "$name" = fashion_mnist_cnn ] && args=(--epochs "$CNN_EPOCHS")
    w_ieee=$(run "$name" "$cfg" ieee "${args[@]}")
    w_ftz=$(run "$name" "$cfg" ftz "${args[@]}")
    a=$OUT/$name-ieee b=$OUT/$name-ftz
    if "$D" compare "$a/model.h5" "$b/model.h5" --atol 0 --rtol 0 >/dev/null; then same="same bits"
    else same="differ: $("$D" compare "$a/model.h5" "$b/model.h5" | awk '$2 == "max" { v = $4 + 0; if (v > m) m = v } END { printf "max |a-b| %g", m }')"; fi
    printf '| %s | %s | %s | %s | %s | %.0f -> %.0f | %s / %s | %s |\n' "$name" "$w_ieee" "$w_ftz" \
        "$(done_field "$a.log" 1)" "$(done_field "$b.log" 1)" "$(epoch_sps "$a" 1p)" "$(epoch_sps "$a" '$p')" \
        "$(done_field "$a.log" 2)" "$(done_field "$b.log" 2)" "$same"
done
