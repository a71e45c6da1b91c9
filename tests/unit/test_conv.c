/* test_conv.c: unit tests of the image stage (include/dptrain/nn.h, src/core/conv.c): the
 * convolution's forward and backward against a direct double-precision reference (NCHW,
 * weights (out_c, in_c, kh, kw) as torch.nn.Conv2d) over strides, paddings, channel counts,
 * non-square inputs and kernels, and a batch that spans several chunks; finite-difference
 * gradient checks of conv, max and average pooling (overlapping and non-square windows); max
 * pooling's ties (the first element in row-major order takes the gradient, as torch on CPU);
 * the stage tokens (dp_stage_parse, dp_stage_format) and the shapes they give
 * (dp_model_cfg_shapes). Suite conv.
 * Expected values come from independent computation in the test (nested loops in double,
 * central differences, hand-worked shapes), never from program output. */
#include <criterion/criterion.h>

#include "testutil.h"

#include "core/conv_dnnl.h"
#include "dptrain/blas.h"
#include "dptrain/err.h"
#include "dptrain/nn.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(conv);

/* Floats after each work buffer that the kernels must leave alone. */
#define GUARD_FLOATS 64
#define GUARD_VALUE 1234.5f

/* --- convolution fixtures --------------------------------------------------------------- */

typedef struct {
    int B, in_c, in_h, in_w, out_c, kh, kw, sh, sw, ph, pw;
} conv_case;

/* The variety every convolution test runs over. */
static const conv_case conv_cases[] = {
    /*  B in_c  H   W out kh kw sh sw ph pw */
    {2, 1, 5, 5, 2, 3, 3, 1, 1, 0, 0},   /* the plain case */
    {2, 3, 7, 9, 5, 3, 2, 1, 1, 1, 1},   /* non-square input and kernel 3x2, padding 1 */
    {3, 4, 7, 9, 2, 5, 3, 2, 2, 2, 1},   /* kernel 5x3, stride 2, padding 2x1 */
    {2, 3, 8, 6, 5, 1, 1, 1, 1, 0, 0},   /* 1x1 */
    {2, 4, 9, 7, 5, 3, 3, 2, 1, 1, 0},   /* stride 2x1, padding 1x0 */
    {1, 3, 6, 5, 2, 2, 3, 1, 2, 2, 2},   /* stride 1x2, padding 2: outputs beyond the image */
    {2, 1, 7, 9, 5, 1, 1, 2, 2, 1, 1},   /* 1x1 stride 2 padded: bias-only outputs, inputs
                                          * no output reads (their dx must be 0) */
    {2, 4, 5, 6, 2, 5, 3, 1, 1, 2, 0},   /* kernel 5x3, padding 2x0 */
    {2, 3, 10, 11, 5, 3, 3, 2, 2, 0, 0}, /* stride 2 with a remainder (floor) */
    {2, 2, 4, 2, 3, 3, 3, 1, 1, 1, 1},   /* kernel wider than the image, padded */
    {1, 2, 3, 1, 2, 3, 1, 1, 1, 1, 2},   /* one column, padded by 2 each side */
};
#define N_CONV_CASES (sizeof conv_cases / sizeof conv_cases[0])

typedef struct {
    conv_case k;
    dp_conv c;
    int alloc_b;    /* the batch the arrays hold; k.B may be set lower (batch-size tests) */
    size_t n_x, n_y, n_w, n_col, n_tmp;
    float *w, *b, *dw, *db, *x, *dx, *y, *r, *col, *tmp;
    dp_conv_dnnl *dn; /* non-NULL: the kernels under test are oneDNN's (conv_dnnl.c) */
    char name[96];
} conv_fix;

