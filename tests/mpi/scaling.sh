#!/usr/bin/env bash
# launch/scaling.sh runs from its README command line and writes what it promises: the CSV
# with a row per (kind, ranks, mode), a Markdown table whose 1-rank rows have speed-up 1.00
# and efficiency 100 %, oversubscribed rows marked, and a PNG plot. (It measures; speed is
# not asserted.) Bad options are refused.
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$WORK/scaling
out=$("$ROOT/launch/scaling.sh" --ranks "1 2 3" --layers 32,64,10 --batch 96 --per-rank-batch 32 \
      --steps 5 --repeats 2 --warmup 1 --out "$OUT" 2>&1) && pass "scaling.sh ran" \
    || { fail "scaling.sh failed"; echo "$out" | tail -20 >&2; }
# 3 counts x 2 kinds; 2 and 3 ranks have both allreduce modes: 2 + 4 + 4 = 10 rows.
rows=$(grep -vc '^label,' "$OUT/scaling.csv" || true)
[ "$rows" = 10 ] && pass "10 CSV rows" || fail "CSV rows: $rows"
for kind in strong weak; do
    grep -Eq "^\| $kind \| 1 \| [0-9]+ \| blocking \| [0-9]+ \| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| 1\.00 \| 100 % \| no \|$" \
        "$OUT/scaling.md" && pass "$kind: 1-rank row is the baseline" \
        || { fail "$kind: no 1-rank baseline row"; cat "$OUT/scaling.md" >&2; }
done
grep -Eq '^\| weak \| 3 \| 96 \|' "$OUT/scaling.md" && pass "weak scaling: 3 ranks x 32 rows = 96" \
    || fail "weak scaling batch"
over=$(awk -v n="$(nproc)" -F'|' '$3+0 > n && $12 ~ /yes/' "$OUT/scaling.md" | wc -l)
want=$(awk -v n="$(nproc)" 'BEGIN{c=0; split("1 2 3", r, " "); for (i in r) if (r[i] > n) c += 2; print c}')
[ "$over" = "$want" ] && pass "rows beyond $(nproc) cores marked oversubscribed ($over)" \
    || fail "oversubscribed rows: $over, expected $want"
if [ -s "$OUT/scaling.png" ] && head -c 8 "$OUT/scaling.png" | od -An -tx1 | grep -q '89 50 4e 47'; then
    pass "PNG plot written"
else
    fail "no PNG plot"
fi
expect_exit 2 "bad --ranks" "not a rank count" -- "$ROOT/launch/scaling.sh" --ranks "1 x" --out "$WORK/x"
expect_exit 2 "bad --mode" "strong, weak or both" -- "$ROOT/launch/scaling.sh" --mode fast --out "$WORK/x"
finish
