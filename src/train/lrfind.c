/* lrfind.c: the learning-rate range test of dptrain/lrfind.h. The points and the rule
 * (smoothing, stop, suggestion) are plain functions of the recorded losses; dp_lrfind_run
 * drives the training loop's own step (loop.c), so the test trains exactly as a run would,
 * with the rate of each step set through the state's rate factor over a constant schedule
 * of base rate 1. */
#define _GNU_SOURCE
#include "dptrain/lrfind.h"

#include "job_internal.h"
#include "loop.h"

#include "dptrain/err.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dp_lrfind_defaults(dp_lrfind_cfg *cfg)
{
    *cfg = (dp_lrfind_cfg){.lr_min = 1e-7, .lr_max = 10.0, .steps = 200, .beta = 0.98,
                           .diverge = 4.0, .skip = -1};
}

int dp_lrfind_check(const dp_lrfind_cfg *cfg)
{
    if (!(cfg->lr_min > 0.0) || !isfinite(cfg->lr_min)) {
        return dp_err(DP_EINVAL, "--lr-min %g: give a rate above 0", cfg->lr_min);
    }
    if (!(cfg->lr_max > cfg->lr_min) || !isfinite(cfg->lr_max) || cfg->lr_max > 3.4e38) {
        return dp_err(DP_EINVAL, "--lr-max %g: give a finite rate above --lr-min %g",
                      cfg->lr_max, cfg->lr_min);
    }
    if (cfg->steps < 2) {
        return dp_err(DP_EINVAL, "--steps %d: at least 2", cfg->steps);
    }
    if (!(cfg->beta >= 0.0 && cfg->beta < 1.0)) {
        return dp_err(DP_EINVAL, "--smooth %g: a factor in [0, 1) (0: no smoothing)",
                      cfg->beta);
    }
    if (!(cfg->diverge > 1.0) || !isfinite(cfg->diverge)) {
        return dp_err(DP_EINVAL, "--diverge %g: a factor above 1", cfg->diverge);
    }
    if (cfg->skip < -1 || cfg->skip >= cfg->steps) {
        return dp_err(DP_EINVAL, "--skip %d: -1 (auto) or 0 to --steps - 1 (%d)", cfg->skip,
                      cfg->steps - 1);
    }
    return DP_OK;
}

double dp_lrfind_rate(const dp_lrfind_cfg *cfg, int i)
{
    return cfg->lr_min * pow(cfg->lr_max / cfg->lr_min, (double)i / (double)(cfg->steps - 1));
}

int dp_lrfind_init(dp_lrfind_result *r, const dp_lrfind_cfg *cfg)
{
    int rc = DP_OK;
    *r = (dp_lrfind_result){.best = -1, .steepest = -1, .suggestion = NAN, .min_tenth = NAN,
                            .failed_rank = -1};
    DP_CALLOC(r->lr, cfg->steps);
    DP_CALLOC(r->loss, cfg->steps);
    DP_CALLOC(r->smooth, cfg->steps);
done:
    if (rc != DP_OK) {
        dp_lrfind_free(r);
    }
    return rc;
}

void dp_lrfind_free(dp_lrfind_result *r)
{
    if (!r) {
        return;
    }
    free(r->lr);
    free(r->loss);
    free(r->smooth);
    r->lr = r->loss = r->smooth = NULL;
}

bool dp_lrfind_add(dp_lrfind_result *r, const dp_lrfind_cfg *cfg, double lr, double loss)
{
    const int i = r->n;
    r->lr[i] = lr;
    r->loss[i] = isfinite(loss) ? loss : NAN;
    r->n = i + 1;
    if (!isfinite(loss)) {
        r->smooth[i] = NAN;
        r->why = DP_LRFIND_EXPLODED;
        return true;
    }
    r->avg = cfg->beta * r->avg + (1.0 - cfg->beta) * loss;
    const double s = r->avg / (1.0 - pow(cfg->beta, (double)(i + 1)));
    r->smooth[i] = s;
    if (r->best < 0 || s < r->smooth[r->best]) {
        r->best = i;
    }
    if (s > cfg->diverge * r->smooth[r->best]) {
        r->why = DP_LRFIND_DIVERGED;
        return true;
    }
    return false;
}