static int out_size(int in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

/* Allocates and fills a fixture: w, b, x and r uniform in [-1, 1) from seed; the work buffers
 * at exactly the sizes the header asks for, each followed by a guard. */
static void fix_init(conv_fix *f, const conv_case *k, uint64_t seed)
{
    memset(f, 0, sizeof *f);
    f->k = *k;
    const int oh = out_size(k->in_h, k->kh, k->sh, k->ph);
    const int ow = out_size(k->in_w, k->kw, k->sw, k->pw);
    cr_assert(oh >= 1 && ow >= 1, "bad test case");
    f->c = (dp_conv){.in_c = k->in_c, .in_h = k->in_h, .in_w = k->in_w, .out_c = k->out_c,
                     .out_h = oh, .out_w = ow, .kh = k->kh, .kw = k->kw, .sh = k->sh,
                     .sw = k->sw, .ph = k->ph, .pw = k->pw};
    f->alloc_b = k->B;
    f->n_x = (size_t)k->B * k->in_c * k->in_h * k->in_w;
    f->n_y = (size_t)k->B * k->out_c * oh * ow;
    f->n_w = (size_t)k->out_c * k->in_c * k->kh * k->kw;
    f->w = talloc(f->n_w);
    f->dw = talloc(f->n_w);
    f->b = talloc(k->out_c);
    f->db = talloc(k->out_c);
    f->x = talloc(f->n_x);
    f->dx = talloc(f->n_x);
    f->y = talloc(f->n_y);
    f->r = talloc(f->n_y);
    f->c.w = f->w;
    f->c.b = f->b;
    f->c.dw = f->dw;
    f->c.db = f->db;
    f->n_col = dp_conv_col_floats(&f->c);
    f->n_tmp = dp_conv_tmp_floats(&f->c);
    f->col = talloc(f->n_col + GUARD_FLOATS);
    f->tmp = talloc(f->n_tmp + GUARD_FLOATS);
    for (int i = 0; i < GUARD_FLOATS; i++) {
        f->col[f->n_col + i] = GUARD_VALUE;
        f->tmp[f->n_tmp + i] = GUARD_VALUE;
    }
    tfill(f->w, f->n_w, -1.0f, 1.0f, seed + 1);
    tfill(f->b, k->out_c, -1.0f, 1.0f, seed + 2);
    tfill(f->x, f->n_x, -1.0f, 1.0f, seed + 3);
    tfill(f->r, f->n_y, -1.0f, 1.0f, seed + 4);
    snprintf(f->name, sizeof f->name, "B=%d %dx%dx%d -> %d k%dx%d s%dx%d p%dx%d (out %dx%d)",
             k->B, k->in_c, k->in_h, k->in_w, k->out_c, k->kh, k->kw, k->sh, k->sw, k->ph,
             k->pw, oh, ow);
}

static void fix_free(conv_fix *f)
{
    dp_conv_dnnl_free(&f->dn);
    free(f->w);
    free(f->dw);
    free(f->b);
    free(f->db);
    free(f->x);
    free(f->dx);
    free(f->y);
    free(f->r);
    free(f->col);
    free(f->tmp);
}

/* The kernels wrote nothing past the work-buffer sizes they announced. */
static void check_guards(const conv_fix *f)
{
    for (int i = 0; i < GUARD_FLOATS; i++) {
        cr_assert_eq(f->col[f->n_col + i], GUARD_VALUE, "%s: col written past its %zu floats",
                     f->name, f->n_col);
        cr_assert_eq(f->tmp[f->n_tmp + i], GUARD_VALUE, "%s: tmp written past its %zu floats",
                     f->name, f->n_tmp);
    }
}

/* x[n][c][ih][iw], 0 in the padding. */
static double x_at(const conv_fix *f, int n, int ch, int ih, int iw)
{
    const conv_case *k = &f->k;
    if (ih < 0 || ih >= k->in_h || iw < 0 || iw >= k->in_w) {
        return 0.0;
    }
    return f->x[(((size_t)n * k->in_c + ch) * k->in_h + ih) * k->in_w + iw];
}

/* Reference forward, directly from the definition:
 * y[n][o][oh][ow] = b[o] + sum_{c,i,j} w[o][c][i][j] x[n][c][oh*sh - ph + i][ow*sw - pw + j].
 * mag: b's and each term's magnitude, summed (the scale of the rounding error). */
static void ref_forward(const conv_fix *f, double *y, double *mag)
{
    const conv_case *k = &f->k;
    const int Ho = f->c.out_h, Wo = f->c.out_w;
    for (int n = 0; n < k->B; n++) {
        for (int o = 0; o < k->out_c; o++) {
            for (int oh = 0; oh < Ho; oh++) {
                for (int ow = 0; ow < Wo; ow++) {
                    double s = f->b[o], m = fabs(f->b[o]);
                    for (int ch = 0; ch < k->in_c; ch++) {
                        for (int i = 0; i < k->kh; i++) {
                            for (int j = 0; j < k->kw; j++) {
                                double wv = f->w[((o * k->in_c + ch) * k->kh + i) * k->kw + j];
                                double t = wv * x_at(f, n, ch, oh * k->sh - k->ph + i,
                                                     ow * k->sw - k->pw + j);
                                s += t;
                                m += fabs(t);
                            }
                        }
                    }
                    size_t q = (((size_t)n * k->out_c + o) * Ho + oh) * Wo + ow;
                    y[q] = s;
                    mag[q] = m;
                }
            }
        }
    }
}

/* Reference adjoint of ref_forward for dy: dw, db (written) and dx (written), each with the
 * summed magnitude of its terms. */
static void ref_backward(const conv_fix *f, const float *dy, double *dw, double *mdw, double *db,
                         double *mdb, double *dx, double *mdx)
{
    const conv_case *k = &f->k;
    const int Ho = f->c.out_h, Wo = f->c.out_w;
    memset(dw, 0, f->n_w * sizeof *dw);
    memset(mdw, 0, f->n_w * sizeof *mdw);
    memset(db, 0, (size_t)k->out_c * sizeof *db);
    memset(mdb, 0, (size_t)k->out_c * sizeof *mdb);
    memset(dx, 0, f->n_x * sizeof *dx);
    memset(mdx, 0, f->n_x * sizeof *mdx);
    for (int n = 0; n < k->B; n++) {
        for (int o = 0; o < k->out_c; o++) {
            for (int oh = 0; oh < Ho; oh++) {
                for (int ow = 0; ow < Wo; ow++) {
                    const double g = dy[(((size_t)n * k->out_c + o) * Ho + oh) * Wo + ow];
                    db[o] += g;
                    mdb[o] += fabs(g);
                    for (int ch = 0; ch < k->in_c; ch++) {
                        for (int i = 0; i < k->kh; i++) {
                            for (int j = 0; j < k->kw; j++) {
                                const int ih = oh * k->sh - k->ph + i;
                                const int iw = ow * k->sw - k->pw + j;
                                if (ih < 0 || ih >= k->in_h || iw < 0 || iw >= k->in_w) {
                                    continue;
                                }
                                const size_t wi = ((size_t)(o * k->in_c + ch) * k->kh + i) *
                                                  k->kw + j;
                                const size_t xi = (((size_t)n * k->in_c + ch) * k->in_h + ih) *
                                                  k->in_w + iw;
                                dw[wi] += g * f->x[xi];
                                mdw[wi] += fabs(g * f->x[xi]);
                                dx[xi] += g * f->w[wi];
                                mdx[xi] += fabs(g * f->w[wi]);
                            }
                        }
                    }
                }
            }
        }
    }
}

/* Worst |got - (base + want)| / mag over n entries (base may be NULL). An entry whose terms
 * are all zero (mag == 0) must come out exactly; NaN gives INFINITY. *at: its index. */
static double scaled_err(const float *got, const float *base, const double *want,
                         const double *mag, size_t n, size_t *at)
{
    double worst = 0.0;
    *at = 0;
    for (size_t i = 0; i < n; i++) {
        const double w = want[i] + (base ? (double)base[i] : 0.0);
        const double m = mag[i] + (base ? fabs((double)base[i]) : 0.0);
        const double d = fabs((double)got[i] - w);
        double e = m > 0.0 ? d / m : (d == 0.0 ? 0.0 : INFINITY);
        if (isnan(e)) {
            e = INFINITY;
        }
        if (e > worst) {
            worst = e;
            *at = i;
        }
    }
    return worst;
}

/* Float rounding of sums of up to a few hundred terms stays far below this (relative to the
 * summed magnitudes of the terms). */
#define REF_TOL 1e-5

/* The kernels under test: dp_conv_forward/backward, or oneDNN's through f->dn. */
static void run_forward(conv_fix *f)
{
    if (f->dn) {
        int rc = dp_conv_dnnl_forward(f->dn, &f->c, f->y, f->x, f->k.B);
        cr_assert_eq(rc, DP_OK, "%s: oneDNN forward: %s", f->name, dp_errmsg());
    } else {
        dp_conv_forward(&f->c, f->y, f->x, f->k.B, f->col, f->tmp);
    }
}

static void run_backward(conv_fix *f, float *dx, bool accumulate)
{
    if (f->dn) {
        int rc = dp_conv_dnnl_backward(f->dn, &f->c, dx, f->r, f->x, f->k.B, accumulate);
        cr_assert_eq(rc, DP_OK, "%s: oneDNN backward: %s", f->name, dp_errmsg());
    } else {
        dp_conv_backward(&f->c, dx, f->r, f->x, f->k.B, accumulate, f->col, f->tmp);
    }
}

/* Entries of y and x for the current k.B (<= alloc_b). */
static size_t ny(const conv_fix *f) { return f->n_y / (size_t)f->alloc_b * (size_t)f->k.B; }
static size_t nx(const conv_fix *f) { return f->n_x / (size_t)f->alloc_b * (size_t)f->k.B; }

static void check_forward(conv_fix *f)
{
    double *want = calloc(f->n_y, sizeof *want), *mag = calloc(f->n_y, sizeof *mag);
    cr_assert(want && mag);
    tfill_nan(f->y, f->n_y);
    run_forward(f);
    check_guards(f);
    ref_forward(f, want, mag);
    size_t at;
    double e = scaled_err(f->y, NULL, want, mag, ny(f), &at);
    for (size_t i = ny(f); i < f->n_y; i++) {
        cr_assert(isnan(f->y[i]), "conv forward %s: y[%zu] written beyond the batch", f->name,
                  i);
    }
    cr_assert_lt(e, REF_TOL, "conv forward %s: y[%zu] = %.9g, want %.9g (scaled err %g)",
                 f->name, at, f->y[at], want[at], e);
    free(want);
    free(mag);
}

/* Backward against the reference adjoint: overwrite (prefilled NaN), accumulate onto known
 * values, and dx == NULL (dw, db as before). */
static void check_backward(conv_fix *f)
{
    const int oc = f->k.out_c;
    double *dw = calloc(f->n_w, sizeof *dw), *mdw = calloc(f->n_w, sizeof *mdw);
    double *db = calloc(oc, sizeof *db), *mdb = calloc(oc, sizeof *mdb);
    double *dx = calloc(f->n_x, sizeof *dx), *mdx = calloc(f->n_x, sizeof *mdx);
    cr_assert(dw && mdw && db && mdb && dx && mdx);
    ref_backward(f, f->r, dw, mdw, db, mdb, dx, mdx);
    size_t at;
    double e;

    /* Overwrite: dw, db, dx prefilled with NaN, which must be replaced. */
    tfill_nan(f->dw, f->n_w);
    tfill_nan(f->db, oc);
    tfill_nan(f->dx, f->n_x);
    run_backward(f, f->dx, false);
    check_guards(f);
    e = scaled_err(f->dw, NULL, dw, mdw, f->n_w, &at);
    cr_assert_lt(e, REF_TOL, "conv backward %s: dw[%zu] = %.9g, want %.9g (scaled err %g)",
                 f->name, at, f->dw[at], dw[at], e);
    e = scaled_err(f->db, NULL, db, mdb, oc, &at);
    cr_assert_lt(e, REF_TOL, "conv backward %s: db[%zu] = %.9g, want %.9g (scaled err %g)",
                 f->name, at, f->db[at], db[at], e);
    e = scaled_err(f->dx, NULL, dx, mdx, nx(f), &at);
    cr_assert_lt(e, REF_TOL, "conv backward %s: dx[%zu] = %.9g, want %.9g (scaled err %g)",
                 f->name, at, f->dx[at], dx[at], e);

    /* Accumulate onto known values; dx is still overwritten. */
    float *pre_w = talloc(f->n_w), *pre_b = talloc(oc);
    for (size_t i = 0; i < f->n_w; i++) {
        pre_w[i] = 0.25f * (float)(i % 17) - 2.0f;
    }
    for (int i = 0; i < oc; i++) {
        pre_b[i] = 3.0f - 0.5f * (float)i;
    }
    memcpy(f->dw, pre_w, f->n_w * sizeof *pre_w);
    memcpy(f->db, pre_b, (size_t)oc * sizeof *pre_b);
    tfill_nan(f->dx, f->n_x);
    run_backward(f, f->dx, true);
    check_guards(f);
    e = scaled_err(f->dw, pre_w, dw, mdw, f->n_w, &at);
    cr_assert_lt(e, REF_TOL, "conv backward accumulate %s: dw[%zu] = %.9g, want %g + %.9g",
                 f->name, at, f->dw[at], pre_w[at], dw[at]);
    e = scaled_err(f->db, pre_b, db, mdb, oc, &at);
    cr_assert_lt(e, REF_TOL, "conv backward accumulate %s: db[%zu] = %.9g, want %g + %.9g",
                 f->name, at, f->db[at], pre_b[at], db[at]);
    e = scaled_err(f->dx, NULL, dx, mdx, nx(f), &at);
    cr_assert_lt(e, REF_TOL, "conv backward accumulate %s: dx[%zu] = %.9g, want %.9g",
                 f->name, at, f->dx[at], dx[at]);

    /* dx == NULL: dw and db as without it. */
    tfill_nan(f->dw, f->n_w);
    tfill_nan(f->db, oc);
    run_backward(f, NULL, false);
    check_guards(f);
    e = scaled_err(f->dw, NULL, dw, mdw, f->n_w, &at);
    cr_assert_lt(e, REF_TOL, "conv backward dx=NULL %s: dw[%zu] = %.9g, want %.9g", f->name,
                 at, f->dw[at], dw[at]);
    e = scaled_err(f->db, NULL, db, mdb, oc, &at);
    cr_assert_lt(e, REF_TOL, "conv backward dx=NULL %s: db[%zu] = %.9g, want %.9g", f->name,
                 at, f->db[at], db[at]);

    free(pre_w);
    free(pre_b);
    free(dw);
    free(mdw);
    free(db);
    free(mdb);
    free(dx);
    free(mdx);
}

Test(conv, forward_matches_reference)
{
    for (size_t t = 0; t < N_CONV_CASES; t++) {
        conv_fix f;
        fix_init(&f, &conv_cases[t], 1000 + 10 * t);
        check_forward(&f);
        fix_free(&f);
    }
}

Test(conv, backward_matches_reference)
{
    for (size_t t = 0; t < N_CONV_CASES; t++) {
        conv_fix f;
        fix_init(&f, &conv_cases[t], 2000 + 10 * t);
        check_backward(&f);
        fix_free(&f);
    }
}

/* A batch of dp_conv_chunk + 3 samples, so that the chunk loop runs twice and the second
 * chunk is partial: forward, backward (dw and db summed over both chunks, dx of the samples
 * of the second chunk) and the work buffers at the announced sizes. in_c grows until a chunk
 * holds few samples, so the case stays small whatever the chunk limit. */
Test(conv, batch_spans_chunks)
{
    conv_case k = {0, 16, 28, 28, 3, 3, 3, 1, 1, 1, 1};
    dp_conv probe = {.in_c = k.in_c, .in_h = 28, .in_w = 28, .out_c = k.out_c, .out_h = 28,
                     .out_w = 28, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1};
    while (dp_conv_chunk(&probe) > 48 && probe.in_c < 4096) {
        probe.in_c *= 2;
    }
    const int chunk = dp_conv_chunk(&probe);
    cr_assert(chunk >= 1 && chunk <= 48, "dp_conv_chunk = %d for in_c %d", chunk, probe.in_c);
    k.in_c = probe.in_c;
    k.B = chunk + 3;
    conv_fix f;
    fix_init(&f, &k, 3000);
    cr_assert_eq(dp_conv_chunk(&f.c), chunk);
    cr_assert_lt(f.n_col, (size_t)k.B * k.in_c * 9 * 28 * 28,
                 "%s: the col buffer (%zu floats) holds the whole batch: no chunking", f.name,
                 f.n_col);
    check_forward(&f);
    check_backward(&f);
    fix_free(&f);
}

/* B = 0: forward writes nothing; backward zeroes dw, db (or leaves them when accumulating). */
Test(conv, empty_batch)
{
    conv_fix f;
    fix_init(&f, &conv_cases[1], 4000);
    f.y[0] = 7.0f;
    dp_conv_forward(&f.c, f.y, f.x, 0, f.col, f.tmp);
    cr_assert_eq(f.y[0], 7.0f);
    for (size_t i = 0; i < f.n_w; i++) {
        f.dw[i] = 7.0f;
    }
    f.db[0] = 7.0f;
    dp_conv_backward(&f.c, f.dx, f.r, f.x, 0, true, f.col, f.tmp);
    cr_assert_eq(f.dw[0], 7.0f);
    cr_assert_eq(f.db[0], 7.0f);
    dp_conv_backward(&f.c, f.dx, f.r, f.x, 0, false, f.col, f.tmp);
    for (size_t i = 0; i < f.n_w; i++) {
        cr_assert_eq(f.dw[i], 0.0f, "dw[%zu] = %g after an empty batch", i, f.dw[i]);
    }
    for (int i = 0; i < f.k.out_c; i++) {
        cr_assert_eq(f.db[i], 0.0f);
    }
    check_guards(&f);
    fix_free(&f);
}

/* --- finite differences: L = sum y r, r fixed ------------------------------------------- */

static double conv_loss(void *p)
{
    conv_fix *f = p;
    dp_conv_forward(&f->c, f->y, f->x, f->k.B, f->col, f->tmp);
    double s = 0.0;
    for (size_t i = 0; i < f->n_y; i++) {
        s += (double)f->r[i] * f->y[i];
    }
    return s;
}

/* L is linear in each of w, b, x, so any step is exact but for float rounding of y, whose
 * effect shrinks as 1/h: a step of 1 (measured max 1.8e-4, on dw entries near 0; with h =
 * 0.125 it was 1.7e-3), and the tolerance of the dense check (1e-3). */
Test(conv, gradcheck)
{
    const float h = 1.0f;
    for (size_t t = 0; t < N_CONV_CASES; t++) {
        conv_fix f;
        fix_init(&f, &conv_cases[t], 5000 + 10 * t);
        tfill_nan(f.dx, f.n_x);
        dp_conv_backward(&f.c, f.dx, f.r, f.x, f.k.B, false, f.col, f.tmp);
        double ew = gradcheck_vec(f.w, f.n_w, f.dw, 1.0, h, conv_loss, &f);
        double eb = gradcheck_vec(f.b, f.k.out_c, f.db, 1.0, h, conv_loss, &f);
        double ex = gradcheck_vec(f.x, f.n_x, f.dx, 1.0, h, conv_loss, &f);
        cr_assert_lt(ew, 1e-3, "conv gradcheck %s: dw max rel err %g", f.name, ew);
        cr_assert_lt(eb, 1e-3, "conv gradcheck %s: db max rel err %g", f.name, eb);
        cr_assert_lt(ex, 1e-3, "conv gradcheck %s: dx max rel err %g", f.name, ex);
        fix_free(&f);
    }
}

/* --- oneDNN (conv_dnnl.c) against the same reference ------------------------------------- */

/* f's oneDNN handle for batches up to max_batch (the test is skipped without oneDNN). */
static void fix_dnnl(conv_fix *f, int max_batch, bool need_dx)
{
    if (!dp_conv_dnnl_available()) {
        cr_skip_test("built without oneDNN");
    }
    int rc = dp_conv_dnnl_create(&f->c, max_batch, need_dx, &f->dn);
    cr_assert_eq(rc, DP_OK, "%s: dp_conv_dnnl_create: %s", f->name, dp_errmsg());
    cr_assert(f->dn != NULL);
}

/* Every case, forward and backward (overwrite, accumulate, dx == NULL). */
static void dnnl_all_cases(uint64_t seed)
{
    for (size_t t = 0; t < N_CONV_CASES; t++) {
        conv_fix f;
        fix_init(&f, &conv_cases[t], seed + 10 * t);
        fix_dnnl(&f, f.k.B, true);
        check_forward(&f);
        check_backward(&f);
        fix_free(&f);
    }
}

Test(conv_dnnl, matches_reference) { dnnl_all_cases(6000); }

/* The same on oneDNN's AVX2 kernels (DNNL_MAX_CPU_ISA, read at oneDNN's first call: each
 * Criterion test runs in a process of its own), the path of machines without AVX-512; the
 * implementation name shows the limit took. */
Test(conv_dnnl, matches_reference_avx2)
{
    dp_cpu_features cpu = dp_cpu_detect();
    if (!cpu.avx2) {
        cr_skip_test("no AVX2 on this machine");
    }
    setenv("DNNL_MAX_CPU_ISA", "AVX2", 1);
    dnnl_all_cases(7000);
    conv_fix f;
    fix_init(&f, &conv_cases[2], 7500);
    fix_dnnl(&f, 4, true);
    const char *impl = dp_conv_dnnl_impl(f.dn);
    cr_assert(strstr(impl, "avx512") == NULL, "DNNL_MAX_CPU_ISA=AVX2, yet oneDNN runs %s", impl);
    fix_free(&f);
}

/* One handle, batches of many sizes in turn (more than the DP_CONV_DNNL_SIZES it keeps
 * primitives for, and back to evicted ones): each matches the reference; y beyond the batch
 * is left alone. A CNN-sized layer (32 -> 64 channels, oneDNN's blocked layouts). */
Test(conv_dnnl, batch_sizes_come_and_go)
{
    const conv_case k = {9, 32, 10, 10, 64, 3, 3, 1, 1, 1, 1};
    static const int sizes[] = {9, 1, 5, 3, 7, 2, 9, 1, 6, 5};
    conv_fix f;
    fix_init(&f, &k, 8000);
    fix_dnnl(&f, k.B, true);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        f.k.B = sizes[i];
        check_forward(&f);
        check_backward(&f);
    }
    fix_free(&f);
}

