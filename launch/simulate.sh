#!/usr/bin/env bash
# simulate.sh: predicts dptrain's training-step time at rank counts beyond this machine with
# SimGrid SMPI, and checks the prediction against a real 2-rank run here. A planning tool:
# it answers "how fast would this model train on N ranks of a cluster with these links".
#
# What it does (each piece is in sim/; the reasons are in sim/README.md):
#   1. installs libsimgrid-dev if smpicc is missing (apt-get; root or sudo);
#   2. builds build-sim/dptrain-sim: src/core (less blas.c and arena.c), src/dist, src/train
#      and src/data/{shard,split}.c compiled with smpicc, plus sim/*.c; no HDF5, no OpenBLAS;
#      the model-sized arrays are shared by all simulated ranks (sim/arena_sim.c);
#   3. lists the GEMM shapes of one step (a first simulated run records them) and times
#      each here as a run computes it, dp_gemm (oneDNN's matmul or OpenBLAS by shape;
#      sim/gemm_bench.c, one copy per core running at once);
#   4. self-check: measures the allreduce alone and the real step on 2 ranks here (dptrain
#      bench), simulates 2 ranks on a platform calibrated from the allreduce alone, and
#      fails if the predicted step time is off by more than a factor 1 + TOL either way;
#   5. simulates RANKS on generated clusters (sim/platform.sh): one rank per host, links of
#      each bandwidth in BWS, LAT_US end-to-end latency, a non-blocking switch; the
#      collectives are Open MPI's (--cfg=smpi/coll-selector:ompi);
#   6. writes OUT/simulate.csv and OUT/simulate.md (step time, allreduce share, samples/s,
#      weak-scaling efficiency = 1-rank step time / N-rank step time at fixed per-rank batch;
#      the 1-rank row is the baseline itself; per simulation its wall time and memory: the
#      peak of its private memory (anonymous pages + page tables, sampled twice a second),
#      the peak rise of the machine's memory in use, and max RSS from /usr/bin/time -v, where
#      every mapping of a shared page counts again).
#
# PRESET=wide: the weak-scaling table of issue 14: LAYERS=784,2048,2048,10 BATCH=512
# RANKS="1 64 256 1024" BWS="25 100" STEPS=2 SELF_CHECK=0 OUT=runs/simulate-wide (each can
# still be set; the self-check's real 2-rank bench of this network would take minutes).
# STEPS=2 there: each rank holds the epoch's row list (8 bytes x steps x global batch), so
# 1024 ranks x 512 rows hold 4.3 GB of it per step of the epoch.
#
# Settings (environment):          default
#   RANKS   rank counts            "1 2 4 8 16 32 64 128 256 512 1024"
#   BWS     link bandwidths, Gbit/s "25 100"
#   LAT_US  end-to-end latency, us  3
#   BW_EFF  achievable fraction of link bandwidth (smpi/bw-factor)  0.95
#   LAYERS  network                 784,256,128,10
#   BATCH   rows per rank per step  64
#   STEPS   measured steps (after as many warm-up steps)  5
#   OUT     output directory        runs/simulate
#   DPTRAIN real dptrain binary for the self-check   build/dptrain
#   SELF_CHECK 1 = run it (0 = skip)  1
#   TOL     self-check tolerance: simulated/real must lie in
#           [1/(1+TOL), 1+TOL]                        0.30
#   BUILD   build directory for the simulator         build-sim
#   COMPUTE bench: the code between products costs the CPU time it took here (SMPI's
#           benchmark); gemm: only the products' table times (smpi/simulate-computation:no),
#           immune to other work on this machine, which at many ranks inflates the slowest
#           rank's step and so every rank's (see sim/README.md)            bench
#   ALLREDUCE blocking, or sharded (ZeRO-1: the gradient's reduce-scatter, each rank's slice
#           of the optimizer step, the parameters' allgather; the self-check measures that
#           too; allreduce_ms is then the time of those two)       blocking
#   GEMM_TABLE  a GEMM table (OUT/gemm_table.txt of an earlier run) to use instead of
#           measuring now: on a shared machine the measurement varies (2x seen here)   unset
# Exit: 0 done; 1 a step failed or the self-check is off by more than 1+TOL; 77 SimGrid is
# missing and cannot be installed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case ${PRESET:-} in
    "") ;;
    wide)
        LAYERS=${LAYERS:-784,2048,2048,10} BATCH=${BATCH:-512} RANKS=${RANKS:-"1 64 256 1024"}
        BWS=${BWS:-"25 100"} STEPS=${STEPS:-2} SELF_CHECK=${SELF_CHECK:-0}
        OUT=${OUT:-$ROOT/runs/simulate-wide} ;;
    *) echo "simulate: PRESET=$PRESET: the one preset is wide" >&2; exit 1 ;;
