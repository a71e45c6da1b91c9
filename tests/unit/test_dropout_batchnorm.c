/* test_dropout_batchnorm.c: unit tests of the model's training mode: dropout (mask
 * statistics, scaling, the mask's key, independence from row order and batch split,
 * evaluation mode) and batch normalization (statistics, running statistics, evaluation mode by
 * hand, parameter and buffer layout, gradient checks, a batch split over two or three "ranks"
 * played by threads whose sum callback adds their buffers), plus config validation.
 * Suites core_dropout and core_bn.
 * Expected values come from independent computation in the test (central differences in
 * double, hand-worked formulas), never from program output. */
#include <criterion/criterion.h>

#include "testutil.h"

#include "dptrain/err.h"
#include "dptrain/nn.h"
#include "dptrain/rng.h"
#include "core/model_impl.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Test data helpers (tgen_next, tfill, talloc, tfill_nan): testutil.h. */

static dp_model *make_model(const dp_model_cfg *cfg)
{
    dp_model *m = NULL;
    cr_assert_eq(dp_model_create(cfg, &m), DP_OK, "%s", dp_errmsg());
    cr_assert_not_null(m);
    return m;
}

/* Gives every batch-norm layer non-trivial gamma in [0.5, 1.5) and beta in [-0.5, 0.5), and
 * every bias values in [-0.5, 0.5), so that they all matter. */
