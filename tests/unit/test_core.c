/* test_core.c: unit tests of the math core: sgemm against a reference and by hand,
 * finite-difference gradient checks of dense layers, activations, losses and whole models,
 * every loss by hand (values, gradients, correct rows, stability, the trainer's helpers),
 * model layout and initialization, names, the counter-based rng and the BLAS kernel policy.
 * Expected values come from independent computation in the test (central differences in
 * double, hand-worked formulas), never from program output. */
#include <criterion/criterion.h>

#include "testutil.h"

#include "dptrain/blas.h"
#include "dptrain/err.h"
#include "dptrain/nn.h"
#include "dptrain/rng.h"
#include "core/model_impl.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Test data helpers (tgen_next, tfill, talloc, tfill_nan): testutil.h. */

/* ---------------------------------------------------------------------------------------
 * 1. sgemm */

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

static void check_sgemm_shape(int M, int N, int K, float alpha, float beta, uint64_t seed)
{
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = (t >> 1) & 1;
        float *A = talloc((size_t)M * K), *B = talloc((size_t)K * N);
        float *C0 = talloc((size_t)M * N), *C = talloc((size_t)M * N),
              *Cr = talloc((size_t)M * N);
        double *Cd = calloc((size_t)M * N, sizeof *Cd);
        cr_assert_not_null(Cd);
        tfill(A, (size_t)M * K, -1.0f, 1.0f, seed + 1);
        tfill(B, (size_t)K * N, -1.0f, 1.0f, seed + 2);
        tfill(C0, (size_t)M * N, -1.0f, 1.0f, seed + 3);
        memcpy(C, C0, (size_t)M * N * sizeof *C);
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
        free(A);
        free(B);
        free(C0);
        free(C);
        free(Cr);
        free(Cd);
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
 * 2. Finite-difference gradient checks.
 *
 * The loss is evaluated by the float code under test and summed by the test in double.
 * The derivative is the central difference (f(v+h) - f(v-h)) / ((v+h) - (v-h)) with the float
 * steps actually taken in the denominator. The error measure is, as in kann's check,
 *   max_i |a_i - n_i| / max(1e-3, |a_i| + |n_i|).                                       */

/* gradcheck_vec (central differences, max relative error): testutil.h. */

/* --- dense layer: L = sum_ij c_ij y_ij, y = x w^T + b --- */

typedef struct {
    dp_dense *l;
    const float *x, *c;
    float *y;
    int B;
} dense_ctx;

static double dense_loss(void *p)
{
    dense_ctx *d = p;
    dp_dense_forward(d->l, d->y, d->x, d->B);
    double s = 0.0;
    for (int i = 0; i < d->B * d->l->out; i++) {
        s += (double)d->c[i] * d->y[i];
    }
    return s;
}

/* Max relative error of dw, db, dx of a dense layer (B, in -> out) against central
 * differences. With accumulate, dw/db are prefilled with known values and the check is on
 * (dw - prefill); without, they are prefilled with NaN, which must be overwritten. */
static double gradcheck_dense(int B, int in, int out, uint64_t seed, bool accumulate)
{
    size_t nw = (size_t)out * in;
    float *w = talloc(nw), *b = talloc(out), *dw = talloc(nw), *db = talloc(out);
    float *x = talloc((size_t)B * in), *dx = talloc((size_t)B * in);
    float *y = talloc((size_t)B * out), *c = talloc((size_t)B * out);
    float *pre_w = talloc(nw), *pre_b = talloc(out);
    dp_dense l = {.in = in, .out = out, .act = DP_ACT_IDENTITY, .w = w, .b = b, .dw = dw, .db = db};
    tfill(w, nw, -1.0f, 1.0f, seed + 1);
    tfill(b, out, -1.0f, 1.0f, seed + 2);
    tfill(x, (size_t)B * in, -1.0f, 1.0f, seed + 3);
    tfill(c, (size_t)B * out, -1.0f, 1.0f, seed + 4);
    if (accumulate) {
        for (size_t i = 0; i < nw; i++) {
            pre_w[i] = 0.25f * (float)i - 1.0f;
        }
        for (int i = 0; i < out; i++) {
            pre_b[i] = 3.0f - 0.5f * (float)i;
        }
    } else {
        tfill_nan(pre_w, nw);
        tfill_nan(pre_b, out);
    }
    memcpy(dw, pre_w, nw * sizeof *dw);
    memcpy(db, pre_b, (size_t)out * sizeof *db);
    tfill_nan(dx, (size_t)B * in);

    dp_dense_backward(&l, dx, c, x, B, accumulate);

    /* The gradient this call contributed. */
    float *gw = talloc(nw), *gb = talloc(out);
    for (size_t i = 0; i < nw; i++) {
        gw[i] = accumulate ? dw[i] - pre_w[i] : dw[i];
    }
    for (int i = 0; i < out; i++) {
        gb[i] = accumulate ? db[i] - pre_b[i] : db[i];
    }
    dense_ctx ctx = {.l = &l, .x = x, .c = c, .y = y, .B = B};
    /* L is linear in each input, so any step is exact but for float rounding of y, whose
     * effect shrinks as 1/h: a large step. */
    const float h = 0.125f;
    double e = 0.0;
    e = fmax(e, gradcheck_vec(w, nw, gw, 1.0, h, dense_loss, &ctx));
    e = fmax(e, gradcheck_vec(b, out, gb, 1.0, h, dense_loss, &ctx));
    e = fmax(e, gradcheck_vec(x, (size_t)B * in, dx, 1.0, h, dense_loss, &ctx));
    free(w);
    free(b);
    free(dw);
    free(db);
    free(x);
    free(dx);
    free(y);
    free(c);
    free(pre_w);
    free(pre_b);
    free(gw);
    free(gb);
    return e;
}

TestSuite(core_grad);

/* Dense layers are linear, so only float rounding of y remains (measured max ~1e-4 with
 * h = 0.125): tolerance 1e-3. */
Test(core_grad, dense_overwrite)
{
    double e = gradcheck_dense(4, 5, 3, 100, false);
    cr_assert_lt(e, 1e-3, "dense (B=4, 5->3) overwrite: max rel err %g", e);
    e = gradcheck_dense(7, 13, 9, 200, false);
    cr_assert_lt(e, 1e-3, "dense (B=7, 13->9) overwrite: max rel err %g", e);
}

Test(core_grad, dense_accumulate)
{
    double e = gradcheck_dense(4, 5, 3, 300, true);
    cr_assert_lt(e, 1e-3, "dense (B=4, 5->3) accumulate: max rel err %g", e);
}

Test(core_grad, dense_accumulate_adds_exactly_once)
{
    /* Backward twice with accumulate = false then true must give twice the first result
     * (and the prefilled gradient is replaced, not added to, by the first call). */
    enum { B = 4, IN = 5, OUT = 3 };
    float w[OUT * IN], b[OUT], dw[OUT * IN], db[OUT], x[B * IN], dy[B * OUT];
    tfill(w, OUT * IN, -1, 1, 1);
    tfill(b, OUT, -1, 1, 2);
    tfill(x, B * IN, -1, 1, 3);
    tfill(dy, B * OUT, -1, 1, 4);
    tfill(dw, OUT * IN, 5, 6, 5); /* garbage that must be overwritten */
    tfill(db, OUT, 5, 6, 6);
    dp_dense l = {.in = IN, .out = OUT, .w = w, .b = b, .dw = dw, .db = db};
    dp_dense_backward(&l, NULL, dy, x, B, false);
    float once_w[OUT * IN], once_b[OUT];
    memcpy(once_w, dw, sizeof dw);
    memcpy(once_b, db, sizeof db);
    /* db by hand: column sums of dy. */
    for (int j = 0; j < OUT; j++) {
        double s = 0.0;
        for (int r = 0; r < B; r++) {
            s += dy[r * OUT + j];
        }
        cr_assert_float_eq(once_b[j], (float)s, 1e-6f, "db[%d] = %g, want %g", j, once_b[j], s);
    }
    dp_dense_backward(&l, NULL, dy, x, B, true);
    for (int i = 0; i < OUT * IN; i++) {
        cr_assert_float_eq(dw[i], 2.0f * once_w[i], 1e-6f * (1.0f + fabsf(once_w[i])),
                           "dw[%d] = %g after two passes, want %g", i, dw[i], 2.0f * once_w[i]);
    }
    for (int j = 0; j < OUT; j++) {
        cr_assert_float_eq(db[j], 2.0f * once_b[j], 1e-6f * (1.0f + fabsf(once_b[j])));
    }
}

Test(core_grad, dense_forward_by_hand)
{
    /* w = [1 2; 3 4; 5 6] (out=3, in=2), b = [0.5 -1 2], x = [1 -1]:
     * y = [1-2+0.5, 3-4-1, 5-6+2] = [-0.5, -2, 1]. */
    float w[6] = {1, 2, 3, 4, 5, 6}, b[3] = {0.5f, -1.0f, 2.0f}, x[2] = {1, -1};
    float y[3] = {NAN, NAN, NAN};
    dp_dense l = {.in = 2, .out = 3, .w = w, .b = b};
    dp_dense_forward(&l, y, x, 1);
    cr_assert_float_eq(y[0], -0.5f, 1e-6f);
    cr_assert_float_eq(y[1], -2.0f, 1e-6f);
    cr_assert_float_eq(y[2], 1.0f, 1e-6f);
}

Test(core_grad, dense_empty_batch)
{
    /* B = 0: dw = dy^T x is the zero matrix; accumulate leaves dw unchanged. */
    float w[6] = {1, 2, 3, 4, 5, 6}, b[3] = {0}, dw[6], db[3];
    dp_dense l = {.in = 2, .out = 3, .w = w, .b = b, .dw = dw, .db = db};
    for (int i = 0; i < 6; i++) {
        dw[i] = 7.0f;
    }
    for (int i = 0; i < 3; i++) {
        db[i] = 7.0f;
    }
    float x[2] = {1, 1}, dy[3] = {1, 1, 1}; /* not read: B = 0 rows */
    dp_dense_backward(&l, NULL, dy, x, 0, true);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(dw[i], 7.0f);
    }
    dp_dense_backward(&l, NULL, dy, x, 0, false);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(dw[i], 0.0f);
    }
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(db[i], 0.0f);
    }
}