esac
RANKS=${RANKS:-"1 2 4 8 16 32 64 128 256 512 1024"}
BWS=${BWS:-"25 100"}
LAT_US=${LAT_US:-3}
BW_EFF=${BW_EFF:-0.95}
LAYERS=${LAYERS:-784,256,128,10}
BATCH=${BATCH:-64}
STEPS=${STEPS:-5}
OUT=${OUT:-$ROOT/runs/simulate}
DPTRAIN=${DPTRAIN:-$ROOT/build/dptrain}
SELF_CHECK=${SELF_CHECK:-1}
TOL=${TOL:-0.30}
BUILD=${BUILD:-$ROOT/build-sim}
GEMM_TABLE=${GEMM_TABLE:-}
COMPUTE=${COMPUTE:-bench}
ALLREDUCE=${ALLREDUCE:-blocking}
case $ALLREDUCE in blocking | sharded) ;; *) echo "simulate: ALLREDUCE=$ALLREDUCE: want blocking or sharded" >&2; exit 1 ;; esac
mkdir -p "$OUT" "$BUILD"
OUT=$(cd "$OUT" && pwd)
BUILD=$(cd "$BUILD" && pwd)
log() { echo "simulate: $*" >&2; }

# --- 1. SimGrid ------------------------------------------------------------------------
if ! command -v smpicc >/dev/null || ! command -v smpirun >/dev/null; then
    log "installing libsimgrid-dev (SimGrid SMPI: smpicc, smpirun)"
    "$ROOT/launch/setup.sh" libsimgrid-dev >&2 ||
        { log "cannot install libsimgrid-dev (need root or sudo, and Debian's apt)"; exit 77; }
fi

