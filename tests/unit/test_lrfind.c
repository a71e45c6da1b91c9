/* test_lrfind.c: the learning-rate range test's rule, on losses the test chooses: the rates
 * (geometric from lr_min to lr_max), the smoothing (bias-corrected exponential average,
 * computed here from its definition), the stop (smoothed loss past diverge x its minimum, or
 * a loss that is not finite), the suggestion (the steepest fall of the smoothed loss before
 * its minimum, not in the skipped first points, none when the loss does not fall) and the
 * refusals of bad settings. */
#include "dptrain/err.h"
#include "dptrain/lrfind.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static dp_lrfind_cfg cfg_of(int steps, double beta)
{
    dp_lrfind_cfg c;
    dp_lrfind_defaults(&c);
    c.steps = steps;
    c.beta = beta;
    return c;
}

/* Feeds losses[0..n) at the configured rates until the rule stops; returns the points. */
static int feed(dp_lrfind_result *r, const dp_lrfind_cfg *c, const double *losses, int n)
{
    cr_assert_eq(dp_lrfind_init(r, c), DP_OK);
    for (int i = 0; i < n; i++) {
        if (dp_lrfind_add(r, c, dp_lrfind_rate(c, i), losses[i])) {
            break;
        }
    }
    dp_lrfind_suggest(r, c);
    return r->n;
}

Test(lrfind, defaults_and_rates)
{
    dp_lrfind_cfg c;
    dp_lrfind_defaults(&c);
    cr_assert_eq(c.steps, 200);
    cr_assert_float_eq(c.lr_min, 1e-7, 1e-20);
    cr_assert_float_eq(c.lr_max, 10.0, 1e-12);
    cr_assert_float_eq(c.beta, 0.98, 1e-12);
    cr_assert_float_eq(c.diverge, 4.0, 1e-12);
    cr_assert_eq(dp_lrfind_check(&c), DP_OK);
    cr_assert_float_eq(dp_lrfind_rate(&c, 0), 1e-7, 1e-20);
    cr_assert_float_eq(dp_lrfind_rate(&c, 199), 10.0, 1e-12);
    /* Geometric: the same ratio between neighbours, 10^(8/199). */
    const double q = pow(10.0, 8.0 / 199.0);
    for (int i = 1; i < 200; i++) {
        cr_assert_float_eq(dp_lrfind_rate(&c, i) / dp_lrfind_rate(&c, i - 1), q, 1e-12, "%d", i);
    }
}

Test(lrfind, smoothing_is_the_bias_corrected_average)
{
    const double beta = 0.9, losses[6] = {4.0, 2.0, 3.0, 1.0, 5.0, 2.5};
    dp_lrfind_cfg c = cfg_of(6, beta);
    dp_lrfind_result r;
    cr_assert_eq(feed(&r, &c, losses, 6), 6);
    /* s_i = sum_j beta^(i-j) (1 - beta) l_j / (1 - beta^(i+1)), written out. */
    for (int i = 0; i < 6; i++) {
        double num = 0.0;
        for (int j = 0; j <= i; j++) {
            num += pow(beta, i - j) * (1.0 - beta) * losses[j];
        }
        const double want = num / (1.0 - pow(beta, i + 1));
        cr_assert_float_eq(r.smooth[i], want, 1e-12, "point %d: %.17g, want %.17g", i,
                           r.smooth[i], want);
        cr_assert_float_eq(r.loss[i], losses[i], 0.0);
    }
    cr_assert_float_eq(r.smooth[0], 4.0, 1e-12); /* the first point is its own loss */
    cr_assert_eq(r.why, DP_LRFIND_END);
    dp_lrfind_free(&r);
    /* No smoothing: the losses themselves. */
    c = cfg_of(6, 0.0);
    cr_assert_eq(feed(&r, &c, losses, 6), 5, "4 x the minimum 1.0 stops at the 5.0");
    for (int i = 0; i < r.n; i++) {
        cr_assert_float_eq(r.smooth[i], losses[i], 0.0);
    }
    dp_lrfind_free(&r);
}

Test(lrfind, stops_past_diverge_times_the_minimum)
{
    /* Unsmoothed: 2, 1.5, 1, then 3.9 (below 4 x 1), 4.1 (past it). */
    const double losses[8] = {2.0, 1.5, 1.0, 3.9, 4.1, 0.5, 0.5, 0.5};
    dp_lrfind_cfg c = cfg_of(8, 0.0);
    dp_lrfind_result r;
    cr_assert_eq(feed(&r, &c, losses, 8), 5);
    cr_assert_eq(r.why, DP_LRFIND_DIVERGED);
    cr_assert_eq(r.best, 2);
    dp_lrfind_free(&r);
    /* A factor of 5 lets 4.1 pass. */
    c.diverge = 5.0;
    cr_assert_eq(feed(&r, &c, losses, 8), 8);
    cr_assert_eq(r.why, DP_LRFIND_END);
    cr_assert_eq(r.best, 5);
    dp_lrfind_free(&r);
    /* NaN and infinity end the test at once, recorded as NaN. */
    const double bad[4] = {1.0, 0.9, NAN, 0.5};
    c = cfg_of(4, 0.5);
    cr_assert_eq(feed(&r, &c, bad, 4), 3);
    cr_assert_eq(r.why, DP_LRFIND_EXPLODED);
    cr_assert(isnan(r.loss[2]) && isnan(r.smooth[2]));
    cr_assert_eq(r.best, 1);
    dp_lrfind_free(&r);
    const double inf[3] = {1.0, INFINITY, 0.5};
    cr_assert_eq(feed(&r, &c, inf, 3), 2);
    cr_assert_eq(r.why, DP_LRFIND_EXPLODED);
    dp_lrfind_free(&r);
}

