/* test_optim.c: unit tests of SGD (through dp_optim_step, the trainer's path) against
 * torch.optim.SGD's documented rule, worked by hand (suite optim_sgd), and of the learning-rate
 * schedules (expected values worked by hand from the torch.optim.lr_scheduler definitions;
 * suite optim_sched). Every optimizer against a reference: test_optim_rules.c. */
#include <criterion/criterion.h>

#include "dptrain/err.h"
#include "dptrain/optim.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------
 * SGD. Every case: n = 3, lr = 0.1, p0 = [1, -2, 0.5] and the gradients
 *   g1 = [0.5, -1, 2], g2 = [0.25, 0.5, -1], g3 = [-0.5, 1, 0].
 * Expected parameters (and momentum buffers) after each step are worked out below from
 *   g = grad + wd p;  buf = g at step 1, else mu buf + (1 - dampening) g;
 *   g = nesterov ? g + mu buf : buf;  p -= lr g.                                          */

enum { N = 3 };
static const float P0[N] = {1.0f, -2.0f, 0.5f};
static const float G[3][N] = {{0.5f, -1.0f, 2.0f}, {0.25f, 0.5f, -1.0f}, {-0.5f, 1.0f, 0.0f}};

/* The SGD hyperparameters of one case, run through dp_optim_step as the trainer does. */
typedef struct {
    float lr, momentum, dampening, weight_decay;
    bool nesterov;
} sgd_case;

static void sgd_step(const sgd_case *c, long t, size_t n, float *p, const float *g, float *buf)
{
    dp_optim_cfg o;
    dp_optim_defaults(DP_OPT_SGD, &o);
    o.lr = c->lr;
    o.momentum = c->momentum;
    o.dampening = c->dampening;
    o.weight_decay = c->weight_decay;
    o.nesterov = c->nesterov;
    cr_assert_eq(dp_optim_check(&o), DP_OK, "%s", dp_errmsg());
    float *slots[DP_OPTIM_MAX_SLOTS] = {buf};
    dp_optim_step(&o, c->lr, t, n, p, g, slots, NULL);
}

/* A bare schedule (no warmup, one step per epoch): constant and cosine need nothing else. */
static float sched_lr(dp_sched kind, float base_lr, long step, long total)
{
    const dp_sched_cfg c = {.kind = kind, .base_lr = base_lr, .gamma = 1.0f, .step_size = 1};
    return dp_sched_lr_at(&c, step, 1, total);
}

/* 1e-6: a few float ulps at |p| <= 2 (lr = 0.1 is not exact in binary). */
#define SGD_TOL 1e-6f

/* Runs three steps from P0 and checks p (and buf, when want_buf != NULL) after each. */
static void run_sgd(const sgd_case *c, const float want_p[3][N], const float want_buf[3][N],
                    const char *what)
{
    float p[N], buf[N];
    memcpy(p, P0, sizeof p);
    for (int i = 0; i < N; i++) {
        buf[i] = 100.0f; /* stale state: step 1 must not read it */
    }
    for (int t = 1; t <= 3; t++) {
        sgd_step(c, t, N, p, G[t - 1], buf);
        for (int i = 0; i < N; i++) {
            cr_assert_float_eq(p[i], want_p[t - 1][i], SGD_TOL,
                               "%s: step %d p[%d] = %.9g, want %.9g", what, t, i, p[i],
                               want_p[t - 1][i]);
            if (want_buf) {
                cr_assert_float_eq(buf[i], want_buf[t - 1][i], SGD_TOL,
                                   "%s: step %d buf[%d] = %.9g, want %.9g", what, t, i, buf[i],
                                   want_buf[t - 1][i]);
            } else {
                cr_assert_eq(buf[i], 100.0f, "%s: momentum 0 touched buf[%d]", what, i);
            }
        }
    }
}

TestSuite(optim_sgd);