static void perturb_params(dp_model *m, uint64_t seed)
{
    const dp_model_cfg *c = dp_model_config(m);
    for (int i = 0; i < c->n_layers; i++) {
        dp_dense *l = dp_model_layer(m, i);
        tfill(l->b, l->out, -0.5f, 0.5f, seed + 10 + i);
        float *g = NULL, *b = NULL;
        if (dp_model_bn_layer(m, i, &g, &b, NULL, NULL)) {
            tfill(g, l->out, 0.5f, 1.5f, seed + 50 + i);
            tfill(b, l->out, -0.5f, 0.5f, seed + 90 + i);
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * Finite differences against a reference.
 *
 * Batch norm makes the loss curved and its float forward noisy (the gradient of a bias that
 * batch norm follows is exactly 0, and the float forward's rounding gives its difference
 * quotient 1e-5 of noise): differences of the float forward cannot tell a 1% error from
 * noise. So the loss is re-evaluated by an independent reference forward written here in
 * double (dense, batch norm, activations, dropout masks from the documented formula, loss),
 * which reads the float parameters under test, is itself checked against the float forward,
 * and makes the central difference (f(v+h) - f(v-h)) / ((v+h) - (v-h)) accurate to ~1e-7 at
 * h = 1e-3. Error as gradcheck_vec's (testutil.h): max_i |a_i - n_i| / max(1e-3, |a_i| +
 * |n_i|); measured at most 1.2e-4 (the float analytic gradient's rounding), tolerance 1e-3. */

/* gradcheck_vec (central differences, max relative error): testutil.h. */

/* The mask value the documented formula gives (computed here without dp_rng_uniform). */
static float want_mask(uint64_t seed, long step, int layer, size_t id, int width, int j,
                       float p)
{
    uint64_t key = dp_rng_hash(seed ^ 0x44524f50ULL, (uint64_t)step);
    uint64_t h = dp_rng_hash(key, ((uint64_t)layer << 56) ^ ((uint64_t)id * width + j));
    double u = (double)(h >> 40) / 16777216.0;
    return u >= p ? 1.0f / (1.0f - p) : 0.0f;
}

enum { REF_ROWS = 16, REF_WIDTH = 16 };

typedef struct {
    dp_model *m;            /* parameters, running statistics and config under test */
    const float *x;
    dp_targets t;
    dp_loss loss;           /* cross-entropy or mse */
    int B, k;
    const dp_train_ctx *tc; /* NULL: evaluation mode; else training mode, sum must be NULL */
    double out[REF_ROWS * REF_WIDTH];
} ref_ctx;

static double ref_act(dp_act a, double z)
{
    switch (a) {
    case DP_ACT_IDENTITY:
        return z;
    case DP_ACT_TANH:
        return tanh(z);
    case DP_ACT_SIGMOID:
        return 1.0 / (1.0 + exp(-z));
    case DP_ACT_GELU:
        return 0.5 * z * (1.0 + erf(z / sqrt(2.0)));
    default:
        cr_assert_fail("reference: activation %s not implemented", dp_act_name(a));
    }
    return NAN;
}

/* The model's loss (sum over rows) in double; the output is left in d->out. */
static double ref_loss(void *p)
{
    ref_ctx *d = p;
    const dp_model_cfg *c = dp_model_config(d->m);
    double cur[REF_ROWS * REF_WIDTH], nxt[REF_ROWS * REF_WIDTH];
    int B = d->B, w = c->sizes[0];
    cr_assert_leq(B, REF_ROWS);
    for (int i = 0; i < B * w; i++) {
        cur[i] = d->x[i];
    }
    for (int L = 0; L < c->n_layers; L++) {
        const dp_dense *l = dp_model_layer_const(d->m, L);
        int o = l->out;
        cr_assert_leq(o, REF_WIDTH);
        for (int r = 0; r < B; r++) {
            for (int j = 0; j < o; j++) {
                double s = l->b[j];
                for (int q = 0; q < w; q++) {
                    s += (double)l->w[j * w + q] * cur[r * w + q];
                }
                nxt[r * o + j] = s;
            }
        }
        float *ga, *be, *rm, *rv;
        if (dp_model_bn_layer(d->m, L, &ga, &be, &rm, &rv)) {
            for (int j = 0; j < o; j++) {
                double mean = rm[j], var = rv[j];
                if (d->tc) {
                    mean = var = 0.0;
                    for (int r = 0; r < B; r++) {
                        mean += nxt[r * o + j] / B;
                    }
                    for (int r = 0; r < B; r++) {
                        var += (nxt[r * o + j] - mean) * (nxt[r * o + j] - mean) / B;
                    }
                }
                for (int r = 0; r < B; r++) {
                    double xh = (nxt[r * o + j] - mean) / sqrt(var + (double)c->bn_eps);
                    nxt[r * o + j] = ga[j] * xh + be[j];
                }
            }
        }
        for (int r = 0; r < B; r++) {
            for (int j = 0; j < o; j++) {
                double a = ref_act(l->act, nxt[r * o + j]);
                if (d->tc && c->dropout[L] > 0.0f) {
                    a *= want_mask(d->tc->seed, d->tc->step, L, d->tc->sample_ids[r], o, j,
                                   c->dropout[L]);
                }
                cur[r * o + j] = a;
            }
        }
        w = o;
    }
    double s = 0.0;
    for (int r = 0; r < B; r++) {
        const double *y = cur + r * d->k;
        if (d->loss == DP_LOSS_CROSS_ENTROPY) {
            double mx = y[0], z = 0.0;
            for (int j = 1; j < d->k; j++) {
                mx = fmax(mx, y[j]);
            }
            for (int j = 0; j < d->k; j++) {
                z += exp(y[j] - mx);
            }
            s += mx + log(z) - y[d->t.labels[r]];
        } else {
            cr_assert_eq(d->loss, DP_LOSS_MSE, "reference: loss not implemented");
            for (int j = 0; j < d->k; j++) {
                double e = y[j] - d->t.values[r * d->k + j];
                s += e * e / d->k;
            }
        }
    }
    memcpy(d->out, cur, sizeof(double) * B * d->k);
    return s;
}

/* Runs the model's forward (training mode with tc, else evaluation), the loss (scale) and
 * backward; checks the float output against the reference; returns the max relative error
 * of every gradient against central differences of the reference. */
static double gradcheck_with_ref(dp_model *m, const float *x, int B, dp_loss loss,
                                 const int32_t *labels, const float *values, float scale,
                                 const dp_train_ctx *tc)
{
    const dp_model_cfg *c = dp_model_config(m);
    int k = c->sizes[c->n_layers];
    size_t n = dp_model_n_params(m);
    float *params = dp_model_params(m), *grads = dp_model_grads(m);
    ref_ctx *ctx = calloc(1, sizeof *ctx);
    cr_assert_not_null(ctx);
    *ctx = (ref_ctx){.m = m, .x = x, .t = {.labels = labels, .values = values}, .loss = loss,
                     .B = B, .k = k, .tc = tc};
    const float *out = tc ? dp_model_forward_train(m, x, B, tc) : dp_model_forward(m, x, B);
    cr_assert_not_null(out, "%s", dp_errmsg());
    float *dout = dp_model_dout(m);
    double lf = dp_loss_eval(loss, out, &ctx->t, B, k, scale, dout, NULL);
    double lr = ref_loss(ctx);
    for (int i = 0; i < B * k; i++) {
        cr_assert(fabs(out[i] - ctx->out[i]) < 1e-4 * (1 + fabs(ctx->out[i])),
                  "test reference: output %d = %g, the model gives %g", i, ctx->out[i], out[i]);
    }
    cr_assert(fabs(lf - lr) < 1e-4 * (1 + fabs(lr)), "test reference: loss %g vs %g", lr, lf);
    tfill_nan(grads, n); /* accumulate = false must overwrite every gradient */
    cr_assert_eq(dp_model_backward(m, x, dout, B, false), DP_OK, "%s", dp_errmsg());
    float *analytic = talloc(n);
    memcpy(analytic, grads, n * sizeof *analytic);
    double e = gradcheck_vec(params, n, analytic, scale, 1e-3f, ref_loss, ctx);
    free(analytic);
    free(ctx);
    return e;
}

/* Builds cfg (sizes, acts, dropout, batchnorm filled by the caller; max_batch = B), perturbs
 * biases, gamma and beta, and returns gradcheck_with_ref over every parameter, on inputs in
 * [-1.5, 1.5), labels r % k and values in [-1, 1). */
static double gradcheck_model(dp_model_cfg cfg, dp_loss loss, int B, float scale,
                              const dp_train_ctx *tc)
{
    cfg.max_batch = B;
    cfg.init = DP_INIT_XAVIER_NORMAL;
    dp_model *m = make_model(&cfg);
    perturb_params(m, cfg.seed);
    int k = cfg.sizes[cfg.n_layers], in = cfg.sizes[0];
    float *x = talloc((size_t)B * in), *values = talloc((size_t)B * k);
    int32_t *labels = calloc((size_t)B, sizeof *labels);
    cr_assert_not_null(labels);
    tfill(x, (size_t)B * in, -1.5f, 1.5f, cfg.seed + 1);
    tfill(values, (size_t)B * k, -1.0f, 1.0f, cfg.seed + 2);
    for (int r = 0; r < B; r++) {
        labels[r] = (int32_t)(r % k);
    }
    double e = gradcheck_with_ref(m, x, B, loss, labels, values, scale, tc);
    dp_model_free(&m);
    free(x);
    free(values);
    free(labels);
    return e;
}

/* ---------------------------------------------------------------------------------------
 * 1. Dropout */

TestSuite(core_dropout);


Test(core_dropout, fraction_scale_and_key)
{
    /* 100 rows x 100 hidden units = 10k mask entries; p = 0.3. Binomial std of the dropped
     * fraction is sqrt(0.21/10000) = 0.0046: a tolerance of 0.02 is over 4 std. */
    const int B = 100, H = 100;
    const float p = 0.3f;
    dp_model_cfg cfg = {.n_layers = 2, .sizes = {4, H, 3},
                        .act = {DP_ACT_TANH, DP_ACT_IDENTITY}, .init = DP_INIT_XAVIER_NORMAL,
                        .seed = 7, .max_batch = B, .dropout = {p}};
    dp_model *m = make_model(&cfg);
    float *x = talloc((size_t)B * 4);
    size_t *ids = calloc(B, sizeof *ids);
    cr_assert_not_null(ids);
    tfill(x, (size_t)B * 4, -1, 1, 3);
    for (int r = 0; r < B; r++) {
        ids[r] = 1000 + 7 * (size_t)r;
    }
    dp_train_ctx tc = {.seed = 99, .step = 5, .sample_ids = ids};
    const float *y = dp_model_forward_train(m, x, B, &tc);
    cr_assert_not_null(y, "%s", dp_errmsg());
    const float scale = 1.0f / (1.0f - p);
    long dropped = 0;
    for (int r = 0; r < B; r++) {
        for (int j = 0; j < H; j++) {
            size_t k = (size_t)r * H + j;
            float a = m->a[0][k], d = m->drop[0][k];
            cr_assert_neq(a, 0.0f, "test setup: tanh output exactly 0");
            float want = want_mask(99, 5, 0, ids[r], H, j, p);
            cr_assert_eq(m->mask[0][k], want, "mask[%d][%d] = %g, the formula gives %g", r, j,
                         m->mask[0][k], want);
            if (d == 0.0f) {
                dropped++;
            } else {
                cr_assert_eq(d, a * scale, "kept unit [%d][%d] = %g, want %g * %g", r, j, d, a,
                             scale);
            }
        }
    }
    double frac = (double)dropped / (B * H);
    cr_assert(fabs(frac - p) < 0.02, "dropped fraction %g, want %g +- 0.02", frac, p);
    /* The next layer reads the dropped activations: output by hand in double. */
    const dp_dense *l1 = dp_model_layer_const(m, 1);
    for (int r = 0; r < B; r++) {
        for (int o = 0; o < 3; o++) {
            double s = l1->b[o];
            for (int j = 0; j < H; j++) {
                float a = m->a[0][(size_t)r * H + j];
                s += (double)l1->w[(size_t)o * H + j] *
                     (a * want_mask(99, 5, 0, ids[r], H, j, p));
            }
            cr_assert(fabs(y[r * 3 + o] - s) < 1e-4 * (1 + fabs(s)), "y[%d][%d] = %g, want %g",
                      r, o, y[r * 3 + o], s);
        }
    }
    dp_model_free(&m);
    free(x);
    free(ids);
}

/* Forward-train of rows `rows` (indices into x, ids) of a batch; copies mask and output. */
static void forward_rows(dp_model *m, const float *x, const size_t *ids, const int *rows,
                         int n, int in, long step, float *mask_out, float *y_out, int H, int k)
{
    float xs[64 * 8];
    size_t is[64];
    cr_assert_leq(n, 64);
    cr_assert_leq(in, 8);
    for (int r = 0; r < n; r++) {
        memcpy(xs + (size_t)r * in, x + (size_t)rows[r] * in, (size_t)in * sizeof *xs);
        is[r] = ids[rows[r]];
    }
    dp_train_ctx tc = {.seed = 3, .step = step, .sample_ids = is};
    const float *y = dp_model_forward_train(m, xs, n, &tc);
    cr_assert_not_null(y, "%s", dp_errmsg());
    for (int r = 0; r < n; r++) {
        memcpy(mask_out + (size_t)rows[r] * H, m->mask[0] + (size_t)r * H, (size_t)H * 4);
        memcpy(y_out + (size_t)rows[r] * k, y + (size_t)r * k, (size_t)k * 4);
    }
}

Test(core_dropout, masks_follow_sample_ids_not_rows)
{
    enum { B = 8, IN = 3, H = 16, K = 2 };
    dp_model_cfg cfg = {.n_layers = 2, .sizes = {IN, H, K},
                        .act = {DP_ACT_SIGMOID, DP_ACT_IDENTITY}, .init = DP_INIT_HE_NORMAL,
                        .seed = 11, .max_batch = B, .dropout = {0.5f}};
    dp_model *m = make_model(&cfg);
    float x[B * IN];
    size_t ids[B] = {40, 3, 17, 8, 91, 23, 5, 60};
    tfill(x, B * IN, -1, 1, 5);
    const int whole[B] = {0, 1, 2, 3, 4, 5, 6, 7}, shuffled[B] = {5, 2, 7, 0, 3, 6, 1, 4};
    const int half1[4] = {0, 1, 2, 3}, half2[4] = {4, 5, 6, 7};
    float mw[B * H], ms[B * H], mh[B * H], m2[B * H], yw[B * K], ys[B * K], yh[B * K], y2[B * K];
    forward_rows(m, x, ids, whole, B, IN, 4, mw, yw, H, K);
    forward_rows(m, x, ids, shuffled, B, IN, 4, ms, ys, H, K);
    forward_rows(m, x, ids, half2, 4, IN, 4, mh, yh, H, K); /* another "rank" first */
    forward_rows(m, x, ids, half1, 4, IN, 4, mh, yh, H, K);
    for (int i = 0; i < B * H; i++) {
        cr_assert_eq(ms[i], mw[i], "shuffled rows: mask entry %d differs", i);
        cr_assert_eq(mh[i], mw[i], "split batch: mask entry %d differs", i);
    }
    for (int i = 0; i < B * K; i++) {
        cr_assert_float_eq(ys[i], yw[i], 1e-6f, "shuffled rows: output %d differs", i);
        cr_assert_float_eq(yh[i], yw[i], 1e-6f, "split batch: output %d differs", i);
    }
    int zeros = 0;
    for (int i = 0; i < B * H; i++) {
        zeros += mw[i] == 0.0f;
    }
    cr_assert(zeros > 0 && zeros < B * H, "test setup: %d of %d dropped", zeros, B * H);
    /* Another step: another mask (entries differ with probability 1/2 at p = 0.5). */
    forward_rows(m, x, ids, whole, B, IN, 5, m2, y2, H, K);
    int differ = 0;
    for (int i = 0; i < B * H; i++) {
        differ += m2[i] != mw[i];
    }
    cr_assert(differ > B * H / 4 && differ < 3 * B * H / 4,
              "step 4 vs 5: %d of %d mask entries differ (want about half)", differ, B * H);
    /* Another sample id, same row: another mask row. */
    ids[0] = 41;
    forward_rows(m, x, ids, whole, B, IN, 4, m2, y2, H, K);
    differ = 0;
    for (int j = 0; j < H; j++) {
        differ += m2[j] != mw[j];
    }
    cr_assert_gt(differ, 0, "the mask of row 0 does not depend on its sample id");
    dp_model_free(&m);
}

Test(core_dropout, eval_mode_has_no_dropout)
{
    enum { B = 6, IN = 4, K = 3 };
    dp_model_cfg cfg = {.n_layers = 3, .sizes = {IN, 9, 7, K},
                        .act = {DP_ACT_TANH, DP_ACT_GELU, DP_ACT_IDENTITY},
                        .init = DP_INIT_HE_NORMAL, .seed = 21, .max_batch = B,
                        .dropout = {0.4f, 0.6f}};
    dp_model_cfg plain = cfg;
    plain.dropout[0] = plain.dropout[1] = 0.0f;
    dp_model *m = make_model(&cfg), *p = make_model(&plain);
    cr_assert_eq(dp_model_n_params(m), dp_model_n_params(p), "dropout must add no parameter");
    cr_assert_eq(dp_model_n_buffers(m), 0);
    float x[B * IN], yp[B * K];
    size_t ids[B] = {0, 1, 2, 3, 4, 5};
    tfill(x, B * IN, -1, 1, 8);
    memcpy(yp, dp_model_forward(p, x, B), sizeof yp);
    dp_train_ctx tc = {.seed = 1, .step = 0, .sample_ids = ids};
    const float *yt = dp_model_forward_train(m, x, B, &tc);
    cr_assert_not_null(yt, "%s", dp_errmsg());
    int same = 0;
    for (int i = 0; i < B * K; i++) {
        same += yt[i] == yp[i];
    }
    cr_assert_lt(same, B * K, "test setup: training forward shows no dropout");
    const float *ye = dp_model_forward(m, x, B);
    for (int i = 0; i < B * K; i++) {
        cr_assert_eq(ye[i], yp[i], "eval output %d = %g, without dropout %g", i, ye[i], yp[i]);
    }
    /* Eval-mode backward after an eval forward: the plain model's gradient. */
    float dout[B * K];
    tfill(dout, B * K, -1, 1, 9);
    cr_assert_eq(dp_model_backward(m, x, dout, B, false), DP_OK);
    dp_model_forward(p, x, B);
    cr_assert_eq(dp_model_backward(p, x, dout, B, false), DP_OK);
    cr_assert_eq(memcmp(dp_model_grads(m), dp_model_grads(p),
                        dp_model_n_params(m) * sizeof(float)), 0,
                 "eval-mode gradients differ from the model without dropout");
    dp_model_free(&m);
    dp_model_free(&p);
}

Test(core_dropout, train_mode_without_dropout_or_bn_is_eval_mode)
{
    /* A plain model: forward_train and backward give bit for bit what the eval path gives. */
    enum { B = 5, IN = 3, K = 2 };
    dp_model_cfg cfg = {.n_layers = 2, .sizes = {IN, 6, K}, .act = {DP_ACT_ELU, DP_ACT_IDENTITY},
                        .init = DP_INIT_HE_UNIFORM, .seed = 4, .max_batch = B};
    dp_model *m = make_model(&cfg);
    size_t n = dp_model_n_params(m);
    float x[B * IN], dout[B * K], ye[B * K], *ge = talloc(n);
    tfill(x, B * IN, -1, 1, 1);
    tfill(dout, B * K, -1, 1, 2);
    memcpy(ye, dp_model_forward(m, x, B), sizeof ye);
    cr_assert_eq(dp_model_backward(m, x, dout, B, false), DP_OK);
    memcpy(ge, dp_model_grads(m), n * sizeof *ge);
    dp_train_ctx tc = {.seed = 1};
    const float *yt = dp_model_forward_train(m, x, B, &tc);
    cr_assert_not_null(yt, "%s", dp_errmsg());
    cr_assert_eq(memcmp(yt, ye, sizeof ye), 0);
    cr_assert_eq(dp_model_backward(m, x, dout, B, false), DP_OK);
    cr_assert_eq(memcmp(dp_model_grads(m), ge, n * sizeof *ge), 0);
    free(ge);
    dp_model_free(&m);
}

/* Against the double reference (measured max 1.2e-5; tolerance 1e-3); the mask is fixed
 * because seed, step and ids are. A wrong mask (or none) in backward gives errors of order 1. */
Test(core_dropout, gradcheck_training_mode)
{
    size_t ids[6] = {12, 0, 5, 33, 2, 9};
    dp_train_ctx tc = {.seed = 77, .step = 3, .sample_ids = ids};
    dp_model_cfg cfg = {.n_layers = 3, .sizes = {3, 6, 5, 2},
                        .act = {DP_ACT_TANH, DP_ACT_SIGMOID, DP_ACT_IDENTITY}, .seed = 31,
                        .dropout = {0.5f, 0.25f}};
    double e = gradcheck_model(cfg, DP_LOSS_CROSS_ENTROPY, 6, 1.0f, &tc);
    cr_assert_lt(e, 1e-3, "dropout tanh/sigmoid CE, training mode: max rel err %g", e);
    e = gradcheck_model(cfg, DP_LOSS_MSE, 6, 1.0f / 6.0f, &tc);
    cr_assert_lt(e, 1e-3, "dropout tanh/sigmoid MSE scale 1/6, training mode: max rel err %g", e);
}

Test(core_dropout, needs_sample_ids)
{
    dp_model_cfg cfg = {.n_layers = 2, .sizes = {2, 4, 1}, .seed = 1, .max_batch = 4,
                        .dropout = {0.1f}};
    dp_model *m = make_model(&cfg);
    float x[8] = {0};
    dp_train_ctx tc = {.seed = 1};
    cr_assert_null(dp_model_forward_train(m, x, 4, &tc));
    cr_assert_not_null(strstr(dp_errmsg(), "sample ids"), "message: %s", dp_errmsg());
    cr_assert_not_null(dp_model_forward_train(m, x, 0, &tc), "B == 0 needs no ids");
    cr_assert_null(dp_model_forward_train(m, x, 5, &tc), "B > max_batch accepted");
    cr_assert_null(dp_model_forward_train(m, x, 1, NULL), "NULL context accepted");
    dp_model_free(&m);
}

/* ---------------------------------------------------------------------------------------
 * 2. Batch normalization */

TestSuite(core_bn);

Test(core_bn, layout_and_init)
{
    dp_model_cfg cfg = {.n_layers = 3, .sizes = {4, 5, 6, 2},
                        .act = {DP_ACT_RELU, DP_ACT_RELU, DP_ACT_IDENTITY}, .seed = 1,
                        .max_batch = 2, .batchnorm = {false, true}};
    dp_model *m = make_model(&cfg);
    float *p = dp_model_params(m), *g = dp_model_grads(m), *buf = dp_model_buffers(m);
    cr_assert_eq(dp_model_n_params(m), (size_t)(4 * 5 + 5 + 5 * 6 + 6 + 2 * 6 + 6 * 2 + 2));
    cr_assert_eq(dp_model_n_buffers(m), (size_t)12);
    float *ga, *be, *rm, *rv;
    cr_assert_eq(dp_model_bn_layer(m, 0, &ga, &be, &rm, &rv), 0);
    cr_assert_null(ga);
    cr_assert_null(rv);
    cr_assert_eq(dp_model_bn_layer(m, 2, NULL, NULL, NULL, NULL), 0);
    cr_assert_eq(dp_model_bn_layer(m, 7, NULL, NULL, NULL, NULL), 0);
    cr_assert_eq(dp_model_bn_layer(m, 1, &ga, &be, &rm, &rv), 1);
    size_t off = 4 * 5 + 5 + 5 * 6 + 6; /* right after layer 1's bias */
    cr_assert_eq(dp_model_layer(m, 1)->b + 6, ga);
    cr_assert_eq(ga, p + off);
    cr_assert_eq(be, p + off + 6);
    cr_assert_eq(m->dgamma[1], g + off);
    cr_assert_eq(m->dbeta[1], g + off + 6);
    cr_assert_eq(dp_model_layer(m, 2)->w, p + off + 12);
    cr_assert_eq(rm, buf);
    cr_assert_eq(rv, buf + 6);
    for (int j = 0; j < 6; j++) {
        cr_assert_eq(ga[j], 1.0f);
        cr_assert_eq(be[j], 0.0f);
        cr_assert_eq(rm[j], 0.0f);
        cr_assert_eq(rv[j], 1.0f);
    }
    cr_assert_float_eq(dp_model_config(m)->bn_momentum, 0.1f, 0.0f);
    cr_assert_float_eq(dp_model_config(m)->bn_eps, 1e-5f, 0.0f);
    dp_model_free(&m);
}

Test(core_bn, normalizes_and_updates_running_stats)
{
    enum { B = 16, IN = 5, H = 7 };
    dp_model_cfg cfg = {.n_layers = 2, .sizes = {IN, H, 3},
                        .act = {DP_ACT_IDENTITY, DP_ACT_IDENTITY}, .init = DP_INIT_HE_NORMAL,
                        .seed = 3, .max_batch = B, .batchnorm = {true}};
    dp_model *m = make_model(&cfg);
    dp_dense *l = dp_model_layer(m, 0);
    tfill(l->b, H, 1.0f, 3.0f, 4); /* a mean far from 0 */
    float x[B * IN];
    tfill(x, B * IN, 2.0f, 5.0f, 5);
    /* u = x w^T + b and its statistics, by hand in double. */
    double mean[H] = {0}, var[H] = {0}, u[B][H];
    for (int r = 0; r < B; r++) {
        for (int j = 0; j < H; j++) {
            double s = l->b[j];
            for (int i = 0; i < IN; i++) {
                s += (double)x[r * IN + i] * l->w[j * IN + i];
            }
            u[r][j] = s;
            mean[j] += s / B;
        }
    }
    for (int r = 0; r < B; r++) {
        for (int j = 0; j < H; j++) {
            var[j] += (u[r][j] - mean[j]) * (u[r][j] - mean[j]) / B;
        }
    }
    dp_train_ctx tc = {0};
    cr_assert_not_null(dp_model_forward_train(m, x, B, &tc), "%s", dp_errmsg());
    for (int j = 0; j < H; j++) {
        double zm = 0.0, zv = 0.0;
        for (int r = 0; r < B; r++) {
            zm += m->z[0][r * H + j] / (double)B;
        }
        for (int r = 0; r < B; r++) {
            double d = m->z[0][r * H + j] - zm;
            zv += d * d / B;
            double want = (u[r][j] - mean[j]) / sqrt(var[j] + 1e-5);
            cr_assert(fabs(m->z[0][r * H + j] - want) < 1e-4, "z[%d][%d] = %g, want %g", r, j,
                      m->z[0][r * H + j], want);
        }
        cr_assert(fabs(zm) < 1e-5, "feature %d: mean %g after batch norm", j, zm);
        cr_assert(fabs(zv - var[j] / (var[j] + 1e-5)) < 1e-4, "feature %d: variance %g", j, zv);
        cr_assert(fabs(zv - 1.0) < 1e-3, "feature %d: variance %g, want about 1", j, zv);
    }
    float *rm, *rv;
    cr_assert_eq(dp_model_bn_layer(m, 0, NULL, NULL, &rm, &rv), 1);
    for (int j = 0; j < H; j++) {
        double wm = 0.9 * 0.0 + 0.1 * mean[j];
        double wv = 0.9 * 1.0 + 0.1 * var[j] * B / (B - 1); /* unbiased */
        cr_assert(fabs(rm[j] - wm) < 1e-5 * (1 + fabs(wm)), "running_mean[%d] = %g, want %g", j,
                  rm[j], wm);
        cr_assert(fabs(rv[j] - wv) < 1e-5 * (1 + fabs(wv)), "running_var[%d] = %g, want %g", j,
                  rv[j], wv);
    }
    /* Evaluation forward does not touch them. */
    float keep[2 * H];
    memcpy(keep, dp_model_buffers(m), sizeof keep);
    dp_model_forward(m, x, B);
    cr_assert_eq(memcmp(keep, dp_model_buffers(m), sizeof keep), 0);
    dp_model_free(&m);
}

Test(core_bn, momentum_and_eps_from_config)
{
    dp_model_cfg cfg = {.n_layers = 2, .sizes = {1, 1, 1}, .seed = 1, .max_batch = 2,
                        .batchnorm = {true}, .bn_momentum = 0.5f, .bn_eps = 0.25f};
    dp_model *m = make_model(&cfg);
    dp_dense *l = dp_model_layer(m, 0);
    l->w[0] = 1.0f;
    l->b[0] = 0.0f;
    float x[2] = {1.0f, 3.0f}; /* mean 2, biased var 1, unbiased 2 */
    dp_train_ctx tc = {0};
    cr_assert_not_null(dp_model_forward_train(m, x, 2, &tc), "%s", dp_errmsg());
    float *rm, *rv;
    dp_model_bn_layer(m, 0, NULL, NULL, &rm, &rv);
    cr_assert_float_eq(rm[0], 1.0f, 1e-6f, "running mean %g", rm[0]);
    cr_assert_float_eq(rv[0], 1.5f, 1e-6f, "running var %g", rv[0]);
    /* z = (1 - 2) / sqrt(1 + 0.25) */
    cr_assert_float_eq(m->z[0][0], (float)(-1.0 / sqrt(1.25)), 1e-6f, "z = %g", m->z[0][0]);
    dp_model_free(&m);
}

Test(core_bn, eval_mode_uses_running_stats_by_hand)
{
    dp_model_cfg cfg = {.n_layers = 2, .sizes = {2, 2, 1},
                        .act = {DP_ACT_IDENTITY, DP_ACT_IDENTITY}, .seed = 1, .max_batch = 1,
                        .batchnorm = {true}};
    dp_model *m = make_model(&cfg);
    dp_dense *l0 = dp_model_layer(m, 0), *l1 = dp_model_layer(m, 1);
    const float w0[4] = {1, 0, 0, 1}, b0[2] = {0.5f, -1.0f}, w1[2] = {1, 1};
    memcpy(l0->w, w0, sizeof w0);
    memcpy(l0->b, b0, sizeof b0);
    memcpy(l1->w, w1, sizeof w1);
    l1->b[0] = 0.0f;
    float *ga, *be, *rm, *rv;
    cr_assert_eq(dp_model_bn_layer(m, 0, &ga, &be, &rm, &rv), 1);
    ga[0] = 2.0f, ga[1] = 0.5f, be[0] = 0.1f, be[1] = -0.2f;
    rm[0] = 1.0f, rm[1] = 2.0f, rv[0] = 4.0f, rv[1] = 0.25f;
    float x[2] = {3.0f, 1.0f}; /* u = (3.5, 0) */
    const float *y = dp_model_forward(m, x, 1);
    double want = 2.0 * (3.5 - 1.0) / sqrt(4.0 + 1e-5) + 0.1 + 0.5 * (0.0 - 2.0) / sqrt(0.25 + 1e-5)
                  - 0.2; /* = 2.6 - 2.2 = 0.4 up to eps */
    cr_assert(fabs(y[0] - want) < 1e-5, "eval output %g, want %g", y[0], want);
    dp_model_free(&m);
}

/* Training-mode gradient checks: every parameter, gamma and beta included; with batch norm
 * on layer 1 the check of layer 0's parameters also covers the gradient with respect to the
 * batch norm's input, which flows through it. */
Test(core_bn, gradcheck_training_mode)
{
    dp_train_ctx tc = {0};
    dp_model_cfg cfg = {.n_layers = 3, .sizes = {3, 5, 4, 2},
                        .act = {DP_ACT_TANH, DP_ACT_SIGMOID, DP_ACT_IDENTITY}, .seed = 17,
                        .batchnorm = {true, true}};
    double e = gradcheck_model(cfg, DP_LOSS_CROSS_ENTROPY, 6, 1.0f, &tc);
    cr_assert_lt(e, 1e-3, "bn on layers 0, 1, CE, training mode: max rel err %g", e);
    e = gradcheck_model(cfg, DP_LOSS_MSE, 5, 0.2f, &tc);
    cr_assert_lt(e, 1e-3, "bn on layers 0, 1, MSE scale 1/5, training mode: max rel err %g", e);
    cfg.batchnorm[0] = false;
    cfg.act[0] = DP_ACT_GELU;
    e = gradcheck_model(cfg, DP_LOSS_MSE, 4, 1.0f, &tc);
    cr_assert_lt(e, 1e-3, "bn on layer 1 only, training mode: max rel err %g", e);
}

Test(core_bn, gradcheck_training_mode_with_dropout)
{
    size_t ids[6] = {4, 8, 15, 16, 23, 42};
    dp_train_ctx tc = {.seed = 5, .step = 2, .sample_ids = ids};
    dp_model_cfg cfg = {.n_layers = 3, .sizes = {3, 6, 5, 2},
                        .act = {DP_ACT_TANH, DP_ACT_TANH, DP_ACT_IDENTITY}, .seed = 23,
                        .batchnorm = {true, true}, .dropout = {0.3f, 0.3f}};
    double e = gradcheck_model(cfg, DP_LOSS_CROSS_ENTROPY, 6, 1.0f, &tc);
    cr_assert_lt(e, 1e-3, "bn + dropout, training mode: max rel err %g", e);
}

Test(core_bn, gradcheck_eval_mode)
{
    /* After dp_model_forward, backward is the derivative of the evaluation-mode function
     * (running statistics fixed). Give them non-trivial values first. */
    dp_model_cfg cfg = {.n_layers = 3, .sizes = {3, 5, 4, 2},
                        .act = {DP_ACT_TANH, DP_ACT_SIGMOID, DP_ACT_IDENTITY}, .seed = 19,
                        .batchnorm = {true, true}, .bn_momentum = 1.0f};
    /* bn_momentum 1: running statistics = those of the gradcheck's own batch, set by a
     * training forward below, so they are far from (0, 1). */
    cfg.max_batch = 4;
    cfg.init = DP_INIT_XAVIER_NORMAL;
    dp_model *m = make_model(&cfg);
    perturb_params(m, 19);
    float x[12];
    tfill(x, 12, 0.0f, 2.0f, 3);
    dp_train_ctx tc = {0};
    cr_assert_not_null(dp_model_forward_train(m, x, 4, &tc));
    float *rm;
    dp_model_bn_layer(m, 0, NULL, NULL, &rm, NULL);
    cr_assert(fabsf(rm[0]) > 1e-3f, "test setup: running mean still 0");
    float values[8];
    tfill(values, 8, -1, 1, 4);
    double e = gradcheck_with_ref(m, x, 4, DP_LOSS_MSE, NULL, values, 1.0f, NULL);
    cr_assert_lt(e, 1e-3, "bn, evaluation mode: max rel err %g", e);
    dp_model_free(&m);
}

Test(core_bn, accumulate_adds_gamma_beta_grads)
{
    enum { B = 4 };
    dp_model_cfg cfg = {.n_layers = 2, .sizes = {3, 4, 2}, .act = {DP_ACT_TANH, DP_ACT_IDENTITY},
                        .seed = 2, .max_batch = B, .batchnorm = {true}};
    dp_model *m = make_model(&cfg);
    perturb_params(m, 2);
    size_t n = dp_model_n_params(m);
    float x[B * 3], dout[B * 2], *fresh = talloc(n);
    tfill(x, B * 3, -1, 1, 1);
    tfill(dout, B * 2, -1, 1, 2);
    dp_train_ctx tc = {0};
    cr_assert_not_null(dp_model_forward_train(m, x, B, &tc));
    cr_assert_eq(dp_model_backward(m, x, dout, B, false), DP_OK);
    memcpy(fresh, dp_model_grads(m), n * sizeof *fresh);
    cr_assert_eq(dp_model_backward(m, x, dout, B, true), DP_OK);
    for (size_t i = 0; i < n; i++) {
        float want = 2.0f * fresh[i], got = dp_model_grads(m)[i];
        cr_assert(fabsf(got - want) <= 1e-6f * (1 + fabsf(want)), "grad[%zu] = %g, want %g", i,
                  got, want);
    }
    free(fresh);
    dp_model_free(&m);
}

Test(core_bn, needs_two_rows)
{
    dp_model_cfg cfg = {.n_layers = 2, .sizes = {2, 3, 1}, .seed = 1, .max_batch = 2,
                        .batchnorm = {true}};
    dp_model *m = make_model(&cfg);
    float x[4] = {1, 2, 3, 4};
    dp_train_ctx tc = {0};
    cr_assert_null(dp_model_forward_train(m, x, 1, &tc));
    cr_assert_not_null(strstr(dp_errmsg(), "at least 2 rows"), "message: %s", dp_errmsg());
    cr_assert_not_null(dp_model_forward_train(m, x, 2, &tc), "%s", dp_errmsg());
    dp_model_free(&m);
}

/* --- a batch split over "ranks" played by threads --- */

enum { MAX_RANKS = 3, MAX_SUM = 64 };

typedef struct {
    pthread_barrier_t bar;
    int size;
    double *slot[MAX_RANKS];
    int calls[MAX_RANKS];
    size_t lens[MAX_RANKS][16];
} fake_world;

typedef struct {
    fake_world *w;
    int rank;
    double tmp[MAX_SUM];
} fake_rank;

/* Adds every rank's buffer in rank order (all ranks get the same bits). */
static int fake_sum(void *ctx, double *buf, size_t n)
{
    fake_rank *fr = ctx;
    fake_world *w = fr->w;
    if (n > MAX_SUM) {
        return dp_err(DP_EINVAL, "fake sum: %zu values", n);
    }
    int c = fr->w->calls[fr->rank]++;
    if (c < 16) {
        w->lens[fr->rank][c] = n;
    }
    w->slot[fr->rank] = buf;
    pthread_barrier_wait(&w->bar);
    for (size_t k = 0; k < n; k++) {
        double s = 0.0;
        for (int r = 0; r < w->size; r++) {
            s += w->slot[r][k];
        }
        fr->tmp[k] = s;
    }
    pthread_barrier_wait(&w->bar); /* everyone has read every buffer */
    memcpy(buf, fr->tmp, n * sizeof *buf);
    return DP_OK;
}

typedef struct {
    dp_model *m;
    const float *x;
    const int32_t *labels;
    const size_t *ids;
    int B, global_B, k;
    fake_rank fr;
    int rc;
    float y[64];
} rank_job;

static void *rank_main(void *p)
{
    rank_job *j = p;
    dp_train_ctx tc = {.seed = 8, .step = 1, .sample_ids = j->ids, .sum = fake_sum,
                       .sum_ctx = &j->fr};
    const float *y = dp_model_forward_train(j->m, j->x, j->B, &tc);
    if (!y) {
        j->rc = -1;
        return NULL;
    }
    memcpy(j->y, y, (size_t)j->B * j->k * sizeof *y);
    dp_targets t = {.labels = j->labels};
    float *dout = dp_model_dout(j->m);
    dp_loss_eval(DP_LOSS_CROSS_ENTROPY, y, &t, j->B, j->k, 1.0f / (float)j->global_B, dout, NULL);
    j->rc = dp_model_backward(j->m, j->x, dout, j->B, false);
    return NULL;
}

/* Splits a batch of 8 rows over size ranks as rows[r] (summing to 8) and checks that the
 * ranks' gradients sum to the one-process gradient, that each rank's output rows and the
 * running statistics match it. */
static void check_split(int size, const int *rows)
{
    enum { B = 8, IN = 3, K = 3 };
    dp_model_cfg cfg = {.n_layers = 3, .sizes = {IN, 6, 5, K},
                        .act = {DP_ACT_TANH, DP_ACT_RELU, DP_ACT_IDENTITY},
                        .init = DP_INIT_HE_NORMAL, .seed = 29, .max_batch = B,
                        .batchnorm = {true, true}, .dropout = {0.25f}};
    float x[B * IN];
    int32_t labels[B];
    size_t ids[B];
    tfill(x, B * IN, -1, 2, 6);
    for (int r = 0; r < B; r++) {
        labels[r] = r % K;
        ids[r] = 200 + 3 * (size_t)r;
    }
    dp_model *one = make_model(&cfg);
    perturb_params(one, 29);
    size_t n = dp_model_n_params(one), nb = dp_model_n_buffers(one);
    rank_job whole = {.m = one, .x = x, .labels = labels, .ids = ids, .B = B, .global_B = B,
                      .k = K};
    dp_train_ctx tc = {.seed = 8, .step = 1, .sample_ids = ids};
    const float *y1 = dp_model_forward_train(one, x, B, &tc);
    cr_assert_not_null(y1, "%s", dp_errmsg());
    memcpy(whole.y, y1, sizeof(float) * B * K);
    dp_targets t = {.labels = labels};
    dp_loss_eval(DP_LOSS_CROSS_ENTROPY, y1, &t, B, K, 1.0f / B, dp_model_dout(one), NULL);
    cr_assert_eq(dp_model_backward(one, x, dp_model_dout(one), B, false), DP_OK);

    fake_world w = {.size = size};
    pthread_barrier_init(&w.bar, NULL, (unsigned)size);
    rank_job jobs[MAX_RANKS];
    pthread_t th[MAX_RANKS];
    int lo = 0;
    for (int r = 0; r < size; r++) {
        dp_model *m = make_model(&cfg);
        perturb_params(m, 29);
        jobs[r] = (rank_job){.m = m, .x = x + lo * IN, .labels = labels + lo, .ids = ids + lo,
                             .B = rows[r], .global_B = B, .k = K, .fr = {.w = &w, .rank = r}};
        lo += rows[r];
    }
    cr_assert_eq(lo, B);
    for (int r = 0; r < size; r++) {
        cr_assert_eq(pthread_create(&th[r], NULL, rank_main, &jobs[r]), 0);
    }
    for (int r = 0; r < size; r++) {
        pthread_join(th[r], NULL);
    }
    pthread_barrier_destroy(&w.bar);
    for (int r = 0; r < size; r++) {
        cr_assert_eq(jobs[r].rc, DP_OK, "rank %d failed", r);
        /* 2 batch-norm layers: 2 sums forward, 2 backward, the same sizes on every rank. */
        cr_assert_eq(w.calls[r], 4, "rank %d made %d sum calls", r, w.calls[r]);
        for (int c = 0; c < 4; c++) {
            cr_assert_eq(w.lens[r][c], w.lens[0][c], "rank %d call %d: %zu values", r, c,
                         w.lens[r][c]);
        }
    }
    lo = 0;
    for (int r = 0; r < size; r++) {
        for (int i = 0; i < rows[r] * K; i++) {
            float want = whole.y[lo * K + i];
            cr_assert(fabsf(jobs[r].y[i] - want) <= 1e-5f * (1 + fabsf(want)),
                      "rank %d output %d = %g, one process %g", r, i, jobs[r].y[i], want);
        }
        lo += rows[r];
        const float *b1 = dp_model_buffers(one), *br = dp_model_buffers(jobs[r].m);
        for (size_t i = 0; i < nb; i++) {
            cr_assert(fabsf(br[i] - b1[i]) <= 1e-5f * (1 + fabsf(b1[i])),
                      "rank %d running stat %zu = %g, one process %g", r, i, br[i], b1[i]);
        }
    }
    const float *g1 = dp_model_grads(one);
    for (size_t i = 0; i < n; i++) {
        double s = 0.0;
        for (int r = 0; r < size; r++) {
            s += dp_model_grads(jobs[r].m)[i];
        }
        cr_assert(fabs(s - g1[i]) <= 1e-5 * (1 + fabs(g1[i])),
                  "grad %zu: sum over %d ranks %g, one process %g", i, size, s, g1[i]);
    }
    for (int r = 0; r < size; r++) {
        dp_model_free(&jobs[r].m);
    }
    dp_model_free(&one);
}

Test(core_bn, split_over_two_ranks_matches_one)
{
    const int rows[2] = {4, 4};
    check_split(2, rows);
}

Test(core_bn, uneven_split_with_an_empty_rank_matches_one)
{
    const int rows[3] = {5, 0, 3};
    check_split(3, rows);
}

/* A sum that fails on call number fail_at (0-based). */
typedef struct {
    int calls, fail_at;
} failing_sum_ctx;

static int failing_sum(void *ctx, double *buf, size_t n)
{
    (void)buf;
    (void)n;
    failing_sum_ctx *f = ctx;
    if (f->calls++ == f->fail_at) {
        return dp_err(DP_EMPI, "fake allreduce broke");
    }
    return DP_OK;
}

Test(core_bn, sum_failures_are_reported)
{
    dp_model_cfg cfg = {.n_layers = 3, .sizes = {2, 3, 3, 1}, .seed = 1, .max_batch = 4,
                        .batchnorm = {true, true}};
    dp_model *m = make_model(&cfg);
    float x[8], dout[4] = {1, 2, 3, 4};
    tfill(x, 8, -1, 1, 1);
    failing_sum_ctx f = {.fail_at = 1};
    dp_train_ctx tc = {.sum = failing_sum, .sum_ctx = &f};
    cr_assert_null(dp_model_forward_train(m, x, 4, &tc));
    cr_assert_not_null(strstr(dp_errmsg(), "layer 1"), "message: %s", dp_errmsg());
    cr_assert_not_null(strstr(dp_errmsg(), "fake allreduce broke"), "message: %s", dp_errmsg());
    f = (failing_sum_ctx){.fail_at = 2}; /* the first backward sum (layer 1) */
    cr_assert_not_null(dp_model_forward_train(m, x, 4, &tc), "%s", dp_errmsg());
    cr_assert_eq(dp_model_backward(m, x, dout, 4, false), DP_EMPI);
    cr_assert_not_null(strstr(dp_errmsg(), "fake allreduce broke"), "message: %s", dp_errmsg());
    dp_model_free(&m);
}

/* ---------------------------------------------------------------------------------------
 * 3. Config validation */

static void expect_bad(const dp_model_cfg *cfg, const char *needle)
{
    dp_model *m = (dp_model *)cfg; /* must be reset to NULL */
    dp_err_clear();
    cr_assert_eq(dp_model_create(cfg, &m), DP_EINVAL, "accepted a config with '%s'", needle);
    cr_assert_null(m);
    cr_assert_not_null(strstr(dp_errmsg(), needle), "message '%s' lacks '%s'", dp_errmsg(),
                       needle);
}

Test(core_bn, config_validation)
{
    const dp_model_cfg ok = {.n_layers = 3, .sizes = {2, 3, 3, 1}, .seed = 1, .max_batch = 2,
                             .dropout = {0.5f, 0.0f}, .batchnorm = {true, true}};
    dp_model *m = make_model(&ok);
    dp_model_free(&m);
    dp_model_cfg c = ok;
    c.dropout[2] = 0.1f;
    expect_bad(&c, "output layer");
    c = ok;
    c.dropout[0] = 1.0f;
    expect_bad(&c, "dropout of layer 0 is 1");
    c = ok;
    c.dropout[1] = -0.1f;
    expect_bad(&c, "dropout of layer 1");
    c = ok;
    c.dropout[0] = NAN;
    expect_bad(&c, "dropout of layer 0");
    c = ok;
    c.batchnorm[2] = true;
    expect_bad(&c, "batch norm on layer 2, the output layer");
    c = ok;
    c.bn_momentum = -0.5f;
    expect_bad(&c, "momentum");
    c = ok;
    c.bn_momentum = 1.5f;
    expect_bad(&c, "momentum");
    c = ok;
    c.bn_eps = -1e-5f;
    expect_bad(&c, "eps");
    /* Entries beyond n_layers are ignored, as for act[]. */
    c = ok;
    c.dropout[5] = 0.5f;
    c.batchnorm[7] = true;
    m = make_model(&c);
    cr_assert_eq(dp_model_n_buffers(m), (size_t)12);
    dp_model_free(&m);
}