/* --- activations: L = sum c * f(x) --- */

typedef struct {
    dp_act a;
    float *x, *y;
    const float *c;
    int B, n;
} act_ctx;

static double act_loss(void *p)
{
    act_ctx *d = p;
    dp_act_forward(d->a, d->y, d->x, d->B, d->n);
    double s = 0.0;
    for (int i = 0; i < d->B * d->n; i++) {
        s += (double)d->c[i] * d->y[i];
    }
    return s;
}

/* Max relative error of dp_act_backward against central differences, for B rows of n
 * inputs in [-3, 3] kept at least 0.1 away from 0 (the relu kink). */
static double gradcheck_act(dp_act a, int B, int n, uint64_t seed)
{
    size_t t = (size_t)B * n;
    float *x = talloc(t), *y = talloc(t), *c = talloc(t), *dx = talloc(t);
    tfill(x, t, -3.0f, 3.0f, seed);
    for (size_t i = 0; i < t; i++) {
        if (fabsf(x[i]) < 0.1f) {
            x[i] = x[i] < 0.0f ? x[i] - 0.1f : x[i] + 0.1f;
        }
    }
    tfill(c, t, -1.0f, 1.0f, seed + 1);
    dp_act_forward(a, y, x, B, n);
    tfill_nan(dx, t);
    dp_act_backward(a, dx, c, x, y, B, n);
    act_ctx ctx = {.a = a, .x = x, .y = y, .c = c, .B = B, .n = n};
    double e = gradcheck_vec(x, t, dx, 1.0, 1e-2f, act_loss, &ctx);
    free(x);
    free(y);
    free(c);
    free(dx);
    return e;
}

/* h = 1e-2: truncation error h^2 f'''/6 < 1e-4 relative for these functions; float
 * rounding of f adds ~1e-5 (measured max 1e-4). Tolerance 1e-3. */
Test(core_grad, activations)
{
    for (int a = 0; a < DP_ACT_COUNT; a++) {
        double e = gradcheck_act((dp_act)a, 3, 5, 1000 + 10 * a);
        cr_assert_lt(e, 1e-3, "activation %s: max rel err %g", dp_act_name(a), e);
        e = gradcheck_act((dp_act)a, 1, 1, 2000 + 10 * a);
        cr_assert_lt(e, 1e-3, "activation %s (1x1): max rel err %g", dp_act_name(a), e);
    }
}

Test(core_grad, activations_in_place)
{
    /* y may equal x (forward) and dx may equal dy (backward): same results as out of place. */
    enum { B = 2, N = 4 };
    for (int a = 0; a < DP_ACT_COUNT; a++) {
        float x[B * N], y[B * N], dy[B * N], dx[B * N], inplace[B * N], gin[B * N];
        tfill(x, B * N, -2, 2, 77 + a);
        tfill(dy, B * N, -1, 1, 88 + a);
        dp_act_forward(a, y, x, B, N);
        dp_act_backward(a, dx, dy, x, y, B, N);
        memcpy(inplace, x, sizeof x);
        dp_act_forward(a, inplace, inplace, B, N);
        memcpy(gin, dy, sizeof dy);
        dp_act_backward(a, gin, gin, x, y, B, N);
        for (int i = 0; i < B * N; i++) {
            cr_assert_eq(inplace[i], y[i], "%s forward in place [%d]", dp_act_name(a), i);
            cr_assert_eq(gin[i], dx[i], "%s backward in place [%d]", dp_act_name(a), i);
        }
    }
}

Test(core_grad, activation_values_by_hand)
{
    const float x[4] = {-2.0f, -0.5f, 0.0f, 3.0f};
    float y[4];
    dp_act_forward(DP_ACT_RELU, y, x, 1, 4);
    cr_assert(y[0] == 0.0f && y[1] == 0.0f && y[2] == 0.0f && y[3] == 3.0f);
    dp_act_forward(DP_ACT_SIGMOID, y, x, 1, 4);
    for (int i = 0; i < 4; i++) {
        cr_assert_float_eq(y[i], (float)(1.0 / (1.0 + exp(-(double)x[i]))), 1e-6f);
    }
    dp_act_forward(DP_ACT_TANH, y, x, 1, 4);
    for (int i = 0; i < 4; i++) {
        cr_assert_float_eq(y[i], (float)tanh((double)x[i]), 1e-6f);
    }
    /* Softmax of [0, ln 3] = [1/4, 3/4]; rows sum to 1; large inputs stay finite. */
    const float s_in[4] = {0.0f, (float)log(3.0), 1000.0f, -1000.0f};
    float s_out[4];
    dp_act_forward(DP_ACT_SOFTMAX, s_out, s_in, 2, 2);
    cr_assert_float_eq(s_out[0], 0.25f, 1e-6f);
    cr_assert_float_eq(s_out[1], 0.75f, 1e-6f);
    cr_assert_float_eq(s_out[2], 1.0f, 1e-6f);
    cr_assert_float_eq(s_out[3], 0.0f, 1e-6f);
    /* Sigmoid of +-100 is finite and saturates. */
    const float big[2] = {100.0f, -100.0f};
    float sb[2];
    dp_act_forward(DP_ACT_SIGMOID, sb, big, 1, 2);
    cr_assert_float_eq(sb[0], 1.0f, 1e-6f);
    cr_assert(isfinite(sb[1]) && sb[1] >= 0.0f && sb[1] < 1e-30f);
}

Test(core_grad, new_activation_values_by_hand)
{
    const float x[5] = {-2.0f, -1.0f, 0.0f, 1.0f, 3.0f};
    float y[5];
    dp_act_forward(DP_ACT_STEP, y, x, 1, 5);
    const float step[5] = {0, 0, 0, 1, 1}; /* 0 at 0 */
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(y[i], step[i], "step(%g) = %g", x[i], y[i]);
    }
    dp_act_forward(DP_ACT_LEAKY_RELU, y, x, 1, 5);
    const float leaky[5] = {-0.02f, -0.01f, 0.0f, 1.0f, 3.0f};
    for (int i = 0; i < 5; i++) {
        cr_assert_float_eq(y[i], leaky[i], 1e-7f, "leaky-relu(%g) = %g", x[i], y[i]);
    }
    dp_act_forward(DP_ACT_ELU, y, x, 1, 5);
    const double elu[5] = {exp(-2.0) - 1.0, exp(-1.0) - 1.0, 0.0, 1.0, 3.0};
    for (int i = 0; i < 5; i++) {
        cr_assert_float_eq(y[i], (float)elu[i], 1e-7f, "elu(%g) = %g", x[i], y[i]);
    }
    /* gelu(x) = x Phi(x): Phi(1) = 0.8413447460685429, Phi(-1) = 1 - Phi(1),
     * Phi(3) = 0.9986501019683699, Phi(-2) = 0.022750131948179195. */
    dp_act_forward(DP_ACT_GELU, y, x, 1, 5);
    const double gelu[5] = {-2.0 * 0.022750131948179195, -(1.0 - 0.8413447460685429), 0.0,
                            0.8413447460685429, 3.0 * 0.9986501019683699};
    for (int i = 0; i < 5; i++) {
        cr_assert_float_eq(y[i], (float)gelu[i], 1e-6f, "gelu(%g) = %.9g, want %.9g", x[i],
                           y[i], gelu[i]);
    }
    /* gelu'(0) = Phi(0) = 1/2; gelu'(1) = Phi(1) + phi(1); elu'(0) = alpha = 1 (from y + 1);
     * leaky'(0) = 0.01 (0 takes the negative side, as torch). */
    const float z[2] = {0.0f, 1.0f}, ones[2] = {1.0f, 1.0f};
    float yz[2], dz[2];
    dp_act_forward(DP_ACT_GELU, yz, z, 1, 2);
    dp_act_backward(DP_ACT_GELU, dz, ones, z, yz, 1, 2);
    cr_assert_float_eq(dz[0], 0.5f, 1e-7f);
    cr_assert_float_eq(dz[1], (float)(0.8413447460685429 + exp(-0.5) / sqrt(2.0 * M_PI)), 1e-6f);
    dp_act_forward(DP_ACT_ELU, yz, z, 1, 1);
    dp_act_backward(DP_ACT_ELU, dz, ones, z, yz, 1, 1);
    cr_assert_float_eq(dz[0], 1.0f, 1e-7f);
    dp_act_forward(DP_ACT_LEAKY_RELU, yz, z, 1, 1);
    dp_act_backward(DP_ACT_LEAKY_RELU, dz, ones, z, yz, 1, 1);
    cr_assert_float_eq(dz[0], 0.01f, 1e-9f);
    /* elu saturates at -alpha; gelu of -100 is -0 in float, not NaN. */
    const float big[2] = {-100.0f, -100.0f};
    float yb[2];
    dp_act_forward(DP_ACT_ELU, yb, big, 1, 1);
    cr_assert_float_eq(yb[0], -1.0f, 1e-7f);
    dp_act_forward(DP_ACT_GELU, yb, big, 1, 2);
    cr_assert(isfinite(yb[0]) && fabsf(yb[0]) < 1e-30f, "gelu(-100) = %g", yb[0]);
}

Test(core_grad, step_has_zero_gradient)
{
    enum { N = 6 };
    const float x[N] = {-2.0f, -0.5f, 0.0f, 1e-30f, 0.5f, 2.0f};
    float y[N], dy[N], dx[N];
    tfill(dy, N, -1, 1, 606);
    tfill_nan(dx, N); /* must be overwritten */
    dp_act_forward(DP_ACT_STEP, y, x, 1, N);
    dp_act_backward(DP_ACT_STEP, dx, dy, x, y, 1, N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(dx[i], 0.0f, "step backward dx[%d] = %g, want 0", i, dx[i]);
    }
    cr_assert(!dp_act_trainable(DP_ACT_STEP));
    /* The generic check (activations) also covers step: the central difference is 0 too. */
    double e = gradcheck_act(DP_ACT_STEP, 3, 5, 4040);
    cr_assert_lt(e, 1e-12, "step: max rel err %g", e);
}

