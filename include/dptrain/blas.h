/* dptrain/blas.h: the one BLAS seam, the OpenBLAS kernel and thread policy. Local. */
#ifndef DPTRAIN_BLAS_H
#define DPTRAIN_BLAS_H

#include <stdbool.h>

/* C (M,N) = alpha * op(A) * op(B) + beta * C, all row-major. op(A) is (M,K), op(B) is (K,N);
 * ta/tb say whether A/B are stored transposed ((K,M) and (N,K)). Calls cblas_sgemm. */
void dp_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A,
              const float *B, float beta, float *C);
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
