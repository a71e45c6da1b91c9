/* test_model.c: unit tests of the model's layout and initialization: one flat parameter
 * array, the seed fixing the parameters, the distributions of every initializer, zero biases,
 * the forward pass against a hand composition of its layers, and bad configs refused.
 * Suite core_model. (Initializer specs and per-layer choices: test_init.c.)
 * Expected values come from independent computation in the test (hand-worked formulas, the
 * initializers' documented distributions), never from program output. */
#include <criterion/criterion.h>

#include "testutil.h"

#include "dptrain/err.h"
#include "dptrain/nn.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