/* --- losses: L = dp_loss_eval(out) --- */

typedef struct {
    dp_loss l;
    float *out;
    dp_targets t;
    int B, k;
} loss_ctx;

static double loss_loss(void *p)
{
    loss_ctx *d = p;
    return dp_loss_eval(d->l, d->out, &d->t, d->B, d->k, 1.0f, NULL, NULL);
}

/* Max relative error of dout (scale * dL/dout) against scale * central differences (h = 1e-4),
 * on data valid for the loss: outputs in [-3, 3] (binary-cross-entropy-probs: probabilities in
 * [0.2, 0.8], away from the clamp); targets in [-2, 2] for regression, in [0, 1] for the
 * cross-entropies (categorical: rows NOT summing to 1, which checks the sum(y) factor of the
 * gradient); mae outputs kept >= 0.05 from their targets (the kink). labels_only: the
 * targets are labels (r * 7 + 3) % k, or r % 2 for binary cross-entropy, and values NULL. */
static double gradcheck_loss_on(dp_loss l, int B, int k, float scale, uint64_t seed,
                                bool labels_only)
{
    size_t t = (size_t)B * k;
    float *out = talloc(t), *dout = talloc(t), *values = talloc(t);
    int32_t *labels = calloc((size_t)B, sizeof *labels);
    cr_assert_not_null(labels);
    bool binary = l == DP_LOSS_BCE_LOGITS || l == DP_LOSS_BCE_PROBS;
    bool regression = l == DP_LOSS_MSE || l == DP_LOSS_RMSE || l == DP_LOSS_MAE;
    if (l == DP_LOSS_BCE_PROBS) {
        tfill(out, t, 0.2f, 0.8f, seed);
    } else {
        tfill(out, t, -3.0f, 3.0f, seed);
    }
    if (regression) {
        tfill(values, t, -2.0f, 2.0f, seed + 1);
    } else {
        tfill(values, t, 0.0f, 1.0f, seed + 1);
    }
    if (l == DP_LOSS_MAE) {
        for (size_t i = 0; i < t; i++) {
            if (fabsf(out[i] - values[i]) < 0.05f) {
                out[i] = values[i] + 0.1f;
            }
        }
    }
    for (int r = 0; r < B; r++) {
        labels[r] = binary ? r % 2 : (int32_t)((r * 7 + 3) % k);
    }
    loss_ctx ctx = {.l = l,
                    .out = out,
                    .t = {.labels = labels, .values = labels_only ? NULL : values},
                    .B = B,
                    .k = k};
    tfill_nan(dout, t);
    double L = dp_loss_eval(l, out, &ctx.t, B, k, scale, dout, NULL);
    cr_assert(isfinite(L), "loss %s (B=%d, k=%d) = %g", dp_loss_name(l), B, k, L);
    /* Smooth where probed. Every loss is computed in double from the float outputs, so the
     * difference quotient carries ~1e-16 L / h of rounding: a small step, h = 1e-4, keeps
     * the truncation error (h^2/6 f''') small even for bce-probs' 1/p^2 curvature. */
    double e = gradcheck_vec(out, t, dout, scale, 1e-4f, loss_loss, &ctx);
    free(out);
    free(dout);
    free(values);
    free(labels);
    return e;
}

/* The loss is computed in double from float inputs: the error is the float rounding of dout
 * (~1e-7) plus truncation, h^2/(3 p^2) relative for bce-probs (< 1e-6 for p >= 0.2; measured
 * max below 1e-6 over all losses). Tolerance 1e-4. */
Test(core_grad, losses)
{
    const float scales[2] = {1.0f, 1.0f / 7.0f};
    const int shapes[3][2] = {{5, 4}, {4, 3}, {1, 1}}; /* (B, k) */
    for (int l = 0; l < DP_LOSS_COUNT; l++) {
        for (int s = 0; s < 2; s++) {
            for (int h = 0; h < 3; h++) {
                int B = shapes[h][0], k = shapes[h][1];
                bool labels_only = dp_loss_needs_labels(l);
                double e = gradcheck_loss_on((dp_loss)l, B, k, scales[s], 500 + 10 * l + h,
                                             labels_only);
                cr_assert_lt(e, 1e-4, "loss %s (B=%d, k=%d) scale %g: max rel err %g",
                             dp_loss_name(l), B, k, scales[s], e);
            }
        }
    }
}

Test(core_grad, binary_losses_on_labels)
{
    /* k = 1 and values == NULL: the 0/1 labels are the targets. */
    const dp_loss ls[2] = {DP_LOSS_BCE_LOGITS, DP_LOSS_BCE_PROBS};
    for (int i = 0; i < 2; i++) {
        for (int s = 0; s < 2; s++) {
            float scale = s ? 1.0f / 7.0f : 1.0f;
            double e = gradcheck_loss_on(ls[i], 4, 1, scale, 900 + 10 * i, true);
            cr_assert_lt(e, 1e-4, "loss %s on labels, scale %g: max rel err %g",
                         dp_loss_name(ls[i]), scale, e);
        }
    }
    /* Labels need k == 1: with k = 2 and no values there are no targets. */
    const float out[2] = {0.5f, 0.5f};
    const int32_t lab[1] = {1};
    dp_targets t = {.labels = lab};
    cr_assert(isnan(dp_loss_eval(DP_LOSS_BCE_LOGITS, out, &t, 1, 2, 1.0f, NULL, NULL)));
}

Test(core_grad, cross_entropy_by_hand)
{
    /* Row 0: logits [0, 0], label 0: -log(1/2) = ln 2; dout = [1/2 - 1, 1/2] = [-0.5, 0.5].
     * Row 1: logits [1, 3], label 1: log(e + e^3) - 3 = log(1 + e^-2); argmax 1 == label.
     * (Row 0 ties: argmax 0 == label, by first-maximum.) */
    const float out[4] = {0.0f, 0.0f, 1.0f, 3.0f};
    const int32_t labels[2] = {0, 1};
    dp_targets t = {.labels = labels};
    float dout[4];
    long correct = 10; /* n_correct is added to */
    double L = dp_loss_eval(DP_LOSS_CROSS_ENTROPY, out, &t, 2, 2, 1.0f, dout, &correct);
    double want = log(2.0) + log(1.0 + exp(-2.0));
    cr_assert_float_eq(L, want, 1e-6, "CE = %.9g, want %.9g", L, want);
    cr_assert_float_eq(dout[0], -0.5f, 1e-6f);
    cr_assert_float_eq(dout[1], 0.5f, 1e-6f);
    double p1 = 1.0 / (1.0 + exp(2.0)); /* softmax([1,3])[0] = e/(e+e^3) */
    cr_assert_float_eq(dout[2], (float)p1, 1e-6f);
    cr_assert_float_eq(dout[3], (float)-p1, 1e-6f); /* softmax[1] - 1 = (1 - p1) - 1 */
    cr_assert_eq(correct, 12, "n_correct = %ld, want 10 + 2", correct);

    /* Single row ln 2 alone, with scale 1/7 on the gradient only (the value is unscaled). */
    L = dp_loss_eval(DP_LOSS_CROSS_ENTROPY, out, &t, 1, 2, 1.0f / 7.0f, dout, NULL);
    cr_assert_float_eq(L, log(2.0), 1e-7);
    cr_assert_float_eq(dout[0], -0.5f / 7.0f, 1e-7f);
    cr_assert_float_eq(dout[1], 0.5f / 7.0f, 1e-7f);
}

Test(core_grad, cross_entropy_counts_correct)
{
    /* 3 rows of 3 classes: argmaxes 2, 0, 1; labels 2, 1, 1 -> 2 correct. */
    const float out[9] = {0.1f, 0.2f, 0.9f, 5.0f, -1.0f, 2.0f, -3.0f, 4.0f, 3.9f};
    const int32_t labels[3] = {2, 1, 1};
    dp_targets t = {.labels = labels};
    long correct = 0;
    dp_loss_eval(DP_LOSS_CROSS_ENTROPY, out, &t, 3, 3, 1.0f, NULL, &correct);
    cr_assert_eq(correct, 2, "n_correct = %ld, want 2", correct);
}

Test(core_grad, cross_entropy_stable)
{
    /* logits [1000, -1000]: label 1 costs log(1 + e^-2000) + 2000 = 2000, gradient [1, -1];
     * label 0 costs log(1 + e^-2000) ~ 0, gradient [0, 0]. */
    const float out[4] = {1000.0f, -1000.0f, 1000.0f, -1000.0f};
    const int32_t labels[2] = {1, 0};
    dp_targets t = {.labels = labels};
    float dout[4];
    long correct = 0;
    double L = dp_loss_eval(DP_LOSS_CROSS_ENTROPY, out, &t, 2, 2, 1.0f, dout, &correct);
    cr_assert(isfinite(L), "CE of +-1000 logits is %g", L);
    cr_assert_float_eq(L, 2000.0, 1e-9);
    for (int i = 0; i < 4; i++) {
        cr_assert(isfinite(dout[i]), "dout[%d] = %g", i, dout[i]);
    }
    cr_assert_float_eq(dout[0], 1.0f, 1e-6f);
    cr_assert_float_eq(dout[1], -1.0f, 1e-6f);
    cr_assert_float_eq(dout[2], 0.0f, 1e-6f);
    cr_assert_float_eq(dout[3], 0.0f, 1e-6f);
    cr_assert_eq(correct, 1);
}

