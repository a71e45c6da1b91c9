/* gemm.c: the dense layers' products (dp_gemm): oneDNN's matmul or OpenBLAS's sgemm by
 * shape, as DPTRAIN_GEMM says (blas.h). Apart from blas.c so that the SimGrid build, which
 * replaces blas.c, runs this choice too. */
#include "dptrain/blas.h"

#include "dptrain/err.h"
#include "gemm_dnnl.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* DPTRAIN_GEMM, read once per process. */
static dp_gemm_mode gemm_mode = DP_GEMM_AUTO;
static int gemm_env_rc = DP_OK;
static char gemm_env_bad[64];
static pthread_once_t gemm_once = PTHREAD_ONCE_INIT;

static void gemm_read_env(void)
{
    const char *v = getenv("DPTRAIN_GEMM");
    if (!v || !*v || strcmp(v, "auto") == 0) {
        gemm_mode = DP_GEMM_AUTO;
    } else if (strcmp(v, "openblas") == 0) {
        gemm_mode = DP_GEMM_OPENBLAS;
    } else if (strcmp(v, "onednn") == 0 && dp_gemm_dnnl_available()) {
        gemm_mode = DP_GEMM_ONEDNN;
    } else {
        gemm_mode = DP_GEMM_OPENBLAS;
        gemm_env_rc = DP_EINVAL;
        snprintf(gemm_env_bad, sizeof gemm_env_bad, "%s", v);
    }
}

dp_gemm_mode dp_gemm_get_mode(void)
{
    pthread_once(&gemm_once, gemm_read_env);
    return gemm_mode;
}

int dp_gemm_check_env(void)
{
    pthread_once(&gemm_once, gemm_read_env);
    if (gemm_env_rc == DP_OK) {
        return DP_OK;
    }
    if (strcmp(gemm_env_bad, "onednn") == 0) {
        return dp_err(DP_EINVAL, "environment: DPTRAIN_GEMM=onednn, but this dptrain was built "
                                 "without oneDNN (install libdnnl-dev and rebuild)");
    }
    return dp_err(DP_EINVAL, "environment: DPTRAIN_GEMM=%s: expected auto, onednn or openblas",
                  gemm_env_bad);
}

bool dp_gemm_uses_dnnl(int M, int N, int K)
{
    const dp_gemm_mode mode = dp_gemm_get_mode();
    return mode == DP_GEMM_ONEDNN ||
           (mode == DP_GEMM_AUTO && dp_gemm_dnnl_available() &&
            (double)M * N * K >= DP_GEMM_DNNL_MIN);
}

void dp_gemm(bool ta, bool tb, int M, int N, int K, const float *A, const float *B, bool acc,
             float *C)
{
    if (M == 0 || N == 0) {
        return;
    }
    if (dp_gemm_uses_dnnl(M, N, K) && dp_gemm_dnnl(ta, tb, M, N, K, A, B, acc, C)) {
        return;
    }
    dp_sgemm(ta, tb, M, N, K, 1.0f, A, B, acc ? 1.0f : 0.0f, C);
}

void dp_gemm_describe(char *out, size_t cap)
{
    char impl[64];
    const dp_gemm_mode mode = dp_gemm_get_mode();
    if (mode == DP_GEMM_OPENBLAS || !dp_gemm_dnnl_available()) {
        snprintf(out, cap, "OpenBLAS %s sgemm", dp_blas_corename());
        return;
    }
    dp_gemm_dnnl_impl(256, 256, 256, impl, sizeof impl);
    if (mode == DP_GEMM_ONEDNN) {
        snprintf(out, cap, "oneDNN matmul %s", impl[0] ? impl : "?");
    } else {
        snprintf(out, cap, "oneDNN matmul %s from 2^20 multiply-adds, OpenBLAS %s sgemm below",
                 impl[0] ? impl : "?", dp_blas_corename());
    }
}

