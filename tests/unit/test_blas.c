/* test_blas.c: unit tests of the BLAS layer: dp_sgemm and dp_sgemm_ref against a reference
 * computed here in double and by hand (every transpose, odd and blocked shapes, vector shapes),
 * flushing of subnormals, and the OpenBLAS kernel policy (which core type to ask for on which
 * CPU flags); dp_gemm, the dense layers' products by oneDNN or OpenBLAS, in each setting of
 * DPTRAIN_GEMM. Suites core_blas, core_blas_policy and core_gemm.
 * Expected values come from independent computation in the test (a reference in double,
 * products worked by hand), never from program output. */
#include <criterion/criterion.h>

#include "testutil.h"

#include "core/gemm_dnnl.h"
#include "dptrain/blas.h"
#include "dptrain/err.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------
 * sgemm */

/* C (M,N) = alpha op(A) op(B) + beta C, computed here in double, independently. */
static void gemm_double(bool ta, bool tb, int M, int N, int K, double alpha, const float *A,
                        const float *B, double beta, const float *C0, double *C)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) {
                double a = ta ? A[k * M + i] : A[i * K + k];
                double b = tb ? B[j * K + k] : B[k * N + j];
                s += a * b;
            }
            C[i * N + j] = alpha * s + beta * C0[i * N + j];
        }
    }
}

/* max_i |got_i - want_i| / max_i |want_i| */
static double max_rel_err_vs(const float *got, const double *want, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)got[i] - want[i]));
        den = fmax(den, fabs(want[i]));
    }
    return num / (den > 0.0 ? den : 1.0);
}

/* Operands in [-1, 1] for an M x N x K product (A, B, C0 and a copy of C0 in C) and room for
 * the double reference (Cd). */
typedef struct {
    float *A, *B, *C0, *C;
    double *Cd;
} operands;

static operands make_operands(int M, int N, int K, uint64_t seed)
{
    operands o = {talloc((size_t)M * K), talloc((size_t)K * N), talloc((size_t)M * N),
                  talloc((size_t)M * N), calloc((size_t)M * N, sizeof(double))};
    cr_assert_not_null(o.Cd);
    tfill(o.A, (size_t)M * K, -1.0f, 1.0f, seed + 1);
    tfill(o.B, (size_t)K * N, -1.0f, 1.0f, seed + 2);
    tfill(o.C0, (size_t)M * N, -1.0f, 1.0f, seed + 3);
    memcpy(o.C, o.C0, (size_t)M * N * sizeof *o.C);
    return o;
}

static void free_operands(operands *o)
{
    free(o->A);
    free(o->B);
    free(o->C0);
    free(o->C);
    free(o->Cd);
}

static void check_sgemm_shape(int M, int N, int K, float alpha, float beta, uint64_t seed)
{
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = (t >> 1) & 1;
        operands o = make_operands(M, N, K, seed);
        float *A = o.A, *B = o.B, *C0 = o.C0, *C = o.C, *Cr = talloc((size_t)M * N);
        double *Cd = o.Cd;
        memcpy(Cr, C0, (size_t)M * N * sizeof *C);
        gemm_double(ta, tb, M, N, K, alpha, A, B, beta, C0, Cd);
        dp_sgemm(ta, tb, M, N, K, alpha, A, B, beta, C);
        dp_sgemm_ref(ta, tb, M, N, K, alpha, A, B, beta, Cr);
        /* Float products of K terms in [-1,1]: 1e-5 of the largest entry is ~100 ulps. */
        double e = max_rel_err_vs(C, Cd, (size_t)M * N);
        double er = max_rel_err_vs(Cr, Cd, (size_t)M * N);
        cr_assert_lt(e, 1e-5, "dp_sgemm ta=%d tb=%d M=%d N=%d K=%d: rel err %g", ta, tb, M, N,
                     K, e);
        cr_assert_lt(er, 1e-5, "dp_sgemm_ref ta=%d tb=%d M=%d N=%d K=%d: rel err %g", ta, tb,
                     M, N, K, er);
        double want_max = 0.0, diff = 0.0;
        for (int i = 0; i < M * N; i++) {
            diff = fmax(diff, fabs((double)C[i] - Cr[i]));
            want_max = fmax(want_max, fabs(Cd[i]));
        }
        cr_assert_lt(diff / want_max, 1e-5, "dp_sgemm vs dp_sgemm_ref ta=%d tb=%d: %g", ta, tb,
                     diff / want_max);
        free(Cr);
        free_operands(&o);
    }
}

TestSuite(core_blas);