Test(core_grad, mse_by_hand)
{
    /* Row 0: out [1, 3], target [0, 0]: (1 + 9) / 2 = 5; dout = 2 e / k = [1, 3].
     * Row 1: out [2, 2], target [1, 3]: (1 + 1) / 2 = 1; dout = [1, -1]. Sum 6. */
    const float out[4] = {1, 3, 2, 2}, values[4] = {0, 0, 1, 3};
    dp_targets t = {.values = values};
    float dout[4];
    long correct = 0;
    double L = dp_loss_eval(DP_LOSS_MSE, out, &t, 2, 2, 1.0f, dout, &correct);
    cr_assert_float_eq(L, 6.0, 1e-12, "MSE = %g, want 6", L);
    const float want[4] = {1, 3, 1, -1};
    for (int i = 0; i < 4; i++) {
        cr_assert_float_eq(dout[i], want[i], 1e-6f, "dout[%d] = %g, want %g", i, dout[i],
                           want[i]);
    }
    L = dp_loss_eval(DP_LOSS_MSE, out, &t, 1, 2, 0.5f, dout, NULL);
    cr_assert_float_eq(L, 5.0, 1e-12);
    cr_assert_float_eq(dout[0], 0.5f, 1e-6f);
    cr_assert_float_eq(dout[1], 1.5f, 1e-6f);
    cr_assert_eq(correct, 0, "MSE must not count correct rows");
}

/* --- the losses added after cross-entropy and mse, by hand --- */

TestSuite(core_losses);

Test(core_losses, bce_logits_by_hand)
{
    /* Row 0: x = [0, 2], y = [1, 0.25]:
     *   l(0, 1) = 0 - 0 + log(1 + 1) = ln 2, l(2, 0.25) = 2 - 0.5 + log(1 + e^-2);
     *   per-row loss = mean; dout = (sigmoid(x) - y) / 2 = [(0.5 - 1) / 2, (s(2) - 0.25) / 2].
     * Row 1: x = [0, 0], y = [0, 0]: ln 2 each, mean ln 2; dout = [0.25, 0.25]. */
    const float out[4] = {0.0f, 2.0f, 0.0f, 0.0f}, y[4] = {1.0f, 0.25f, 0.0f, 0.0f};
    dp_targets t = {.values = y};
    float dout[4];
    double L = dp_loss_eval(DP_LOSS_BCE_LOGITS, out, &t, 2, 2, 1.0f, dout, NULL);
    double row0 = 0.5 * (log(2.0) + 1.5 + log1p(exp(-2.0)));
    cr_assert_float_eq(L, row0 + log(2.0), 1e-12, "BCE = %.12g", L);
    double s2 = 1.0 / (1.0 + exp(-2.0));
    cr_assert_float_eq(dout[0], -0.25f, 1e-7f);
    cr_assert_float_eq(dout[1], (float)((s2 - 0.25) / 2.0), 1e-7f);
    cr_assert_float_eq(dout[2], 0.25f, 1e-7f);
    cr_assert_float_eq(dout[3], 0.25f, 1e-7f);
    /* x = 0, y = 1 alone: ln 2; scale 1/7 reaches the gradient only. */
    L = dp_loss_eval(DP_LOSS_BCE_LOGITS, out, &t, 1, 1, 1.0f / 7.0f, dout, NULL);
    cr_assert_float_eq(L, log(2.0), 1e-12);
    cr_assert_float_eq(dout[0], -0.5f / 7.0f, 1e-8f);
    /* Label targets (k = 1): label 1 with x = 0 is the same ln 2. */
    const int32_t lab[1] = {1};
    dp_targets tl = {.labels = lab};
    L = dp_loss_eval(DP_LOSS_BCE_LOGITS, out, &tl, 1, 1, 1.0f, dout, NULL);
    cr_assert_float_eq(L, log(2.0), 1e-12);
    cr_assert_float_eq(dout[0], -0.5f, 1e-7f);
}

Test(core_losses, bce_probs_by_hand)
{
    /* p = 0.5, y = 1: -log 0.5 = ln 2, dL/dp = (p - y) / (p (1 - p)) = -0.5 / 0.25 = -2.
     * p = 0.8, y = 0: -log 0.2, dL/dp = 0.8 / 0.16 = 5. k = 2: mean, gradient / 2. */
    const float out[2] = {0.5f, 0.8f}, y[2] = {1.0f, 0.0f};
    dp_targets t = {.values = y};
    float dout[2];
    double L = dp_loss_eval(DP_LOSS_BCE_PROBS, out, &t, 1, 1, 1.0f, dout, NULL);
    cr_assert_float_eq(L, log(2.0), 1e-12);
    cr_assert_float_eq(dout[0], -2.0f, 1e-6f);
    L = dp_loss_eval(DP_LOSS_BCE_PROBS, out, &t, 1, 2, 1.0f, dout, NULL);
    double p1 = (double)0.8f; /* the float the model would output */
    cr_assert_float_eq(L, 0.5 * (log(2.0) - log(1.0 - p1)), 1e-12);
    cr_assert_float_eq(dout[0], -1.0f, 1e-6f);
    cr_assert_float_eq(dout[1], 2.5f, 1e-5f);
    /* The Keras clamp: p = 0 with y = 1 costs -log(1e-7), p = 1 with y = 1 costs
     * -log(1 - 1e-7); both gradients stay finite. */
    const float edge[3] = {0.0f, 1.0f, 1.0f}, ey[3] = {1.0f, 1.0f, 0.0f};
    dp_targets te = {.values = ey};
    float de[3];
    L = dp_loss_eval(DP_LOSS_BCE_PROBS, edge, &te, 3, 1, 1.0f, de, NULL);
    double want = -log(1e-7) - log1p(-1e-7) - log(1e-7);
    cr_assert_float_eq(L, want, 1e-9, "clamped BCE = %.12g, want %.12g", L, want);
    for (int i = 0; i < 3; i++) {
        cr_assert(isfinite(de[i]), "clamped gradient [%d] = %g", i, de[i]);
    }
    cr_assert_lt(de[0], 0.0f, "p too small for y = 1 must push p up");
    cr_assert_gt(de[2], 0.0f, "p too large for y = 0 must push p down");
}

Test(core_losses, mae_by_hand)
{
    /* Row 0: out [1, -3], target [0, 0]: (1 + 3) / 2 = 2; dout = sign / 2 = [0.5, -0.5].
     * Row 1: out [2, 5], target [2, 4]: (0 + 1) / 2 = 0.5; dout = [0 (exact), 0.5]. */
    const float out[4] = {1, -3, 2, 5}, values[4] = {0, 0, 2, 4};
    dp_targets t = {.values = values};
    float dout[4];
    long correct = 3;
    double L = dp_loss_eval(DP_LOSS_MAE, out, &t, 1, 2, 1.0f, dout, &correct);
    cr_assert_float_eq(L, 2.0, 1e-12, "MAE row 0 = %g, want 2", L);
    L = dp_loss_eval(DP_LOSS_MAE, out, &t, 2, 2, 0.5f, dout, &correct);
    cr_assert_float_eq(L, 2.5, 1e-12);
    const float want[4] = {0.25f, -0.25f, 0.0f, 0.25f};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(dout[i], want[i], "MAE dout[%d] = %g, want %g", i, dout[i], want[i]);
    }
    cr_assert_eq(correct, 3, "MAE must not count correct rows");
}

Test(core_losses, rmse_is_mse_until_reported)
{
    const float out[4] = {1, 3, 2, 2}, values[4] = {0, 0, 1, 3};
    dp_targets t = {.values = values};
    float d_mse[4], d_rmse[4];
    double a = dp_loss_eval(DP_LOSS_MSE, out, &t, 2, 2, 0.25f, d_mse, NULL);
    double b = dp_loss_eval(DP_LOSS_RMSE, out, &t, 2, 2, 0.25f, d_rmse, NULL);
    cr_assert_eq(a, b);
    cr_assert_float_eq(b, 6.0, 1e-12); /* as in mse_by_hand */
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(d_mse[i], d_rmse[i]);
    }
    cr_assert_float_eq(dp_loss_report(DP_LOSS_RMSE, 8.0, 2), 2.0, 1e-15);
    cr_assert_float_eq(dp_loss_report(DP_LOSS_MSE, 8.0, 2), 4.0, 1e-15);
    cr_assert_float_eq(dp_loss_report(DP_LOSS_CROSS_ENTROPY, 3.0, 4), 0.75, 1e-15);
    cr_assert_float_eq(dp_loss_report(DP_LOSS_MAE, 3.0, 4), 0.75, 1e-15);
    cr_assert(isnan(dp_loss_report(DP_LOSS_MSE, 0.0, 0)));
}

Test(core_losses, cce_one_hot_equals_sparse_ce)
{
    enum { B = 4, K = 3 };
    float out[B * K], onehot[B * K] = {0};
    int32_t labels[B] = {2, 0, 1, 1};
    tfill(out, B * K, -3, 3, 4242);
    for (int r = 0; r < B; r++) {
        onehot[r * K + labels[r]] = 1.0f;
    }
    dp_targets tl = {.labels = labels}, tv = {.values = onehot};
    float d_ce[B * K], d_sp[B * K], d_cc[B * K];
    long c_ce = 0, c_sp = 0, c_cc = 0;
    double ce = dp_loss_eval(DP_LOSS_CROSS_ENTROPY, out, &tl, B, K, 0.25f, d_ce, &c_ce);
    double sp = dp_loss_eval(DP_LOSS_SPARSE_CCE, out, &tl, B, K, 0.25f, d_sp, &c_sp);
    double cc = dp_loss_eval(DP_LOSS_CCE, out, &tv, B, K, 0.25f, d_cc, &c_cc);
    cr_assert_eq(ce, sp, "sparse-categorical-cross-entropy must be cross-entropy");
    cr_assert_float_eq(cc, ce, 1e-12, "CCE one-hot %.15g vs sparse CE %.15g", cc, ce);
    for (int i = 0; i < B * K; i++) {
        cr_assert_eq(d_sp[i], d_ce[i]);
        cr_assert_float_eq(d_cc[i], d_ce[i], 1e-7f, "dout[%d]: CCE %g, CE %g", i, d_cc[i],
                           d_ce[i]);
    }
    cr_assert_eq(c_sp, c_ce);
    cr_assert_eq(c_cc, c_ce);
}

