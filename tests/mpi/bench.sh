#!/usr/bin/env bash
# dptrain bench runs the real training step and reports consistent figures: one CSV row and
# JSON line per mode (blocking, overlap, deterministic), phases that add up to the step,
# GFLOP/s = 6 x parameters x samples/s, a positive ceiling; the model fits deterministic
# mode's rows; bad options are refused. (Speed itself is not asserted: this is a noisy
# 2-core machine; launch/bench.sh prints the figures.)
source "$(dirname "$0")/lib.sh"
B=(bench --steps 8 --warmup 2 --repeats 3 --layers 64,128,10 --momentum 0.9)

run_np 1 "${B[@]}" --csv "$WORK/b.csv" --json "$WORK/b.jsonl" --label one >"$WORK/out1" 2>&1 \
    && pass "bench at 1 rank" || { fail "bench at 1 rank"; cat "$WORK/out1" >&2; }
run_np 2 "${B[@]}" --csv "$WORK/b.csv" --json "$WORK/b.jsonl" --label two >"$WORK/out2" 2>&1 \
    && pass "bench at 2 ranks" || { fail "bench at 2 ranks"; cat "$WORK/out2" >&2; }
run_np 3 "${B[@]}" --batch 96 --allreduce overlap --csv "$WORK/b.csv" --label three \
    >"$WORK/out3" 2>&1 && pass "bench at 3 ranks, overlap only" \
    || { fail "bench at 3 ranks"; cat "$WORK/out3" >&2; }
run_np 2 "${B[@]}" --accumulate 2 --allreduce blocking --csv "$WORK/b.csv" --label acc \
    >"$WORK/out4" 2>&1 && pass "bench with --accumulate 2" \
    || { fail "bench with --accumulate 2"; cat "$WORK/out4" >&2; }
run_np 2 "${B[@]}" --allreduce blocking,deterministic --csv "$WORK/b.csv" \
    --json "$WORK/b.jsonl" --label det >"$WORK/out5" 2>&1 \
    && pass "bench at 2 ranks, blocking and deterministic" \
    || { fail "bench blocking,deterministic"; cat "$WORK/out5" >&2; }
grep -Eq '^blocking +[0-9]' "$WORK/out5" && grep -Eq '^deterministic +[0-9]' "$WORK/out5" \
    && grep -Eq '^deterministic / blocking: [0-9]+\.[0-9]{2} of the samples/s' "$WORK/out5" \
    && ! grep -q '^overlap' "$WORK/out5" && pass "a row per mode and the ratio line" \
    || { fail "deterministic table"; cat "$WORK/out5" >&2; }
# The model is built for the mode giving a rank the most rows: batch 10 in 3 shards puts 7
# rows on rank 1 (5 in the default step), and --eval-batch 1 keeps the evaluation from
# sizing it.
run_np 2 "${B[@]}" --allreduce blocking,deterministic --batch 10 --shards 3 --eval-batch 1 \
    >"$WORK/out6" 2>&1 && grep -Eq '^deterministic +[0-9]' "$WORK/out6" \
    && pass "the model fits deterministic mode's rows" \
    || { fail "model sized for deterministic mode"; cat "$WORK/out6" >&2; }
# --deterministic alone: that row only.
run_np 2 "${B[@]}" --deterministic >"$WORK/out7" 2>&1 \
    && grep -Eq '^deterministic +[0-9]' "$WORK/out7" \
    && ! grep -Eq '^(blocking|overlap) ' "$WORK/out7" && pass "--deterministic alone" \
    || { fail "--deterministic alone"; cat "$WORK/out7" >&2; }

# One header, then 1 + 2 + 1 + 1 + 2 rows (one rank has no overlap mode).
[ "$(grep -c '^label,' "$WORK/b.csv")" = 1 ] && pass "one CSV header" || fail "CSV headers"
[ "$(grep -vc '^label,' "$WORK/b.csv")" = 7 ] && pass "7 CSV rows" \
    || { fail "CSV rows: $(grep -vc '^label,' "$WORK/b.csv")"; cat "$WORK/b.csv" >&2; }
