/* test_bench.c: the bench library (dptrain/bench.h): the median of repeats and the bus
 * bandwidth against values worked out by hand, and 1-rank dp_bench_runs on a tiny
 * synthetic model (MPI as a singleton, in the test's own process): finite positive figures
 * for the modes measured (deterministic mode beside blocking), none for the others, and
 * refusals that name the option. (Deterministic mode's shards against the ranks needs more
 * than one rank: tests/mpi/bench.sh.) */
#include <criterion/criterion.h>

#include "dptrain/bench.h"
#include "dptrain/dist.h"
#include "dptrain/err.h"

#include <math.h>
#include <string.h>

Test(bench, median_of_repeats)
{
    double odd[] = {5.0, 1.0, 4.0, 2.0, 3.0};
    double even[] = {10.0, 40.0, 20.0, 30.0};
    double one[] = {7.5};
    double two[] = {3.0, 1.0};
    cr_assert_eq(dp_bench_median(odd, 5), 3.0);
    cr_assert_eq(dp_bench_median(even, 4), 25.0); /* (20 + 30) / 2 */
    cr_assert_eq(dp_bench_median(one, 1), 7.5);
    cr_assert_eq(dp_bench_median(two, 2), 2.0);
    /* the input keeps its order */
    cr_assert(odd[0] == 5.0 && odd[1] == 1.0 && odd[4] == 3.0);
    /* an outlier does not move it */
    double outlier[] = {1.0, 1.0e9, 2.0};
    cr_assert_eq(dp_bench_median(outlier, 3), 2.0);
    double many[DP_BENCH_MAX_REPEATS];
    for (int i = 0; i < DP_BENCH_MAX_REPEATS; i++) {
        many[i] = (double)(DP_BENCH_MAX_REPEATS - i); /* 100 .. 1 */
    }
    cr_assert_eq(dp_bench_median(many, DP_BENCH_MAX_REPEATS), 50.5);
}

Test(bench, bus_bandwidth)
{
    /* 2 ranks: 2 x 1/2 x 1e6 B x 8 / 1e-3 s = 8e9 bit/s */
    cr_assert_float_eq(dp_bench_busbw_gbps(1e6, 2, 1e-3), 8.0, 1e-12);
    /* 4 ranks: 2 x 3/4 x 1e6 x 8 / 1e-3 = 12e9 */
    cr_assert_float_eq(dp_bench_busbw_gbps(1e6, 4, 1e-3), 12.0, 1e-12);
    /* 3 ranks, 38448 B (9608 + 4 floats) in 0.25 ms: 2 x 2/3 x 38448 x 8 / 2.5e-4 / 1e9 */
    cr_assert_float_eq(dp_bench_busbw_gbps(38448.0, 3, 2.5e-4), 1.640448, 1e-9);
    cr_assert_eq(dp_bench_busbw_gbps(1e6, 1, 1e-3), 0.0);
    cr_assert_eq(dp_bench_busbw_gbps(1e6, 2, 0.0), 0.0);
}

/* A 8,16,4 model (cross-entropy), global batch 16, 3 steps x 3 repeats after 1 warm-up. */
static void tiny(dp_bench_cfg *cfg)
{
    dp_run_opts *o = NULL;
    dp_bench_defaults(cfg);
    cr_assert_eq(dp_run_opts_create(&o), DP_OK);
    cr_assert_eq(dp_run_opts_set(o, "layers", "8,16,4"), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_run_opts_set(o, "batch", "16"), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_run_opts_apply(o, &cfg->run), DP_OK, "%s", dp_errmsg());
    dp_run_opts_free(&o);
    cfg->steps = 3;
    cfg->warmup = 1;
    cfg->repeats = 3;
}

static int ready_calls;
static size_t ready_params;
static void on_ready(const dp_bench_result *r, void *ctx)
{
    (void)ctx;
    ready_calls++;
    ready_params = r->n_params;
}

static bool finite_pos(double x) { return isfinite(x) && x > 0.0; }