/* FTZ/DAZ: 1e-20 * 1e-20 = 1e-40 is subnormal; flushed it is 0, under IEEE it is not. */
Test(core_blas, flush_subnormals_on_and_off)
{
    volatile float a = 1e-20f, b = 1e-20f, sub = 1e-40f;
    cr_assert(dp_fp_flush_subnormals(true), "no FTZ/DAZ control on this x86-64 build");
    float flushed = a * b, read_as = sub * 2.0f;
    cr_assert(dp_fp_flush_subnormals(false));
    float ieee = a * b, read_ieee = sub * 2.0f;
    cr_assert_eq(flushed, 0.0f, "FTZ: a subnormal product should be 0, got %g", flushed);
    cr_assert_eq(read_as, 0.0f, "DAZ: a subnormal input should read as 0, got %g", read_as);
    cr_assert(ieee > 0.0f && ieee < 1.2e-38f, "IEEE: expected a subnormal, got %g", ieee);
    cr_assert(read_ieee > 0.0f, "IEEE: the subnormal input was lost");
}

Test(core_blas, sgemm_all_transposes_odd_shape)
{
    check_sgemm_shape(5, 7, 3, 0.75f, -1.25f, 11);
}

Test(core_blas, sgemm_all_transposes_larger_shape)
{
    /* Large enough for OpenBLAS to use its blocked kernels, still odd in every dimension. */
    check_sgemm_shape(37, 65, 129, -0.5f, 0.3f, 21);
}

Test(core_blas, sgemm_vector_shapes)
{
    check_sgemm_shape(1, 9, 4, 1.5f, 2.0f, 31);  /* row vector times matrix */
    check_sgemm_shape(6, 1, 5, 1.0f, 0.5f, 41);  /* matrix times column vector */
    check_sgemm_shape(3, 4, 1, 2.0f, -1.0f, 51); /* outer product, K = 1 */
}

Test(core_blas, sgemm_2x2_by_hand)
{
    /* A = [1 2; 3 4], B = [5 6; 7 8], all products worked by hand:
     *   A B     = [1*5+2*7 1*6+2*8; 3*5+4*7 3*6+4*8] = [19 22; 43 50]
     *   A^T B   = [1*5+3*7 1*6+3*8; 2*5+4*7 2*6+4*8] = [26 30; 38 44]
     *   A B^T   = [1*5+2*6 1*7+2*8; 3*5+4*6 3*7+4*8] = [17 23; 39 53]
     *   A^T B^T = [1*5+3*6 1*7+3*8; 2*5+4*6 2*7+4*8] = [23 31; 34 46]
     * With alpha = 2, beta = 3 and C = ones: 2 * AB + 3. */
    const float A[4] = {1, 2, 3, 4}, B[4] = {5, 6, 7, 8};
    const float want[4][4] = {
        {19, 22, 43, 50}, /* ta=0 tb=0 */
        {26, 30, 38, 44}, /* ta=1 tb=0 */
        {17, 23, 39, 53}, /* ta=0 tb=1 */
        {23, 31, 34, 46}, /* ta=1 tb=1 */
    };
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = (t >> 1) & 1;
        float C[4] = {NAN, NAN, NAN, NAN}; /* beta = 0: C need not be set on input */
        float Cr[4] = {NAN, NAN, NAN, NAN};
        dp_sgemm(ta, tb, 2, 2, 2, 1.0f, A, B, 0.0f, C);
        dp_sgemm_ref(ta, tb, 2, 2, 2, 1.0f, A, B, 0.0f, Cr);
        for (int i = 0; i < 4; i++) {
            cr_assert_float_eq(C[i], want[t][i], 1e-6f, "dp_sgemm ta=%d tb=%d C[%d] = %g, want %g",
                               ta, tb, i, C[i], want[t][i]);
            cr_assert_float_eq(Cr[i], want[t][i], 1e-6f, "ref ta=%d tb=%d C[%d] = %g, want %g",
                               ta, tb, i, Cr[i], want[t][i]);
        }
    }
    float C[4] = {1, 1, 1, 1};
    const float want_ab[4] = {2 * 19 + 3, 2 * 22 + 3, 2 * 43 + 3, 2 * 50 + 3}; /* 41 47 89 103 */
    dp_sgemm(false, false, 2, 2, 2, 2.0f, A, B, 3.0f, C);
    for (int i = 0; i < 4; i++) {
        cr_assert_float_eq(C[i], want_ab[i], 1e-6f, "alpha/beta C[%d] = %g, want %g", i, C[i],
                           want_ab[i]);
    }
    /* Non-square by hand: (2,3) x (3,1): [1 2 3; 4 5 6] [1; 0; -1] = [1-3; 4-6] = [-2; -2]. */
    const float P[6] = {1, 2, 3, 4, 5, 6}, q[3] = {1, 0, -1};
    float r[2] = {NAN, NAN};
    dp_sgemm(false, false, 2, 1, 3, 1.0f, P, q, 0.0f, r);
    cr_assert_float_eq(r[0], -2.0f, 1e-6f);
    cr_assert_float_eq(r[1], -2.0f, 1e-6f);
}

