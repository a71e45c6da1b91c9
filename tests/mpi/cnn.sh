#!/usr/bin/env bash
# Convolutional networks: a CNN with per-channel batch norm and dropout on feature maps gives
# the one-rank weights on 2, 3 and 4 ranks; a stop inside an epoch resumes bit for bit; eval,
# predict, info and compare take CNN model files; shape errors name the layer; a short run
# on Fashion-MNIST (when installed) learns.
source "$(dirname "$0")/lib.sh"
TOL=(--atol 2e-5 --rtol 2e-4)
# 72 features per row = 2 channels of 6x6 images.
"$DPTRAIN" synth blobs --features 72 --classes 3 --n-train 300 --n-test 60 --noise 0.8 --seed 5 \
    --out "$WORK/img.h5" >/dev/null
L=2x6x6,conv4k3p1:bn,maxpool2,conv6k2:tanh:dropout=0.2,flatten,8:dropout=0.1,3
# batch 30: 8/8/7/7 rows on 4 ranks; 10 steps an epoch.
ARGS=(train --data "$WORK/img.h5" --layers "$L" --batch 30 --epochs 2 --optimizer sgd
      --lr 0.05 --momentum 0.9 --seed 7 --quiet)
for n in 1 2 3 4; do
    run_np "$n" "${ARGS[@]}" --out "$WORK/np$n" >/dev/null
done
for n in 2 3 4; do
    if out=$("$DPTRAIN" compare "$WORK/np1/model.h5" "$WORK/np$n/model.h5" "${TOL[@]}"); then
        pass "CNN with batch norm and dropout: np$n = np1"
    else
        fail "CNN: np$n differs from np1"; echo "$out" >&2
    fi
done
# The overlapped allreduce: the conv parameters ride in the first dense layer's bucket,
# started after the image part's backward.
run_np 3 "${ARGS[@]}" --allreduce overlap --bucket-kb 1 --out "$WORK/ov3" >/dev/null
if out=$("$DPTRAIN" compare "$WORK/np1/model.h5" "$WORK/ov3/model.h5" "${TOL[@]}"); then
    pass "CNN with --allreduce overlap (1 KB buckets) on 3 ranks = np1"
else
    fail "CNN with --allreduce overlap differs from np1"; echo "$out" >&2
fi
if grep -q 'conv/0/bn_running_var' <<<"$("$DPTRAIN" compare "$WORK/np1/model.h5" "$WORK/np2/model.h5" "${TOL[@]}")"
then pass "conv weights and per-channel batch-norm statistics are in the file and compared"
else fail "no /conv/0 tensors in the model file"; fi
# The file holds torch's Conv2d layout: /conv/0/weight is (out, in, kh, kw) = (4, 2, 3, 3).
if h5dump -H -d /conv/0/weight "$WORK/np1/model.h5" | grep -q 'SIMPLE { ( 4, 2, 3, 3 )'
then pass "/conv/0/weight has shape (4, 2, 3, 3)"
else fail "/conv/0/weight shape"; h5dump -H -d /conv/0/weight "$WORK/np1/model.h5" >&2; fi
# Conv dropout changes the trajectory (so the equalities above are not vacuous).
run_np 2 "${ARGS[@]}" --layers "${L/:dropout=0.2/}" --out "$WORK/nodrop" >/dev/null
if "$DPTRAIN" compare "$WORK/np2/model.h5" "$WORK/nodrop/model.h5" "${TOL[@]}" >/dev/null
then fail "dropout on the conv layer changed nothing"; else pass "conv dropout changes the trajectory"; fi

# --- the convolution kernels: oneDNN (AVX-512 and AVX2) against im2col + OpenBLAS ----------
# Channels in oneDNN's blocks of 16, so that its blocked layouts are used (the net above, of
# 2 to 6 channels, runs on whichever kernels auto picks). With oneDNN in the build, auto
# runs it, the banner says so, and the weights after 2 epochs agree with im2col's and with
# oneDNN's AVX2 kernels' (the path of machines without AVX-512) to the rank tolerance; on 1
# and 3 ranks likewise; predict writes the same file at 1 and 3 ranks.
LB=2x6x6,conv16k3p1:bn,maxpool2,conv32k3p1,flatten,8,3
AB=(train --data "$WORK/img.h5" --layers "$LB" --batch 30 --epochs 2 --optimizer sgd
    --lr 0.05 --momentum 0.9 --seed 3)
