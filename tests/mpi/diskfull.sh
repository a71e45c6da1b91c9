#!/usr/bin/env bash
# A full disk never crashes dptrain: at the first checkpoint, at a later one, at the final
# model file and at a prediction file the run ends with a message naming the file and the
# reason, exit 1 and no signal, no temporary file is left, and an earlier checkpoint stays
# intact. Runs on small tmpfs mounts (root only; skipped, exit 77, otherwise).
source "$(dirname "$0")/lib.sh"
cd "$WORK"

if [ "$(id -u)" != 0 ]; then
    echo "SKIP: mounting a small tmpfs needs root"
    exit 77
fi
MNT=$WORK/full
mkdir -p "$MNT"
cleanup() { umount "$MNT" 2>/dev/null || true; }
trap cleanup EXIT
# mount_kb KB: a fresh tmpfs of KB kilobytes at $MNT.
mount_kb() {
    umount "$MNT" 2>/dev/null || true
    mount -t tmpfs -o "size=${1}k" tmpfs "$MNT" || { echo "SKIP: cannot mount a tmpfs here"; exit 77; }
}

"$DPTRAIN" synth blobs --features 128 --classes 10 --n-train 2000 --n-test 200 --out blobs.h5 >/dev/null
RUN=(--data blobs.h5 --layers 128,512,10 --lr 0.05 --momentum 0.9 --batch 100 --epochs 2 --seed 1
     --threads 1 --quiet)
# Sizes on a roomy disk: a checkpoint (weights and momentum) and the model file.
run_np 2 train "${RUN[@]}" --out roomy --checkpoint-every 10 >/dev/null
CK_KB=$(( ($(stat -c %s roomy/checkpoints/ckpt-0000000020.h5) + 1023) / 1024 ))
MODEL_KB=$(( ($(stat -c %s roomy/model.h5) + 1023) / 1024 ))
echo "checkpoint ${CK_KB} KiB, model file ${MODEL_KB} KiB"

# full_case NAME KB WANT_FILE_PATTERN ARGS...: a 2-rank run into the tmpfs of KB KiB fails
# cleanly while writing a file matching the pattern.
full_case() {
    local name=$1 kb=$2 pattern=$3 rc=0 out; shift 3
    mount_kb "$kb"
    out=$(run_np 2 "$@" 2>&1) || rc=$?
    if [ "$rc" = 1 ] && grep -Eq "error: .*$pattern.*No space left on device" <<<"$out" &&
       ! grep -Eq 'Segmentation|signal [0-9]+|core dumped|exited on signal' <<<"$out" &&
       [ -z "$(find "$MNT" -name '*.tmp.*')" ]; then
        pass "$name: exit 1, no crash, no temporary file left: $(grep -m1 -Eo "error: .*" <<<"$out" | sed "s|$MNT/||g")"
    else
        fail "$name: exit $rc; temporary files: $(find "$MNT" -name '*.tmp.*' | tr '\n' ' ')"
        grep -E 'error|signal|Segm' <<<"$out" | head -5 >&2
    fi
}

# The first checkpoint does not fit.
full_case "full disk at the first checkpoint" $((CK_KB / 2)) 'ckpt-0000000010\.h5' \
    train "${RUN[@]}" --out "$MNT/first" --checkpoint-every 10
# The first fits, the second does not (the first is kept until the second is complete).
full_case "full disk at a later checkpoint" $((CK_KB * 3 / 2 + 16)) 'ckpt-0000000020\.h5' \
    train "${RUN[@]}" --out "$MNT/later" --checkpoint-every 10
if "$DPTRAIN" info "$MNT/later/checkpoints/ckpt-0000000010.h5" | grep -Eq '^position: .*step 10(,|$)'; then
    pass "full disk at a later checkpoint: the previous checkpoint (step 10) is intact"
else
    fail "full disk at a later checkpoint: step 10's checkpoint is not readable"
fi
# Only the final checkpoint (epoch checkpoints off) fits; the model file does not.
full_case "full disk at the model file" $((CK_KB + MODEL_KB / 2)) 'model\.h5' \
    train "${RUN[@]}" --out "$MNT/model" --checkpoint-epochs 0
# Predictions of the roomy run's model onto a disk with no room.
full_case "full disk at a prediction file (HDF5)" 8 'p\.h5' \
    predict --checkpoint roomy/model.h5 --data blobs.h5 --output "$MNT/p.h5"
full_case "full disk at a prediction file (CSV)" 8 'p\.csv' \
    predict --checkpoint roomy/model.h5 --data blobs.h5 --output "$MNT/p.csv"
finish
