#!/usr/bin/env bash
# gemm_kernels.sh: the measurement behind DPTRAIN_GEMM=auto's rule (README "Speed"): oneDNN's
# matmul against OpenBLAS's sgemm for every product of a network's dense layers at a batch
# (launch/gemm_kernels.c), one thread. Minutes: not part of test.sh.
#   launch/gemm_kernels.sh [ROWS...]      (default 64 128; LAYERS=784,256,128,10)
#   ISA=AVX2 launch/gemm_kernels.sh       (both libraries limited to AVX2: DNNL_MAX_CPU_ISA,
#                                          OPENBLAS_CORETYPE=Haswell)
# The environment is passed on: unset OPENBLAS_CORETYPE to let OpenBLAS choose (dptrain's
# kernels: its banner names them).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAYERS=${LAYERS:-784,256,128,10}
ROWS=("$@")
[ ${#ROWS[@]} -gt 0 ] || ROWS=(64 128)
mkdir -p "$ROOT/build"
BIN=$ROOT/build/gemm_kernels
gcc -O2 -Wall -Wextra -o "$BIN" "$ROOT/launch/gemm_kernels.c" -ldnnl -lopenblas
ENV=(env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1)
if [ "${ISA:-}" = AVX2 ]; then ENV+=(DNNL_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell); fi
for b in "${ROWS[@]}"; do
    echo "== $b rows, layers $LAYERS"
    "${ENV[@]}" "$BIN" "$b" "$LAYERS"
done
