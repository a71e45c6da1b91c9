#!/usr/bin/env bash
# Watching a run and using its results. --progress: rank 0's in-epoch progress line, redrawn
# in place ("\r<text>\033[K") with increasing steps and 100 % at each epoch's end, then
# replaced by the epoch line; without it (a pipe, the default) the output is byte for byte
# the same lines as --progress off, timings aside; on a real terminal (tmux) under mpirun it
# is on by default, stays on one line and is cleared; it may change on --resume; INI key;
# bench prints none; bad values are refused. dptrain plot: runs' curves into a PNG of the
# size asked; errors name the file (and line).
source "$(dirname "$0")/lib.sh"
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$WORK"

"$DPTRAIN" synth blobs --features 8 --classes 3 --n-train 2000 --n-test 300 --out blobs.h5 >/dev/null
# 2000 rows in batches of 16: 125 steps per epoch, 375 in the run.
T=(train --data ../blobs.h5 --layers 8,32,3 --epochs 3 --batch 16 --lr 0.1 --seed 2 --out r)
PROG='^epoch [0-9]+/[0-9]+ +[0-9]+%  step [0-9]+/[0-9]+ \(run [0-9]+/[0-9]+\)  [0-9]+ samples/s  loss [0-9.]+  left [0-9:?]+ \(run [0-9:?]+\)$'

# records FILE: the progress records of FILE, one per line (the text between a "\r" and
# its "\033[K").
records() { tr '\r' '\n' <"$1" | sed 's/\x1b\[K//g' | grep -E "$PROG" || true; }
# lines FILE: FILE as the lines a terminal ends up showing (what follows the last "\r" of
# each line, clear-to-end-of-line codes removed), the timing figures replaced by T.
lines() {
    sed -E 's/.*\r//; s/\x1b\[K//g' "$1" |
        sed -E 's/[0-9.]+ samples\/s/T samples\/s/g; s/[0-9.]+ s$/T s/'
}
# check_records FILE EPOCHS STEPS_PER_EPOCH FIRST_RUN_STEP: the records' steps increase (in
# the epoch and in the run), the percent never drops within an epoch, every epoch ends at
# 100 % on its last step, and the run's last record is its last step.
check_records() {
    records "$1" | awk -v E="$2" -v S="$3" -v first="$4" '
        # "epoch E/EPOCHS PCT%  step ST/SPE (run RS/TOT)  ..." split at blanks, %, (, ), /
        { split($0, a, /[ %()\/]+/)
          ep = a[2] + 0; pct = a[4] + 0; st = a[6] + 0; spe = a[7] + 0; rs = a[9] + 0; tot = a[10] + 0
          n++
          if (spe != S || tot != E * S) bad = bad " totals " spe "/" tot
          if (rs != (ep - 1) * S + st) bad = bad " run step " rs " is not epoch " ep " step " st
          if (n > 1 && rs <= prev_rs) bad = bad " step " rs " after " prev_rs
          if (ep == prev_ep && pct < prev_pct) bad = bad " percent " pct " after " prev_pct
          if (ep != prev_ep && n > 1) { if (last_pct != 100) bad = bad " epoch " prev_ep " ended at " last_pct "%"; eps++ }
          if (st == S && pct != 100) bad = bad " last step at " pct "%"
          if (pct == 100 && st != S) bad = bad " 100% at step " st
          prev_rs = rs; prev_ep = ep; prev_pct = pct; last_pct = pct; if (n == 1) r0 = rs }
        END { eps++
              if (n < 2 * eps) bad = bad " only " n " records for " eps " epochs"
              if (last_pct != 100) bad = bad " the last epoch ended at " last_pct "%"
              if (rs != E * S) bad = bad " the last record is step " rs
              if (r0 != first) bad = bad " the first record is step " r0 ", expected " first
              print bad ? "BAD" bad : "OK " n " records" }'
}

