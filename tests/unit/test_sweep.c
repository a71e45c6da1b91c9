/* test_sweep.c: a sweep's search space and plan: parameter parsing and its refusals, the grid's
 * order (every combination, the last parameter fastest), random draws inside their ranges and
 * keyed by (seed, trial, parameter) so a trial's values do not depend on how many are drawn,
 * the rungs of successive halving, and a trial's run configuration (its values win over the
 * base options). */
#include "dptrain/err.h"
#include "dptrain/sweep.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static dp_sweep_cfg cfg_with(int n, const char *const *params)
{
    dp_sweep_cfg c;
    memset(&c, 0, sizeof c);
    c.seed = 1;
    c.group = 1;
    c.eta = 3;
    c.min_epochs = 1;
    c.n_params = n;
    for (int i = 0; i < n; i++) {
        cr_assert_eq(dp_sweep_param_parse(params[i], &c.params[i]), DP_OK, "%s: %s", params[i],
                     dp_errmsg());
    }
    return c;
}

Test(sweep, param_parse_and_refusals)
{
    dp_sweep_param p;
    cr_assert_eq(dp_sweep_param_parse("lr=0.1|0.01|0.001", &p), DP_OK);
    cr_assert_eq(p.kind, DP_PARAM_LIST);
    cr_assert_eq(p.n_values, 3);
    cr_assert_eq(dp_sweep_param_parse("weight_decay=loguniform:1e-5:1e-2", &p), DP_OK);
    cr_assert_str_eq(p.name, "weight-decay");
    cr_assert_eq(p.kind, DP_PARAM_LOGUNIFORM);
    cr_assert_float_eq(p.lo, 1e-5, 1e-12);
    cr_assert_float_eq(p.hi, 1e-2, 1e-12);
    cr_assert_eq(dp_sweep_param_parse("layers=2,8,3|2,16:relu,3", &p), DP_OK);
    cr_assert_eq(p.n_values, 2);
    const char *bad[] = {"lr", "lr=", "nosuch=1|2", "epochs=1|2", "data=a.h5", "lr=0.1|",
                         "lr=0.1|fast", "lr=loguniform:0:1", "lr=loguniform:1:0.1",
                         "lr=uniform:1", "batch=int:1.5:4", "optimizer=sgd|nosuch",
                         "val-fraction=0.1|0.2"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_expect_neq(dp_sweep_param_parse(bad[i], &p), DP_OK, "%s was accepted", bad[i]);
    }
}