Test(bench, one_rank_tiny_model)
{
    dp_comm *c = NULL;
    dp_bench_cfg cfg;
    dp_bench_result res;
    cr_assert_eq(dp_dist_init(NULL, NULL), DP_OK);
    cr_assert_eq(dp_comm_world(&c), DP_OK);
    tiny(&cfg);
    cfg.ready = on_ready; /* both modes asked: one rank measures blocking only */
    int rc = dp_bench_run(&cfg, c, &res);
    cr_assert_eq(rc, DP_OK, "%s", dp_errmsg());
    cr_assert_eq(res.failed_rank, -1);
    cr_assert_eq(ready_calls, 1);
    const size_t n_params = 8 * 16 + 16 + 16 * 4 + 4;
    cr_assert_eq(ready_params, n_params);
    cr_assert_eq(res.n_params, n_params);
    cr_assert_eq(res.ranks, 1);
    cr_assert_eq(res.batch, 16);
    cr_assert_eq(res.rows_per_step, 16);
    cr_assert_eq(res.n_rows, 1);
    const dp_bench_row *r = &res.rows[0];
    cr_assert_eq(r->mode, DP_BENCH_BLOCKING);
    cr_assert_str_eq(r->mode_name, "blocking");
    cr_assert(finite_pos(r->samples_per_s) && finite_pos(r->step_ms) &&
              finite_pos(r->forward_ms) && finite_pos(r->backward_ms) &&
              finite_pos(r->gflops) && finite_pos(r->ceiling_ratio));
    cr_assert(isfinite(r->data_ms) && r->data_ms >= 0.0 && isfinite(r->optim_ms) &&
              r->optim_ms >= 0.0);
    cr_assert_float_eq(r->step_ms, 16.0 / r->samples_per_s * 1e3, 1e-9 * r->step_ms);
    cr_assert_float_eq(r->gflops, 6.0 * n_params * r->samples_per_s / 1e9, 1e-9 * r->gflops);
    cr_assert_float_eq(r->ceiling_ratio, r->samples_per_s / res.ceiling_samples_per_s, 1e-12);
    cr_assert_eq(r->n_buckets, 1);
    cr_assert(finite_pos(res.ceiling_samples_per_s) && finite_pos(res.gemm_ms));
    cr_assert_eq(res.allreduce_busbw_gbps, 0.0);
    cr_assert(finite_pos(res.peak_rss_mb) && finite_pos(res.state_mb));
    /* 48 rows (3 steps of 16) of 8 uint8 pixels and an int32 label each */
    cr_assert_float_eq(res.data_mb, (48.0 * 8 + 48.0 * 4) / 1048576.0, 1e-15);
    cr_assert_float_eq(res.rss_bound_mb, 1.5 * (res.data_mb + res.state_mb) + 30.0, 1e-9);
    cr_assert_float_eq(res.allreduce_bytes, (double)(n_params + DP_GRAD_TAIL) * 4, 1e-9);
    /* the mode not measured holds nothing */
    cr_assert_eq(res.rows[1].samples_per_s, 0.0);
    cr_assert_null(res.rows[1].mode_name);

    /* refusals name the option, and this rank as the one that failed */
    tiny(&cfg);
    cfg.steps = 0;
    cr_assert_eq(dp_bench_run(&cfg, c, &res), DP_EINVAL);
    cr_assert_eq(res.failed_rank, 0);
    cr_assert(strstr(dp_errmsg(), "--steps"), "%s", dp_errmsg());
    tiny(&cfg);
    cfg.synth_rows = 10; /* 3 steps of 16 need 48 */
    cr_assert_eq(dp_bench_run(&cfg, c, &res), DP_EINVAL);
    cr_assert(strstr(dp_errmsg(), "need 48"), "%s", dp_errmsg());
    tiny(&cfg);
    snprintf(cfg.run.data, sizeof cfg.run.data, "%s", DP_TEST_TMPDIR "/bench-nothere.h5");
    cr_assert_neq(dp_bench_run(&cfg, c, &res), DP_OK);
    cr_assert_eq(res.failed_rank, 0);
    cr_assert(strstr(dp_errmsg(), "bench-nothere.h5"), "%s", dp_errmsg());
    dp_comm_free(&c);
    dp_dist_finalize();
}

Test(bench, mode_names)
{
    cr_assert_str_eq(dp_bench_mode_name(DP_BENCH_BLOCKING), "blocking");
    cr_assert_str_eq(dp_bench_mode_name(DP_BENCH_OVERLAP), "overlap");
    cr_assert_str_eq(dp_bench_mode_name(DP_BENCH_DETERMINISTIC), "deterministic");
    cr_assert_null(dp_bench_mode_name(DP_BENCH_MODES));
}