Test(optim_sgd, plain)
{
    /* p1 = p0 - 0.1 g1 = [1 - 0.05, -2 + 0.1, 0.5 - 0.2]       = [0.95, -1.9, 0.3]
     * p2 = p1 - 0.1 g2 = [0.95 - 0.025, -1.9 - 0.05, 0.3 + 0.1] = [0.925, -1.95, 0.4]
     * p3 = p2 - 0.1 g3 = [0.925 + 0.05, -1.95 - 0.1, 0.4 - 0]   = [0.975, -2.05, 0.4] */
    const float want[3][N] = {{0.95f, -1.9f, 0.3f}, {0.925f, -1.95f, 0.4f}, {0.975f, -2.05f, 0.4f}};
    sgd_case c = {.lr = 0.1f};
    run_sgd(&c, want, NULL, "plain");
}

Test(optim_sgd, momentum)
{
    /* mu = 0.9, dampening 0.
     * b1 = g1 = [0.5, -1, 2];                 p1 = p0 - 0.1 b1 = [0.95, -1.9, 0.3]
     * b2 = 0.9 b1 + g2 = [0.45 + 0.25, -0.9 + 0.5, 1.8 - 1]   = [0.7, -0.4, 0.8]
     *                                          p2 = p1 - 0.1 b2 = [0.88, -1.86, 0.22]
     * b3 = 0.9 b2 + g3 = [0.63 - 0.5, -0.36 + 1, 0.72 + 0]    = [0.13, 0.64, 0.72]
     *                                          p3 = p2 - 0.1 b3 = [0.867, -1.924, 0.148] */
    const float want_p[3][N] = {{0.95f, -1.9f, 0.3f}, {0.88f, -1.86f, 0.22f},
                                {0.867f, -1.924f, 0.148f}};
    const float want_b[3][N] = {{0.5f, -1.0f, 2.0f}, {0.7f, -0.4f, 0.8f}, {0.13f, 0.64f, 0.72f}};
    sgd_case c = {.lr = 0.1f, .momentum = 0.9f};
    run_sgd(&c, want_p, want_b, "momentum 0.9");
}

Test(optim_sgd, momentum_dampening)
{
    /* mu = 0.9, dampening 0.5 (not applied at step 1).
     * b1 = g1 = [0.5, -1, 2];                            p1 = [0.95, -1.9, 0.3]
     * b2 = 0.9 b1 + 0.5 g2 = [0.45 + 0.125, -0.9 + 0.25, 1.8 - 0.5] = [0.575, -0.65, 1.3]
     *   p2 = p1 - 0.1 b2 = [0.95 - 0.0575, -1.9 + 0.065, 0.3 - 0.13] = [0.8925, -1.835, 0.17]
     * b3 = 0.9 b2 + 0.5 g3 = [0.5175 - 0.25, -0.585 + 0.5, 1.17 + 0] = [0.2675, -0.085, 1.17]
     *   p3 = p2 - 0.1 b3 = [0.8925 - 0.02675, -1.835 + 0.0085, 0.17 - 0.117]
     *                    = [0.86575, -1.8265, 0.053] */
    const float want_p[3][N] = {{0.95f, -1.9f, 0.3f}, {0.8925f, -1.835f, 0.17f},
                                {0.86575f, -1.8265f, 0.053f}};
    const float want_b[3][N] = {{0.5f, -1.0f, 2.0f}, {0.575f, -0.65f, 1.3f},
                                {0.2675f, -0.085f, 1.17f}};
    sgd_case c = {.lr = 0.1f, .momentum = 0.9f, .dampening = 0.5f};
    run_sgd(&c, want_p, want_b, "momentum 0.9 dampening 0.5");
}