# --- --progress on into a file, off, and the default into a pipe ------------------------
mkdir on off pipe pipe1
(cd on && run_np 2 "${T[@]}" --progress on >../on.txt)
(cd off && run_np 2 "${T[@]}" --progress off >../off.txt)
(cd pipe && run_np 2 "${T[@]}" | cat >../pipe.txt)
(cd pipe1 && "$DPTRAIN" "${T[@]}" --threads 1 | cat >../pipe1.txt)
check=$(check_records on.txt 3 125 1)
if [[ $check == OK* ]]; then pass "--progress on into a file: $check, steps increase, each epoch ends at 100%"
else fail "--progress on records: $check"; records on.txt | head -5 >&2; fi
if [ "$(grep -c $'\r' on.txt)" -ge 3 ] && grep -q $'\r\x1b\[K''epoch   1/3  train loss' on.txt; then
    pass "--progress on: each epoch line clears its progress line first (\\r ESC[K)"
else fail "--progress on: the epoch lines do not replace the progress line"; fi
if ! grep -q $'\r' off.txt && ! grep -q $'\r' pipe.txt && ! grep -q $'\r' pipe1.txt &&
   ! grep -q $'\x1b' pipe.txt; then
    pass "--progress off, and the default into a pipe (under mpirun and alone): no \\r, no escape codes"
else fail "a pipe or --progress off got progress output"; fi
if [ "$(grep -c '^epoch   [123]/3  train loss' pipe.txt)" = 3 ] && cmp -s <(lines off.txt) <(lines pipe.txt) &&
   cmp -s <(lines off.txt) <(lines on.txt); then
    pass "the lines (timings aside) are the same with progress on, off and the default into a pipe"
else
    fail "the lines differ between --progress on, off and the default"
    { diff <(lines off.txt) <(lines on.txt); diff <(lines off.txt) <(lines pipe.txt); } | head -8 >&2 || true
fi
if cmp -s <(cut -d, -f1-7 on/r/metrics.jsonl) <(cut -d, -f1-7 off/r/metrics.jsonl) &&
   cmp -s on/r/config.json off/r/config.json && ! grep -q progress on/r/config.json; then
    pass "the metrics and config.json do not depend on --progress (it is not recorded)"
else fail "metrics or config.json differ with --progress on"; fi

# --- --quiet: progress only when asked; INI key; bad values; --help ---------------------
mkdir quiet ini
(cd quiet && "$DPTRAIN" "${T[@]}" --epochs 1 --quiet --progress on >../quiet.txt)
if [ "$(records quiet.txt | tail -1 | grep -c ' 100%  step 125/125 ')" = 1 ] && grep -q '^done:' <(lines quiet.txt) &&
   [ "$(lines quiet.txt | grep -vc '^$')" = 1 ]; then
    pass "--quiet --progress on: progress, then only the final line"
else fail "--quiet --progress on: $(lines quiet.txt | head -3)"; fi
printf '[output]\nprogress = on\n' >ini/p.ini
(cd ini && "$DPTRAIN" "${T[@]}" --epochs 1 --config p.ini >../ini.txt)
if [ "$(records ini.txt | wc -l)" -ge 2 ]; then pass "INI: progress = on in [output]"
else fail "INI progress = on drew no progress"; fi
printf '[output]\nprogress = bogus\n' >ini/bad.ini
expect_exit 2 "INI: progress = bogus refused with file:line" "bad.ini:2: --progress: unknown value 'bogus'" -- \
    "$DPTRAIN" train --data blobs.h5 --layers 8,4,3 --config ini/bad.ini
expect_exit 2 "--progress bogus refused, naming the option" "--progress: unknown value 'bogus' \(auto, on or off\)" -- \
    "$DPTRAIN" train --data blobs.h5 --layers 8,4,3 --progress bogus
expect_exit 2 "--progress without a value" "option '--progress' needs a value" -- \
    "$DPTRAIN" train --data blobs.h5 --layers 8,4,3 --progress
expect_exit 0 "train --help lists --progress and its default" "--progress WHEN .*" -- "$DPTRAIN" train --help
if "$DPTRAIN" train --help | grep -A6 -- '--progress WHEN' | grep -q '\[auto\]'; then pass "--progress default [auto] in --help"
else fail "--help lacks --progress's default"; fi

# --- a resume may change --progress (a display option, like --quiet and --threads) -------
mkdir res
rc=0
(cd res && DPTRAIN_TEST_STOP_AT=140:1 run_np 2 "${T[@]}" --progress off >../res1.txt 2>&1) || rc=$?
rc2=0
(cd res && run_np 2 "${T[@]}" --progress on --resume auto >../res2.txt 2>&1) || rc2=$?
check=$(check_records res2.txt 3 125 141)
if [ "$rc" = 3 ] && [ "$rc2" = 0 ] && [[ $check == OK* ]] &&
   cmp -s <(cut -d, -f1-7 res/r/metrics.jsonl) <(cut -d, -f1-7 off/r/metrics.jsonl); then
    pass "stopped at step 140 with --progress off, resumed with --progress on: accepted, $check from step 141, same metrics"
