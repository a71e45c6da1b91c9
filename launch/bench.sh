#!/usr/bin/env bash
# bench.sh: the standard speed benchmarks of README "Speed": dptrain bench on the
# Fashion-MNIST MLP (784-256-128-10) and a wide MLP (784-2048-2048-10), one rank and two
# ranks, then a summary against the targets (reported, never asserted).
# Environment: OUT (runs/bench), STEPS (200), REPEATS (5), BIG_STEPS (30), NP2 (2: the
# multi-rank count). Extra arguments go to every dptrain bench run (e.g. --data FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/bench}
STEPS=${STEPS:-200}
REPEATS=${REPEATS:-5}
BIG_STEPS=${BIG_STEPS:-30}
NP2=${NP2:-2}
launch/setup.sh >/dev/null
launch/build.sh >/dev/null
mkdir -p "$OUT"
CSV=$OUT/bench.csv
JSON=$OUT/bench.jsonl
rm -f "$CSV" "$JSON"
MPIRUN=(mpirun --oversubscribe)
if [ "$(id -u)" = 0 ]; then MPIRUN+=(--allow-run-as-root); fi
SMALL=784,256,128,10
BIG=784,2048,2048,10

bench() { # bench NP LABEL ARGS...: one dptrain bench run, its table on stdout
    local np=$1 label=$2; shift 2
    echo "== $label: mpirun -np $np dptrain bench $*"
    "${MPIRUN[@]}" -np "$np" build/dptrain bench --label "$label" --csv "$CSV" --json "$JSON" \
        --momentum 0.9 --repeats "$REPEATS" "$@" "${EXTRA[@]}"
    echo
}
EXTRA=("$@")

bench 1 small-1r-b128-t1 --layers $SMALL --batch 128 --steps "$STEPS" --threads 1
bench 1 small-1r-b64-t1 --layers $SMALL --batch 64 --steps "$STEPS" --threads 1
bench 1 small-1r-b128-t2 --layers $SMALL --batch 128 --steps "$STEPS" --threads 2
bench "$NP2" small-${NP2}r-b128 --layers $SMALL --batch 128 --steps "$STEPS" --threads 1
bench "$NP2" small-${NP2}r-b$((128 * NP2)) --layers $SMALL --batch $((128 * NP2)) --steps "$STEPS" --threads 1
bench 1 big-1r-b512-t1 --layers $BIG --batch 512 --steps "$BIG_STEPS" --threads 1
bench "$NP2" big-${NP2}r-b$((512 * NP2)) --layers $BIG --batch $((512 * NP2)) --steps "$BIG_STEPS" --threads 1

# The summary: the issue's targets, from the CSV rows of this run.
python3 - "$CSV" "$NP2" <<'EOF'
import csv, sys
rows = {}
for r in csv.DictReader(open(sys.argv[1])):
    rows.setdefault(r["label"], {})[r["allreduce"]] = r
np2 = int(sys.argv[2])
def best(label):  # the faster allreduce mode of a configuration
    modes = rows[label]
    return max(modes.values(), key=lambda r: float(r["samples_per_s"]))
def sps(label): return float(best(label)["samples_per_s"])
print("| configuration | allreduce | samples/s | per rank | step ms | GFLOP/s | % of sgemm ceiling | peak RSS MB |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for label, modes in rows.items():
    for mode, r in modes.items():
        print(f"| {label} | {mode} | {float(r['samples_per_s']):.0f} | "
              f"{float(r['samples_per_s']) / int(r['ranks']):.0f} | {float(r['step_ms']):.3f} | "
              f"{float(r['gflops']):.1f} | {100 * float(r['ceiling_ratio']):.1f} | {float(r['peak_rss_mb']):.1f} |")
print()
def check(what, value, target, unit=""):
    print(f"- {what}: {value:.3g}{unit} (target {target:.3g}{unit}): {'met' if value >= target else 'NOT met'}")
check("one rank, 784-256-128-10, batch 128: ratio to the sgemm-only ceiling",
      100 * float(best("small-1r-b128-t1")["ceiling_ratio"]), 85, " %")
check("one rank, 784-2048-2048-10, batch 512: ratio to the sgemm-only ceiling",
      100 * float(best("big-1r-b512-t1")["ceiling_ratio"]), 85, " %")
check(f"{np2} ranks vs one at equal per-rank batch 64 (small)",
      sps(f"small-{np2}r-b128") / sps("small-1r-b64-t1"), 0.95 * np2, "x")
check(f"{np2} ranks vs one at equal per-rank batch 128 (small)",
      sps(f"small-{np2}r-b{128 * np2}") / sps("small-1r-b128-t1"), 0.95 * np2, "x")
check(f"{np2} ranks vs one at equal per-rank batch 512 (big)",
      sps(f"big-{np2}r-b{512 * np2}") / sps("big-1r-b512-t1"), 0.95 * np2, "x")
check(f"{np2} ranks, small network, global batch 128: samples/s", sps(f"small-{np2}r-b128"), 180000)
for label, modes in rows.items():
    if "overlap" in modes and "blocking" in modes:
        print(f"- {label}: overlap / blocking = "
              f"{float(modes['overlap']['samples_per_s']) / float(modes['blocking']['samples_per_s']):.3f}")
worst = max(rows.values(), key=lambda m: float(next(iter(m.values()))["peak_rss_mb"]))
r = next(iter(worst.values()))
bound = 1.5 * (float(r["data_mb"]) + float(r["state_mb"])) + 30
print(f"- largest peak RSS per rank: {float(r['peak_rss_mb']):.1f} MB ({r['label']}; bound "
      f"1.5 x (data {float(r['data_mb']):.1f} + state {float(r['state_mb']):.1f}) + 30 = {bound:.1f} MB): "
      f"{'within' if float(r['peak_rss_mb']) <= bound else 'OVER'}")
EOF
echo "CSV: $CSV  JSON lines: $JSON"
