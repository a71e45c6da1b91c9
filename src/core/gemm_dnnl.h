/* gemm_dnnl.h: a row-major matrix product by oneDNN's matmul, with its primitives kept per
 * shape in a process-wide table (the DP_GEMM_DNNL_SHAPES used last). dp_gemm (blas.h) decides
 * when to call it. A new shape makes its primitive first (oneDNN generates its kernel: about
 * a millisecond); the same shape then runs the same kernel with the same summation order, so
 * results are bit-for-bit the same run to run. One stream, behind a lock: callers on several
 * threads take turns. Built only with oneDNN (DPTRAIN_HAVE_DNNL). Local. */
#ifndef DPTRAIN_GEMM_DNNL_H
#define DPTRAIN_GEMM_DNNL_H

#include <stdbool.h>
#include <stddef.h>

#define DP_GEMM_DNNL_SHAPES 48

/* Whether this build has oneDNN. */
bool dp_gemm_dnnl_available(void);
/* C (M,N) = op(A) op(B), or C += op(A) op(B) if acc, as dp_sgemm with alpha 1 and beta 0 or 1.
 * Returns true if oneDNN computed it; false (C untouched) if this shape has only oneDNN's
 * reference kernel, or if a oneDNN call has failed in this process (every call after that
 * returns false, so a run keeps one kernel per shape from then on). */
bool dp_gemm_dnnl(bool ta, bool tb, int M, int N, int K, const float *A, const float *B,
                  bool acc, float *C);
/* The implementation oneDNN picks for an M x N x K product ("brg:avx512_core", "gemm:jit"),
 * copied into out; "" if none or no oneDNN. */
void dp_gemm_dnnl_impl(int M, int N, int K, char *out, size_t cap);

#endif