/* A handle without the input gradient (a first layer): dw and db as the reference, and a
 * call with dx is refused; a batch above max_batch is refused; B = 0 writes nothing but
 * zeroes dw and db (or keeps them when accumulating). */
Test(conv_dnnl, first_layer_limits_and_empty_batch)
{
    conv_fix f;
    fix_init(&f, &conv_cases[1], 9000);
    fix_dnnl(&f, f.k.B, false);
    check_forward(&f);
    double *dw = calloc(f.n_w, sizeof *dw), *mdw = calloc(f.n_w, sizeof *mdw);
    double *db = calloc(f.k.out_c, sizeof *db), *mdb = calloc(f.k.out_c, sizeof *mdb);
    double *dx = calloc(f.n_x, sizeof *dx), *mdx = calloc(f.n_x, sizeof *mdx);
    cr_assert(dw && mdw && db && mdb && dx && mdx);
    ref_backward(&f, f.r, dw, mdw, db, mdb, dx, mdx);
    tfill_nan(f.dw, f.n_w);
    run_backward(&f, NULL, false);
    size_t at;
    double e = scaled_err(f.dw, NULL, dw, mdw, f.n_w, &at);
    cr_assert_lt(e, REF_TOL, "first layer %s: dw[%zu] = %.9g, want %.9g", f.name, at, f.dw[at],
                 dw[at]);
    cr_assert_neq(dp_conv_dnnl_backward(f.dn, &f.c, f.dx, f.r, f.x, f.k.B, false), DP_OK,
                  "a handle made without dx computed dx");
    cr_assert_neq(dp_conv_dnnl_forward(f.dn, &f.c, f.y, f.x, f.k.B + 1), DP_OK,
                  "a batch above max_batch was taken");
    f.y[0] = 7.0f;
    cr_assert_eq(dp_conv_dnnl_forward(f.dn, &f.c, f.y, f.x, 0), DP_OK);
    cr_assert_eq(f.y[0], 7.0f);
    f.dw[0] = 7.0f;
    f.db[0] = 7.0f;
    cr_assert_eq(dp_conv_dnnl_backward(f.dn, &f.c, NULL, f.r, f.x, 0, true), DP_OK);
    cr_assert(f.dw[0] == 7.0f && f.db[0] == 7.0f);
    cr_assert_eq(dp_conv_dnnl_backward(f.dn, &f.c, NULL, f.r, f.x, 0, false), DP_OK);
    for (size_t i = 0; i < f.n_w; i++) {
        cr_assert_eq(f.dw[i], 0.0f, "dw[%zu] = %g after an empty batch", i, f.dw[i]);
    }
    cr_assert_eq(f.db[0], 0.0f);
    free(dw);
    free(mdw);
    free(db);
    free(mdb);
    free(dx);
    free(mdx);
    fix_free(&f);
}