Test(core_losses, cce_probability_rows_by_hand)
{
    /* logits [0, ln 3]: softmax [1/4, 3/4]; y = [1/2, 1/2]:
     * L = -(log(1/4) + log(3/4)) / 2, dout = softmax - y = [-1/4, 1/4].
     * Unnormalized y = [1, 1] (sum 2): L doubles, dout = 2 softmax - y = [-1/2, 1/2]. */
    const float out[4] = {0.0f, (float)log(3.0), 0.0f, (float)log(3.0)};
    const float y[4] = {0.5f, 0.5f, 1.0f, 1.0f};
    dp_targets t = {.values = y};
    float dout[4];
    double L = dp_loss_eval(DP_LOSS_CCE, out, &t, 2, 2, 1.0f, dout, NULL);
    double row = -0.5 * (log(0.25) + log(0.75));
    cr_assert_float_eq(L, 3.0 * row, 1e-7, "CCE = %.12g, want %.12g", L, 3.0 * row);
    const float want[4] = {-0.25f, 0.25f, -0.5f, 0.5f};
    for (int i = 0; i < 4; i++) {
        cr_assert_float_eq(dout[i], want[i], 1e-6f, "dout[%d] = %g, want %g", i, dout[i],
                           want[i]);
    }
}

Test(core_losses, stable_at_large_logits)
{
    /* BCE on logits +-1000 (k = 1): y matching costs log(1 + e^-1000) ~ 0 with gradient 0;
     * y opposite costs 1000 with gradient +-1. */
    const float x[4] = {1000.0f, -1000.0f, 1000.0f, -1000.0f}, y[4] = {1, 0, 0, 1};
    dp_targets t = {.values = y};
    float dout[4];
    long correct = 0;
    double L = dp_loss_eval(DP_LOSS_BCE_LOGITS, x, &t, 4, 1, 1.0f, dout, &correct);
    cr_assert(isfinite(L), "BCE of +-1000 logits is %g", L);
    cr_assert_float_eq(L, 2000.0, 1e-9);
    const float want[4] = {0.0f, 0.0f, 1.0f, -1.0f};
    for (int i = 0; i < 4; i++) {
        cr_assert_float_eq(dout[i], want[i], 1e-7f, "BCE dout[%d] = %g", i, dout[i]);
    }
    cr_assert_eq(correct, 2);
    /* CCE on logits [1000, -1000]: y = [0, 1] costs 2000, y = [1, 0] ~ 0, y = [1/2, 1/2]
     * costs 1000; gradients softmax - y = [1, -1], [0, 0], [1/2, -1/2]. */
    const float o[6] = {1000.0f, -1000.0f, 1000.0f, -1000.0f, 1000.0f, -1000.0f};
    const float yc[6] = {0, 1, 1, 0, 0.5f, 0.5f};
    dp_targets tc = {.values = yc};
    float dc[6];
    correct = 0;
    L = dp_loss_eval(DP_LOSS_CCE, o, &tc, 3, 2, 1.0f, dc, &correct);
    cr_assert(isfinite(L), "CCE of +-1000 logits is %g", L);
    cr_assert_float_eq(L, 3000.0, 1e-9);
    const float wc[6] = {1, -1, 0, 0, 0.5f, -0.5f};
    for (int i = 0; i < 6; i++) {
        cr_assert_float_eq(dc[i], wc[i], 1e-7f, "CCE dout[%d] = %g", i, dc[i]);
    }
    cr_assert_eq(correct, 2, "rows 2 and 3 (argmax y is the first maximum, 0)");
}

Test(core_losses, counts_correct)
{
    /* CCE: argmax out 2, 0, 1; argmax y 2, 1, 1 -> 2 correct (added to 5). */
    const float o3[9] = {0.1f, 0.2f, 0.9f, 5.0f, -1.0f, 2.0f, -3.0f, 4.0f, 3.9f};
    const float y3[9] = {0, 0, 1, 0.2f, 0.5f, 0.3f, 0, 1, 0};
    dp_targets t3 = {.values = y3};
    long c = 5;
    dp_loss_eval(DP_LOSS_CCE, o3, &t3, 3, 3, 1.0f, NULL, &c);
    cr_assert_eq(c, 7, "CCE n_correct = %ld, want 5 + 2", c);
    /* Sparse CE: labels 2, 1, 1 -> 2 correct. */
    const int32_t l3[3] = {2, 1, 1};
    dp_targets tl3 = {.labels = l3};
    c = 0;
    dp_loss_eval(DP_LOSS_SPARSE_CCE, o3, &tl3, 3, 3, 1.0f, NULL, &c);
    cr_assert_eq(c, 2, "sparse CE n_correct = %ld", c);
    /* BCE (k = 2): a row is correct only if every output is on the right side.
     * logits [1, -1] y [1, 0]: yes; [1, 1] y [1, 0]: no; [-0.5, 0] y [0.2, 0.4]: yes
     * (x = 0 is not > 0, 0.4 is not > 0.5). */
    const float x[6] = {1, -1, 1, 1, -0.5f, 0}, y[6] = {1, 0, 1, 0, 0.2f, 0.4f};
    dp_targets t = {.values = y};
    c = 0;
    dp_loss_eval(DP_LOSS_BCE_LOGITS, x, &t, 3, 2, 1.0f, NULL, &c);
    cr_assert_eq(c, 2, "BCE logits n_correct = %ld", c);
    /* The same on probabilities, threshold 0.5. */
    const float p[6] = {0.9f, 0.1f, 0.6f, 0.7f, 0.4f, 0.5f};
    c = 0;
    dp_loss_eval(DP_LOSS_BCE_PROBS, p, &t, 3, 2, 1.0f, NULL, &c);
    cr_assert_eq(c, 2, "BCE probs n_correct = %ld", c);
    /* Labels with k = 1: logits [2, -1, 0.5, -3], labels [1, 1, 0, 0] -> rows 0 and 3. */
    const float xl[4] = {2, -1, 0.5f, -3};
    const int32_t lb[4] = {1, 1, 0, 0};
    dp_targets tl = {.labels = lb};
    c = 0;
    dp_loss_eval(DP_LOSS_BCE_LOGITS, xl, &tl, 4, 1, 1.0f, NULL, &c);
    cr_assert_eq(c, 2, "BCE logits on labels n_correct = %ld", c);
    const float pl[4] = {0.9f, 0.2f, 0.7f, 0.01f};
    c = 0;
    dp_loss_eval(DP_LOSS_BCE_PROBS, pl, &tl, 4, 1, 1.0f, NULL, &c);
    cr_assert_eq(c, 2, "BCE probs on labels n_correct = %ld", c);
    /* Regression losses leave the count alone. */
    const dp_loss reg[3] = {DP_LOSS_MSE, DP_LOSS_RMSE, DP_LOSS_MAE};
    for (int i = 0; i < 3; i++) {
        c = 9;
        dp_loss_eval(reg[i], o3, &t3, 3, 3, 1.0f, NULL, &c);
        cr_assert_eq(c, 9, "%s changed n_correct", dp_loss_name(reg[i]));
    }
}

Test(core_losses, missing_targets_give_nan)
{
    const float out[2] = {0.5f, 0.5f}, v[2] = {1, 0};
    const int32_t lab[1] = {0};
    dp_targets only_labels = {.labels = lab}, only_values = {.values = v};
    cr_assert(isnan(dp_loss_eval(DP_LOSS_CCE, out, &only_labels, 1, 2, 1.0f, NULL, NULL)));
    cr_assert(isnan(dp_loss_eval(DP_LOSS_MAE, out, &only_labels, 1, 2, 1.0f, NULL, NULL)));
    cr_assert(isnan(dp_loss_eval(DP_LOSS_SPARSE_CCE, out, &only_values, 1, 2, 1.0f, NULL, NULL)));
    cr_assert(isnan(dp_loss_eval(DP_LOSS_COUNT, out, &only_values, 1, 2, 1.0f, NULL, NULL)));
}

Test(core_losses, trainer_helpers)
{
    /* One row per loss: needs labels, needs values, output activation, has accuracy. */
    const struct {
        dp_loss l;
        bool labels, values;
        dp_act act;
        bool acc;
    } want[] = {
        {DP_LOSS_CROSS_ENTROPY, true, false, DP_ACT_IDENTITY, true},
        {DP_LOSS_MSE, false, true, DP_ACT_IDENTITY, false},
        {DP_LOSS_SPARSE_CCE, true, false, DP_ACT_IDENTITY, true},
        {DP_LOSS_CCE, false, true, DP_ACT_IDENTITY, true},
        {DP_LOSS_BCE_LOGITS, false, false, DP_ACT_IDENTITY, true},
        {DP_LOSS_BCE_PROBS, false, false, DP_ACT_SIGMOID, true},
        {DP_LOSS_MAE, false, true, DP_ACT_IDENTITY, false},
        {DP_LOSS_RMSE, false, true, DP_ACT_IDENTITY, false},
    };
    cr_assert_eq(sizeof want / sizeof want[0], DP_LOSS_COUNT, "a loss is missing here");
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const char *n = dp_loss_name(want[i].l);
        cr_assert_eq(dp_loss_needs_labels(want[i].l), want[i].labels, "%s needs_labels", n);
        cr_assert_eq(dp_loss_needs_values(want[i].l), want[i].values, "%s needs_values", n);
        cr_assert_eq(dp_loss_output_act(want[i].l), want[i].act, "%s output_act", n);
        cr_assert_eq(dp_loss_has_accuracy(want[i].l), want[i].acc, "%s has_accuracy", n);
    }
    for (int a = 0; a < DP_ACT_COUNT; a++) {
        cr_assert_eq(dp_act_trainable(a), a != DP_ACT_STEP, "dp_act_trainable(%s)",
                     dp_act_name(a));
    }
    cr_assert(!dp_act_trainable(DP_ACT_COUNT));
}

/* --- whole model: L = loss(forward(x)) as a function of every parameter --- */

typedef struct {
    dp_model *m;
    const float *x;
    dp_targets t;
    dp_loss loss;
    int B, k;
} model_ctx;

static double model_loss(void *p)
{
    model_ctx *d = p;
    const float *out = dp_model_forward(d->m, d->x, d->B);
    return dp_loss_eval(d->loss, out, &d->t, d->B, d->k, 1.0f, NULL, NULL);
}

/* Builds the model sizes[0..n_layers] with activations act, runs forward, loss (scale) and
 * backward, and returns the max relative error of dp_model_grads() against central
 * differences over every parameter. relu pre-activations are required to stay > 0.05 from
 * the kink, so a probe of h never crosses it. */