Test(optim_sgd, nesterov)
{
    /* mu = 0.9, nesterov: buffers as in the momentum case, step direction g + 0.9 buf.
     * 1: b1 = [0.5, -1, 2];  d = g1 + 0.9 b1 = 1.9 g1 = [0.95, -1.9, 3.8]
     *    p1 = [1 - 0.095, -2 + 0.19, 0.5 - 0.38] = [0.905, -1.81, 0.12]
     * 2: b2 = [0.7, -0.4, 0.8];  d = g2 + 0.9 b2 = [0.25 + 0.63, 0.5 - 0.36, -1 + 0.72]
     *                                             = [0.88, 0.14, -0.28]
     *    p2 = [0.905 - 0.088, -1.81 - 0.014, 0.12 + 0.028] = [0.817, -1.824, 0.148]
     * 3: b3 = [0.13, 0.64, 0.72];  d = g3 + 0.9 b3 = [-0.5 + 0.117, 1 + 0.576, 0 + 0.648]
     *                                               = [-0.383, 1.576, 0.648]
     *    p3 = [0.817 + 0.0383, -1.824 - 0.1576, 0.148 - 0.0648] = [0.8553, -1.9816, 0.0832] */
    const float want_p[3][N] = {{0.905f, -1.81f, 0.12f}, {0.817f, -1.824f, 0.148f},
                                {0.8553f, -1.9816f, 0.0832f}};
    const float want_b[3][N] = {{0.5f, -1.0f, 2.0f}, {0.7f, -0.4f, 0.8f}, {0.13f, 0.64f, 0.72f}};
    sgd_case c = {.lr = 0.1f, .momentum = 0.9f, .nesterov = true};
    run_sgd(&c, want_p, want_b, "nesterov 0.9");
}

Test(optim_sgd, weight_decay)
{
    /* wd = 0.01, no momentum: d = g + 0.01 p.
     * 1: d = [0.5 + 0.01, -1 - 0.02, 2 + 0.005] = [0.51, -1.02, 2.005]
     *    p1 = [1 - 0.051, -2 + 0.102, 0.5 - 0.2005] = [0.949, -1.898, 0.2995]
     * 2: d = [0.25 + 0.00949, 0.5 - 0.01898, -1 + 0.002995] = [0.25949, 0.48102, -0.997005]
     *    p2 = [0.949 - 0.025949, -1.898 - 0.048102, 0.2995 + 0.0997005]
     *       = [0.923051, -1.946102, 0.3992005]
     * 3: d = [-0.5 + 0.00923051, 1 - 0.01946102, 0 + 0.003992005]
     *      = [-0.49076949, 0.98053898, 0.003992005]
     *    p3 = [0.923051 + 0.049076949, -1.946102 - 0.098053898, 0.3992005 - 0.0003992005]
     *       = [0.972127949, -2.044155898, 0.3988012995] */
    const float want_p[3][N] = {{0.949f, -1.898f, 0.2995f},
                                {0.923051f, -1.946102f, 0.3992005f},
                                {0.972127949f, -2.044155898f, 0.3988012995f}};
    sgd_case c = {.lr = 0.1f, .weight_decay = 0.01f};
    run_sgd(&c, want_p, NULL, "weight decay 0.01");
}

Test(optim_sgd, weight_decay_enters_momentum)
{
    /* mu = 0.5, wd = 0.1, one element p0 = 2, g = 1 each step, lr = 0.1:
     * 1: d = 1 + 0.2 = 1.2; b1 = 1.2; p1 = 2 - 0.12 = 1.88
     * 2: d = 1 + 0.188 = 1.188; b2 = 0.6 + 1.188 = 1.788; p2 = 1.88 - 0.1788 = 1.7012 */
    sgd_case c = {.lr = 0.1f, .momentum = 0.5f, .weight_decay = 0.1f};
    float p = 2.0f, g = 1.0f, b = -7.0f;
    sgd_step(&c, 1, 1, &p, &g, &b);
    cr_assert_float_eq(b, 1.2f, SGD_TOL, "b1 = %.9g", b);
    cr_assert_float_eq(p, 1.88f, SGD_TOL, "p1 = %.9g", p);
    sgd_step(&c, 2, 1, &p, &g, &b);
    cr_assert_float_eq(b, 1.788f, SGD_TOL, "b2 = %.9g", b);
    cr_assert_float_eq(p, 1.7012f, SGD_TOL, "p2 = %.9g", p);
}

