/* test_dense.c: unit tests of the dense layer: finite-difference gradient checks of dw, db and
 * dx (overwritten or accumulated, which must add exactly once), the forward pass by hand and
 * an empty batch. Suite core_grad (tests dense_*; the suite's other tests: test_act.c,
 * test_loss.c, test_gradcheck_model.c).
 * Expected values come from independent computation in the test (central differences in
 * double, hand-worked formulas), never from program output. */
#include <criterion/criterion.h>

#include "testutil.h"

#include "dptrain/nn.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* gradcheck_vec (central differences, max relative error; the method): testutil.h. */

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
