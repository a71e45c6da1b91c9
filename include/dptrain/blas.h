/* dptrain/blas.h: the one BLAS seam, the OpenBLAS kernel and thread policy. Local. */
#ifndef DPTRAIN_BLAS_H
#define DPTRAIN_BLAS_H

#include <stdbool.h>
#include <stddef.h>

/* C (M,N) = alpha * op(A) * op(B) + beta * C, all row-major. op(A) is (M,K), op(B) is (K,N);
 * ta/tb say whether A/B are stored transposed ((K,M) and (N,K)). Calls cblas_sgemm. */
void dp_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A,
              const float *B, float beta, float *C);
/* The dense layers' products: C (M,N) = op(A) op(B), or C += op(A) op(B) if acc, by oneDNN's
 * matmul or OpenBLAS's sgemm as dp_gemm_uses_dnnl says for the shape. The choice depends on
 * the shape and DPTRAIN_GEMM alone, never on a timing, so a run is bit-for-bit the same run to
 * run, and deterministic mode's fixed shards see the same kernels at every rank count.
 * DPTRAIN_GEMM = auto (or unset): oneDNN from DP_GEMM_DNNL_MIN multiply-adds (M N K) up when
 * the build has it, OpenBLAS below (measured by launch/gemm_kernels.sh: oneDNN 2.6's brgemm
 * at 1.10-1.25x OpenBLAS 0.3.21's sgemm on the quickstart network's large shapes on an
 * AVX-512 machine, 1.05-1.14x with both limited to AVX2; OpenBLAS mostly faster on the 10-wide
 * output layer's); onednn: every dense product by oneDNN; openblas: none. A shape that oneDNN
 * can only run with its reference kernel, or any oneDNN failure, falls back to OpenBLAS. */
#define DP_GEMM_DNNL_MIN 1048576.0
typedef enum { DP_GEMM_AUTO, DP_GEMM_OPENBLAS, DP_GEMM_ONEDNN } dp_gemm_mode;
void dp_gemm(bool ta, bool tb, int M, int N, int K, const float *A, const float *B, bool acc,
             float *C);
bool dp_gemm_uses_dnnl(int M, int N, int K);
dp_gemm_mode dp_gemm_get_mode(void);
/* DP_EINVAL (with the message) if DPTRAIN_GEMM has a value other than auto, onednn or
 * openblas, or onednn in a build without oneDNN. */
int dp_gemm_check_env(void);
/* The dense products' kernels for the banner, e.g. "oneDNN matmul brg:avx512_core from 2^20
 * multiply-adds, OpenBLAS Cooperlake sgemm below". */
void dp_gemm_describe(char *out, size_t cap);

/* The same product by plain loops in double accumulation: the reference for tests. */
void dp_sgemm_ref(bool ta, bool tb, int M, int N, int K, float alpha, const float *A,
                  const float *B, float beta, float *C);

/* Name of the OpenBLAS kernel family in use ("SkylakeX", "Haswell", "Prescott", ...). */
const char *dp_blas_corename(void);
/* Sets the OpenBLAS thread count (>= 1) for this process, and oneDNN's (its OpenMP runtime's,
 * for the calling thread) when the build has oneDNN. */
void dp_blas_set_threads(int n);
int dp_blas_get_threads(void);

/* CPU features that decide which OpenBLAS kernels can run. */
typedef struct {
    bool avx512; /* AVX-512 F, BW, DQ and VL */
    bool avx2;   /* AVX2 and FMA */
    bool avx;
} dp_cpu_features;

dp_cpu_features dp_cpu_detect(void);

/* The kernel family OpenBLAS should use given the one it chose (current) and the CPU:
 * NULL when current is already as good as the CPU allows (or unknown to us), else the
 * name to put in OPENBLAS_CORETYPE ("SkylakeX", "Haswell" or "Sandybridge"). Pure. */
const char *dp_blas_better_coretype(const char *current, dp_cpu_features cpu);

/* Subnormal floats: when on, this thread's SSE/AVX arithmetic flushes subnormal results to
 * zero and reads subnormal inputs as zero (MXCSR FTZ and DAZ), which avoids the CPU's slow
 * microcode path for them; when off, IEEE gradual underflow (the default). Affects the
 * calling thread only (and the OpenBLAS work it runs itself). Returns false if this CPU
 * build has no such control (then nothing changes). */
bool dp_fp_flush_subnormals(bool on);

#endif