banner=$(run_np 2 "${AB[@]}" --out "$WORK/k_auto" 2>&1 | grep '^convolutions:' || true)
# Whether this build has oneDNN: the program links libdnnl.
has_dnnl=0
if ldd "$DPTRAIN" 2>/dev/null | grep -q 'libdnnl'; then has_dnnl=1; fi
if [ "$has_dnnl" = 1 ] && [[ "$banner" == "convolutions: oneDNN "*": layer 1, 3" ]]; then
    pass "the banner names the kernels: $banner"
    DPTRAIN_CONV=im2col run_np 2 "${AB[@]}" --out "$WORK/k_im2col" --quiet >/dev/null
    DNNL_MAX_CPU_ISA=AVX2 run_np 2 "${AB[@]}" --out "$WORK/k_avx2" --quiet >/dev/null
    for k in im2col avx2; do
        if out=$("$DPTRAIN" compare "$WORK/k_auto/model.h5" "$WORK/k_$k/model.h5" "${TOL[@]}")
        then pass "oneDNN's convolutions = $k's after 2 epochs on 2 ranks"
        else fail "oneDNN's convolutions differ from $k's"; echo "$out" >&2; fi
    done
    if "$DPTRAIN" compare "$WORK/k_auto/model.h5" "$WORK/k_im2col/model.h5" >/dev/null
    then fail "oneDNN and im2col gave bit-identical weights: was oneDNN used at all?"
    else pass "oneDNN and im2col differ in the last bits (two kernels really ran)"; fi
    run_np 1 "${AB[@]}" --out "$WORK/k_np1" --quiet >/dev/null
    run_np 3 "${AB[@]}" --out "$WORK/k_np3" --quiet >/dev/null
    if out=$("$DPTRAIN" compare "$WORK/k_np1/model.h5" "$WORK/k_np3/model.h5" "${TOL[@]}")
    then pass "oneDNN's convolutions: np3 = np1"
    else fail "oneDNN's convolutions: np3 differs from np1"; echo "$out" >&2; fi
    for n in 1 3; do
        run_np "$n" predict --checkpoint "$WORK/k_np1/model.h5" --data "$WORK/img.h5" \
            --eval-batch 16 --output "$WORK/kp$n.csv" >/dev/null
    done
    if [ -s "$WORK/kp1.csv" ] && cmp -s "$WORK/kp1.csv" "$WORK/kp3.csv"
    then pass "oneDNN's convolutions: predict writes the same file at 1 and 3 ranks"
    else fail "oneDNN's convolutions: predict at 1 and 3 ranks differ"; fi
elif [ "$has_dnnl" = 0 ] && [[ "$banner" == "convolutions: im2col + OpenBLAS sgemm: layer 1, 3" ]]; then
    echo "skipped the oneDNN checks: this build has no oneDNN ($banner)"
else
    fail "banner with oneDNN linked ($has_dnnl): '$banner'"
fi
if DPTRAIN_CONV=gpu run_np 1 "${AB[@]}" --out "$WORK/k_bad" >"$WORK/kbad.log" 2>&1; then
    fail "DPTRAIN_CONV=gpu was taken"
elif grep -q 'DPTRAIN_CONV=gpu: expected auto, onednn or im2col' "$WORK/kbad.log"; then
    pass "DPTRAIN_CONV=gpu refused with a message"
else fail "DPTRAIN_CONV=gpu: $(cat "$WORK/kbad.log")"; fi

# --- stop inside epoch 2 (step 13 of 20), resume: bit-identical -------------------------
rc=0
DPTRAIN_TEST_STOP_AT=13:1 run_np 2 "${ARGS[@]}" --out "$WORK/part" >"$WORK/stop.log" 2>&1 || rc=$?
if [ "$rc" = 3 ] && [ -e "$WORK/part/checkpoints/ckpt-0000000013.h5" ]; then
    run_np 2 "${ARGS[@]}" --out "$WORK/part" --resume auto >/dev/null
    if "$DPTRAIN" compare "$WORK/np2/model.h5" "$WORK/part/model.h5" >/dev/null; then
        pass "CNN stopped at step 13 on 2 ranks and resumed: bit-identical to the uninterrupted run"
    else
        fail "CNN resumed run differs from the uninterrupted one"
    fi
else
    fail "stop at step 13: exit $rc"; cat "$WORK/stop.log" >&2
fi

