/* test_init.c: initializer specs: parsing, the distributions they draw, per-layer weight and
 * bias choices in the model. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "dptrain/err.h"
#include "dptrain/nn.h"

static void stats(const float *x, size_t n, double *mean, double *std, float *lo, float *hi)
{
    double s = 0.0, ss = 0.0;
    *lo = x[0];
    *hi = x[0];
    for (size_t i = 0; i < n; i++) {
        s += x[i];
        ss += (double)x[i] * x[i];
        *lo = x[i] < *lo ? x[i] : *lo;
        *hi = x[i] > *hi ? x[i] : *hi;
    }
    *mean = s / n;
    *std = sqrt(ss / n - *mean * *mean);
}

Test(core_init, spec_parse)
{
    dp_init_spec s;
    cr_assert_eq(dp_init_spec_parse("uniform", &s), DP_OK);
    cr_assert(s.set && s.kind == DP_INIT_UNIFORM && s.a == 0.0f && s.b == 1.0f, "textbook [0,1)");
    cr_assert_eq(dp_init_spec_parse("uniform:-0.5:0.25", &s), DP_OK);
    cr_assert(s.a == -0.5f && s.b == 0.25f);
    cr_assert_eq(dp_init_spec_parse("normal:1:0.01", &s), DP_OK);
    cr_assert(s.kind == DP_INIT_NORMAL && s.a == 1.0f && s.b == 0.01f);
    cr_assert_eq(dp_init_spec_parse("constant:0.3", &s), DP_OK);
    cr_assert(s.kind == DP_INIT_CONSTANT && s.a == 0.3f);
    cr_assert_eq(dp_init_spec_parse("he-normal", &s), DP_OK);
    cr_assert_eq(s.kind, DP_INIT_HE_NORMAL);
    const char *bad[] = {"uniform:1:0", "normal:0:0", "normal:0:-1", "constant:x",
                         "constant:1:2", "he-normal:3", "gaussian", "uniform:0:1:2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(dp_init_spec_parse(bad[i], &s), DP_EINVAL, "%s accepted", bad[i]);
        cr_assert_not_null(strstr(dp_errmsg(), bad[i]), "message names '%s': %s", bad[i],
                           dp_errmsg());
    }
}

/* One 400x500 layer filled by spec w (and bias spec b). */
static dp_model *one_layer(const char *w, const char *b)
{
    dp_model_cfg c = {.n_layers = 1, .sizes = {500, 400}, .act = {DP_ACT_IDENTITY},
                      .seed = 3, .max_batch = 1};
    cr_assert_eq(dp_init_spec_parse(w, &c.weight_init[0]), DP_OK);
    if (b) {
        cr_assert_eq(dp_init_spec_parse(b, &c.bias_init[0]), DP_OK);
    }
    dp_model *m = NULL;
    cr_assert_eq(dp_model_create(&c, &m), DP_OK, "%s", dp_errmsg());
    return m;
}

Test(core_init, distributions)
{
    double mean, std;
    float lo, hi;
    dp_model *m = one_layer("uniform", NULL);
    dp_dense *l = dp_model_layer(m, 0);
    stats(l->w, 200000, &mean, &std, &lo, &hi);
    cr_assert(lo >= 0.0f && hi < 1.0f, "uniform [0,1): [%g, %g]", lo, hi);
    cr_assert_lt(fabs(mean - 0.5), 0.005);
    cr_assert_lt(fabs(std - sqrt(1.0 / 12.0)), 0.003);
    stats(l->b, 400, &mean, &std, &lo, &hi);
    cr_assert(lo == 0.0f && hi == 0.0f, "biases default to zero");
    dp_model_free(&m);

    m = one_layer("normal:2:0.5", "uniform:-3:-2");
    l = dp_model_layer(m, 0);
    stats(l->w, 200000, &mean, &std, &lo, &hi);
    cr_assert_lt(fabs(mean - 2.0), 0.005);
    cr_assert_lt(fabs(std - 0.5), 0.005);
    stats(l->b, 400, &mean, &std, &lo, &hi);
    cr_assert(lo >= -3.0f && hi < -2.0f, "bias uniform [-3,-2): [%g, %g]", lo, hi);
    cr_assert_lt(fabs(mean + 2.5), 0.05);
    dp_model_free(&m);

    m = one_layer("constant:0.25", "constant:-1");
    l = dp_model_layer(m, 0);
    stats(l->w, 200000, &mean, &std, &lo, &hi);
    cr_assert(lo == 0.25f && hi == 0.25f);
    stats(l->b, 400, &mean, &std, &lo, &hi);
    cr_assert(lo == -1.0f && hi == -1.0f);
    dp_model_free(&m);
}

Test(core_init, per_layer_choice_overrides_the_default)
{
    dp_model_cfg c = {.n_layers = 2, .sizes = {30, 20, 10}, .act = {DP_ACT_RELU, DP_ACT_IDENTITY},
                      .init = DP_INIT_ZERO, .seed = 3, .max_batch = 1};
    cr_assert_eq(dp_init_spec_parse("constant:7", &c.weight_init[1]), DP_OK);
    dp_model *m = NULL;
    cr_assert_eq(dp_model_create(&c, &m), DP_OK);
    const dp_dense *l0 = dp_model_layer(m, 0), *l1 = dp_model_layer(m, 1);
    for (int i = 0; i < 30 * 20; i++) {
        cr_assert_eq(l0->w[i], 0.0f, "layer 1 keeps the model default (zero)");
    }
    for (int i = 0; i < 20 * 10; i++) {
        cr_assert_eq(l1->w[i], 7.0f, "layer 2 takes its own initializer");
    }
    dp_model_free(&m);
}

Test(core_init, bad_spec_in_config_is_refused)
{
    dp_model_cfg c = {.n_layers = 1, .sizes = {3, 2}, .act = {DP_ACT_IDENTITY}, .max_batch = 1};
    c.bias_init[0] = (dp_init_spec){.set = true, .kind = DP_INIT_COUNT};
    dp_model *m = NULL;
    cr_assert_eq(dp_model_create(&c, &m), DP_EINVAL);
    cr_assert_null(m);
    cr_assert_not_null(strstr(dp_errmsg(), "bias"));
}