/* The automatic skip: steps / 20, at most 10. */
static int skip_of(const dp_lrfind_cfg *cfg)
{
    if (cfg->skip >= 0) {
        return cfg->skip;
    }
    return cfg->steps / 20 < 10 ? cfg->steps / 20 : 10;
}

void dp_lrfind_suggest(dp_lrfind_result *r, const dp_lrfind_cfg *cfg)
{
    r->steepest = -1;
    r->suggestion = r->min_tenth = NAN;
    if (r->best < 0) {
        return;
    }
    r->min_tenth = r->lr[r->best] / 10.0;
    /* The slope of the smoothed loss per point (the points are evenly spaced in log lr), as
     * numpy.gradient takes it: central differences inside, one-sided at the ends of the
     * curve. Only points from the skip to the minimum are candidates. */
    const int lo = skip_of(cfg), hi = r->best;
    double steepest = 0.0;
    for (int i = lo; i <= hi && r->n >= 2; i++) {
        const int a = i > 0 ? i - 1 : 0, b = i + 1 < r->n ? i + 1 : r->n - 1;
        const double slope = (r->smooth[b] - r->smooth[a]) / (double)(b - a);
        if (isfinite(slope) && slope < steepest) {
            steepest = slope;
            r->steepest = i;
        }
    }
    if (r->steepest >= 0) {
        r->suggestion = r->lr[r->steepest];
    }
}