Test(sweep, grid_order_and_rungs)
{
    const char *params[] = {"lr=0.1|0.01", "optimizer=sgd|adam|rmsprop"};
    dp_sweep_cfg c = cfg_with(2, params);
    c.search = DP_SEARCH_GRID;
    dp_sweep_plan plan;
    cr_assert_eq(dp_sweep_plan_make(&c, 9, &plan), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(plan.n_trials, 6);
    const char *want[6][2] = {{"0.1", "sgd"},  {"0.1", "adam"},  {"0.1", "rmsprop"},
                              {"0.01", "sgd"}, {"0.01", "adam"}, {"0.01", "rmsprop"}};
    for (int t = 0; t < 6; t++) {
        cr_expect_str_eq(plan.value[t * 2], want[t][0], "trial %d", t);
        cr_expect_str_eq(plan.value[t * 2 + 1], want[t][1], "trial %d", t);
    }
    /* min 1, eta 3, 9 epochs: 1, 3, 9. */
    cr_assert_eq(plan.n_rungs, 3);
    cr_expect_eq(plan.rung_epochs[0], 1);
    cr_expect_eq(plan.rung_epochs[1], 3);
    cr_expect_eq(plan.rung_epochs[2], 9);
    dp_sweep_plan_free(&plan);
    /* min 2, eta 2, 20 epochs: 2, 4, 8, 16, 20; eta 0: only the end. */
    c.min_epochs = 2;
    c.eta = 2;
    cr_assert_eq(dp_sweep_plan_make(&c, 20, &plan), DP_OK);
    const int r2[] = {2, 4, 8, 16, 20};
    cr_assert_eq(plan.n_rungs, 5);
    for (int i = 0; i < 5; i++) {
        cr_expect_eq(plan.rung_epochs[i], r2[i]);
    }
    dp_sweep_plan_free(&plan);
    c.eta = 0;
    cr_assert_eq(dp_sweep_plan_make(&c, 20, &plan), DP_OK);
    cr_expect_eq(plan.n_rungs, 1);
    cr_expect_eq(plan.rung_epochs[0], 20);
    dp_sweep_plan_free(&plan);
    /* A range has no grid. */
    const char *ranged[] = {"lr=loguniform:1e-4:1e-1"};
    dp_sweep_cfg r = cfg_with(1, ranged);
    r.search = DP_SEARCH_GRID;
    cr_expect_neq(dp_sweep_plan_make(&r, 9, &plan), DP_OK);
}

Test(sweep, random_draws_in_range_and_keyed_by_trial)
{
    const char *params[] = {"lr=loguniform:1e-4:1e-1", "dropout=uniform:0:0.5", "batch=int:16:20",
                            "optimizer=sgd|adam"};
    dp_sweep_cfg c = cfg_with(4, params);
    c.search = DP_SEARCH_RANDOM;
    c.trials = 200;
    dp_sweep_plan big, small;
    cr_assert_eq(dp_sweep_plan_make(&c, 3, &big), DP_OK, "%s", dp_errmsg());
    int below = 0, batch_seen[5] = {0}, adam = 0;
    for (int t = 0; t < 200; t++) {
        const double lr = atof(big.value[t * 4]), dr = atof(big.value[t * 4 + 1]);
        const int b = atoi(big.value[t * 4 + 2]);
        cr_assert(lr >= 1e-4 * 0.9999 && lr <= 1e-1 * 1.0001, "lr %g", lr);
        cr_assert(dr >= 0.0 && dr <= 0.5, "dropout %g", dr);
        cr_assert(b >= 16 && b <= 20, "batch %d", b);
        batch_seen[b - 16]++;
        below += lr < 1e-2 * 1.0001 ? 1 : 0; /* log-uniform: 2/3 of the mass below 1e-2 */
        adam += strcmp(big.value[t * 4 + 3], "adam") == 0;
    }
    cr_expect(below > 110 && below < 155, "%d of 200 rates below 1e-2 (expected ~133)", below);
    for (int i = 0; i < 5; i++) {
        cr_expect(batch_seen[i] > 10, "batch %d drawn %d times", 16 + i, batch_seen[i]);
    }
    cr_expect(adam > 70 && adam < 130, "adam %d of 200", adam);
    /* The first 10 trials are the same when 10 are drawn: keyed by (seed, trial, parameter). */
    c.trials = 10;
    cr_assert_eq(dp_sweep_plan_make(&c, 3, &small), DP_OK);
    for (int i = 0; i < 40; i++) {
        cr_expect_str_eq(small.value[i], big.value[i]);
    }
    dp_sweep_plan_free(&small);
    /* Another seed, other draws. */
    c.seed = 2;
    cr_assert_eq(dp_sweep_plan_make(&c, 3, &small), DP_OK);
    int same = 0;
    for (int t = 0; t < 10; t++) {
        same += strcmp(small.value[t * 4], big.value[t * 4]) == 0;
    }
    cr_expect(same < 3, "%d of 10 rates equal under another seed", same);
    dp_sweep_plan_free(&small);
    dp_sweep_plan_free(&big);
}

Test(sweep, trial_cfg_values_win_over_base)
{
    const char *params[] = {"lr=0.5|0.25", "optimizer=adam|sgd"};
    dp_sweep_cfg c = cfg_with(2, params);
    c.search = DP_SEARCH_GRID;
    dp_run_defaults(&c.base);
    dp_run_opts *o = NULL;
    cr_assert_eq(dp_run_opts_create(&o), DP_OK);
    cr_assert_eq(dp_run_opts_set(o, "data", "x.h5"), DP_OK);
    cr_assert_eq(dp_run_opts_set(o, "layers", "2,8,3"), DP_OK);
    cr_assert_eq(dp_run_opts_set(o, "lr", "0.001"), DP_OK);
    cr_assert_eq(dp_run_opts_set(o, "epochs", "4"), DP_OK);
    c.opts = o;
    c.threads = 1;
    snprintf(c.out, sizeof c.out, "runs/sw");
    dp_sweep_plan plan;
    cr_assert_eq(dp_sweep_plan_make(&c, 4, &plan), DP_OK);
    dp_run_cfg run;
    cr_assert_eq(dp_sweep_trial_cfg(&c, &plan, 3, &run), DP_OK, "%s", dp_errmsg());
    cr_expect_float_eq(run.train.opt.lr, 0.25f, 0.0f);  /* the trial's, not the base's 0.001 */
    cr_expect_eq(run.train.opt.kind, DP_OPT_SGD);
    cr_expect_eq(run.train.epochs, 4);
    cr_expect_str_eq(run.out, "runs/sw/trials/003");
    cr_expect_str_eq(run.resume, "auto");
    cr_expect_eq(run.threads, 1);
    cr_expect_eq(run.train.stop_epoch, 0);
    dp_sweep_plan_free(&plan);
    dp_run_opts_free(&o);
}
