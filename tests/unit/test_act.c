/* test_act.c: unit tests of the activations: finite-difference gradient checks of every
 * activation (also in place), values by hand, and the step function's zero gradient.
 * Suite core_grad (tests activation*, new_activation_values_by_hand, step_has_zero_gradient).
 * Expected values come from independent computation in the test (central differences in
 * double, hand-worked formulas), never from program output. */
#include <criterion/criterion.h>

#include "testutil.h"

#include "dptrain/nn.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* gradcheck_vec (central differences, max relative error; the method): testutil.h. */

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