static double gradcheck_model(int n_layers, const int *sizes, const dp_act *act, dp_loss loss,
                              int B, float scale, uint64_t seed)
{
    dp_model_cfg cfg = {.n_layers = n_layers, .init = DP_INIT_XAVIER_NORMAL, .seed = seed,
                        .max_batch = B};
    for (int i = 0; i <= n_layers; i++) {
        cfg.sizes[i] = sizes[i];
    }
    for (int i = 0; i < n_layers; i++) {
        cfg.act[i] = act[i];
    }
    dp_model *m = NULL;
    cr_assert_eq(dp_model_create(&cfg, &m), DP_OK, "%s", dp_errmsg());
    int k = sizes[n_layers], in = sizes[0];
    size_t n = dp_model_n_params(m);
    float *params = dp_model_params(m), *grads = dp_model_grads(m);
    /* Non-zero biases so they matter too. */
    for (int i = 0; i < n_layers; i++) {
        dp_dense *l = dp_model_layer(m, i);
        tfill(l->b, l->out, -0.5f, 0.5f, seed + 50 + i);
    }
    float *x = talloc((size_t)B * in), *values = talloc((size_t)B * k);
    int32_t *labels = calloc((size_t)B, sizeof *labels);
    cr_assert_not_null(labels);
    tfill(x, (size_t)B * in, -1.5f, 1.5f, seed + 1);
    tfill(values, (size_t)B * k, -1.0f, 1.0f, seed + 2);
    for (int r = 0; r < B; r++) {
        labels[r] = (int32_t)(r % k);
    }
    model_ctx ctx = {.m = m, .x = x, .t = {.labels = labels, .values = values}, .loss = loss,
                     .B = B, .k = k};

    const float h = 1e-2f;
    const float *out = dp_model_forward(m, x, B);
    for (int i = 0; i < n_layers; i++) {
        if (act[i] == DP_ACT_RELU || act[i] == DP_ACT_LEAKY_RELU) {
            for (int j = 0; j < B * sizes[i + 1]; j++) {
                cr_assert_gt(fabsf(m->z[i][j]), 0.05f,
                             "test setup: relu input z[%d][%d] = %g too near the kink; "
                             "choose another seed", i, j, m->z[i][j]);
            }
        }
    }
    float *dout = dp_model_dout(m);
    dp_loss_eval(loss, out, &ctx.t, B, k, scale, dout, NULL);
    tfill_nan(grads, n); /* accumulate = false must overwrite every gradient */
    dp_model_backward(m, x, dout, B, false);
    float *analytic = talloc(n);
    memcpy(analytic, grads, n * sizeof *analytic);
    double e = gradcheck_vec(params, n, analytic, scale, h, model_loss, &ctx);
    dp_model_free(&m);
    cr_assert_null(m, "dp_model_free must set the handle to NULL");
    free(x);
    free(values);
    free(labels);
    free(analytic);
    return e;
}

/* Float forward through 3 layers, summed in double; h = 1e-2: truncation ~1e-4 and rounding
 * noise ~1e-5 / |grad| (measured max 2.4e-3, on a small sigmoid/MSE gradient). Tolerance 1e-2
 * (kann's float check uses 1e-2 too); a wrong derivative anywhere gives errors of order 1. */
Test(core_grad, model_relu_tanh_ce)
{
    const int sizes[4] = {3, 4, 5, 2};
    const dp_act act[3] = {DP_ACT_RELU, DP_ACT_TANH, DP_ACT_IDENTITY};
    double e = gradcheck_model(3, sizes, act, DP_LOSS_CROSS_ENTROPY, 4, 1.0f, 37);
    cr_assert_lt(e, 1e-2, "model 3-4-5-2 relu/tanh/identity CE: max rel err %g", e);
    e = gradcheck_model(3, sizes, act, DP_LOSS_CROSS_ENTROPY, 4, 0.25f, 37);
    cr_assert_lt(e, 1e-2, "model 3-4-5-2 relu/tanh/identity CE scale 1/4: max rel err %g", e);
}

Test(core_grad, model_sigmoid_mse)
{
    const int sizes[4] = {3, 4, 5, 2};
    const dp_act act[3] = {DP_ACT_SIGMOID, DP_ACT_SIGMOID, DP_ACT_IDENTITY};
    double e = gradcheck_model(3, sizes, act, DP_LOSS_MSE, 4, 1.0f, 8);
    cr_assert_lt(e, 1e-2, "model 3-4-5-2 sigmoid/sigmoid/identity MSE: max rel err %g", e);
}

Test(core_grad, model_softmax_output_mse)
{
    /* A softmax output layer goes through the full softmax Jacobian in backward. */
    const int sizes[3] = {4, 6, 3};
    const dp_act act[2] = {DP_ACT_TANH, DP_ACT_SOFTMAX};
    double e = gradcheck_model(2, sizes, act, DP_LOSS_MSE, 3, 1.0f, 9);
    cr_assert_lt(e, 1e-2, "model 4-6-3 tanh/softmax MSE: max rel err %g", e);
}

Test(core_grad, model_single_layer_ce)
{
    const int sizes[2] = {5, 4};
    const dp_act act[1] = {DP_ACT_IDENTITY};
    double e = gradcheck_model(1, sizes, act, DP_LOSS_CROSS_ENTROPY, 6, 1.0f, 10);
    cr_assert_lt(e, 1e-2, "model 5-4 CE: max rel err %g", e);
}

Test(core_grad, model_gelu_elu_bce_probs)
{
    /* Sigmoid output layer (dp_loss_output_act) feeding binary-cross-entropy-probs. */
    const int sizes[4] = {3, 4, 5, 2};
    const dp_act act[3] = {DP_ACT_GELU, DP_ACT_ELU, dp_loss_output_act(DP_LOSS_BCE_PROBS)};
    cr_assert_eq(act[2], DP_ACT_SIGMOID);
    double e = gradcheck_model(3, sizes, act, DP_LOSS_BCE_PROBS, 4, 1.0f, 41);
    cr_assert_lt(e, 1e-2, "model gelu/elu/sigmoid BCE-probs: max rel err %g", e);
    e = gradcheck_model(3, sizes, act, DP_LOSS_BCE_PROBS, 4, 1.0f / 7.0f, 41);
    cr_assert_lt(e, 1e-2, "model gelu/elu/sigmoid BCE-probs scale 1/7: max rel err %g", e);
}

Test(core_grad, model_leaky_cce_bce_logits_mae)
{
    const int sizes[3] = {4, 6, 3};
    const dp_act act[2] = {DP_ACT_LEAKY_RELU, DP_ACT_IDENTITY};
    const dp_loss ls[3] = {DP_LOSS_CCE, DP_LOSS_BCE_LOGITS, DP_LOSS_MAE};
    for (int i = 0; i < 3; i++) {
        double e = gradcheck_model(2, sizes, act, ls[i], 3, 1.0f, 12);
        cr_assert_lt(e, 1e-2, "model 4-6-3 leaky-relu %s: max rel err %g",
                     dp_loss_name(ls[i]), e);
    }
}

Test(core_grad, model_backward_accumulate)
{
    /* accumulate = true adds this batch's gradient to what is in the arena. */
    dp_model_cfg cfg = {.n_layers = 2, .sizes = {3, 4, 2}, .act = {DP_ACT_TANH, DP_ACT_IDENTITY},
                        .init = DP_INIT_HE_NORMAL, .seed = 5, .max_batch = 4};
    dp_model *m = NULL;
    cr_assert_eq(dp_model_create(&cfg, &m), DP_OK);
    size_t n = dp_model_n_params(m);
    float x[12], dout[8];
    tfill(x, 12, -1, 1, 1);
    tfill(dout, 8, -1, 1, 2);
    dp_model_forward(m, x, 4);
    dp_model_backward(m, x, dout, 4, false);
    float *fresh = talloc(n), *pre = talloc(n);
    memcpy(fresh, dp_model_grads(m), n * sizeof *fresh);
    for (size_t i = 0; i < n; i++) {
        pre[i] = 0.5f - 0.125f * (float)(i % 9);
    }
    memcpy(dp_model_grads(m), pre, n * sizeof *pre);
    dp_model_backward(m, x, dout, 4, true);
    const float *g = dp_model_grads(m);
    for (size_t i = 0; i < n; i++) {
        float want = pre[i] + fresh[i];
        cr_assert_float_eq(g[i], want, 1e-6f * (1.0f + fabsf(want)), "grad[%zu] = %g, want %g",
                           i, g[i], want);
    }
    free(fresh);
    free(pre);
    dp_model_free(&m);
}

/* ---------------------------------------------------------------------------------------
 * 3. Model layout and initialization */

TestSuite(core_model);

static dp_model *make_mnist_mlp(dp_init init, uint64_t seed)
{
    dp_model_cfg cfg = {.n_layers = 3,
                        .sizes = {784, 256, 128, 10},
                        .act = {DP_ACT_RELU, DP_ACT_RELU, DP_ACT_IDENTITY},
                        .init = init,
                        .seed = seed,
                        .max_batch = 8};
    dp_model *m = NULL;
    cr_assert_eq(dp_model_create(&cfg, &m), DP_OK, "%s", dp_errmsg());
    cr_assert_not_null(m);
    return m;
}