Test(lrfind, suggestion_is_the_steepest_fall_before_the_minimum)
{
    /* A logistic fall centred on point 60 (steepest there), a minimum at point 90, then a
     * rise. Unsmoothed, so the answer is the curve's own. */
    enum { N = 120 };
    double losses[N];
    for (int i = 0; i < N; i++) {
        losses[i] = 1.0 + 2.0 / (1.0 + exp((i - 60) / 6.0)) + (i > 90 ? 0.01 * (i - 90) : 0.0);
    }
    dp_lrfind_cfg c = cfg_of(N, 0.0);
    dp_lrfind_result r;
    feed(&r, &c, losses, N);
    cr_assert_eq(r.why, DP_LRFIND_END);
    cr_assert_eq(r.best, 90);
    cr_assert_eq(r.steepest, 60, "steepest at %d", r.steepest);
    cr_assert_float_eq(r.suggestion, dp_lrfind_rate(&c, 60), 1e-12 * r.suggestion);
    cr_assert_float_eq(r.min_tenth, dp_lrfind_rate(&c, 90) / 10.0, 1e-12 * r.min_tenth);
    dp_lrfind_free(&r);

    /* A steeper fall after the minimum is not a candidate: the loss falls gently to its
     * minimum 1.0 at point 30, jumps to 3.5 at 40 and falls fast back to 2.0 at 45, where it stays. */
    double late[50];
    for (int i = 0; i < 50; i++) {
        late[i] = i <= 30 ? 2.0 - i / 30.0
                  : i <= 40 ? 1.0 + 0.25 * (i - 30)
                  : i <= 45 ? 3.5 - 0.3 * (i - 40) : 2.0;
    }
    c = cfg_of(50, 0.0);
    c.skip = 0;
    feed(&r, &c, late, 50);
    cr_assert_eq(r.best, 30);
    cr_assert(r.steepest >= 0 && r.steepest <= 30, "steepest %d is after the minimum",
              r.steepest);
    dp_lrfind_free(&r);

    /* The skipped first points are not candidates: a cliff in points 0-3, then a gentle fall. */
    double cliff[40];
    for (int i = 0; i < 40; i++) {
        cliff[i] = i < 4 ? 3.0 - 0.6 * i : 1.2 - 0.01 * i;
    }
    c = cfg_of(40, 0.0);
    c.skip = 5;
    feed(&r, &c, cliff, 40);
    cr_assert(r.steepest >= 5, "steepest %d inside the skip", r.steepest);
    dp_lrfind_free(&r);
    c.skip = 0;
    feed(&r, &c, cliff, 40);
    cr_assert(r.steepest >= 0 && r.steepest <= 3, "without a skip the cliff: %d", r.steepest);
    dp_lrfind_free(&r);

    /* A loss that only rises has no suggestion (its minimum is the first point). */
    double rise[20];
    for (int i = 0; i < 20; i++) {
        rise[i] = 1.0 + 0.1 * i;
    }
    c = cfg_of(20, 0.0);
    c.diverge = 100.0;
    feed(&r, &c, rise, 20);
    cr_assert_eq(r.best, 0);
    cr_assert_eq(r.steepest, -1);
    cr_assert(isnan(r.suggestion));
    dp_lrfind_free(&r);
}

Test(lrfind, refusals)
{
    dp_lrfind_cfg c;
    dp_lrfind_defaults(&c);
    c.lr_min = 0.0;
    cr_expect_neq(dp_lrfind_check(&c), DP_OK);
    cr_expect(strstr(dp_errmsg(), "--lr-min") != NULL, "%s", dp_errmsg());
    dp_lrfind_defaults(&c);
    c.lr_max = c.lr_min;
    cr_expect_neq(dp_lrfind_check(&c), DP_OK);
    cr_expect(strstr(dp_errmsg(), "--lr-max") != NULL, "%s", dp_errmsg());
    dp_lrfind_defaults(&c);
    c.lr_max = INFINITY;
    cr_expect_neq(dp_lrfind_check(&c), DP_OK);
    dp_lrfind_defaults(&c);
    c.steps = 1;
    cr_expect_neq(dp_lrfind_check(&c), DP_OK);
    dp_lrfind_defaults(&c);
    c.beta = 1.0;
    cr_expect_neq(dp_lrfind_check(&c), DP_OK);
    dp_lrfind_defaults(&c);
    c.diverge = 1.0;
    cr_expect_neq(dp_lrfind_check(&c), DP_OK);
    dp_lrfind_defaults(&c);
    c.skip = 200;
    cr_expect_neq(dp_lrfind_check(&c), DP_OK);
    c.skip = 199;
    cr_expect_eq(dp_lrfind_check(&c), DP_OK);
}