Test(optim_sgd, gradient_is_read_only_and_n_respected)
{
    /* n = 2 of a 3-element array: the third entry is not touched; g is not modified. */
    sgd_case c = {.lr = 0.1f, .momentum = 0.9f};
    float p[3] = {1.0f, 1.0f, 1.0f}, g[3] = {1.0f, 2.0f, 3.0f}, buf[3] = {0.0f, 0.0f, 42.0f};
    sgd_step(&c, 1, 2, p, g, buf);
    cr_assert_float_eq(p[0], 0.9f, SGD_TOL);
    cr_assert_float_eq(p[1], 0.8f, SGD_TOL);
    cr_assert_eq(p[2], 1.0f);
    cr_assert_eq(buf[2], 42.0f);
    cr_assert(g[0] == 1.0f && g[1] == 2.0f && g[2] == 3.0f);
}

/* ---------------------------------------------------------------------------------------
 * Schedules */

TestSuite(optim_sched);

Test(optim_sched, constant)
{
    const long steps[4] = {0, 1, 500, 1000};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(sched_lr(DP_SCHED_CONSTANT, 0.05f, steps[i], 1000), 0.05f,
                     "constant at step %ld", steps[i]);
    }
}

Test(optim_sched, cosine)
{
    const float base = 0.2f;
    /* lr (1 + cos(pi s / T)) / 2: s = 0 -> lr; s = T/2 -> lr/2; s = T/4 -> lr (1 + sqrt(2)/2)/2;
     * s = T -> 0. */
    cr_assert_float_eq(sched_lr(DP_SCHED_COSINE, base, 0, 1000), base, 1e-7f);
    cr_assert_float_eq(sched_lr(DP_SCHED_COSINE, base, 500, 1000), base / 2, 1e-7f);
    cr_assert_float_eq(sched_lr(DP_SCHED_COSINE, base, 250, 1000),
                       (float)(base * (1.0 + sqrt(0.5)) / 2.0), 1e-7f);
    cr_assert_float_eq(sched_lr(DP_SCHED_COSINE, base, 1000, 1000), 0.0f, 1e-7f);
    /* Odd total: s = 1 of T = 3: (1 + cos(pi/3))/2 = 3/4. */
    cr_assert_float_eq(sched_lr(DP_SCHED_COSINE, 1.0f, 1, 3), 0.75f, 1e-7f);
    /* Non-increasing and within [0, base] all the way. */
    float prev = base;
    int bad = 0;
    for (long s = 0; s <= 1000; s++) {
        float lr = sched_lr(DP_SCHED_COSINE, base, s, 1000);
        bad += !(lr <= prev && lr >= 0.0f);
        prev = lr;
    }
    cr_assert_eq(bad, 0, "cosine schedule rose or left [0, base] at %d steps", bad);
}

Test(optim_sched, names)
{
    for (int s = 0; s < DP_SCHED_COUNT; s++) {
        cr_assert_eq(dp_sched_parse(dp_sched_name(s)), s, "sched %d (%s)", s, dp_sched_name(s));
    }
    cr_assert_eq(dp_sched_parse("constant"), DP_SCHED_CONSTANT);
    cr_assert_eq(dp_sched_parse("cosine"), DP_SCHED_COSINE);
    cr_assert_eq(dp_sched_parse("linear"), -1);
    cr_assert_eq(dp_sched_parse(""), -1);
}

/* dp_sched_lr_at must agree with `want` to float precision (relative 1e-6). */
#define expect_lr(s, step, spe, total, want)                                                  \
    do {                                                                                       \
        const double want_ = (want);                                                           \
        const float got_ = dp_sched_lr_at((s), (step), (spe), (total));                       \
        cr_assert(fabs(got_ - want_) <= 1e-6 * fabs(want_) + 1e-12,                            \
                  "%s: lr at step %ld (steps/epoch %ld) = %.9g, want %.9g",                   \
                  dp_sched_name((s)->kind), (long)(step), (long)(spe), got_, want_);           \
    } while (0)