/* --- pooling ---------------------------------------------------------------------------- */

typedef struct {
    int B, c, in_h, in_w, kh, kw, sh, sw;
} pool_case;

static const pool_case pool_cases[] = {
    /*  B  C  H  W kh kw sh sw */
    {2, 3, 6, 8, 2, 2, 2, 2}, /* the plain 2x2 */
    {2, 2, 6, 13, 2, 2, 2, 2}, /* 2x2 with 6 outputs a row: 4 at once, then 2 one by one */
    {2, 2, 7, 9, 3, 3, 2, 2}, /* 3s2: overlapping windows, remainder rows and columns */
    {1, 3, 7, 9, 2, 3, 2, 3}, /* non-square window 2x3, stride = window, remainders */
    {2, 2, 6, 7, 3, 2, 1, 2}, /* 3x2 stride 1x2: overlap in rows only */
    {2, 1, 5, 5, 2, 2, 3, 3}, /* stride > window: rows and columns no window reads */
    {1, 2, 4, 5, 4, 5, 1, 1}, /* one window covering the plane */
};
#define N_POOL_CASES (sizeof pool_cases / sizeof pool_cases[0])

typedef struct {
    pool_case k;
    dp_pool p;
    size_t n_x, n_y;
    float *x, *dx, *y, *r;
    int32_t *arg;
    bool max; /* the loss: max pooling, else average */
    char name[80];
} pool_fix;

static void pool_init(pool_fix *f, const pool_case *k)
{
    memset(f, 0, sizeof *f);
    f->k = *k;
    const int oh = (k->in_h - k->kh) / k->sh + 1, ow = (k->in_w - k->kw) / k->sw + 1;
    f->p = (dp_pool){.c = k->c, .in_h = k->in_h, .in_w = k->in_w, .out_h = oh, .out_w = ow,
                     .kh = k->kh, .kw = k->kw, .sh = k->sh, .sw = k->sw};
    f->n_x = (size_t)k->B * k->c * k->in_h * k->in_w;
    f->n_y = (size_t)k->B * k->c * oh * ow;
    f->x = talloc(f->n_x);
    f->dx = talloc(f->n_x);
    f->y = talloc(f->n_y);
    f->r = talloc(f->n_y);
    f->arg = calloc(f->n_y, sizeof *f->arg);
    cr_assert_not_null(f->arg);
    snprintf(f->name, sizeof f->name, "B=%d %dx%dx%d window %dx%d stride %dx%d (out %dx%d)",
             k->B, k->c, k->in_h, k->in_w, k->kh, k->kw, k->sh, k->sw, oh, ow);
}

static void pool_free(pool_fix *f)
{
    free(f->x);
    free(f->dx);
    free(f->y);
    free(f->r);
    free(f->arg);
}

/* x: the values -1 + (2 q + 1) / n for q = 0..n-1 in a shuffled order: all distinct, at
 * least 2/n apart. Returns that gap. */