else fail "resume with another --progress: exits $rc/$rc2, $check"; tail -3 res2.txt >&2; fi

# --- bench takes every train option but draws no progress -------------------------------
rc=0
run_np 1 bench --steps 4 --warmup 1 --repeats 1 --layers 8,16,3 --progress on >bench.txt 2>&1 || rc=$?
if [ "$rc" = 0 ] && ! grep -q $'\r' bench.txt; then pass "bench --progress on: runs, draws no progress"
else fail "bench --progress on: exit $rc"; tail -3 bench.txt >&2; fi

# --- a real terminal: tmux, mpirun, the default --progress -------------------------------
if "$REPO/launch/setup.sh" tmux >/dev/null 2>&1 && command -v tmux >/dev/null; then
    TM=(tmux -L "dptrain-watch-$$")
    mkdir tm
    # Every rank holds at step 128 (epoch 2, step 3) until a signal: the screen is then
    # certainly mid-run, with epoch 1 done. An 80-column terminal: the line must fit.
    cmd="cd $(printf %q "$WORK/tm") && DPTRAIN_TEST_HOLD_AT=128 $(printf '%q ' "${MPIRUN[@]}") -np 2"
    cmd+=" $(printf %q "$DPTRAIN") $(printf '%q ' "${T[@]}") 2>hold.log; echo \"exit status \$?\"; sleep 300"
    "${TM[@]}" new-session -d -s w -x 80 -y 40 "$cmd"
    # wait_pane PATTERN: polls the pane (60 s at most) until it shows PATTERN.
    wait_pane() {
        local deadline=$((SECONDS + 60))
        while [ "$SECONDS" -lt "$deadline" ]; do
            "${TM[@]}" capture-pane -p -t w >pane.txt 2>/dev/null && grep -Eq -- "$1" pane.txt && return 0
            sleep 0.1
        done
        return 1
    }
    if pids=$(held_pids tm/hold.log 2) && wait_pane '^epoch 2/3 '; then
        echo "--- the tmux pane (80 columns) while the run is held at step 128:"
        grep -v '^$' pane.txt | tail -4
        echo "---"
        prog=$(grep -E '^epoch [0-9]+/3 +[0-9]+%  step ' pane.txt || true)
        if [ "$(wc -l <<<"$prog")" = 1 ] && grep -q '^epoch 2/3   [0-9]%  step [0-9]/125 (run 1[23][0-9]/375)' <<<"$prog" &&
           [ "$(wc -L <<<"$prog")" -le 79 ] && grep -q '^epoch   1/3  train loss [0-9.]* acc [0-9.]*  test loss' pane.txt &&
           ! grep '^epoch   1/3' pane.txt | grep -q 'step'; then
            pass "tmux under mpirun, default --progress: one progress line, fits 80 columns, epoch 1's line clean"
        else fail "tmux pane: $(cat pane.txt)"; fi
        kill -TERM $pids
        if wait_pane '^exit status 3'; then
            if grep -q '^stopped by a signal at epoch 2' pane.txt && ! grep -Eq '^epoch [0-9]+/3 +[0-9]+%' pane.txt; then
                pass "tmux: the progress line is cleared before the stop message"
            else fail "tmux pane after the stop: $(cat pane.txt)"; fi
        else fail "tmux: the held run did not stop: $(cat pane.txt)"; fi
    else
        fail "tmux: no progress line on the terminal: $(cat pane.txt 2>/dev/null)"
        [ -n "${pids:-}" ] && kill -TERM $pids 2>/dev/null
    fi
    "${TM[@]}" kill-server 2>/dev/null || true
else
    echo "skip: tmux cannot be had (launch/setup.sh tmux failed): no terminal check"
fi

# --- dptrain plot -------------------------------------------------------------------------
"$REPO/launch/setup.sh" gnuplot-nox >/dev/null 2>&1 || true
cp -r off/r "run it's"
"$DPTRAIN" train --data blobs.h5 --layers 8,16,3 --epochs 2 --batch 32 --val-fraction 0.2 \
    --optimizer adam --lr 0.01 --out val --quiet >/dev/null