Test(optim_sched, names_all)
{
    static const char *const want[DP_SCHED_COUNT] = {"constant", "cosine", "step", "multistep",
                                                     "exponential"};
    for (int s = 0; s < DP_SCHED_COUNT; s++) {
        cr_assert_str_eq(dp_sched_name(s), want[s]);
        cr_assert_eq(dp_sched_parse(want[s]), s);
    }
    cr_assert_eq(dp_sched_parse(NULL), -1);
    cr_assert_str_eq(dp_sched_name(DP_SCHED_COUNT), "?");
}

Test(optim_sched, constant_and_cosine_match_the_old_interface)
{
    /* The new function with no warmup gives what dp_sched_lr gave (and still gives). */
    dp_sched_cfg s = {.kind = DP_SCHED_CONSTANT, .base_lr = 0.05f};
    const long steps[5] = {0, 1, 333, 999, 1000};
    for (int i = 0; i < 5; i++) {
        expect_lr(&s, steps[i], 7, 1000, 0.05f);
    }
    s.kind = DP_SCHED_COSINE;
    s.base_lr = 0.2f;
    /* Per step, not per epoch: steps_per_epoch must not matter. */
    expect_lr(&s, 0, 7, 1000, 0.2f);
    expect_lr(&s, 250, 7, 1000, 0.2f * (1.0 + sqrt(0.5)) / 2.0);
    expect_lr(&s, 500, 7, 1000, 0.1f);
    expect_lr(&s, 1000, 7, 1000, 0.0);
    expect_lr(&s, 1001, 7, 1000, 0.0);
    for (long k = 0; k <= 1000; k += 37) {
        cr_assert_eq(dp_sched_lr_at(&s, k, 1, 1000), sched_lr(DP_SCHED_COSINE, 0.2f, k, 1000),
                     "step %ld", k);
    }
}

Test(optim_sched, step)
{
    /* StepLR: lr gamma^floor(epoch / step_size); base 0.1, gamma 0.5, every 3 epochs,
     * 10 steps per epoch. Steps 0..29 are epochs 0..2: 0.1; step 30 (epoch 3): 0.05;
     * step 59 (epoch 5): 0.05; step 60 (epoch 6): 0.025; step 95 (epoch 9): 0.0125. */
    dp_sched_cfg s = {.kind = DP_SCHED_STEP, .base_lr = 0.1f, .gamma = 0.5f, .step_size = 3};
    cr_assert_eq(dp_sched_check(&s), DP_OK, "%s", dp_errmsg());
    expect_lr(&s, 0, 10, 1000, 0.1f);
    expect_lr(&s, 29, 10, 1000, 0.1f);
    expect_lr(&s, 30, 10, 1000, 0.05f);
    expect_lr(&s, 59, 10, 1000, 0.05f);
    expect_lr(&s, 60, 10, 1000, 0.025f);
    expect_lr(&s, 95, 10, 1000, 0.0125f);
    /* steps_per_epoch 0 counts as 1: step 7 is epoch 7, floor(7 / 3) = 2 decays. */
    expect_lr(&s, 7, 0, 1000, 0.025f);
}