static double fill_distinct(float *x, size_t n, uint64_t seed)
{
    size_t *q = malloc(n * sizeof *q);
    cr_assert_not_null(q);
    for (size_t i = 0; i < n; i++) {
        q[i] = i;
    }
    uint64_t s = seed;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(tgen_next(&s) % (i + 1));
        size_t t = q[i];
        q[i] = q[j];
        q[j] = t;
    }
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(-1.0 + (2.0 * (double)q[i] + 1.0) / (double)n);
    }
    free(q);
    return 2.0 / (double)n;
}

/* Reference pooling of plane index pl (sample n * C + channel), output (oh, ow): the maximum
 * with the in-plane index of its first occurrence in row-major order, and the mean in double. */
static void ref_pool_window(const pool_fix *f, size_t pl, int oh, int ow, double *max,
                            int32_t *arg, double *mean)
{
    const pool_case *k = &f->k;
    const float *xp = f->x + pl * (size_t)k->in_h * k->in_w;
    double m = -INFINITY, s = 0.0;
    int32_t a = -1;
    for (int i = 0; i < k->kh; i++) {
        for (int j = 0; j < k->kw; j++) {
            const int32_t idx = (oh * k->sh + i) * k->in_w + ow * k->sw + j;
            if (a < 0 || xp[idx] > m) {
                m = xp[idx];
                a = idx;
            }
            s += xp[idx];
        }
    }
    *max = m;
    *arg = a;
    *mean = s / (k->kh * k->kw);
}

static double pool_loss(void *p)
{
    pool_fix *f = p;
    if (f->max) {
        dp_maxpool_forward(&f->p, f->y, f->arg, f->x, f->k.B);
    } else {
        dp_avgpool_forward(&f->p, f->y, f->x, f->k.B);
    }
    double s = 0.0;
    for (size_t i = 0; i < f->n_y; i++) {
        s += (double)f->r[i] * f->y[i];
    }
    return s;
}

/* Forward (y, arg) and backward of both poolings against the reference, on distinct values. */
Test(conv, pool_matches_reference)
{
    for (size_t t = 0; t < N_POOL_CASES; t++) {
        pool_fix f;
        pool_init(&f, &pool_cases[t]);
        fill_distinct(f.x, f.n_x, 6000 + t);
        tfill(f.r, f.n_y, -1.0f, 1.0f, 6100 + t);
        const size_t n_pl = (size_t)f.k.B * f.k.c, out_pl = (size_t)f.p.out_h * f.p.out_w;
        const size_t in_pl = (size_t)f.k.in_h * f.k.in_w;
        double *dmax = calloc(f.n_x, sizeof *dmax), *davg = calloc(f.n_x, sizeof *davg);
        double *want_avg = calloc(f.n_y, sizeof *want_avg);
        cr_assert(dmax && davg && want_avg);

        tfill_nan(f.y, f.n_y);
        dp_maxpool_forward(&f.p, f.y, f.arg, f.x, f.k.B);
        for (size_t pl = 0; pl < n_pl; pl++) {
            for (int oh = 0; oh < f.p.out_h; oh++) {
                for (int ow = 0; ow < f.p.out_w; ow++) {
                    double m, mean;
                    int32_t a;
                    ref_pool_window(&f, pl, oh, ow, &m, &a, &mean);
                    const size_t q = pl * out_pl + (size_t)oh * f.p.out_w + ow;
                    cr_assert_eq(f.y[q], (float)m, "maxpool %s: y[%zu] = %.9g, want %.9g",
                                 f.name, q, f.y[q], m);
                    cr_assert_eq(f.arg[q], a, "maxpool %s: arg[%zu] = %d, want %d", f.name, q,
                                 f.arg[q], a);
                    want_avg[q] = mean;
                    dmax[pl * in_pl + a] += f.r[q];
                    const double g = f.r[q] / (double)(f.k.kh * f.k.kw);
                    for (int i = 0; i < f.k.kh; i++) {
                        for (int j = 0; j < f.k.kw; j++) {
                            davg[pl * in_pl + (size_t)(oh * f.k.sh + i) * f.k.in_w +
                                 ow * f.k.sw + j] += g;
                        }
                    }
                }
            }
        }
        tfill_nan(f.dx, f.n_x);
        dp_maxpool_backward(&f.p, f.dx, f.r, f.arg, f.k.B);
        for (size_t i = 0; i < f.n_x; i++) {
            cr_assert_float_eq(f.dx[i], dmax[i], 1e-6, "maxpool backward %s: dx[%zu] = %.9g, "
                               "want %.9g", f.name, i, f.dx[i], dmax[i]);
        }

        tfill_nan(f.y, f.n_y);
        dp_avgpool_forward(&f.p, f.y, f.x, f.k.B);
        for (size_t q = 0; q < f.n_y; q++) {
            cr_assert_float_eq(f.y[q], want_avg[q], 1e-6, "avgpool %s: y[%zu] = %.9g, want "
                               "%.9g", f.name, q, f.y[q], want_avg[q]);
        }
        tfill_nan(f.dx, f.n_x);
        dp_avgpool_backward(&f.p, f.dx, f.r, f.k.B);
        for (size_t i = 0; i < f.n_x; i++) {
            cr_assert_float_eq(f.dx[i], davg[i], 1e-6, "avgpool backward %s: dx[%zu] = %.9g, "
                               "want %.9g", f.name, i, f.dx[i], davg[i]);
        }
        free(dmax);
        free(davg);
        free(want_avg);
        pool_free(&f);
    }
}

/* Central differences of L = sum y r. Max pooling: distinct values at least `gap` apart and a
 * step below half of it, so no probe changes a window's maximum and the difference is exact
 * (y copies x); average pooling is linear: a large step. */
Test(conv, pool_gradcheck)
{
    for (size_t t = 0; t < N_POOL_CASES; t++) {
        pool_fix f;
        pool_init(&f, &pool_cases[t]);
        const double gap = fill_distinct(f.x, f.n_x, 7000 + t);
        tfill(f.r, f.n_y, -1.0f, 1.0f, 7100 + t);

        f.max = true;
        dp_maxpool_forward(&f.p, f.y, f.arg, f.x, f.k.B);
        tfill_nan(f.dx, f.n_x);
        dp_maxpool_backward(&f.p, f.dx, f.r, f.arg, f.k.B);
        double e = gradcheck_vec(f.x, f.n_x, f.dx, 1.0, (float)(0.25 * gap), pool_loss, &f);
        cr_assert_lt(e, 1e-4, "maxpool gradcheck %s: dx max rel err %g", f.name, e);

        f.max = false;
        tfill_nan(f.dx, f.n_x);
        dp_avgpool_backward(&f.p, f.dx, f.r, f.k.B);
        e = gradcheck_vec(f.x, f.n_x, f.dx, 1.0, 0.125f, pool_loss, &f);
        cr_assert_lt(e, 1e-3, "avgpool gradcheck %s: dx max rel err %g", f.name, e);
        pool_free(&f);
    }
}

/* Ties: the first element of the window in row-major order is the maximum and takes the
 * whole gradient (torch on CPU); the other equal elements get exactly 0. */