/* ---------------------------------------------------------------------------------------
 * BLAS kernel policy */

TestSuite(core_blas_policy);

static const dp_cpu_features CPU_AVX512 = {.avx512 = true, .avx2 = true, .avx = true};
static const dp_cpu_features CPU_AVX2 = {.avx512 = false, .avx2 = true, .avx = true};
static const dp_cpu_features CPU_AVX = {.avx512 = false, .avx2 = false, .avx = true};
static const dp_cpu_features CPU_SSE = {.avx512 = false, .avx2 = false, .avx = false};

static void expect_coretype(const char *current, dp_cpu_features cpu, const char *want)
{
    const char *got = dp_blas_better_coretype(current, cpu);
    if (want == NULL) {
        cr_assert_null(got, "better_coretype(%s, avx512=%d avx2=%d avx=%d) = %s, want NULL",
                       current ? current : "NULL", cpu.avx512, cpu.avx2, cpu.avx, got);
    } else {
        cr_assert_not_null(got, "better_coretype(%s, avx512=%d avx2=%d avx=%d) = NULL, want %s",
                           current ? current : "NULL", cpu.avx512, cpu.avx2, cpu.avx, want);
        cr_assert_str_eq(got, want, "better_coretype(%s, avx512=%d avx2=%d avx=%d)",
                         current ? current : "NULL", cpu.avx512, cpu.avx2, cpu.avx);
    }
}

Test(core_blas_policy, upgrades)
{
    expect_coretype("Prescott", CPU_AVX512, "SkylakeX");
    expect_coretype("Prescott", CPU_AVX2, "Haswell");
    expect_coretype("Prescott", CPU_AVX, "Sandybridge");
    expect_coretype("Sandybridge", CPU_AVX2, "Haswell");
    expect_coretype("Sandybridge", CPU_AVX512, "SkylakeX");
    expect_coretype("Haswell", CPU_AVX512, "SkylakeX");
    expect_coretype("Nehalem", CPU_AVX2, "Haswell");
}

Test(core_blas_policy, already_best_or_unknown)
{
    expect_coretype("SkylakeX", CPU_AVX512, NULL);
    expect_coretype("Haswell", CPU_AVX2, NULL);
    expect_coretype("Sandybridge", CPU_AVX, NULL);
    expect_coretype("Prescott", CPU_SSE, NULL);
    /* Never downgrade: a better kernel than the CPU flags suggest is left alone. */
    expect_coretype("SkylakeX", CPU_AVX2, NULL);
    expect_coretype("Haswell", CPU_AVX, NULL);
    expect_coretype("Foo", CPU_AVX512, NULL);
    expect_coretype("", CPU_AVX512, NULL);
    expect_coretype(NULL, CPU_AVX512, NULL);
}

Test(core_blas_policy, running_library)
{
    /* The live values are machine-dependent; only their shape is checked. */
    const char *name = dp_blas_corename();
    cr_assert_not_null(name);
    cr_assert_gt(strlen(name), 0);
    dp_cpu_features f = dp_cpu_detect();
    cr_assert(!f.avx512 || f.avx2, "avx512 without avx2 reported");
    cr_assert(!f.avx2 || f.avx, "avx2 without avx reported");
}

/* ---------------------------------------------------------------------------------------
 * dp_gemm: the dense layers' products, by oneDNN's matmul or OpenBLAS as the shape and
 * DPTRAIN_GEMM say. DPTRAIN_GEMM is read once per process; each Criterion test runs in a
 * process of its own, so each sets it first. */

TestSuite(core_gemm);

/* dp_gemm (acc false and true) against the double reference for every transpose: C = op(A)
 * op(B) (+ C0). */
static void check_gemm_shape(int M, int N, int K, uint64_t seed)
{
    for (int t = 0; t < 8; t++) {
        const bool ta = t & 1, tb = (t >> 1) & 1, acc = (t >> 2) & 1;
        operands o = make_operands(M, N, K, seed);
        gemm_double(ta, tb, M, N, K, 1.0, o.A, o.B, acc ? 1.0 : 0.0, o.C0, o.Cd);
        dp_gemm(ta, tb, M, N, K, o.A, o.B, acc, o.C);
        double e = max_rel_err_vs(o.C, o.Cd, (size_t)M * N);
        cr_assert_lt(e, 1e-5, "dp_gemm ta=%d tb=%d acc=%d M=%d N=%d K=%d: rel err %g", ta, tb,
                     acc, M, N, K, e);
        free_operands(&o);
    }
}

