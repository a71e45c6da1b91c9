#!/usr/bin/env bash
# Every ready config under launch/configs runs for 2 epochs on 2 ranks and its training
# loss goes down (last epoch below first). Bad config files are refused with file:line.
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FMNIST=/usr/share/datasets/fashion-mnist

# make_data PATH: builds the dataset a config names, in $WORK; prints its path.
make_data() {
    local want=$1 f
    f="$WORK/$(basename "$want")"
    if [ ! -e "$f" ]; then
        case "$(basename "$want")" in
        line.h5) "$DPTRAIN" synth line --slope 2 --intercept 1 --noise 0.1 --out "$f" >/dev/null ;;
        spirals.h5) "$DPTRAIN" synth spirals --n-train 2000 --n-test 400 --out "$f" >/dev/null ;;
        blobs.h5) "$DPTRAIN" synth blobs --features 8 --classes 3 --out "$f" >/dev/null ;;
        fashion_mnist.h5)
            [ -e "$FMNIST/train-images-idx3-ubyte.gz" ] || return 1
            "$DPTRAIN" convert idx --dir "$FMNIST" --out "$f" >/dev/null ;;
        *) return 1 ;;
        esac
    fi
    echo "$f"
}

n_configs=0
for cfg in "$ROOT"/launch/configs/*.ini; do
    name=$(basename "$cfg" .ini)
    if [ "$name" = fashion_mnist_cnn ] && [ -n "${ASAN_OPTIONS:-}" ]; then
        # two full epochs of the CNN take minutes on the sanitizer build; mpi_cnn runs CNNs there
        echo "skipped $name on the sanitizer build"; continue
    fi
    want=$(sed -n 's/^ *data *= *//p' "$cfg" | head -1)
    if ! data=$(make_data "$want"); then
        echo "skipped $name: no data for $want"; continue
    fi
    n_configs=$((n_configs + 1))
    if ! run_np 2 train --config "$cfg" --data "$data" --epochs 2 --out "$WORK/$name" \
         --quiet >"$WORK/$name.log" 2>&1; then
        fail "$name: run failed: $(tail -3 "$WORK/$name.log")"; continue
    fi
    first=$(head -1 "$WORK/$name/metrics.jsonl" | grep -o '"train_loss":[0-9.e+-]*' | cut -d: -f2)
    last=$(tail -1 "$WORK/$name/metrics.jsonl" | grep -o '"train_loss":[0-9.e+-]*' | cut -d: -f2)
    if awk -v a="$first" -v b="$last" 'BEGIN{exit !(b < a)}'; then
        pass "$name: train loss $first -> $last"
    else
        fail "$name: train loss did not go down ($first -> $last)"
    fi
done
[ "$n_configs" -gt 0 ] || fail "no config was run"

printf '[optimizer]\nlearning_rate = 0.1\n' > "$WORK/bad_key.ini"
expect_exit 2 "unknown config key names file and line" "bad_key.ini:2: unknown key 'learning_rate'" -- \
    "$DPTRAIN" train --config "$WORK/bad_key.ini"
printf '[optimizer]\n\nlr = fast\n' > "$WORK/bad_value.ini"
expect_exit 2 "bad config value names file and line" "bad_value.ini:3: --lr: 'fast' is not a number" -- \
    "$DPTRAIN" train --config "$WORK/bad_value.ini"
printf '[optimiser]\nlr = 0.1\n' > "$WORK/bad_section.ini"
expect_exit 2 "unknown config section" "bad_section.ini:2: unknown section \[optimiser\]" -- \
    "$DPTRAIN" train --config "$WORK/bad_section.ini"
# The command line overrides the file: the file's lr 0.01 becomes 0.02 in the saved config.
data=$(make_data line.h5)
run_np 1 train --config "$ROOT/launch/configs/linear_regression.ini" --data "$data" \
    --lr 0.02 --epochs 1 --out "$WORK/override" --quiet >/dev/null
if grep -q '"lr":0.02' "$WORK/override/config.json"; then pass "command line overrides the file"
else fail "command line did not override the file: $(cat "$WORK/override/config.json")"; fi
finish