Test(optim_sched, multistep)
{
    /* MultiStepLR: lr gamma^(number of milestones <= epoch); milestones {2, 5, 9}, gamma 0.1,
     * base 1, 4 steps per epoch. Epochs 0-1 (steps 0-7): 1; epoch 2 (step 8): 0.1;
     * epoch 4 (step 19): 0.1; epoch 5 (step 20): 0.01; epoch 8 (step 35): 0.01;
     * epoch 9 (step 36): 0.001; epoch 100: 0.001. */
    dp_sched_cfg s = {.kind = DP_SCHED_MULTISTEP, .base_lr = 1.0f, .gamma = 0.1f,
                      .milestones = {2, 5, 9}, .n_milestones = 3};
    cr_assert_eq(dp_sched_check(&s), DP_OK, "%s", dp_errmsg());
    const double g = 0.1f; /* gamma as stored */
    expect_lr(&s, 0, 4, 1000, 1.0);
    expect_lr(&s, 7, 4, 1000, 1.0);
    expect_lr(&s, 8, 4, 1000, g);
    expect_lr(&s, 19, 4, 1000, g);
    expect_lr(&s, 20, 4, 1000, g * g);
    expect_lr(&s, 35, 4, 1000, g * g);
    expect_lr(&s, 36, 4, 1000, g * g * g);
    expect_lr(&s, 400, 4, 1000, g * g * g);
}

Test(optim_sched, exponential)
{
    /* ExponentialLR: lr gamma^epoch; base 0.5, gamma 0.9, 5 steps per epoch: steps 0-4:
     * 0.5; step 5: 0.45; step 17 (epoch 3): 0.5 * 0.729 = 0.3645. */
    dp_sched_cfg s = {.kind = DP_SCHED_EXPONENTIAL, .base_lr = 0.5f, .gamma = 0.9f};
    cr_assert_eq(dp_sched_check(&s), DP_OK, "%s", dp_errmsg());
    const double g = 0.9f;
    expect_lr(&s, 0, 5, 1000, 0.5);
    expect_lr(&s, 4, 5, 1000, 0.5);
    expect_lr(&s, 5, 5, 1000, 0.5 * g);
    expect_lr(&s, 17, 5, 1000, 0.5 * g * g * g);
}

Test(optim_sched, warmup)
{
    /* Constant 0.4 with 10 warmup steps from factor 0.1: lr (0.1 + 0.9 step / 10) for
     * step < 10. Step 0: 0.04 (= lr start_factor); step 5: 0.4 * 0.55 = 0.22;
     * step 9: 0.4 * 0.91 = 0.364; step 10 and after: 0.4. */
    dp_sched_cfg s = {.kind = DP_SCHED_CONSTANT, .base_lr = 0.4f, .warmup_steps = 10,
                      .warmup_start_factor = 0.1f};
    cr_assert_eq(dp_sched_check(&s), DP_OK, "%s", dp_errmsg());
    const double f = 0.1f, lr = 0.4f;
    expect_lr(&s, 0, 3, 100, lr * f);
    expect_lr(&s, 5, 3, 100, lr * (f + (1 - f) * 0.5));
    expect_lr(&s, 9, 3, 100, lr * (f + (1 - f) * 0.9));
    expect_lr(&s, 10, 3, 100, lr);
    expect_lr(&s, 50, 3, 100, lr);
    /* Strictly rising through the warmup. */
    for (long k = 1; k <= 10; k++) {
        cr_assert_gt(dp_sched_lr_at(&s, k, 3, 100), dp_sched_lr_at(&s, k - 1, 3, 100),
                     "warmup fell at step %ld", k);
    }
}

Test(optim_sched, warmup_composes)
{
    /* Cosine over 100 steps with 20 warmup steps from 0.25: the warmup factor multiplies the
     * cosine value. Step 0: 0.25 lr; step 10: (0.25 + 0.75 * 0.5) lr (1 + cos(pi/10)) / 2;
     * step 20: lr (1 + cos(pi/5)) / 2 exactly the cosine; step 100: 0. */
    dp_sched_cfg s = {.kind = DP_SCHED_COSINE, .base_lr = 1.0f, .warmup_steps = 20,
                      .warmup_start_factor = 0.25f};
    const double pi = 3.14159265358979323846;
    expect_lr(&s, 0, 1, 100, 0.25);
    expect_lr(&s, 10, 1, 100, 0.625 * (1 + cos(pi / 10)) / 2);
    expect_lr(&s, 20, 1, 100, (1 + cos(pi / 5)) / 2);
    expect_lr(&s, 100, 1, 100, 0.0);
    /* Step schedule (gamma 0.5 every epoch of 4 steps) under 6 warmup steps from 0.5:
     * step 5 is epoch 1: 0.5 * (0.5 + 0.5 * 5/6) = 0.5 * 11/12; step 6: 0.5 exactly. */
    s = (dp_sched_cfg){.kind = DP_SCHED_STEP, .base_lr = 1.0f, .gamma = 0.5f, .step_size = 1,
                       .warmup_steps = 6, .warmup_start_factor = 0.5f};
    expect_lr(&s, 0, 4, 100, 0.5);
    expect_lr(&s, 5, 4, 100, 0.5 * 11.0 / 12.0);
    expect_lr(&s, 6, 4, 100, 0.5);
    expect_lr(&s, 8, 4, 100, 0.25);
}