Test(core_model, layout_is_flat)
{
    dp_model *m = make_mnist_mlp(DP_INIT_HE_NORMAL, 1);
    size_t n = dp_model_n_params(m);
    cr_assert_eq(n, (size_t)(784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10));
    cr_assert_eq(n, (size_t)235146);
    float *p = dp_model_params(m), *g = dp_model_grads(m);
    cr_assert_neq(p, g);
    const int sizes[4] = {784, 256, 128, 10};
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        const dp_dense *l = dp_model_layer_const(m, i);
        cr_assert_eq(l, dp_model_layer(m, i));
        cr_assert_eq(l->in, sizes[i]);
        cr_assert_eq(l->out, sizes[i + 1]);
        cr_assert_eq(l->w, p + off, "layer %d w is not at params + %zu", i, off);
        cr_assert_eq(l->dw, g + off, "layer %d dw is not at grads + %zu", i, off);
        off += (size_t)sizes[i + 1] * sizes[i];
        cr_assert_eq(l->b, p + off, "layer %d b is not at params + %zu", i, off);
        cr_assert_eq(l->db, g + off, "layer %d db is not at grads + %zu", i, off);
        off += (size_t)sizes[i + 1];
    }
    cr_assert_eq(off, n, "layers do not tile the arena: %zu of %zu", off, n);
    cr_assert_eq(dp_model_layer(m, 0)->b, p + 784 * 256);
    cr_assert_eq(dp_model_layer(m, 1)->w, p + 784 * 256 + 256);
    const dp_model_cfg *c = dp_model_config(m);
    cr_assert_eq(c->n_layers, 3);
    cr_assert_eq(c->sizes[3], 10);
    cr_assert_eq(c->act[2], DP_ACT_IDENTITY);
    cr_assert_not_null(dp_model_dout(m));
    dp_model_free(&m);
    cr_assert_null(m);
    dp_model_free(&m); /* NULL-safe */
    dp_model_free(NULL);
}

Test(core_model, seed_determines_params)
{
    dp_model *a = make_mnist_mlp(DP_INIT_HE_NORMAL, 42);
    dp_model *b = make_mnist_mlp(DP_INIT_HE_NORMAL, 42);
    dp_model *c = make_mnist_mlp(DP_INIT_HE_NORMAL, 43);
    size_t n = dp_model_n_params(a);
    cr_assert_eq(memcmp(dp_model_params(a), dp_model_params(b), n * sizeof(float)), 0,
                 "same seed gave different parameters");
    /* Different seed: every layer's weights differ (not just one stream). */
    for (int i = 0; i < 3; i++) {
        const dp_dense *la = dp_model_layer_const(a, i), *lc = dp_model_layer_const(c, i);
        size_t nw = (size_t)la->out * la->in, same = 0;
        for (size_t j = 0; j < nw; j++) {
            same += la->w[j] == lc->w[j];
        }
        cr_assert_lt(same, nw / 100 + 1, "layer %d: %zu of %zu weights equal across seeds", i,
                     same, nw);
    }
    /* Layers draw from different streams: the first weights of layer 1, divided by their
     * std sqrt(2/256), are not those of layer 0 divided by sqrt(2/784). */
    int alike = 0;
    for (int j = 0; j < 16; j++) {
        double z0 = dp_model_layer_const(a, 0)->w[j] / sqrt(2.0 / 784.0);
        double z1 = dp_model_layer_const(a, 1)->w[j] / sqrt(2.0 / 256.0);
        alike += fabs(z0 - z1) < 1e-4;
    }
    cr_assert_lt(alike, 2, "layers 0 and 1 share a random stream (%d of 16 alike)", alike);
    dp_model_free(&a);
    dp_model_free(&b);
    dp_model_free(&c);
}

typedef struct {
    double mean, std, max_abs, frac_within_1std;
} wstats;

static wstats weight_stats(const float *w, size_t n)
{
    wstats s = {0};
    double sum = 0.0, sq = 0.0;
    for (size_t i = 0; i < n; i++) {
        sum += w[i];
        s.max_abs = fmax(s.max_abs, fabs((double)w[i]));
    }
    s.mean = sum / (double)n;
    for (size_t i = 0; i < n; i++) {
        sq += (w[i] - s.mean) * (w[i] - s.mean);
    }
    s.std = sqrt(sq / (double)(n - 1));
    size_t within = 0;
    for (size_t i = 0; i < n; i++) {
        within += fabs(w[i] - s.mean) <= s.std;
    }
    s.frac_within_1std = (double)within / (double)n;
    return s;
}

static void check_biases_zero(dp_model *m)
{
    for (int i = 0; i < dp_model_config(m)->n_layers; i++) {
        const dp_dense *l = dp_model_layer_const(m, i);
        for (int j = 0; j < l->out; j++) {
            cr_assert_eq(l->b[j], 0.0f, "layer %d bias %d = %g", i, j, l->b[j]);
        }
    }
}

/* Layer 0 (256 x 784 = 200704 draws): the sample std is within ~0.2% (1 sigma) of the true
 * one, so 5% is > 20 sigma; the mean's standard error is std/448, so |mean| < 0.02 std is
 * ~9 sigma. Fraction within one std: 0.6827 for a normal, 0.5774 for a uniform. */
Test(core_model, init_he_normal)
{
    dp_model *m = make_mnist_mlp(DP_INIT_HE_NORMAL, 3);
    const dp_dense *l = dp_model_layer_const(m, 0);
    wstats s = weight_stats(l->w, (size_t)l->out * l->in);
    double want = sqrt(2.0 / 784.0);
    cr_assert_lt(fabs(s.std / want - 1.0), 0.05, "he-normal std %g, want %g", s.std, want);
    cr_assert_lt(fabs(s.mean), 0.02 * want, "he-normal mean %g", s.mean);
    cr_assert_lt(fabs(s.frac_within_1std - 0.6827), 0.01, "he-normal: %g within 1 std",
                 s.frac_within_1std);
    /* Layer 1 uses its own fan_in (256). */
    const dp_dense *l1 = dp_model_layer_const(m, 1);
    wstats s1 = weight_stats(l1->w, (size_t)l1->out * l1->in);
    cr_assert_lt(fabs(s1.std / sqrt(2.0 / 256.0) - 1.0), 0.05, "layer 1 std %g", s1.std);
    check_biases_zero(m);
    dp_model_free(&m);
}

Test(core_model, init_xavier_normal)
{
    dp_model *m = make_mnist_mlp(DP_INIT_XAVIER_NORMAL, 4);
    const dp_dense *l = dp_model_layer_const(m, 0);
    wstats s = weight_stats(l->w, (size_t)l->out * l->in);
    double want = sqrt(2.0 / (784.0 + 256.0));
    cr_assert_lt(fabs(s.std / want - 1.0), 0.05, "xavier-normal std %g, want %g", s.std, want);
    cr_assert_lt(fabs(s.mean), 0.02 * want);
    cr_assert_lt(fabs(s.frac_within_1std - 0.6827), 0.01);
    check_biases_zero(m);
    dp_model_free(&m);
}

/* Uniform U(-a, a): |w| <= a, the largest of 2e5 draws is within 1e-3 a of a, std a/sqrt 3. */
static void check_uniform_layer(const dp_dense *l, double bound, const char *what)
{
    size_t n = (size_t)l->out * l->in;
    wstats s = weight_stats(l->w, n);
    cr_assert_leq(s.max_abs, bound * (1.0 + 1e-6), "%s: |w| max %g > bound %g", what, s.max_abs,
                  bound);
    cr_assert_gt(s.max_abs, bound * (1.0 - 1e-3), "%s: |w| max %g, bound %g never approached",
                 what, s.max_abs, bound);
    cr_assert_lt(fabs(s.std / (bound / sqrt(3.0)) - 1.0), 0.05, "%s: std %g, want %g", what,
                 s.std, bound / sqrt(3.0));
    cr_assert_lt(fabs(s.mean), 0.02 * bound, "%s: mean %g", what, s.mean);
    cr_assert_lt(fabs(s.frac_within_1std - 1.0 / sqrt(3.0)), 0.01, "%s: %g within 1 std", what,
                 s.frac_within_1std);
}

Test(core_model, init_xavier_uniform)
{
    dp_model *m = make_mnist_mlp(DP_INIT_XAVIER_UNIFORM, 5);
    check_uniform_layer(dp_model_layer_const(m, 0), sqrt(6.0 / (784.0 + 256.0)),
                        "xavier-uniform layer 0");
    check_uniform_layer(dp_model_layer_const(m, 1), sqrt(6.0 / (256.0 + 128.0)),
                        "xavier-uniform layer 1");
    check_biases_zero(m);
    dp_model_free(&m);
}

Test(core_model, init_he_uniform)
{
    dp_model *m = make_mnist_mlp(DP_INIT_HE_UNIFORM, 6);
    check_uniform_layer(dp_model_layer_const(m, 0), sqrt(6.0 / 784.0), "he-uniform layer 0");
    check_biases_zero(m);
    dp_model_free(&m);
}

Test(core_model, init_zero)
{
    dp_model *m = make_mnist_mlp(DP_INIT_ZERO, 7);
    const float *p = dp_model_params(m);
    size_t nonzero = 0;
    for (size_t i = 0; i < dp_model_n_params(m); i++) {
        nonzero += p[i] != 0.0f;
    }
    cr_assert_eq(nonzero, 0, "zero init: %zu non-zero parameters", nonzero);
    dp_model_free(&m);
}

Test(core_model, forward_matches_hand_composition)
{
    /* 2-2-1 model, weights set by hand: z0 = W0 x + b0, a0 = relu(z0), y = W1 a0 + b1.
     * x = [1, 2], W0 = [1 -1; 0.5 0.5], b0 = [0, -1]: z0 = [-1, 0.5], a0 = [0, 0.5];
     * W1 = [2 4], b1 = [0.25]: y = 0 + 2 + 0.25 = 2.25. */
    dp_model_cfg cfg = {.n_layers = 2, .sizes = {2, 2, 1}, .act = {DP_ACT_RELU, DP_ACT_IDENTITY},
                        .init = DP_INIT_ZERO, .seed = 1, .max_batch = 2};
    dp_model *m = NULL;
    cr_assert_eq(dp_model_create(&cfg, &m), DP_OK);
    const float params[9] = {1, -1, 0.5f, 0.5f, 0, -1, 2, 4, 0.25f};
    cr_assert_eq(dp_model_n_params(m), 9);
    memcpy(dp_model_params(m), params, sizeof params);
    const float x[4] = {1, 2, 0, 0}; /* second row: a0 = relu([0, -1]) = 0, y = 0.25 */
    const float *y = dp_model_forward(m, x, 2);
    cr_assert_float_eq(y[0], 2.25f, 1e-6f);
    cr_assert_float_eq(y[1], 0.25f, 1e-6f);
    dp_model_free(&m);
}

