/* test_loss.c: unit tests of the losses: finite-difference gradient checks of every loss
 * (suite core_grad: losses, binary_losses_on_labels, cross_entropy_*, mse_by_hand) and every
 * loss by hand: values, gradients, correct rows, stability at large logits, missing targets
 * and the trainer's helpers (suite core_losses).
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
