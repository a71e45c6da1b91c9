#!/usr/bin/env bash
# scaling.sh: strong scaling (fixed global batch) and weak scaling (fixed per-rank batch) of
# the real training step over a list of rank counts, with dptrain bench; writes
#   OUT/scaling.csv   every bench row (both modes of the allreduce where there are 2+ ranks)
#   OUT/scaling.md    a Markdown table: samples/s, speed-up and efficiency per rank count
#   OUT/scaling.png   samples/s, speed-up and efficiency against ranks (gnuplot)
# On one node it runs mpirun; inside a Slurm allocation (--launcher srun) it runs
# srun --mpi=pmix (Debian's Open MPI has PMIx, not Slurm's PMI; SLURM_MPI_TYPE, if set, is
# used instead), e.g. salloc -n 4 launch/scaling.sh --launcher srun; rank counts beyond the
# allocation's tasks run with srun --overcommit. With --hostfile F, mpirun --hostfile F.
# Rank counts beyond the node's cores run oversubscribed and are marked so in the table and
# the plot. A bench run that fails stops the script with its output.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    cat <<'EOF'
usage: launch/scaling.sh [options] [-- extra dptrain bench options]
  --ranks "1 2 3 4"     rank counts                                 [1 2 4 on 2 cores: "1 2 3 4"]
  --layers SPEC         network                                     [784,256,128,10]
  --batch B             strong scaling: the global batch            [512]
  --per-rank-batch b    weak scaling: rows per rank                 [128]
  --steps N --repeats R --warmup W   per dptrain bench run           [100, 3, 10]
  --mode strong|weak|both                                           [both]
  --launcher mpirun|srun                                            [mpirun]
  --hostfile FILE       mpirun --hostfile FILE (several nodes)
  --threads N           BLAS threads per rank                       [1]
  --out DIR             output directory                            [runs/scaling]
  --no-plot             skip the PNG (no gnuplot needed)
EOF
}

RANKS="1 2 3 4"
LAYERS=784,256,128,10
BATCH=512
PER_RANK=128
STEPS=100
REPEATS=3
WARMUP=10
MODE=both
LAUNCHER=mpirun
HOSTFILE=
THREADS=1
OUT=runs/scaling
PLOT=1
while [ $# -gt 0 ]; do
    case $1 in
    --ranks) RANKS=$2; shift 2 ;;
    --layers) LAYERS=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --per-rank-batch) PER_RANK=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --mode) MODE=$2; shift 2 ;;
    --launcher) LAUNCHER=$2; shift 2 ;;
    --hostfile) HOSTFILE=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-plot) PLOT=0; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "scaling.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
case $MODE in strong | weak | both) ;; *) echo "scaling.sh: --mode strong, weak or both" >&2; exit 2 ;; esac
case $LAUNCHER in mpirun | srun) ;; *) echo "scaling.sh: --launcher mpirun or srun" >&2; exit 2 ;; esac
if [ "$LAUNCHER" = srun ] && ! command -v srun >/dev/null; then
    echo "scaling.sh: --launcher srun: no srun here (run it inside a Slurm allocation: salloc -n N launch/scaling.sh --launcher srun)" >&2
    exit 2
fi
for n in $RANKS; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "scaling.sh: --ranks: '$n' is not a rank count" >&2; exit 2; }
done

if [ "$PLOT" = 1 ]; then launch/setup.sh gnuplot-nox >/dev/null; else launch/setup.sh >/dev/null; fi
launch/build.sh >/dev/null
mkdir -p "$OUT"
CSV=$OUT/scaling.csv
rm -f "$CSV"

launch() { # launch N ARGS...: N ranks of dptrain
    local n=$1; shift
    if [ "$LAUNCHER" = srun ]; then
        local cmd=(srun -n "$n" "--mpi=${SLURM_MPI_TYPE:-pmix}")
        if [ -n "${SLURM_NTASKS:-}" ] && [ "$n" -gt "$SLURM_NTASKS" ]; then cmd+=(--overcommit); fi
        "${cmd[@]}" build/dptrain "$@"
    else
        local cmd=(mpirun --oversubscribe -np "$n")
        if [ "$(id -u)" = 0 ]; then cmd+=(--allow-run-as-root); fi
        if [ -n "$HOSTFILE" ]; then cmd+=(--hostfile "$HOSTFILE"); fi
        "${cmd[@]}" build/dptrain "$@"
    fi
}