Test(conv, maxpool_ties_first_in_row_major)
{
    /* One 2x6 plane, maxpool2 (3 windows):
     *   [1 3 | 0 0 | -1 -2]
     *   [3 2 | 0 0 | -1 -1]
     * window 0: 3 at (0,1) and (1,0): (0,1) = index 1 (row-major, not column-major);
     * window 1: constant: its top-left (0,2) = index 2;
     * window 2: -1 at (0,4), (1,4), (1,5): index 4. */
    {
        float x[12] = {1, 3, 0, 0, -1, -2, 3, 2, 0, 0, -1, -1};
        float y[3], dy[3] = {10, 20, 30}, dx[12];
        int32_t arg[3];
        dp_pool p = {.c = 1, .in_h = 2, .in_w = 6, .out_h = 1, .out_w = 3, .kh = 2, .kw = 2,
                     .sh = 2, .sw = 2};
        dp_maxpool_forward(&p, y, arg, x, 1);
        cr_assert_eq(y[0], 3.0f);
        cr_assert_eq(y[1], 0.0f);
        cr_assert_eq(y[2], -1.0f);
        cr_assert_eq(arg[0], 1, "window 0: arg %d, want 1 (row 0, column 1)", arg[0]);
        cr_assert_eq(arg[1], 2, "window 1 (constant): arg %d, want 2", arg[1]);
        cr_assert_eq(arg[2], 4, "window 2: arg %d, want 4", arg[2]);
        tfill_nan(dx, 12);
        dp_maxpool_backward(&p, dx, dy, arg, 1);
        const float want[12] = {0, 10, 20, 0, 30, 0, 0, 0, 0, 0, 0, 0};
        for (int i = 0; i < 12; i++) {
            cr_assert_eq(dx[i], want[i], "ties 2x6: dx[%d] = %g, want %g", i, dx[i], want[i]);
        }
    }
    /* A constant 5x5 plane (2 samples x 2 channels, each its own constant, one negative),
     * maxpool3s2: windows start at rows and columns 0 and 2 and overlap there. Each output's
     * gradient goes to its window's top-left only: (0,0), (0,2), (2,0), (2,2), although
     * (0,2), (2,0) and (2,2) also lie in earlier windows. */
    {
        enum { B = 2, C = 2, H = 5, W = 5, O = 2 };
        float x[B * C * H * W], y[B * C * O * O], dy[B * C * O * O], dx[B * C * H * W];
        int32_t arg[B * C * O * O];
        const float level[B * C] = {0.5f, -7.0f, 0.0f, 2.0f};
        for (int pl = 0; pl < B * C; pl++) {
            for (int i = 0; i < H * W; i++) {
                x[pl * H * W + i] = level[pl];
            }
        }
        for (int i = 0; i < B * C * O * O; i++) {
            dy[i] = (float)(i + 1);
        }
        dp_pool p = {.c = C, .in_h = H, .in_w = W, .out_h = O, .out_w = O, .kh = 3, .kw = 3,
                     .sh = 2, .sw = 2};
        dp_maxpool_forward(&p, y, arg, x, B);
        tfill_nan(dx, B * C * H * W);
        dp_maxpool_backward(&p, dx, dy, arg, B);
        const int32_t first[O * O] = {0, 2, 2 * W, 2 * W + 2};
        for (int pl = 0; pl < B * C; pl++) {
            float want[H * W] = {0};
            for (int q = 0; q < O * O; q++) {
                cr_assert_eq(y[pl * O * O + q], level[pl]);
                cr_assert_eq(arg[pl * O * O + q], first[q], "constant plane %d, output %d: "
                             "arg %d, want %d", pl, q, arg[pl * O * O + q], first[q]);
                want[first[q]] = dy[pl * O * O + q];
            }
            for (int i = 0; i < H * W; i++) {
                cr_assert_eq(dx[pl * H * W + i], want[i], "constant plane %d: dx[%d] = %g, "
                             "want %g", pl, i, dx[pl * H * W + i], want[i]);
            }
        }
    }
}

/* Overlapping windows add: avgpool3s2 of a 5x5 plane with dy = 1 everywhere gives each input
 * (windows covering it) / 9; the centre (2,2) lies in all four windows. */
Test(conv, avgpool_overlaps_add)
{
    float x[25], y[4], dy[4] = {1, 1, 1, 1}, dx[25];
    for (int i = 0; i < 25; i++) {
        x[i] = (float)i;
    }
    dp_pool p = {.c = 1, .in_h = 5, .in_w = 5, .out_h = 2, .out_w = 2, .kh = 3, .kw = 3,
                 .sh = 2, .sw = 2};
    dp_avgpool_forward(&p, y, x, 1);
    /* Window mean = value at its centre (x is linear in position): centres (1,1), (1,3),
     * (3,1), (3,3). */
    const float want_y[4] = {6, 8, 16, 18};
    for (int i = 0; i < 4; i++) {
        cr_assert_float_eq(y[i], want_y[i], 1e-5f, "y[%d] = %g, want %g", i, y[i], want_y[i]);
    }
    tfill_nan(dx, 25);
    dp_avgpool_backward(&p, dx, dy, 1);
    for (int h = 0; h < 5; h++) {
        for (int w = 0; w < 5; w++) {
            const int nh = (h <= 2) + (h >= 2), nw = (w <= 2) + (w >= 2);
            const float want = (float)(nh * nw) / 9.0f;
            cr_assert_float_eq(dx[h * 5 + w], want, 1e-6f, "dx(%d,%d) = %g, want %g", h, w,
                               dx[h * 5 + w], want);
        }
    }
}

/* --- stage tokens ----------------------------------------------------------------------- */

typedef struct {
    const char *tok, *canon;
    dp_stage_kind kind;
    int out_c, kh, kw, sh, sw, ph, pw;
} stage_want;

static const stage_want stage_ok[] = {
    {"conv32k3p1", "conv32k3p1", DP_STAGE_CONV, 32, 3, 3, 1, 1, 1, 1},
    {"conv16k5x3s2p2x1", "conv16k5x3s2p2x1", DP_STAGE_CONV, 16, 5, 3, 2, 2, 2, 1},
    {"maxpool2", "maxpool2", DP_STAGE_MAXPOOL, 0, 2, 2, 2, 2, 0, 0},
    {"avgpool3s2", "avgpool3s2", DP_STAGE_AVGPOOL, 0, 3, 3, 2, 2, 0, 0},
    {"maxpool2x3", "maxpool2x3", DP_STAGE_MAXPOOL, 0, 2, 3, 2, 3, 0, 0},
    {"maxpool2s2", "maxpool2", DP_STAGE_MAXPOOL, 0, 2, 2, 2, 2, 0, 0},
    {"avgpool3x2s1x2", "avgpool3x2s1x2", DP_STAGE_AVGPOOL, 0, 3, 2, 1, 2, 0, 0},
    {"conv8k1", "conv8k1", DP_STAGE_CONV, 8, 1, 1, 1, 1, 0, 0},
    {"conv4k3s1p0", "conv4k3", DP_STAGE_CONV, 4, 3, 3, 1, 1, 0, 0},
    {"conv8k3s1x2p0x2", "conv8k3s1x2p0x2", DP_STAGE_CONV, 8, 3, 3, 1, 2, 0, 2},
    {"conv4096k1", "conv4096k1", DP_STAGE_CONV, 4096, 1, 1, 1, 1, 0, 0},
};

/* s is w's stage; a conv has activation act (the default the parser was given), a pooling
 * none; no batch norm, no dropout. */
static void check_stage(const dp_stage_cfg *s, const stage_want *w, dp_act act, const char *what)
{
    cr_assert_eq(s->kind, w->kind, "%s '%s': kind %d, want %d", what, w->tok, s->kind, w->kind);
    if (w->kind == DP_STAGE_CONV) {
        cr_assert_eq(s->out_c, w->out_c, "%s '%s': out_c %d", what, w->tok, s->out_c);
    }
    cr_assert(s->kh == w->kh && s->kw == w->kw, "%s '%s': kernel %dx%d, want %dx%d", what,
              w->tok, s->kh, s->kw, w->kh, w->kw);
    cr_assert(s->sh == w->sh && s->sw == w->sw, "%s '%s': stride %dx%d, want %dx%d", what,
              w->tok, s->sh, s->sw, w->sh, w->sw);
    cr_assert(s->ph == w->ph && s->pw == w->pw, "%s '%s': padding %dx%d, want %dx%d", what,
              w->tok, s->ph, s->pw, w->ph, w->pw);
    const dp_act want_act = w->kind == DP_STAGE_CONV ? act : DP_ACT_IDENTITY;
    cr_assert_eq(s->act, want_act, "%s '%s': activation %d, want %d", what, w->tok, s->act,
                 want_act);
    cr_assert(!s->batchnorm && s->dropout == 0.0f, "%s '%s': batchnorm/dropout set", what,
              w->tok);
}

/* Each token with the default activations identity and relu: a conv takes the default, a
 * pooling has none. */
