#!/usr/bin/env bash
# conv_bench.sh: builds and runs launch/conv_bench.c, one thread: the CNN's convolutions
# (conv1 1->32 on 28x28, conv2 32->64 on 14x14, 3x3 padding 1) by dptrain's im2col + OpenBLAS
# kernels (src/core/conv.c) against oneDNN 2.6 (blocked "any" layouts and plain nchw), and the
# dense layers (3136->128 +ReLU, 128->10) by sgemm against oneDNN matmul; prints the table and
# exits non-zero if the two disagree beyond the tolerance.
#
# The dptrain kernels are compiled from the sources as they are now (src/core/*.c, with the
# Release build's -O3), so the bench does not depend on build/ being current;
# LIB=build/libdptrain.a links the built static library instead.
# Environment: OUT (runs/conv_bench: the binary), CC (gcc), PIN (1: run under taskset -c 0
# when taskset exists; 0: do not pin), LIB (see above), CORETYPE (inherit: keep the caller's
# OPENBLAS_CORETYPE, as dptrain does when one is set; auto: unset it, so that conv_bench picks
# the kernels as dptrain does with none set; NAME: OPENBLAS_CORETYPE=NAME). Arguments go to
# conv_bench (--reps N, --warmup N, --batches 64,128, --dense-batch 64, --tol 1e-4).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/conv_bench}
CC=${CC:-gcc}
PIN=${PIN:-1}
LIB=${LIB:-}
launch/setup.sh libdnnl-dev >/dev/null   # oneDNN is the bench's peer, not a dependency of dptrain
mkdir -p "$OUT"
WARN=(-Wall -Wextra)
if [ -n "$LIB" ]; then
    DP=("$LIB")
else
    # All of src/core (the MPI-free math), as an archive: the linker takes conv.c and what it
    # calls (blas.c, err.c, act.c, ...) and nothing else.
    rm -rf "$OUT/core" && mkdir -p "$OUT/core"
    for f in src/core/*.c; do
        "$CC" -O3 "${WARN[@]}" -Iinclude -Isrc -c "$f" -o "$OUT/core/$(basename "$f" .c).o"
    done
    rm -f "$OUT/libdpcore.a"
    ar rcs "$OUT/libdpcore.a" "$OUT"/core/*.o
    DP=("$OUT/libdpcore.a")
fi
# -fopenmp: omp_set_num_threads/omp_get_max_threads, the runtime Debian's libdnnl uses
# (DNNL_CPU_RUNTIME OMP, linked against libgomp).
"$CC" -O2 "${WARN[@]}" -fopenmp -Iinclude launch/conv_bench.c "${DP[@]}" \
    -ldnnl -lopenblas -lm -o "$OUT/conv_bench"

# One thread: OpenMP (oneDNN), OpenBLAS (Debian's default libopenblas is the pthreads build,
# /usr/lib/x86_64-linux-gnu/openblas-pthread).
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
case ${CORETYPE:-inherit} in
    inherit) ;;
    auto) unset OPENBLAS_CORETYPE ;;
    *) export OPENBLAS_CORETYPE=$CORETYPE ;;
esac
RUN=("$OUT/conv_bench")
if [ "$PIN" = 1 ] && command -v taskset >/dev/null; then
    RUN=(taskset -c 0 "${RUN[@]}")
fi
# src/core/conv.c changes while the kernels are tuned: name the version measured.
if [ -z "$LIB" ]; then
    echo "dptrain kernels from src/core/conv.c $(git hash-object src/core/conv.c | cut -c1-12)" \
        "($(date -r src/core/conv.c '+%F %T'))"
else
    echo "dptrain kernels from $LIB ($(date -r "$LIB" '+%F %T'))"
fi
echo "== ${RUN[*]} $*"
"${RUN[@]}" "$@"
