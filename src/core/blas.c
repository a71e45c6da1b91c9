/* blas.c: the only file that includes cblas.h: sgemm, its reference, and the kernel policy. */
#include "dptrain/blas.h"

#include <cblas.h>
#include <string.h>
#ifdef DPTRAIN_HAVE_DNNL
#include <omp.h> /* oneDNN's threads (conv_dnnl.c) run on OpenMP */
#endif
#if defined(__SSE2__)
#include <pmmintrin.h>
#include <xmmintrin.h>
#endif

/* Declared by OpenBLAS but not in every cblas.h. */
char *openblas_get_corename(void);

void dp_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A,
              const float *B, float beta, float *C)
{
    if (M == 0 || N == 0) {
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M,
                N, K, alpha, A, ta ? M : K, B, tb ? K : N, beta, C, N);
}

void dp_sgemm_ref(bool ta, bool tb, int M, int N, int K, float alpha, const float *A,
                  const float *B, float beta, float *C)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) {
                float a = ta ? A[(size_t)k * M + i] : A[(size_t)i * K + k];
                float b = tb ? B[(size_t)j * K + k] : B[(size_t)k * N + j];
                s += (double)a * b;
            }
            float *c = &C[(size_t)i * N + j];
            *c = (float)(alpha * s + (beta == 0.0f ? 0.0 : (double)beta * *c));
        }
    }
}

const char *dp_blas_corename(void)
{
    const char *n = openblas_get_corename();
    return n ? n : "unknown";
}

void dp_blas_set_threads(int n)
{
    openblas_set_num_threads(n < 1 ? 1 : n);
#ifdef DPTRAIN_HAVE_DNNL
    omp_set_num_threads(n < 1 ? 1 : n);
#endif
}

int dp_blas_get_threads(void) { return openblas_get_num_threads(); }

dp_cpu_features dp_cpu_detect(void)
{
    __builtin_cpu_init();
    dp_cpu_features f = {
        .avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"),
        .avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"),
        .avx = __builtin_cpu_supports("avx"),
    };
    return f;
}

/* Kernel families of OpenBLAS 0.3.x (x86-64 DYNAMIC_ARCH), by the widest vectors they use. */
enum { TIER_SSE = 1, TIER_AVX, TIER_AVX2, TIER_AVX512 };

static int tier_of(const char *name)
{
    static const struct {
        const char *name;
        int tier;
    } known[] = {
        {"Prescott", TIER_SSE},    {"Core2", TIER_SSE},      {"Penryn", TIER_SSE},
        {"Dunnington", TIER_SSE},  {"Nehalem", TIER_SSE},    {"Atom", TIER_SSE},
        {"Katmai", TIER_SSE},      {"Coppermine", TIER_SSE}, {"Northwood", TIER_SSE},
        {"Banias", TIER_SSE},      {"Opteron", TIER_SSE},    {"Barcelona", TIER_SSE},
        {"Nano", TIER_SSE},        {"Bobcat", TIER_SSE},     {"Sandybridge", TIER_AVX},
        {"Bulldozer", TIER_AVX},   {"Piledriver", TIER_AVX}, {"Steamroller", TIER_AVX},
        {"Excavator", TIER_AVX},   {"Haswell", TIER_AVX2},   {"Zen", TIER_AVX2},
        {"SkylakeX", TIER_AVX512}, {"Cooperlake", TIER_AVX512},
        {"SapphireRapids", TIER_AVX512},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (strcmp(known[i].name, name) == 0) {
            return known[i].tier;
        }
    }
    return 0;
}

const char *dp_blas_better_coretype(const char *current, dp_cpu_features cpu)
{
    int have = current ? tier_of(current) : 0;
    if (have == 0) {
        return NULL; /* a kernel family we do not know: leave OpenBLAS's choice alone */
    }
    if (cpu.avx512 && have < TIER_AVX512) {
        return "SkylakeX";
    }
    if (cpu.avx2 && have < TIER_AVX2) {
        return "Haswell";
    }
    if (cpu.avx && have < TIER_AVX) {
        return "Sandybridge";
    }
    return NULL;
}

bool dp_fp_flush_subnormals(bool on)
{
#if defined(__SSE2__)
    _MM_SET_FLUSH_ZERO_MODE(on ? _MM_FLUSH_ZERO_ON : _MM_FLUSH_ZERO_OFF);
    _MM_SET_DENORMALS_ZERO_MODE(on ? _MM_DENORMALS_ZERO_ON : _MM_DENORMALS_ZERO_OFF);
    return true;
#else
    (void)on;
    return false;
#endif
}