Test(conv, stage_parse_accepts)
{
    static const dp_act acts[] = {DP_ACT_IDENTITY, DP_ACT_RELU};
    for (size_t a = 0; a < 2; a++) {
        for (size_t i = 0; i < sizeof stage_ok / sizeof stage_ok[0]; i++) {
            dp_stage_cfg s;
            memset(&s, 0xA5, sizeof s);
            int rc = dp_stage_parse(stage_ok[i].tok, acts[a], &s);
            cr_assert_eq(rc, DP_OK, "'%s' refused: %s", stage_ok[i].tok, dp_errmsg());
            check_stage(&s, &stage_ok[i], acts[a], "parse");
        }
    }
}

/* A conv's settings: an activation (overriding the default), bn, dropout=P. */
Test(conv, stage_parse_settings)
{
    dp_stage_cfg s;
    cr_assert_eq(dp_stage_parse("conv16k5x3s2p2x1:tanh:bn:dropout=0.2", DP_ACT_RELU, &s),
                 DP_OK, "%s", dp_errmsg());
    cr_assert(s.kind == DP_STAGE_CONV && s.out_c == 16 && s.kh == 5 && s.kw == 3 &&
              s.sh == 2 && s.sw == 2 && s.ph == 2 && s.pw == 1);
    cr_assert_eq(s.act, DP_ACT_TANH);
    cr_assert(s.batchnorm);
    cr_assert_float_eq(s.dropout, 0.2f, 1e-7f);

    cr_assert_eq(dp_stage_parse("conv8k3p1:bn", DP_ACT_RELU, &s), DP_OK, "%s", dp_errmsg());
    cr_assert(s.act == DP_ACT_RELU && s.batchnorm && s.dropout == 0.0f);
    cr_assert_eq(dp_stage_parse("conv8k3:dropout=0", DP_ACT_GELU, &s), DP_OK, "%s",
                 dp_errmsg());
    cr_assert(s.act == DP_ACT_GELU && !s.batchnorm && s.dropout == 0.0f);
    cr_assert_eq(dp_stage_parse("conv8k3:identity", DP_ACT_RELU, &s), DP_OK, "%s",
                 dp_errmsg());
    cr_assert(s.act == DP_ACT_IDENTITY && s.kh == 3 && s.out_c == 8);
}

Test(conv, stage_parse_rejects)
{
    static const char *const bad[] = {
        "conv", "conv0k3", "conv32k0", "convk3", "maxpool2p1", "pool2", "conv32k3q1",
        "conv32k3p-1", "maxpool0", "", "conv32", "conv32k", "conv32k3s0", "conv32k3s",
        "conv32k3p", "conv32k3p1x", "conv32x16k3", "conv-32k3", "conv+32k3", "conv32k3s-2",
        "maxpool", "avgpool2s0", "maxpool2k2", "Conv32k3", "conv32k3 ", "conv32k3p1s1s",
        "conv32k4097", "conv99999999999999999999k3", "avgpool2x0", "maxpool2s1x0",
        /* settings */
        "maxpool2:relu", "avgpool2:bn", "conv8k3:", "conv8k3::relu", "conv8k3:bogus",
        "conv8k3:softmax", "conv8k3:step", "conv8k3:dropout=1", "conv8k3:dropout=-0.1",
        "conv8k3:dropout=", "conv8k3:dropout=0.5x", "conv8k3:dropout=nan", "conv8k3:relu:",
        "conv8q3:relu",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dp_stage_cfg s;
        dp_err_clear();
        int rc = dp_stage_parse(bad[i], DP_ACT_RELU, &s);
        cr_assert_eq(rc, DP_EINVAL, "'%s' accepted (rc %d)", bad[i], rc);
        /* The message names the token (at least the part before the settings). */
        char head[64];
        snprintf(head, sizeof head, "%.*s", (int)strcspn(bad[i], ":"), bad[i]);
        cr_assert(strstr(dp_errmsg(), head) != NULL, "'%s': message does not name it: %s",
                  bad[i], dp_errmsg());
    }
}

/* format(parse(t)) without settings is the canonical token (defaults left out) and parses
 * back to the same stage; with settings, a conv's settings come back too (a pooling has
 * none); snprintf's contract on a short buffer. */
Test(conv, stage_format_round_trips)
{
    for (size_t i = 0; i < sizeof stage_ok / sizeof stage_ok[0]; i++) {
        const stage_want *w = &stage_ok[i];
        dp_stage_cfg s, back;
        cr_assert_eq(dp_stage_parse(w->tok, DP_ACT_IDENTITY, &s), DP_OK);
        char buf[64];
        int n = dp_stage_format(&s, false, buf, sizeof buf);
        cr_assert_str_eq(buf, w->canon, "format of '%s': '%s', want '%s'", w->tok, buf,
                         w->canon);
        cr_assert_eq(n, (int)strlen(w->canon));
        cr_assert_eq(dp_stage_parse(buf, DP_ACT_IDENTITY, &back), DP_OK,
                     "'%s' does not parse back", buf);
        check_stage(&back, w, DP_ACT_IDENTITY, "round trip");

        /* With settings: the activation is written, so it survives another default. */
        cr_assert_eq(dp_stage_parse(w->tok, DP_ACT_TANH, &s), DP_OK);
        dp_stage_format(&s, true, buf, sizeof buf);
        cr_assert_eq(dp_stage_parse(buf, DP_ACT_RELU, &back), DP_OK,
                     "'%s' does not parse back: %s", buf, dp_errmsg());
        check_stage(&back, w, DP_ACT_TANH, "round trip with settings");
    }
    static const char *const full[] = {"conv16k5x3s2p2x1:tanh:bn:dropout=0.2",
                                       "conv8k3p1:relu:bn", "conv4k1:gelu:dropout=0.5"};
    for (size_t i = 0; i < sizeof full / sizeof full[0]; i++) {
        dp_stage_cfg s;
        cr_assert_eq(dp_stage_parse(full[i], DP_ACT_IDENTITY, &s), DP_OK, "%s", dp_errmsg());
        char buf[96];
        int n = dp_stage_format(&s, true, buf, sizeof buf);
        cr_assert_str_eq(buf, full[i]);
        cr_assert_eq(n, (int)strlen(full[i]));
    }
    dp_stage_cfg s;
    cr_assert_eq(dp_stage_parse("conv16k5x3s2p2x1", DP_ACT_IDENTITY, &s), DP_OK);
    char small[8];
    memset(small, 'Z', sizeof small);
    int n = dp_stage_format(&s, false, small, sizeof small);
    cr_assert_eq(n, (int)strlen("conv16k5x3s2p2x1"));
    cr_assert_str_eq(small, "conv16k");
}

/* --- shapes ----------------------------------------------------------------------------- */

static void set_stages(dp_model_cfg *cfg, const char *const *toks, int n)
{
    cfg->n_stages = n;
    for (int j = 0; j < n; j++) {
        cr_assert_eq(dp_stage_parse(toks[j], DP_ACT_RELU, &cfg->stage[j]), DP_OK, "%s",
                     dp_errmsg());
    }
}