for n in $RANKS; do
    for kind in strong weak; do
        [ "$MODE" = both ] || [ "$MODE" = "$kind" ] || continue
        if [ "$kind" = strong ]; then b=$BATCH; else b=$((PER_RANK * n)); fi
        if [ "$b" -lt "$n" ]; then
            echo "scaling.sh: skipping $kind at $n ranks: batch $b < ranks" >&2
            continue
        fi
        echo "== $kind scaling, $n rank(s), global batch $b"
        log=$OUT/bench-$kind-$n.log
        if ! launch "$n" bench --layers "$LAYERS" --batch "$b" --steps "$STEPS" --repeats "$REPEATS" \
            --warmup "$WARMUP" --threads "$THREADS" --momentum 0.9 --label "$kind" --csv "$CSV" "$@" \
            >"$log" 2>&1; then
            echo "scaling.sh: dptrain bench failed ($kind scaling, $n ranks, $LAUNCHER); its output:" >&2
            tail -25 "$log" >&2
            exit 1
        fi
        grep -E '^(blocking|overlap|allreduce alone|sgemm)' "$log" || true
    done
done
if [ ! -s "$CSV" ] || [ "$(wc -l <"$CSV")" -lt 2 ]; then
    echo "scaling.sh: no bench results in $CSV (no rank count ran?)" >&2
    exit 1
fi

# Table and plot data: per kind and rank count, the faster allreduce mode.
python3 - "$CSV" "$OUT" <<'EOF'
import csv, sys
out = sys.argv[2]
best = {}
for r in csv.DictReader(open(sys.argv[1])):
    key = (r["label"], int(r["ranks"]))
    if key not in best or float(r["samples_per_s"]) > float(best[key]["samples_per_s"]):
        best[key] = r
lines = ["| scaling | ranks | global batch | allreduce | samples/s | per rank | step ms | allreduce wait ms | speed-up | efficiency | oversubscribed |",
         "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
for kind in ("strong", "weak"):
    ks = sorted(n for (k, n) in best if k == kind)
    if not ks:
        continue
    base = best[(kind, ks[0])]
    b_sps, b_n = float(base["samples_per_s"]), ks[0]
    with open(f"{out}/{kind}.dat", "w") as f:
        f.write("# ranks samples_per_s speedup efficiency oversubscribed\n")
        for n in ks:
            r = best[(kind, n)]
            sps = float(r["samples_per_s"])
            if kind == "strong":
                speedup = sps / b_sps
                eff = speedup * b_n / n
            else:  # weak: per-rank throughput kept
                speedup = sps / b_sps
                eff = (sps / n) / (b_sps / b_n)
            over = r["oversubscribed"] == "1"
            f.write(f"{n} {sps:.1f} {speedup:.4f} {eff:.4f} {int(over)}\n")
            lines.append(f"| {kind} | {n} | {r['batch']} | {r['allreduce']} | {sps:.0f} | {sps / n:.0f} | "
                         f"{float(r['step_ms']):.3f} | {float(r['allreduce_wait_ms']):.3f} | {speedup:.2f} | "
                         f"{100 * eff:.0f} % | {'yes' if over else 'no'} |")
r0 = next(iter(best.values()))
lines.append("")
lines.append(f"Network {r0['layers']} ({r0['n_params']} parameters), {r0['threads']} BLAS thread(s) per rank, "
             f"OpenBLAS {r0['coretype']} kernels; medians of {r0['repeats']} repeats of {r0['steps']} steps. "
             "Strong: efficiency = speed-up / ranks (vs the smallest count); weak: samples/s per rank "
             "relative to the smallest count. Oversubscribed rows share cores: not a measure of scaling.")
open(f"{out}/scaling.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

if [ "$PLOT" = 1 ]; then
    plots=()
    for kind in strong weak; do
        [ -f "$OUT/$kind.dat" ] && plots+=("$kind")
    done
    {
        echo "set terminal pngcairo size 1500,450 font ',10'"
        echo "set output '$OUT/scaling.png'"
        echo "set multiplot layout 1,3 title 'dptrain scaling: $LAYERS (filled: within the cores; open: oversubscribed)'"
        echo "set key top left; set grid; set xlabel 'ranks'; set xtics 1; set offsets 0.2, 0.2, 0, 0"
        for col in "2:samples/s" "3:speed-up" "4:efficiency"; do
            c=${col%%:*}; name=${col#*:}
            echo "set ylabel '$name'; set title '$name'"
            line="plot"
            lc=1
            for kind in "${plots[@]}"; do
                line+=" '$OUT/$kind.dat' using 1:(\$5==0?\$$c:1/0) with linespoints lc $lc pt 7 title '$kind',"
                line+=" '$OUT/$kind.dat' using 1:(\$5==1?\$$c:1/0) with points lc $lc pt 6 ps 1.5 notitle,"
                lc=$((lc + 1))
            done
            echo "${line%,}"
        done
        echo "unset multiplot"
    } >"$OUT/scaling.gp"
    gnuplot "$OUT/scaling.gp"
    echo "plot: $OUT/scaling.png"
fi
echo "CSV: $CSV  table: $OUT/scaling.md"