/* The quickstart network's products at 64 and 128 rows (forward, weight and data gradient),
 * odd sizes, a 1-row product, and more shapes than the table keeps (DP_GEMM_DNNL_SHAPES), so
 * that evicted shapes are made again. */
static void gemm_all_shapes(uint64_t seed)
{
    static const int shapes[][3] = {
        {64, 256, 784}, {256, 784, 64}, {64, 128, 256}, {128, 256, 64}, {64, 256, 128},
        {128, 256, 784}, {64, 10, 128}, {10, 128, 64}, {37, 53, 129}, {1, 300, 17},
        {300, 1, 17},   {129, 65, 33},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        check_gemm_shape(shapes[i][0], shapes[i][1], shapes[i][2], seed + 10 * i);
    }
    for (int k = 1; k <= 2 * DP_GEMM_DNNL_SHAPES / 8 + 2; k++) { /* 8 products per shape */
        check_gemm_shape(16 + k, 24, 8 + k, seed + 1000 + k);
    }
    check_gemm_shape(64, 256, 784, seed + 5000); /* evicted by now: made again */
}

static void require_dnnl(void)
{
    if (!dp_gemm_uses_dnnl(1, 1, 1)) {
        cr_skip_test("this build has no oneDNN");
    }
}

Test(core_gemm, onednn_matches_reference)
{
    setenv("DPTRAIN_GEMM", "onednn", 1);
    cr_assert_eq(dp_gemm_check_env(), DP_OK);
    require_dnnl();
    gemm_all_shapes(100);
}

Test(core_gemm, openblas_matches_reference)
{
    setenv("DPTRAIN_GEMM", "openblas", 1);
    cr_assert_eq(dp_gemm_check_env(), DP_OK);
    cr_assert_not(dp_gemm_uses_dnnl(4096, 4096, 4096));
    gemm_all_shapes(200);
}

/* oneDNN's AVX2 kernels (DNNL_MAX_CPU_ISA, read at its first call), the path of machines
 * without AVX-512; the implementation's name shows the limit took. */
Test(core_gemm, onednn_avx2_matches_reference)
{
    if (!dp_cpu_detect().avx2) {
        cr_skip_test("no AVX2 on this machine");
    }
    setenv("DNNL_MAX_CPU_ISA", "AVX2", 1);
    setenv("DPTRAIN_GEMM", "onednn", 1);
    require_dnnl();
    gemm_all_shapes(300);
    char what[256];
    dp_gemm_describe(what, sizeof what);
    cr_assert(strstr(what, "oneDNN matmul") && !strstr(what, "avx512"),
              "DNNL_MAX_CPU_ISA=AVX2, yet: %s", what);
}

/* auto: oneDNN from DP_GEMM_DNNL_MIN multiply-adds, OpenBLAS below; results the same bits
 * call after call (the choice is the shape's, the kernel deterministic). */
Test(core_gemm, auto_chooses_by_shape_and_repeats_bits)
{
    setenv("DPTRAIN_GEMM", "auto", 1);
    cr_assert_eq(dp_gemm_check_env(), DP_OK);
    const bool have = dp_gemm_uses_dnnl(64, 256, 784);
    cr_assert_not(dp_gemm_uses_dnnl(64, 10, 128), "64 x 10 x 128 is OpenBLAS's");
    cr_assert_eq(dp_gemm_uses_dnnl(64, 128, 256), have, "64 x 128 x 256 is above the line");
    gemm_all_shapes(400);
    const int M = 64, N = 256, K = 784;
    float *A = talloc((size_t)M * K), *B = talloc((size_t)K * N);
    float *C1 = talloc((size_t)M * N), *C2 = talloc((size_t)M * N);
    tfill(A, (size_t)M * K, -1.0f, 1.0f, 7);
    tfill(B, (size_t)K * N, -1.0f, 1.0f, 8);
    dp_gemm(false, true, M, N, K, A, B, false, C1);
    for (int r = 0; r < 5; r++) {
        dp_gemm(false, true, M, N, K, A, B, false, C2);
        cr_assert(memcmp(C1, C2, (size_t)M * N * sizeof *C1) == 0, "repeat %d differs", r);
    }
    free(A);
    free(B);
    free(C1);
    free(C2);
}

Test(core_gemm, bad_setting_refused)
{
    setenv("DPTRAIN_GEMM", "fastest", 1);
    cr_assert_eq(dp_gemm_check_env(), DP_EINVAL);
    cr_assert(strstr(dp_errmsg(), "DPTRAIN_GEMM=fastest") &&
                  strstr(dp_errmsg(), "auto, onednn or openblas"),
              "%s", dp_errmsg());
}