/* Runs cfg with exactly the modes in `ask`; the rows must be the modes in `want`, in that
 * order, with finite positive figures (DP_BENCH_MODES ends each list). */
static void expect_rows(dp_bench_cfg *cfg, const dp_comm *c, const dp_bench_mode *ask,
                        const dp_bench_mode *want)
{
    dp_bench_result res;
    memset(cfg->modes, 0, sizeof cfg->modes);
    for (int i = 0; ask[i] != DP_BENCH_MODES; i++) {
        cfg->modes[ask[i]] = true;
    }
    cr_assert_eq(dp_bench_run(cfg, c, &res), DP_OK, "%s", dp_errmsg());
    int n = 0;
    while (want[n] != DP_BENCH_MODES) {
        n++;
    }
    cr_assert_eq(res.n_rows, n);
    for (int i = 0; i < n; i++) {
        const dp_bench_row *r = &res.rows[i];
        cr_assert_eq(r->mode, want[i]);
        cr_assert_str_eq(r->mode_name, dp_bench_mode_name(want[i]));
        cr_assert(finite_pos(r->samples_per_s) && finite_pos(r->forward_ms) &&
                  finite_pos(r->backward_ms) && finite_pos(r->ceiling_ratio));
        cr_assert_float_eq(r->step_ms, 16.0 / r->samples_per_s * 1e3, 1e-9 * r->step_ms);
        cr_assert_eq(r->n_buckets, 1);
    }
    cr_assert_null(res.rows[n].mode_name);
}

Test(bench, one_rank_deterministic_beside_blocking)
{
    const dp_bench_mode B = DP_BENCH_BLOCKING, O = DP_BENCH_OVERLAP,
                        D = DP_BENCH_DETERMINISTIC, END = DP_BENCH_MODES;
    dp_comm *c = NULL;
    dp_bench_cfg cfg;
    dp_bench_result res;
    cr_assert_eq(dp_dist_init(NULL, NULL), DP_OK);
    cr_assert_eq(dp_comm_world(&c), DP_OK);
    tiny(&cfg);
    cfg.run.train.shards = 3; /* shards of 5, 5 and 6 rows */
    expect_rows(&cfg, c, (dp_bench_mode[]){B, D, END}, (dp_bench_mode[]){B, D, END});
    /* one rank: overlap measures blocking */
    expect_rows(&cfg, c, (dp_bench_mode[]){O, D, END}, (dp_bench_mode[]){B, D, END});
    expect_rows(&cfg, c, (dp_bench_mode[]){D, END}, (dp_bench_mode[]){D, END});
    /* the run's own reduce and deterministic switches do not choose the rows */
    cfg.run.train.deterministic = true;
    cfg.run.train.reduce = DP_REDUCE_OVERLAP;
    expect_rows(&cfg, c, (dp_bench_mode[]){B, END}, (dp_bench_mode[]){B, END});
    expect_rows(&cfg, c, (dp_bench_mode[]){B, O, D, END}, (dp_bench_mode[]){B, D, END});

    /* refusals: no mode; deterministic mode's --shards out of range */
    tiny(&cfg);
    memset(cfg.modes, 0, sizeof cfg.modes);
    cr_assert_eq(dp_bench_run(&cfg, c, &res), DP_EINVAL);
    cr_assert(strstr(dp_errmsg(), "--allreduce"), "%s", dp_errmsg());
    tiny(&cfg);
    cfg.modes[DP_BENCH_DETERMINISTIC] = true;
    cfg.run.train.shards = 0;
    cr_assert_eq(dp_bench_run(&cfg, c, &res), DP_EINVAL);
    cr_assert_eq(res.failed_rank, 0);
    cr_assert(strstr(dp_errmsg(), "--shards 0"), "%s", dp_errmsg());
    /* ... which the other modes do not use */
    cfg.modes[DP_BENCH_DETERMINISTIC] = false;
    cr_assert_eq(dp_bench_run(&cfg, c, &res), DP_OK, "%s", dp_errmsg());
    dp_comm_free(&c);
    dp_dist_finalize();
}