# --- 2. build ----------------------------------------------------------------------------
# -O3 -DNDEBUG: the flags of the Release build that the self-check measures.
CFLAGS=(-O3 -DNDEBUG -std=gnu11 -Wall -Wextra -I"$ROOT/include" -I"$ROOT/src" -I"$ROOT/src/core" -I"$ROOT/sim")
mapfile -t CORE < <(ls "$ROOT"/src/core/*.c | grep -v '/blas\.c$\|/arena\.c$')
log "building $BUILD/dptrain-sim (smpicc)"
# Of src/train, the loop (train.c, loop.c, and metrics.c: its metrics lines, through jansson)
# and the model's preparation (prepare.c: the simulation makes its model with dp_run_prepare,
# as dp_run_job does); not the parts of a job that read and write files.
TRAIN=("$ROOT/src/train/train.c" "$ROOT/src/train/loop.c" "$ROOT/src/train/shards.c" "$ROOT/src/train/metrics.c"
       "$ROOT/src/train/prepare.c")
smpicc "${CFLAGS[@]}" "${CORE[@]}" "$ROOT"/src/dist/*.c "${TRAIN[@]}" \
    "$ROOT/src/data/shard.c" "$ROOT/src/data/split.c" "$ROOT/sim/blas_sim.c" \
    "$ROOT/sim/arena_sim.c" "$ROOT/sim/sim_mpi.c" "$ROOT/sim/sim_main.c" -o "$BUILD/dptrain-sim" -lm \
    $(pkg-config --cflags --libs jansson) -Wl,--wrap=MPI_Allreduce -Wl,--wrap=dp_loss_eval \
    -Wl,--wrap=MPI_Sendrecv -Wl,--wrap=MPI_Allgatherv \
    -Wl,--wrap=dp_dense_init_spec
# gemm_bench times the products as a run computes them: dp_gemm, with oneDNN when installed.
GEMM_SRC=("$ROOT/sim/gemm_bench.c" "$ROOT/src/core/blas.c" "$ROOT/src/core/gemm.c"
          "$ROOT/src/core/gemm_dnnl.c" "$ROOT/src/core/err.c")
GEMM_LIBS=(-lopenblas -lpthread)
if [ -f /usr/include/oneapi/dnnl/dnnl.h ]; then
    GEMM_SRC+=(-DDPTRAIN_HAVE_DNNL -fopenmp)
    GEMM_LIBS+=(-ldnnl)
fi
gcc "${CFLAGS[@]}" "${GEMM_SRC[@]}" -o "$BUILD/gemm_bench" "${GEMM_LIBS[@]}"
# SMPI's shared-malloc file goes to /dev/shm (sim/shm_shim.c: on a disk file system its
# writeback stalls a many-rank simulation for minutes).
PRELOAD=()
if [ -d /dev/shm ] && [ -w /dev/shm ] &&
        gcc -O2 -Wall -Wextra -shared -fPIC "$ROOT/sim/shm_shim.c" -o "$BUILD/shm_shim.so" -ldl; then
    PRELOAD=(env LD_PRELOAD="$BUILD/shm_shim.so")
fi
SIMARGS=(--layers "$LAYERS" --batch-per-rank "$BATCH" --steps "$STEPS" --allreduce "$ALLREDUCE")
# smpirun settings common to every run. Host speed 1 Gflop/s in the platform and here: CPU
# time that SMPI benchmarks is injected 1:1. cpu-threshold -1: inject even sub-microsecond
# bursts (activations of small layers). No privatization: dptrain has no mutable globals
# (only the thread-local error message), and 1024 copies of the binary are not needed.
# Shared-malloc blocks of 64 MiB: the dataset is folded onto few mappings per rank (1 MiB
# blocks need more than vm.max_map_count mappings at 1024 ranks).
SMPI=("${PRELOAD[@]}" smpirun -no-privatize --cfg=smpi/shared-malloc-blocksize:67108864 --cfg=smpi/host-speed:1Gf --cfg=smpi/cpu-threshold:-1
      --cfg=smpi/wtime:0 --cfg=smpi/coll-selector:ompi --cfg=smpi/lat-factor:0:1
      --log=root.threshold:warning --log=smpi_colls.threshold:error)
case $COMPUTE in
    bench) ;;
    gemm) SMPI+=(--cfg=smpi/simulate-computation:no) ;;
    *) log "COMPUTE=$COMPUTE: want bench or gemm"; exit 1 ;;
esac

# sim_run NP PLATFORM_PREFIX BW_FACTOR LOGFILE: prints the RESULT line of one simulation.
sim_run() {
    local np=$1 plat=$2 bwf=$3 logf=$4
    if ! "${SMPI[@]}" --cfg=smpi/bw-factor:0:"$bwf" -np "$np" -platform "$plat.xml" \
            -hostfile "$plat.hosts" "$BUILD/dptrain-sim" "${SIMARGS[@]}" >"$logf" 2>&1; then
        log "simulation of $np ranks failed; the end of $logf:"; tail -5 "$logf" >&2; return 1
    fi
    grep '^RESULT ' "$logf" | tail -1
}
# tree_private_kb PID: the memory (kB) PID and its descendants hold for themselves: private
# anonymous pages (RssAnon) plus page tables (VmPTE), from /proc/PID/status (cheap to read;
# smaps' PSS walks every page table, which at 1024 ranks stalls the simulation). Pages of
# SMPI's shared file (RssFile, one 64 MiB block mapped again and again) are left out.
tree_private_kb() {
    local pids=($1) kids k sum=0 f
    kids=$(ps -o pid= --ppid "$1" 2>/dev/null || true)
    for k in $kids; do pids+=("$k" $(ps -o pid= --ppid "$k" 2>/dev/null || true)); done
    for k in "${pids[@]}"; do
        f=$(awk '/^(RssAnon|VmPTE):/ { s += $2 } END { print s + 0 }' "/proc/$k/status" 2>/dev/null || true)
        sum=$((sum + ${f:-0}))
    done
    echo "$sum"
}

# used_kb: this machine's memory in use (MemTotal - MemAvailable), kB.
used_kb() { awk '/^MemTotal:/ { t = $2 } /^MemAvailable:/ { a = $2 } END { print t - a }' /proc/meminfo; }

# sim_measure NP PLATFORM_PREFIX BW_FACTOR LOGFILE: sim_run, measured. Sets M_RESULT (the
# RESULT line), M_WALL (s), M_PRIV_MB (peak of tree_private_kb, sampled twice a second),
# M_USED_MB (peak rise of the machine's memory in use over its value at the start: other
# work on the machine counts too) and M_RSS_MB (max RSS from /usr/bin/time -v, where every
# mapping of a shared page counts again).
sim_measure() {
    local np=$1 plat=$2 bwf=$3 logf=$4 s0 pid peak=0 kb used0 upeak=0 u
    used0=$(used_kb)
    s0=$(date +%s.%N)
    /usr/bin/time -v -o "$logf.time" "${SMPI[@]}" --cfg=smpi/bw-factor:0:"$bwf" -np "$np" \
        -platform "$plat.xml" -hostfile "$plat.hosts" "$BUILD/dptrain-sim" "${SIMARGS[@]}" \
        >"$logf" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        kb=$(tree_private_kb "$pid")
        [ "$kb" -gt "$peak" ] && peak=$kb
        u=$(($(used_kb) - used0))
        [ "$u" -gt "$upeak" ] && upeak=$u
        sleep 0.5
    done
    if ! wait "$pid"; then
        log "simulation of $np ranks failed; the end of $logf:"; tail -5 "$logf" >&2; return 1
    fi
    M_WALL=$(awk -v a="$s0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    M_PRIV_MB=$((peak / 1024))
    M_USED_MB=$((upeak / 1024))
    M_RSS_MB=$(awk -F': ' '/Maximum resident set size/ { printf "%d", $2 / 1024 }' "$logf.time")
    M_RESULT=$(grep '^RESULT ' "$logf" | tail -1)
}

# field NAME LINE: the value of NAME=... in a RESULT line.
field() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<"$2"; }

# --- 3. GEMM table ------------------------------------------------------------------------
"$ROOT/sim/platform.sh" "$BUILD/shapes-platform" 2 100Gbps 3
rm -f "$BUILD/shapes.txt"
DPTRAIN_SIM_GEMM_SHAPES="$BUILD/shapes.txt" sim_run 2 "$BUILD/shapes-platform" 1 \
    "$BUILD/shapes.log" >/dev/null
sort -u "$BUILD/shapes.txt" >"$BUILD/shapes.uniq"
if [ -n "$GEMM_TABLE" ]; then
    # A table measured before (a quiet moment's): every shape of this network must be in it.
    missing=$(awk 'NR == FNR { have[$1" "$2" "$3" "$4" "$5] = 1; next }
        !(($1" "$2" "$3" "$4" "$5) in have) { n++ } END { print n + 0 }' "$GEMM_TABLE" "$BUILD/shapes.uniq")
    [ "$missing" = 0 ] || { log "GEMM_TABLE=$GEMM_TABLE lacks $missing of this network's shapes"; exit 1; }
    [ "$(realpath "$GEMM_TABLE")" = "$(realpath -m "$OUT/gemm_table.txt")" ] || cp "$GEMM_TABLE" "$OUT/gemm_table.txt"
    log "GEMM times from $GEMM_TABLE (not measured now)"
else
    log "timing $(wc -l <"$BUILD/shapes.uniq") GEMM shapes with OpenBLAS ($(nproc) copies at once)"
    pids=()
    for ((i = 0; i < $(nproc); i++)); do
        OPENBLAS_NUM_THREADS=1 "$BUILD/gemm_bench" "$BUILD/shapes.uniq" "$BUILD/gemm.$i" 1 2>/dev/null &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    # The mean over the copies, per shape.
    cat "$BUILD"/gemm.[0-9]* | awk '{ k = $1" "$2" "$3" "$4" "$5; s[k] += $6; n[k]++ }
        END { for (k in s) printf "%s %.9g\n", k, s[k] / n[k] }' | sort >"$OUT/gemm_table.txt"
fi
export DPTRAIN_SIM_GEMM_TABLE="$OUT/gemm_table.txt"
awk '{ t += $6; f += 2 * $3 * $4 * $5 } END { printf "simulate: GEMMs of one step: %.1f us, %.0f GFLOP/s\n", t * 1e6, f / t / 1e9 }' \
    "$OUT/gemm_table.txt" >&2

# --- 4. self-check against the real 2-rank run ---------------------------------------------
N_PARAMS=$(field params "$(grep '^RESULT ' "$BUILD/shapes.log")")
if [ "$SELF_CHECK" = 1 ]; then
    [ -x "$DPTRAIN" ] || { log "no dptrain binary at $DPTRAIN (build it, or SELF_CHECK=0)"; exit 1; }
    MPIRUN=(mpirun -np 2)
    [ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)
    # Measured here with dptrain bench (median over repeats, slowest rank): the allreduce
    # alone of a tiny model's gradient (2 parameters + 4 tail floats: the latency) and of
    # this model's gradient arena (N_PARAMS + 4 floats), and the real step of this network
    # at this per-rank batch on 2 ranks, on synthetic uint8 data as in the simulation.
    gb=$((2 * BATCH))
    rm -f "$BUILD/self-tiny.csv" "$BUILD/self-step.csv"
    "${MPIRUN[@]}" "$DPTRAIN" bench --layers 1,1 --loss mse --batch 2 --steps 20 --repeats 3 \
        --allreduce blocking --threads 1 --csv "$BUILD/self-tiny.csv" >/dev/null
    "${MPIRUN[@]}" "$DPTRAIN" bench --layers "$LAYERS" --batch "$gb" --momentum 0.9 --lr 0.05 \
        --steps 200 --repeats 5 --allreduce "$ALLREDUCE" --threads 1 --csv "$BUILD/self-step.csv" >/dev/null
    # csv_col FILE NAME: NAME's value in the first row of FILE (quoted fields hold commas).
    csv_col() { python3 -c 'import csv, sys; print(next(csv.DictReader(open(sys.argv[1])))[sys.argv[2]])' "$1" "$2"; }
    t_small=$(awk -v m="$(csv_col "$BUILD/self-tiny.csv" allreduce_ms_alone)" 'BEGIN { print m / 1e3 }')
    t_grad=$(awk -v m="$(csv_col "$BUILD/self-step.csv" allreduce_ms_alone)" 'BEGIN { print m / 1e3 }')
    real_ms=$(csv_col "$BUILD/self-step.csv" step_ms)
    real_sps=$(csv_col "$BUILD/self-step.csv" samples_per_s)
    n_grad=$((N_PARAMS + 4))
    # Calibration for 2 ranks: a tiny allreduce is about 2 message latencies; the gradient's
    # (Open MPI's ring for 2 ranks: 2 steps of half the buffer each way) is 2 latencies +
    # bytes / bandwidth. Reduction arithmetic is folded into the bandwidth.
    read -r lat_us bw_Bps < <(awk -v s="$t_small" -v g="$t_grad" -v n="$n_grad" \
        'BEGIN { l = s / 2; printf "%.6g %.6g\n", l * 1e6, 4 * n / (g - 2 * l) }')
    "$ROOT/sim/platform.sh" "$OUT/platform-self" 2 "${bw_Bps}Bps" "$lat_us"
    log "this machine, 2 ranks: MPI_Allreduce of 6 floats $(awk -v t="$t_small" 'BEGIN{printf "%.2f", t*1e6}') us," \
        "$n_grad floats $(awk -v t="$t_grad" 'BEGIN{printf "%.3f", t*1e3}') ms" \
        "-> latency $lat_us us, bandwidth $(awk -v b="$bw_Bps" 'BEGIN{printf "%.2f", b/1e9}') GB/s"
    # The simulated step benchmarks the non-GEMM code's real CPU time, which other work on
    # this machine can only inflate: the fastest of 3 simulations (one run in about 20 seen
    # here was 1.4x the others).
    res=
    for r in 1 2 3; do
        one=$(sim_run 2 "$OUT/platform-self" 1 "$OUT/self-check.log")
        if [ -z "$res" ] || awk -v a="$(field step_ms "$one")" -v b="$(field step_ms "$res")" \
                'BEGIN { exit !(a < b) }'; then
            res=$one
        fi
    done
    sim_ms=$(field step_ms "$res") sim_ar=$(field allreduce_ms "$res")
    read -r ratio ok < <(awk -v r="$real_ms" -v p="$sim_ms" -v tol="$TOL" \
        'BEGIN { q = p / r; printf "%.3f %d\n", q, (q <= 1 + tol && q * (1 + tol) >= 1) }')
    {
        echo "self-check (2 ranks on this machine, $LAYERS, $BATCH rows per rank):"
        echo "  real:      step $real_ms ms ($real_sps samples/s; dptrain bench, median of 5 x 200 steps)"
        echo "  simulated: step $sim_ms ms, the fastest of 3 (allreduce $sim_ar ms; measured allreduce $(awk -v t="$t_grad" 'BEGIN{printf "%.4f", t*1e3}') ms)"
        echo "  ratio simulated/real $ratio, tolerance $TOL: $([ "$ok" = 1 ] && echo PASS || echo FAIL)"
    } | tee "$OUT/self-check.txt" >&2
    [ "$ok" = 1 ] || { log "self-check failed"; exit 1; }
fi

# --- 5. clusters ------------------------------------------------------------------------------
max=1
for p in $RANKS; do [ "$p" -gt "$max" ] && max=$p; done
CSV="$OUT/simulate.csv"
echo "link_gbps,latency_us,ranks,batch_per_rank,global_batch,step_ms,allreduce_ms,allreduce_share,samples_per_s,weak_scaling_efficiency,wall_s,peak_private_mb,peak_used_rise_mb,max_rss_mb" >"$CSV"
for bw in $BWS; do
    plat="$OUT/platform-${bw}g"
    "$ROOT/sim/platform.sh" "$plat" "$max" "${bw}Gbps" "$LAT_US"
    # The 1-rank baseline (its row, if RANKS has 1, is this run: efficiency 1 by definition).
    sim_measure 1 "$plat" "$BW_EFF" "$OUT/sim-${bw}g-1.log"
    base=$M_RESULT base_wall=$M_WALL base_priv=$M_PRIV_MB base_used=$M_USED_MB base_rss=$M_RSS_MB
    t1=$(field step_ms "$base")
    for p in $RANKS; do
        if [ "$p" = 1 ]; then
            M_RESULT=$base M_WALL=$base_wall M_PRIV_MB=$base_priv M_USED_MB=$base_used M_RSS_MB=$base_rss
        else
            sim_measure "$p" "$plat" "$BW_EFF" "$OUT/sim-${bw}g-$p.log"
        fi
        res=$M_RESULT
        st=$(field step_ms "$res") ar=$(field allreduce_ms "$res") sps=$(field samples_per_s "$res")
        gbv=$(field global_batch "$res")
        awk -v bw="$bw" -v lat="$LAT_US" -v p="$p" -v b="$BATCH" -v g="$gbv" -v st="$st" \
            -v ar="$ar" -v sps="$sps" -v t1="$t1" -v w="$M_WALL" -v pm="$M_PRIV_MB" -v um="$M_USED_MB" -v rss="$M_RSS_MB" 'BEGIN {
            if (!(st > 0) || !(sps > 0)) exit 1;
            printf "%s,%s,%d,%d,%d,%.4f,%.4f,%.3f,%.0f,%.3f,%s,%d,%d,%d\n", bw, lat, p, b, g, st, ar,
                   ar / st, sps, t1 / st, w, pm, um, rss }' >>"$CSV" || { log "bad result for $p ranks: $res"; exit 1; }
        log "$(tail -1 "$CSV")"
    done
done

# --- 6. Markdown ---------------------------------------------------------------------------------
{
    echo "Predicted by SimGrid SMPI ($(smpirun -version 2>/dev/null | head -1)): dptrain $LAYERS, $BATCH rows per rank, SGD momentum;"
    echo "one rank per host, full-duplex links to a non-blocking switch, $LAT_US us latency, ${BW_EFF} of link bandwidth usable;"
    echo "GEMM times measured here ($(awk '{ t += $6 } END { printf "%.0f us", t * 1e6 }' "$OUT/gemm_table.txt") per step, 1 OpenBLAS thread per rank);"
    echo "the code between products: $([ "$COMPUTE" = gemm ] && echo "not counted (COMPUTE=gemm)" || echo "its CPU time here (COMPUTE=bench)")."
    echo "Weak-scaling efficiency = simulated 1-rank step time / N-rank step time."
    echo
    echo "Per simulation on this machine: wall time; peak private memory (anonymous pages + page tables; SMPI's shared"
    echo "64 MiB block comes on top); peak rise of the machine's memory in use (other work included); max RSS (/usr/bin/time -v:"
    echo "every mapping of a shared page counts again)."
    echo
    echo "| link | ranks | global batch | step (ms) | allreduce (ms) | samples/s | weak-scaling efficiency | wall (s) | private (MB) | used rise (MB) | max RSS (MB) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    tail -n +2 "$CSV" | awk -F, '{ printf "| %s Gbit/s | %d | %d | %.3f | %.3f | %.0f | %.1f%% | %s | %d | %d | %d |\n", $1, $3, $5, $6, $7, $9, 100 * $10, $11, $12, $13, $14 }'
    [ -f "$OUT/self-check.txt" ] && { echo; sed 's/^/    /' "$OUT/self-check.txt"; }
} >"$OUT/simulate.md"
cat "$OUT/simulate.md"
log "wrote $CSV and $OUT/simulate.md"