Test(core_model, create_rejects_bad_config)
{
    dp_model_cfg good = {.n_layers = 2, .sizes = {3, 4, 2}, .act = {DP_ACT_RELU, DP_ACT_IDENTITY},
                         .init = DP_INIT_HE_NORMAL, .seed = 1, .max_batch = 4};
    dp_model *m = (dp_model *)&good; /* must be reset to NULL on failure */
    dp_model_cfg c = good;
    c.n_layers = 0;
    cr_assert_eq(dp_model_create(&c, &m), DP_EINVAL);
    cr_assert_null(m);
    c = good;
    c.n_layers = DP_MAX_LAYERS + 1;
    cr_assert_eq(dp_model_create(&c, &m), DP_EINVAL);
    c = good;
    c.sizes[1] = 0;
    cr_assert_eq(dp_model_create(&c, &m), DP_EINVAL);
    c = good;
    c.act[1] = DP_ACT_COUNT;
    cr_assert_eq(dp_model_create(&c, &m), DP_EINVAL);
    c = good;
    c.init = DP_INIT_COUNT;
    cr_assert_eq(dp_model_create(&c, &m), DP_EINVAL);
    c = good;
    c.max_batch = 0;
    cr_assert_eq(dp_model_create(&c, &m), DP_EINVAL);
    cr_assert_null(m);
    cr_assert_neq(strlen(dp_errmsg()), 0, "failure must record a message");
    cr_assert_eq(dp_model_create(&good, &m), DP_OK);
    cr_assert_not_null(m);
    dp_model_free(&m);
}

/* ---------------------------------------------------------------------------------------
 * 4. Names */

TestSuite(core_names);

Test(core_names, round_trip)
{
    for (int a = 0; a < DP_ACT_COUNT; a++) {
        cr_assert_eq(dp_act_parse(dp_act_name(a)), a, "act %d (%s)", a, dp_act_name(a));
    }
    for (int l = 0; l < DP_LOSS_COUNT; l++) {
        cr_assert_eq(dp_loss_parse(dp_loss_name(l)), l, "loss %d (%s)", l, dp_loss_name(l));
    }
    for (int i = 0; i < DP_INIT_COUNT; i++) {
        cr_assert_eq(dp_init_parse(dp_init_name(i)), i, "init %d (%s)", i, dp_init_name(i));
    }
}

Test(core_names, documented_spellings)
{
    cr_assert_eq(dp_act_parse("identity"), DP_ACT_IDENTITY);
    cr_assert_eq(dp_act_parse("relu"), DP_ACT_RELU);
    cr_assert_eq(dp_act_parse("sigmoid"), DP_ACT_SIGMOID);
    cr_assert_eq(dp_act_parse("tanh"), DP_ACT_TANH);
    cr_assert_eq(dp_act_parse("softmax"), DP_ACT_SOFTMAX);
    cr_assert_eq(dp_loss_parse("cross-entropy"), DP_LOSS_CROSS_ENTROPY);
    cr_assert_eq(dp_loss_parse("mse"), DP_LOSS_MSE);
    cr_assert_eq(dp_act_parse("step"), DP_ACT_STEP);
    cr_assert_eq(dp_act_parse("leaky-relu"), DP_ACT_LEAKY_RELU);
    cr_assert_eq(dp_act_parse("elu"), DP_ACT_ELU);
    cr_assert_eq(dp_act_parse("gelu"), DP_ACT_GELU);
    cr_assert_eq(dp_loss_parse("sparse-categorical-cross-entropy"), DP_LOSS_SPARSE_CCE);
    cr_assert_eq(dp_loss_parse("categorical-cross-entropy"), DP_LOSS_CCE);
    cr_assert_eq(dp_loss_parse("binary-cross-entropy"), DP_LOSS_BCE_LOGITS);
    cr_assert_eq(dp_loss_parse("binary-cross-entropy-probs"), DP_LOSS_BCE_PROBS);
    cr_assert_eq(dp_loss_parse("mae"), DP_LOSS_MAE);
    cr_assert_eq(dp_loss_parse("rmse"), DP_LOSS_RMSE);
    cr_assert_eq(dp_init_parse("he-normal"), DP_INIT_HE_NORMAL);
    cr_assert_eq(dp_init_parse("zero"), DP_INIT_ZERO);
}

Test(core_names, unknown_names)
{
    cr_assert_eq(dp_act_parse("selu"), -1);
    cr_assert_eq(dp_act_parse("leaky_relu"), -1);
    cr_assert_eq(dp_act_parse(""), -1);
    cr_assert_eq(dp_act_parse("relu "), -1);
    cr_assert_eq(dp_loss_parse("hinge"), -1);
    cr_assert_eq(dp_loss_parse(""), -1);
    cr_assert_eq(dp_init_parse("orthogonal"), -1);
    cr_assert_eq(dp_init_parse(""), -1);
}

/* ---------------------------------------------------------------------------------------
 * 5. rng */

TestSuite(core_rng);

/* 1e5 draws: U[0,1) has mean 1/2 (standard error 9.1e-4) and variance 1/12; N(0,1) has mean
 * 0 (s.e. 3.2e-3) and std 1 (s.e. 2.2e-3). Tolerances are ~5 standard errors or more. */
Test(core_rng, uniform_range_and_moments)
{
    dp_rng r = dp_rng_make(12345, 1);
    const int n = 100000;
    double sum = 0.0, sq = 0.0;
    int outside = 0;
    for (int i = 0; i < n; i++) {
        float u = dp_rng_uniform(&r);
        outside += !(u >= 0.0f && u < 1.0f);
        sum += u;
        sq += (double)u * u;
    }
    cr_assert_eq(outside, 0, "%d uniform draws outside [0, 1)", outside);
    double mean = sum / n, var = sq / n - mean * mean;
    cr_assert_lt(fabs(mean - 0.5), 0.005, "uniform mean %g", mean);
    cr_assert_lt(fabs(var - 1.0 / 12.0), 0.002, "uniform variance %g, want 1/12", var);
}

Test(core_rng, normal_moments)
{
    dp_rng r = dp_rng_make(999, 2);
    const int n = 100000;
    double sum = 0.0, sq = 0.0;
    int within = 0, bad = 0;
    for (int i = 0; i < n; i++) {
        double z = dp_rng_normal(&r);
        bad += !isfinite(z);
        sum += z;
        sq += z * z;
        within += fabs(z) <= 1.0;
    }
    double mean = sum / n, sd = sqrt(sq / n - mean * mean);
    cr_assert_eq(bad, 0, "%d non-finite normal draws", bad);
    cr_assert_lt(fabs(mean), 0.02, "normal mean %g", mean);
    cr_assert_lt(fabs(sd - 1.0), 0.02, "normal std %g", sd);
    cr_assert_lt(fabs((double)within / n - 0.6827), 0.01, "P(|z|<=1) = %g", (double)within / n);
}

Test(core_rng, below_range_and_uniformity)
{
    /* n = 7, 70000 draws: each count ~ 10000 +- 93 (1 sigma); allow 5%. */
    dp_rng r = dp_rng_make(7, 3);
    long counts[7] = {0}, over = 0;
    for (int i = 0; i < 70000; i++) {
        uint64_t v = dp_rng_below(&r, 7);
        if (v < 7) {
            counts[v]++;
        } else {
            over++;
        }
    }
    cr_assert_eq(over, 0, "dp_rng_below(7) returned >= 7 %ld times", over);
    for (int j = 0; j < 7; j++) {
        cr_assert_lt(labs(counts[j] - 10000), 500, "value %d drawn %ld times of 70000", j,
                     counts[j]);
    }
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(dp_rng_below(&r, 1), 0);
    }
    /* n just above 2^63: about half the raw words are rejected; results still below n,
     * and both halves of the range are reached. */
    const uint64_t big = (UINT64_C(1) << 63) + 1;
    int high = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t v = dp_rng_below(&r, big);
        cr_assert_lt(v, big);
        high += v >= (UINT64_C(1) << 62);
    }
    cr_assert(high > 300 && high < 700, "%d of 1000 draws in the upper half of [0, 2^63]", high);
    /* n = 2^64 - 1 (UINT64_MAX): the limit case of the rejection bound. */
    for (int i = 0; i < 100; i++) {
        cr_assert_lt(dp_rng_below(&r, UINT64_MAX), UINT64_MAX);
    }
}

Test(core_rng, pure_function_of_key_and_counter)
{
    dp_rng a = dp_rng_make(42, 7), b = dp_rng_make(42, 7), c = dp_rng_make(42, 8),
           d = dp_rng_make(43, 7);
    cr_assert_eq(a.key, b.key);
    cr_assert_eq(a.ctr, 0);
    cr_assert_neq(a.key, c.key, "the second key word must matter");
    cr_assert_neq(a.key, d.key, "the first key word must matter");
    uint64_t first[16];
    for (int i = 0; i < 16; i++) {
        first[i] = dp_rng_next(&a);
        cr_assert_eq(first[i], dp_rng_next(&b));
        cr_assert_eq(first[i], dp_rng_hash(b.key, (uint64_t)i), "value %d is not hash(key, %d)",
                     i, i);
    }
    cr_assert_eq(a.ctr, 16);
    /* Jumping straight to counter 5 reproduces value 5. */
    dp_rng j = {.key = a.key, .ctr = 5};
    cr_assert_eq(dp_rng_next(&j), first[5]);
    /* Same (key, counter) -> same uniform and normal. */
    dp_rng u1 = {.key = 77, .ctr = 1000}, u2 = {.key = 77, .ctr = 1000};
    cr_assert_eq(dp_rng_uniform(&u1), dp_rng_uniform(&u2));
    cr_assert_eq(dp_rng_normal(&u1), dp_rng_normal(&u2));
    /* Consecutive values differ; hash is not symmetric in its words. */
    for (int i = 1; i < 16; i++) {
        cr_assert_neq(first[i], first[i - 1]);
    }
    cr_assert_neq(dp_rng_hash(1, 2), dp_rng_hash(2, 1));
    cr_assert_neq(dp_rng_hash(0, 0), dp_rng_hash(0, 1));
}

/* ---------------------------------------------------------------------------------------
 * 6. BLAS kernel policy */

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