int dp_lrfind_write_csv(const dp_lrfind_result *r, const char *dir)
{
    char path[DP_PATH_MAX + 16], tmp[DP_PATH_MAX + 32];
    if ((size_t)snprintf(path, sizeof path, "%s/lr_find.csv", dir) >= sizeof path) {
        return dp_err(DP_EINVAL, "--out %s: path too long", dir);
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = dp_job_mkdir_p(dir);
    if (rc != DP_OK) {
        return rc;
    }
    FILE *f = fopen(tmp, "w");
    if (!f) {
        return dp_err(DP_EIO, "%s: cannot write (%s)", tmp, strerror(errno));
    }
    int bad = fprintf(f, "step,lr,loss,smoothed\n") < 0;
    for (int i = 0; i < r->n && !bad; i++) {
        bad = fprintf(f, "%d,%.17g,%.17g,%.17g\n", i, r->lr[i], r->loss[i], r->smooth[i]) < 0;
    }
    bad = fclose(f) != 0 || bad;
    if (bad || rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return dp_err(DP_EIO, "%s: write failed (%s)", path, strerror(e));
    }
    return DP_OK;
}

/* --- the test on a communicator ---------------------------------------------------------- */

/* The loop's configuration for the test: the run's training with a constant schedule of
 * base rate 1 (the state's rate factor is each step's rate), no warmup, plateau, early
 * stopping, checkpoints or logs, and enough epochs for the steps. */
static dp_train_cfg test_cfg(const dp_run_cfg *run, const dp_lrfind_cfg *cfg,
                             const dp_dataset *d, const dp_run_hooks *hooks)
{
    dp_train_cfg tc = run->train;
    tc.opt.lr = 1.0f;
    tc.sched = (dp_sched_cfg){.kind = DP_SCHED_CONSTANT, .base_lr = 1.0f};
    tc.patience = 0;
    tc.plateau_factor = 0.0f;
    tc.checkpoint_every = 0;
    tc.checkpoint_epochs = 0;
    tc.checkpoint = NULL;
    tc.stop_epoch = 0;
    tc.log = tc.metrics = NULL;
    tc.progress = NULL;
    tc.times = NULL;
    tc.stop = hooks->stop;
    tc.hooks = &hooks->test;
    const size_t n = d->train.n - dp_val_count(d->train.n, tc.val_fraction);
    const size_t B = dp_loop_batch(&tc, n);
    const size_t batches = n ? dp_n_batches(n, B, tc.drop_last) : 1;
    const size_t per_epoch = (batches + (size_t)tc.accumulate - 1) / (size_t)tc.accumulate;
    const size_t epochs = per_epoch ? ((size_t)cfg->steps + per_epoch - 1) / per_epoch : 1;
    tc.epochs = epochs < 1 ? 1 : epochs > 1000000 ? 1000000 : (int)epochs;
    return tc;
}

/* The steps: each at its rate; a step the loop refuses as diverged (NaN, or past its
 * explosion limit) is the last point. Collective. */
static int run_steps(dp_loop *s, const dp_lrfind_cfg *cfg, dp_lrfind_result *res)
{
    dp_train_state *st = s->st;
    const size_t n_params = dp_model_n_params(s->m);
    const float *tail = dp_model_grads(s->m) + n_params;
    const double t0 = dp_wtime();
    int epoch = 0, rc = DP_OK;
    dp_loop_begin_epoch(s, epoch);
    for (int i = 0; i < cfg->steps; i++) {
        if (st->next_batch >= s->n_batches) {
            /* A new epoch: its permutation; the loss sums start over, as the loop's own
             * epoch end does. */
            st->epoch = ++epoch;
            st->next_batch = 0;
            st->loss_sum = st->correct_sum = 0.0;
            st->seen = 0;
            dp_loop_begin_epoch(s, epoch);
        }
        const double lr = dp_lrfind_rate(cfg, i);
        const size_t seen = st->seen;
        const size_t b0 = st->next_batch;
        st->lr_factor = (float)lr;
        rc = dp_loop_train_step(s);
        if (rc != DP_OK && rc != DP_ENONFINITE && rc != DP_ESTOPPED) {
            return rc;
        }
        /* The step's summed loss rode the allreduce: every rank has the same figure. */
        size_t rows = st->seen - seen;
        if (rc == DP_ENONFINITE) {
            rows = 0;
            for (size_t b = b0; b < s->n_batches && b < b0 + s->K; b++) {
                rows += dp_loop_batch_rows(b, s->B, s->n_rows);
            }
        }
        const double loss = dp_loss_report(s->cfg->loss, tail[DP_TAIL_LOSS], rows);
        const bool stop = dp_lrfind_add(res, cfg, (double)(float)lr, loss);
        if (rc == DP_ENONFINITE) {
            res->why = DP_LRFIND_EXPLODED;
        } else if (rc == DP_ESTOPPED && !stop) {
            res->why = DP_LRFIND_STOPPED;
        }
        if (cfg->point) {
            cfg->point(cfg->point_ctx, res);
        }
        if (stop || rc != DP_OK) {
            break;
        }
    }
    res->seconds = dp_wtime() - t0;
    return DP_OK;
}

int dp_lrfind_run(const dp_run_cfg *run, const dp_lrfind_cfg *cfg, const dp_comm *c,
                  const dp_run_hooks *hooks, dp_lrfind_result *res)
{
    static const dp_run_hooks none = {0};
    hooks = hooks ? hooks : &none;
    dp_job_data data = {0};
    dp_dataset *d = NULL;
    dp_model *m = NULL;
    dp_train_state st = {0};
    dp_train_result tr;
    dp_loop s;
    bool loop_ready = false;
    res->failed_rank = -1;
    int rc = dp_job_agree(c, dp_lrfind_check(cfg), "", &res->failed_rank);
    if (rc == DP_OK) {
        rc = dp_job_data_load(run->data, run->data_memory, c, &data, &res->failed_rank);
        d = data.d;
    }
    dp_train_cfg tc;
    if (rc == DP_OK) {
        tc = test_cfg(run, cfg, d, hooks);
        char ctx[DP_PATH_MAX + 8];
        snprintf(ctx, sizeof ctx, "%s: ", run->data);
        rc = dp_job_agree(c, dp_run_prepare(&tc, &run->model, d, c, &m, &st), ctx,
                          &res->failed_rank);
    }
    if (rc == DP_OK && run->init_from[0]) {
        rc = dp_job_agree(c, dp_job_init_weights(run->init_from, m), "", &res->failed_rank);
    }
    if (rc == DP_OK) {
        loop_ready = true;
        rc = dp_job_agree(c, dp_loop_init(&s, &tc, m, d, c, &st, &tr), "", &res->failed_rank);
    }
    if (rc == DP_OK) {
        rc = dp_job_agree(c, run_steps(&s, cfg, res), "", &res->failed_rank);
    }
    if (rc == DP_OK) {
        dp_lrfind_suggest(res, cfg);
        res->seconds = dp_comm_max_f64(c, res->seconds);
    }
    if (loop_ready) {
        dp_loop_free(&s);
    }
    dp_train_state_free(&st);
    dp_model_free(&m);
    dp_job_data_free(&data);
    return rc;
}