/* dp_sched_check must fail with DP_EINVAL and a message containing msg. */
static void expect_sched_reject(dp_sched_cfg s, const char *msg)
{
    dp_err_clear();
    int rc = dp_sched_check(&s);
    cr_assert_eq(rc, DP_EINVAL, "%s schedule accepted (rc %d), want '%s'",
                 dp_sched_name(s.kind), rc, msg);
    cr_assert(strstr(dp_errmsg(), msg) != NULL, "message '%s' lacks '%s'", dp_errmsg(), msg);
}

Test(optim_sched, check)
{
    const dp_sched_cfg ok = {.kind = DP_SCHED_CONSTANT, .base_lr = 0.1f};
    cr_assert_eq(dp_sched_check(&ok), DP_OK, "%s", dp_errmsg());
    /* warmup_start_factor is only checked with a warmup. */
    dp_sched_cfg s = ok;
    s.warmup_start_factor = 0.0f;
    cr_assert_eq(dp_sched_check(&s), DP_OK, "%s", dp_errmsg());

    s = ok, s.base_lr = 0.0f;
    expect_sched_reject(s, "--lr 0");
    s = ok, s.kind = DP_SCHED_COUNT;
    expect_sched_reject(s, "--lr-schedule");
    s = ok, s.kind = DP_SCHED_STEP, s.gamma = 0.5f, s.step_size = 0;
    expect_sched_reject(s, "--step-size 0: must be >= 1");
    s = ok, s.kind = DP_SCHED_STEP, s.step_size = 2, s.gamma = 0.0f;
    expect_sched_reject(s, "--gamma 0: must be a positive number");
    s = ok, s.kind = DP_SCHED_EXPONENTIAL, s.gamma = NAN;
    expect_sched_reject(s, "--gamma nan");
    s = ok, s.kind = DP_SCHED_MULTISTEP, s.gamma = 0.1f, s.n_milestones = 0;
    expect_sched_reject(s, "--milestones: give 1 to 16 epochs (got 0)");
    s.n_milestones = 17;
    expect_sched_reject(s, "--milestones: give 1 to 16 epochs (got 17)");
    s.n_milestones = 3, s.milestones[0] = 2, s.milestones[1] = 5, s.milestones[2] = 5;
    expect_sched_reject(s, "--milestones: 5 after 5: must be strictly increasing");
    s.milestones[0] = 0, s.milestones[2] = 9;
    expect_sched_reject(s, "--milestones: epoch 0: must be >= 1");
    s = ok, s.warmup_steps = -1;
    expect_sched_reject(s, "--warmup-steps -1: must be >= 0");
    s = ok, s.warmup_steps = 5, s.warmup_start_factor = 0.0f;
    expect_sched_reject(s, "--warmup-start-factor 0: must be in (0, 1]");
    s.warmup_start_factor = 1.5f;
    expect_sched_reject(s, "--warmup-start-factor 1.5: must be in (0, 1]");
    s.warmup_start_factor = 1.0f;
    cr_assert_eq(dp_sched_check(&s), DP_OK, "%s", dp_errmsg());
}