[ "$(wc -l <"$WORK/b.jsonl")" = 5 ] && pass "5 JSON lines" || fail "JSON lines"

# Every row: phases add up to at most the step time (the rest is the loop around them),
# and to most of it; gflops = 6 x n_params x samples/s; ratio = samples/s / ceiling (also
# with accumulation: the ceiling is per row).
python3 - "$WORK/b.csv" "$WORK/b.jsonl" <<'EOF' && pass "figures are consistent" || fail "figures"
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
bad = []
for r in rows:
    f = {k: float(v) for k, v in r.items() if k not in ("label", "layers", "coretype", "allreduce", "optimizer")}
    phases = f["data_ms"] + f["forward_ms"] + f["backward_ms"] + f["allreduce_wait_ms"] + f["optim_ms"]
    if not (0.3 * f["step_ms"] <= phases <= 1.05 * f["step_ms"]):
        bad.append(f"{r['label']}/{r['allreduce']}: phases {phases:.4f} ms vs step {f['step_ms']:.4f} ms")
    if abs(f["gflops"] - 6 * f["n_params"] * f["samples_per_s"] / 1e9) > 0.01 + 1e-3 * f["gflops"]:
        bad.append(f"{r['label']}: gflops {f['gflops']}")
    if abs(f["ceiling_ratio"] - f["samples_per_s"] / f["ceiling_samples_per_s"]) > 1e-3:
        bad.append(f"{r['label']}: ceiling ratio {f['ceiling_ratio']}")
    if f["n_params"] != 64 * 128 + 128 + 128 * 10 + 10 or f["samples_per_s"] <= 0 or f["peak_rss_mb"] <= 0:
        bad.append(f"{r['label']}: n_params/samples/rss {f['n_params']} {f['samples_per_s']} {f['peak_rss_mb']}")
    if int(f["ranks"]) > 1 and f["allreduce_ms_alone"] <= 0:
        bad.append(f"{r['label']}: no allreduce time")
modes = [(r["label"], r["allreduce"]) for r in rows]
if modes != [("one", "blocking"), ("two", "blocking"), ("two", "overlap"), ("three", "overlap"),
             ("acc", "blocking"), ("det", "blocking"), ("det", "deterministic")]:
    bad.append(f"modes {modes}")
jmodes = []
for line in open(sys.argv[2]):
    j = json.loads(line)
    jmodes.append((j["label"], j["allreduce"]))
    if j["samples_per_s"] <= 0 or j["batch"] != 128:
        bad.append(f"json {j}")
if jmodes != [("one", "blocking"), ("two", "blocking"), ("two", "overlap"), ("det", "blocking"),
              ("det", "deterministic")]:
    bad.append(f"json modes {jmodes}")
if bad: print("\n".join(bad), file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
grep -q 'sgemm-only ceiling' "$WORK/out2" && grep -q 'allreduce alone' "$WORK/out2" \
    && pass "table names the ceiling and the allreduce" || fail "table lines missing"

expect_exit 2 "--steps 0" "--steps" -- run_np 2 bench --steps 0
expect_exit 2 "--allreduce bogus" "unknown mode 'bogus'.*blocking, overlap, deterministic" \
    -- run_np 2 bench --allreduce blocking,bogus
expect_exit 2 "--deterministic against --allreduce" "--allreduce overlap,deterministic" \
    -- run_np 2 bench --deterministic --allreduce overlap
expect_exit 2 "deterministic mode on more ranks than shards" \
    "2 shards runs on at most 2 ranks, not 3" \
    -- run_np 3 "${B[@]}" --allreduce all --shards 2
expect_exit 1 "missing --data file" "nothere.h5" -- run_np 2 bench --data "$WORK/nothere.h5"
expect_exit 2 "unknown option" "unknown option" -- run_np 2 bench --bogus
expect_exit 2 "a label that would break the CSV" "no quotes, commas" -- run_np 1 bench --label 'a,b'

finish
