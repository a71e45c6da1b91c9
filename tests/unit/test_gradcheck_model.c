/* test_gradcheck_model.c: finite-difference gradient checks of whole models: the loss of
 * forward(x) as a function of every parameter, for several layer stacks, activations and
 * losses, and backward with accumulate. Suite core_grad (tests model_*).
 * Expected values come from independent computation in the test (central differences in
 * double, hand-worked formulas), never from program output. */
#include <criterion/criterion.h>

#include "testutil.h"

#include "dptrain/err.h"
#include "dptrain/nn.h"
#include "core/model_impl.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* gradcheck_vec (central differences, max relative error; the method): testutil.h. */

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