"$DPTRAIN" synth line --n-train 200 --n-test 50 --out line.h5 >/dev/null
"$DPTRAIN" train --data line.h5 --layers 1,8,1 --loss mse --epochs 3 --batch 32 --lr 0.05 --out reg --quiet >/dev/null
# png_size FILE: "W H" from the IHDR chunk, with python3 and no extra package.
png_size() {
    python3 - "$1" <<'EOF'
import struct, sys
b = open(sys.argv[1], "rb").read(24)
assert b[12:16] == b"IHDR"
print(*struct.unpack(">II", b[16:24]))
EOF
}
if command -v gnuplot >/dev/null; then
    out=$("$DPTRAIN" plot on/r "run it's" val reg --out curves.png --size 900x320 2>&1) || true
    magic=$(od -An -tx1 -N8 curves.png 2>/dev/null | tr -d ' \n' || true)
    size=$(stat -c %s curves.png 2>/dev/null || echo 0)
    if [ "$magic" = 89504e470d0a1a0a ] && [ "$size" -gt 10000 ] && grep -q 'plot: 4 runs, 900x320: curves.png' <<<"$out"; then
        pass "plot: 4 runs (a directory name with a space and a quote, validation, regression) into a ${size}-byte PNG"
    else fail "plot: '$out', magic $magic, $size bytes"; fi
    if wh=$(png_size curves.png 2>/dev/null); then
        [ "$wh" = "900 320" ] && pass "plot: the PNG is 900x320 (IHDR)" || fail "plot: the PNG is $wh, not 900 320"
    else echo "skip: python3 cannot read the PNG header"; fi
    "$DPTRAIN" plot on/r off/r --label "with progress" --label "without" --title "it's \"quoted\"" --out two.png >/dev/null &&
        [ "$(head -c 4 two.png | od -An -c | tr -d ' ')" = '211PNG' ] && pass "plot --label, --title with quotes, default size" ||
        fail "plot with labels and a quoted title"
    if ls | grep -q '\.tmp\.' || ls "${TMPDIR:-/tmp}" | grep -q "^dptrain-plot\."; then
        fail "plot left temporary files"; else pass "plot leaves no temporary file"; fi
else
    echo "skip: gnuplot cannot be had: no picture checks"
fi
mkdir broken empty
head -2 off/r/metrics.jsonl >broken/metrics.jsonl
echo '{"epoch":3,"train_loss":0.5,' >>broken/metrics.jsonl
: >empty/metrics.jsonl
expect_exit 1 "plot: a missing run directory names metrics.jsonl" "nope/metrics.jsonl: cannot open \(No such file or directory\)" -- \
    "$DPTRAIN" plot on/r nope --out x.png
expect_exit 1 "plot: a broken line is named file:line" "broken/metrics.jsonl:3: not valid JSON" -- \
    "$DPTRAIN" plot on/r broken --out x.png
expect_exit 1 "plot: an empty metrics.jsonl" "empty/metrics.jsonl: no epochs recorded" -- "$DPTRAIN" plot empty
expect_exit 1 "plot: no gnuplot on PATH says how to install it" "apt-get install gnuplot-nox, or launch/setup.sh gnuplot-nox" -- \
    env PATH=/nonexistent "$DPTRAIN" plot on/r --out x.png
expect_exit 2 "plot: bad --size" "--size: '12x' is not WIDTHxHEIGHT" -- "$DPTRAIN" plot on/r --size 12x
expect_exit 2 "plot: no run directory" "give at least one run directory" -- "$DPTRAIN" plot
expect_exit 2 "plot: --label count" "--label given 1 time for 2 runs" -- "$DPTRAIN" plot on/r off/r --label a
expect_exit 1 "plot: an unwritable --out is named" "nodir/x.png: cannot write the picture" -- "$DPTRAIN" plot on/r --out nodir/x.png
[ -e x.png ] && fail "a failed plot wrote x.png" || pass "failed plots write no picture"
expect_exit 0 "plot --help lists options with defaults" "--size WxH .*\[1500x450\]" -- "$DPTRAIN" plot --help
expect_exit 2 "dptrain --help / unknown command names plot" "bench, plot" -- "$DPTRAIN" nosuchcommand
finish
