#!/usr/bin/env bash
# mlp_vs_torch.sh: the quickstart's MLP (784-256-128-10, ReLU, SGD lr 0.05 momentum 0.9,
# cosine schedule, batch 128) for EPOCHS epochs on Fashion-MNIST, timed as whole processes
# (start-up, data loading, every epoch's evaluation, dptrain's checkpoints and model file
# included), dptrain against PyTorch 1.13 (Debian python3-torch, launch/torch_cnn.py --model
# mlp --cosine --malloc-keep) on the same cores. REPEATS rounds, each running the
# configurations in turn, so that a drift of the machine's speed touches all of them:
#   dptrain, 2 ranks          mpirun -np 2 dptrain train ...  (as launch/quickstart.sh)
#   torch 1x1                 1 process, 1 thread
#   torch 1x2                 1 process, 2 threads (torch's OpenMP and OpenBLAS)
#   torch 2x1                 2 processes, DistributedDataParallel over gloo, 1 thread each
# and prints each one's median wall seconds, the ratio of torch's best median to dptrain's,
# that ratio round by round, and dptrain's in-loop samples/s (median over the epochs after
# the first, from metrics.jsonl) next to `dptrain bench` on 2 ranks at the same batch (its
# blocking-allreduce median, one bench per round). Minutes: not part of test.sh.
#   launch/mlp_vs_torch.sh [OUT_DIR]     (REPEATS=5 EPOCHS=3 NP=2 by default; TORCH=0 skips
#                                         torch and the python3-torch install)
# The environment is passed as it is: OPENBLAS_CORETYPE, if set, picks both programs' OpenBLAS
# kernels (dptrain keeps a caller's choice); unset it to let each choose.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/runs/mlp-vs-torch}
REPEATS=${REPEATS:-5}
EPOCHS=${EPOCHS:-3}
NP=${NP:-2}
TORCH=${TORCH:-1}
DPTRAIN=$ROOT/build/dptrain
DATA=$ROOT/datasets/fashion_mnist.h5
PY=/usr/bin/python3
if [ "$TORCH" = 1 ]; then
    "$ROOT/launch/setup.sh" python3-torch python3-h5py >/dev/null
fi
[ -x "$DPTRAIN" ] || "$ROOT/launch/build.sh"
if [ ! -f "$DATA" ]; then
    "$DPTRAIN" convert idx --dir /usr/share/datasets/fashion-mnist --out "$DATA"
fi
MPI=(mpirun -np "$NP")
if [ "$(id -u)" = 0 ]; then MPI+=(--allow-run-as-root); fi
if [ "$NP" -gt "$(nproc)" ]; then MPI+=(--oversubscribe); fi
rm -rf "$OUT" && mkdir -p "$OUT"

# timed FILE CMD...: runs CMD, its output into FILE; prints its wall seconds. Fails the script
# (with FILE's tail) if CMD fails.
timed() {
    local file=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    if ! "$@" >"$file" 2>&1; then
        echo "mlp_vs_torch: failed: $*" >&2
        tail -20 "$file" >&2
        exit 1
    fi
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

dp_run() {
    rm -rf "$OUT/dp"
    timed "$OUT/dp.log" "${MPI[@]}" "$DPTRAIN" train --data "$DATA" --layers 784,256,128,10 \
        --activation relu --loss cross-entropy --optimizer sgd --lr 0.05 --momentum 0.9 \
        --lr-schedule cosine --batch 128 --epochs "$EPOCHS" --seed 1 --out "$OUT/dp"
}
torch_run() { # torch_run NAME ARGS...
    local name=$1; shift
    timed "$OUT/$name.log" "$PY" "$ROOT/launch/torch_cnn.py" --model mlp --cosine --data "$DATA" \
        --batch 128 --lr 0.05 --momentum 0.9 --epochs "$EPOCHS" --malloc-keep "$@"
}
in_loop() { # dptrain's in-loop samples/s: median over the epochs after the first (or the one)
    sed -nE 's/.*"samples_per_s":([0-9.eE+-]+).*/\1/p' "$OUT/dp/metrics.jsonl" |
        awk 'NR == 1 { first = $1 } NR > 1 { print } END { if (NR == 1) print first }' |
        sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
bench_run() { # dptrain bench on NP ranks, batch 128, blocking allreduce: its samples/s
    "${MPI[@]}" "$DPTRAIN" bench --layers 784,256,128,10 --batch 128 --steps 200 --repeats 3 \
        --allreduce blocking 2>&1 | awk '$1 == "blocking" { print $2; exit }'
}

declare -A fig
CONFIGS=(dp)
if [ "$TORCH" = 1 ]; then CONFIGS+=(t11 t12 t21); fi
for r in $(seq 1 "$REPEATS"); do
    fig[dp]+="$(dp_run) "
    fig[loop]+="$(in_loop) "
    if [ "$TORCH" = 1 ]; then
        fig[t11]+="$(torch_run t11 --threads 1) "
        fig[t12]+="$(torch_run t12 --threads 2) "
        fig[t21]+="$(torch_run t21 --ranks 2) "
    fi
    fig[bench]+="$(bench_run) "
    line="round $r:"
    for k in "${CONFIGS[@]}"; do line+=" $k $(awk '{ print $NF }' <<<"${fig[$k]}")s"; done
    echo "$line; in-loop $(awk '{ print $NF }' <<<"${fig[loop]}")/s, bench $(awk '{ print $NF }' <<<"${fig[bench]}")/s"
done
echo
grep -m1 -E '^done:' "$OUT/dp.log" || true
printf '%-34s %10s   %s\n' configuration "median s" "each round"
for k in "${CONFIGS[@]}"; do
    case $k in
    dp) name="dptrain, $NP ranks" ;; t11) name="torch 1 process x 1 thread" ;;
    t12) name="torch 1 process x 2 threads" ;; t21) name="torch 2 processes (DDP, gloo)" ;;
    esac
    printf '%-34s %10.2f   %s\n' "$name" "$(median "${fig[$k]}")" "${fig[$k]}"
done
printf '%-34s %10.0f   %s\n' "dptrain in-loop samples/s" "$(median "${fig[loop]}")" "${fig[loop]}"
printf '%-34s %10.0f   %s\n' "dptrain bench samples/s" "$(median "${fig[bench]}")" "${fig[bench]}"
awk -v a="$(median "${fig[loop]}")" -v b="$(median "${fig[bench]}")" \
    'BEGIN { printf "in-loop / bench: %.3f\n", a / b }'
if [ "$TORCH" = 1 ]; then
    best=t11
    for k in t12 t21; do
        if awk -v a="$(median "${fig[$k]}")" -v b="$(median "${fig[$best]}")" 'BEGIN { exit !(a < b) }'
        then best=$k; fi
    done
    awk -v t="$(median "${fig[$best]}")" -v d="$(median "${fig[dp]}")" -v k="$best" \
        'BEGIN { printf "torch best (%s) / dptrain, medians of whole-process seconds: %.2fx\n", k, t / d }'
    read -ra dps <<<"${fig[dp]}"
    read -ra tbs <<<"${fig[$best]}"
    per=""
    for i in "${!dps[@]}"; do per+="$(awk -v t="${tbs[$i]}" -v d="${dps[$i]}" 'BEGIN { printf "%.2f", t / d }') "; done
    echo "round by round: $per"
fi