# --- eval, predict, info on the CNN file ----------------------------------------------------
out=$(run_np 2 eval --checkpoint "$WORK/np1/model.h5" --data "$WORK/img.h5" 2>&1)
acc=$(grep -Eo 'accuracy [0-9.]+' <<<"$out" | head -1 | cut -d' ' -f2)
if [ -n "$acc" ] && awk -v a="$acc" 'BEGIN{exit !(a > 0.6)}'; then
    pass "eval of the CNN on 2 ranks: test accuracy $acc > 0.6 (chance 0.33)"
else fail "eval of the CNN: $out"; fi
if run_np 1 predict --checkpoint "$WORK/np1/model.h5" --data "$WORK/img.h5" \
        --output "$WORK/pred.csv" >/dev/null 2>&1 &&
   [ "$(grep -c . "$WORK/pred.csv")" -ge 60 ]; then
    pass "predict writes a row per test sample for the CNN"
else fail "predict on the CNN"; fi
info=$("$DPTRAIN" info "$WORK/np1/model.h5")
if grep -q '^layers: 2x6x6,conv4k3p1:relu:bn,maxpool2,conv6k2:tanh:dropout=0.2,flatten,8:relu:dropout=0.1,3:identity' <<<"$info" &&
   grep -Eq '^ +1 +conv4k3p1 +4x6x6 +84 +relu batchnorm' <<<"$info" &&
   grep -Eq '^ +3 +conv6k2 +6x2x2 +102 +tanh dropout 0.2' <<<"$info" &&
   grep -Eq '^ +flatten +24' <<<"$info"; then
    pass "info prints each layer's output shape and parameter count (4x6x6: 2*4*9+4+8 = 84)"
else fail "info of the CNN:"; echo "$info" >&2; fi

# --- errors name the layer and the shapes ---------------------------------------------------
expect_exit 2 "input shape that does not match the data" "takes 1x8x8 images \\(64 values\\) but /train/x has 72" -- \
    run_np 1 train --data "$WORK/img.h5" --layers 1x8x8,conv2k3,flatten,3 --out "$WORK/e1"
expect_exit 2 "a window larger than its input" "layer 3 \\(conv4k4\\): its 4x4 window does not fit the input 4x3x3" -- \
    run_np 1 train --data "$WORK/img.h5" --layers 2x6x6,conv4k3p1,maxpool2,conv4k4,flatten,3 --out "$WORK/e2"
expect_exit 2 "no flatten" "dense size 3 before flatten or gap" -- \
    run_np 1 train --data "$WORK/img.h5" --layers 2x6x6,conv4k3,3 --out "$WORK/e3"
expect_exit 2 "settings on a pooling" "a pooling takes no settings" -- \
    run_np 1 train --data "$WORK/img.h5" --layers 2x6x6,maxpool2:relu,flatten,3 --out "$WORK/e4"
expect_exit 2 "deterministic mode" "deterministic mode does not take convolution" -- \
    run_np 1 train --data "$WORK/img.h5" --layers 2x6x6,conv2k3,flatten,3 --deterministic --out "$WORK/e5"

# --- a short real-data run --------------------------------------------------------------------
DIR=/usr/share/datasets/fashion-mnist
if [ -n "${ASAN_OPTIONS:-}" ]; then
    echo "skipped the Fashion-MNIST run on the sanitizer build (a minute of instrumented GEMMs)"
elif [ -e "$DIR/train-images-idx3-ubyte.gz" ] || [ -e "$DIR/train-images-idx3-ubyte" ]; then
    "$DPTRAIN" convert idx --dir "$DIR" --out "$WORK/fm.h5" >/dev/null
    run_np 2 train --data "$WORK/fm.h5" --layers 1x28x28,conv8k3p1:bn,maxpool2,conv16k3p1,maxpool2,flatten,64,10 \
        --lr 0.05 --momentum 0.9 --batch 128 --epochs 1 --seed 1 --out "$WORK/fm" --quiet
    acc=$(grep -o '"test_accuracy":[0-9.e+-]*' "$WORK/fm/metrics.jsonl" | cut -d: -f2)
    if awk -v a="$acc" 'BEGIN{exit !(a >= 0.84)}'; then pass "Fashion-MNIST CNN, 1 epoch on 2 ranks: test accuracy $acc >= 0.84"
    else fail "Fashion-MNIST CNN, 1 epoch: test accuracy $acc < 0.84"; fi
else
    echo "skipped the Fashion-MNIST run: $DIR not installed"
fi
finish