Test(conv, shapes_mnist_stack)
{
    static const char *const toks[] = {"conv32k3p1", "maxpool2", "conv64k3p1", "maxpool2"};
    dp_model_cfg cfg = {0};
    cfg.in_c = 1;
    cfg.in_h = 28;
    cfg.in_w = 28;
    set_stages(&cfg, toks, 4);
    int c[DP_MAX_STAGES + 1], h[DP_MAX_STAGES + 1], w[DP_MAX_STAGES + 1], features = -1;
    cr_assert_eq(dp_model_cfg_shapes(&cfg, c, h, w, &features), DP_OK, "%s", dp_errmsg());
    const int wc[5] = {1, 32, 32, 64, 64}, wh[5] = {28, 28, 14, 14, 7};
    for (int j = 0; j <= 4; j++) {
        cr_assert(c[j] == wc[j] && h[j] == wh[j] && w[j] == wh[j],
                  "stage %d: %dx%dx%d, want %dx%dx%d", j, c[j], h[j], w[j], wc[j], wh[j],
                  wh[j]);
    }
    cr_assert_eq(features, 3136);
    cr_assert_eq(dp_model_cfg_inputs(&cfg), 784);

    cfg.gap = true;
    features = -1;
    cr_assert_eq(dp_model_cfg_shapes(&cfg, c, h, w, &features), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(features, 64);
    cr_assert(c[4] == 64 && h[4] == 7 && w[4] == 7);
}

/* Non-square: 3x7x9, conv5k3x2s2x1p1x0: h = (7 + 2 - 3)/2 + 1 = 4, w = (9 - 2)/1 + 1 = 8;
 * avgpool3s2: h = (4 - 3)/2 + 1 = 1, w = (8 - 3)/2 + 1 = 3: 5*1*3 = 15 features. A window
 * that fits only with its padding (1x1 input, conv2k3p1) and one that fits exactly. */
Test(conv, shapes_non_square_and_padding)
{
    int c[DP_MAX_STAGES + 1], h[DP_MAX_STAGES + 1], w[DP_MAX_STAGES + 1], features = -1;
    dp_model_cfg cfg = {0};
    cfg.in_c = 3;
    cfg.in_h = 7;
    cfg.in_w = 9;
    static const char *const t1[] = {"conv5k3x2s2x1p1x0", "avgpool3s2"};
    set_stages(&cfg, t1, 2);
    cr_assert_eq(dp_model_cfg_shapes(&cfg, c, h, w, &features), DP_OK, "%s", dp_errmsg());
    cr_assert(c[1] == 5 && h[1] == 4 && w[1] == 8, "conv: %dx%dx%d", c[1], h[1], w[1]);
    cr_assert(c[2] == 5 && h[2] == 1 && w[2] == 3, "pool: %dx%dx%d", c[2], h[2], w[2]);
    cr_assert_eq(features, 15);

    cfg.in_c = 1;
    cfg.in_h = 1;
    cfg.in_w = 1;
    static const char *const t2[] = {"conv2k3p1"};
    set_stages(&cfg, t2, 1);
    cr_assert_eq(dp_model_cfg_shapes(&cfg, c, h, w, &features), DP_OK, "%s", dp_errmsg());
    cr_assert(c[1] == 2 && h[1] == 1 && w[1] == 1 && features == 2);

    cfg.in_h = 3;
    cfg.in_w = 4;
    static const char *const t3[] = {"maxpool3x4"};
    set_stages(&cfg, t3, 1);
    cr_assert_eq(dp_model_cfg_shapes(&cfg, c, h, w, &features), DP_OK, "%s", dp_errmsg());
    cr_assert(c[1] == 1 && h[1] == 1 && w[1] == 1 && features == 1);
}

/* A window that does not fit: DP_EINVAL, and the message names the layer (number and
 * token). 1x28x28: conv32k3 -> 26, maxpool2 -> 13, conv64k5 -> 9, maxpool2 -> 4, conv8k5
 * (layer 5) does not fit 4x4. And a pooling window larger than a 3x3 input (layer 1). */
Test(conv, shapes_window_does_not_fit)
{
    int c[DP_MAX_STAGES + 1], h[DP_MAX_STAGES + 1], w[DP_MAX_STAGES + 1], features = -1;
    dp_model_cfg cfg = {0};
    cfg.in_c = 1;
    cfg.in_h = 28;
    cfg.in_w = 28;
    static const char *const t1[] = {"conv32k3", "maxpool2", "conv64k5", "maxpool2", "conv8k5"};
    set_stages(&cfg, t1, 5);
    dp_err_clear();
    cr_assert_eq(dp_model_cfg_shapes(&cfg, c, h, w, &features), DP_EINVAL);
    const char *msg = dp_errmsg();
    cr_assert(strstr(msg, "layer 5") && strstr(msg, "conv8k5"), "message: %s", msg);

    cfg.in_h = 3;
    cfg.in_w = 3;
    static const char *const t2[] = {"maxpool4"};
    set_stages(&cfg, t2, 1);
    dp_err_clear();
    cr_assert_eq(dp_model_cfg_shapes(&cfg, c, h, w, &features), DP_EINVAL);
    msg = dp_errmsg();
    cr_assert(strstr(msg, "layer 1") && strstr(msg, "maxpool4"), "message: %s", msg);

    /* Only the width misses: 28x3, conv8k3x4. */
    cfg.in_h = 28;
    static const char *const t3[] = {"conv8k3x4"};
    set_stages(&cfg, t3, 1);
    dp_err_clear();
    cr_assert_eq(dp_model_cfg_shapes(&cfg, c, h, w, &features), DP_EINVAL);
    msg = dp_errmsg();
    cr_assert(strstr(msg, "layer 1") && strstr(msg, "conv8k3x4"), "message: %s", msg);
}

/* A NaN in a window is the window's maximum wherever it is (torch's CPU rule), so a pooling
 * never hides one. */
Test(conv, maxpool_propagates_nan)
{
    const dp_pool p = {.c = 1, .in_h = 2, .in_w = 4, .out_h = 1, .out_w = 2, .kh = 2, .kw = 2,
                       .sh = 2, .sw = 2};
    const float x[8] = {1.0f, NAN, 5.0f, 6.0f, 2.0f, 0.0f, 7.0f, NAN};
    float y[2];
    int32_t arg[2];
    dp_maxpool_forward(&p, y, arg, x, 1);
    cr_assert(isnan(y[0]) && arg[0] == 1, "window 0: y %g arg %d", y[0], arg[0]);
    cr_assert(isnan(y[1]) && arg[1] == 7, "window 1: y %g arg %d", y[1], arg[1]);
    const dp_pool p3 = {.c = 1, .in_h = 2, .in_w = 4, .out_h = 1, .out_w = 1, .kh = 2, .kw = 3,
                        .sh = 2, .sw = 3};
    dp_maxpool_forward(&p3, y, arg, x, 1);
    cr_assert(isnan(y[0]) && arg[0] == 1, "2x3 window: y %g arg %d", y[0], arg[0]);
}

/* The 2x2 pooling takes four windows at a time: its ties and NaNs follow the same order as
 * one window at a time (row-major: (0,0), (0,1), (1,0), (1,1)), in both parts of a row. */
Test(conv, maxpool_2x2_ties_and_nan_in_every_lane)
{
    enum { H = 2, W = 14, WO = 7 };
    const dp_pool p = {.c = 1, .in_h = H, .in_w = W, .out_h = 1, .out_w = WO, .kh = 2, .kw = 2,
                       .sh = 2, .sw = 2};
    /* window q: columns 2q, 2q+1. Per window: the value pattern and the expected winner
     * (0: (0,0), 1: (0,1), 2: (1,0), 3: (1,1)). */
    static const float pat[WO][4] = {
        {3, 3, 3, 3},      /* all tie: (0,0) */
        {1, 3, 3, 2},      /* (0,1) and (1,0) tie: (0,1) comes first */
        {1, 2, 3, 3},      /* (1,0) and (1,1) tie: (1,0) */
        {1, NAN, 3, 4},    /* a NaN wins where it stands */
        {NAN, 5, 6, 7},    /* a NaN first stays */
        {0, -1, -2, NAN},  /* the last NaN */
        {-5, -4, -3, -2},  /* plain maximum last */
    };
    static const int want[WO] = {0, 1, 2, 1, 0, 3, 3};
    float x[H * W], y[WO];
    int32_t arg[WO];
    for (int q = 0; q < WO; q++) {
        x[2 * q] = pat[q][0];
        x[2 * q + 1] = pat[q][1];
        x[W + 2 * q] = pat[q][2];
        x[W + 2 * q + 1] = pat[q][3];
    }
    dp_maxpool_forward(&p, y, arg, x, 1);
    for (int q = 0; q < WO; q++) {
        const int off[4] = {0, 1, W, W + 1};
        const int k = want[q];
        cr_assert_eq(arg[q], 2 * q + off[k], "window %d: arg %d, want %d", q, arg[q],
                     2 * q + off[k]);
        const float v = pat[q][k];
        cr_assert(isnan(v) ? isnan(y[q]) : y[q] == v, "window %d: y %g, want %g", q, y[q], v);
    }
}
