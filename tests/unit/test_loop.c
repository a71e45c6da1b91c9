/* test_loop.c: the training loop's parts (src/train/loop.h) on a tiny model, one process
 * playing a world of 1 rank: one step is an SGD step on the global batch's gradient (with or
 * without accumulation), early stopping keeps the best epoch and stops after `patience`
 * epochs without improvement, finish restores the kept weights, and the driver checkpoints
 * and stops where it should, resuming to the uninterrupted run's weights bit for bit. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/err.h"
#include "dptrain/train.h"
#include "testutil.h"
#include "train/loop.h"

static dp_comm *world;

static void world_up(void)
{
    cr_assert_eq(dp_dist_init(NULL, NULL), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_comm_world(&world), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_comm_size(world), 1);
}

static void world_down(void)
{
    dp_comm_free(&world);
    dp_dist_finalize();
}

TestSuite(loop, .init = world_up, .fini = world_down);

enum { F = 3, H = 5, C = 3 }; /* features, hidden units, classes */
#define LR 0.5f

/* A run: n rows of 3 features in 3 classes (no test split), a 3-5-3 tanh model, SGD with a
 * constant rate; the loop set up on it. */
typedef struct {
    dp_dataset d;
    dp_model_cfg mc;
    dp_model *m;
    dp_train_cfg cfg;
    dp_train_state st;
    dp_train_result res;
    dp_loop s;
} run;

static void run_cfg(run *r, size_t n, int epochs)
{
    memset(r, 0, sizeof *r);
    r->d.n_classes = C;
    r->d.train = (dp_split){.n = n, .n_features = F, .x_f32 = talloc(n * F), .x_scale = 1.0f,
                            .labels = calloc(n, sizeof(int32_t))};
    cr_assert_not_null(r->d.train.labels);
    tfill(r->d.train.x_f32, n * F, -1.0f, 1.0f, 99);
    for (size_t i = 0; i < n; i++) {
        const float *x = r->d.train.x_f32 + i * F;
        r->d.train.labels[i] = x[0] > 0.3f ? 0 : x[1] > 0.0f ? 1 : 2;
    }
    dp_train_cfg *c = &r->cfg;
    c->loss = DP_LOSS_CROSS_ENTROPY;
    c->epochs = epochs;
    c->seed = 11;
    dp_optim_defaults(DP_OPT_SGD, &c->opt);
    c->opt.lr = LR;
    c->sched.kind = DP_SCHED_CONSTANT;
    c->eval_batch = 64;
    c->accumulate = 1;
    r->mc = (dp_model_cfg){.n_layers = 2, .sizes = {F, H, C}, .act = {DP_ACT_TANH, DP_ACT_IDENTITY},
                           .init = DP_INIT_XAVIER_NORMAL, .seed = 5};
}

/* The model and a fresh state for r->cfg as set by the test, and the loop if `loop`. */
static void run_start(run *r, bool loop)
{
    cr_assert_eq(dp_train_check(&r->cfg, &r->mc, &r->d, 1), DP_OK, "%s", dp_errmsg());
    r->mc.max_batch = dp_train_max_rows(&r->cfg, &r->d, 1);
    cr_assert_eq(dp_model_create(&r->mc, &r->m), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_train_state_fresh(&r->cfg, r->m, &r->st), DP_OK, "%s", dp_errmsg());
    if (!loop) {
        return;
    }
    cr_assert_eq(dp_loop_init(&r->s, &r->cfg, r->m, &r->d, world, &r->st, &r->res), DP_OK, "%s",
                 dp_errmsg());
}

static void run_free(run *r)
{
    dp_loop_free(&r->s); /* all zero (nothing to free) if the loop was never set up */
    dp_train_state_free(&r->st);
    dp_model_free(&r->m);
    free(r->d.train.x_f32);
    free(r->d.train.labels);
}

static float *params_copy(run *r)
{
    const size_t n = dp_model_n_params(r->m);
    float *p = talloc(n);
    memcpy(p, dp_model_params(r->m), n * sizeof *p);
    return p;
}

/* The gradient of the mean loss over all n training rows (file order), by a second model
 * built from the same config (so with the same weights) and its own forward and backward;
 * returns the sum of the per-row losses. g: n_params floats. */
static double full_batch_gradient(const run *r, float *g)
{
    const size_t n = r->d.train.n;
    dp_model *m2 = NULL;
    cr_assert_eq(dp_model_create(&r->mc, &m2), DP_OK);
    float *x = talloc(n * F);
    int32_t *y = calloc(n, sizeof *y);
    size_t *ids = calloc(n, sizeof *ids);
    cr_assert(y && ids);
    for (size_t i = 0; i < n; i++) {
        ids[i] = i;
    }
    dp_split_gather(&r->d.train, ids, (int)n, x, y, NULL);
    const dp_train_ctx ctx = {.seed = r->cfg.seed, .sample_ids = ids};
    const float *out = dp_model_forward_train(m2, x, (int)n, &ctx);
    cr_assert_not_null(out);
    const dp_targets t = {y, NULL};
    float *dout = dp_model_dout(m2);
    double loss = dp_loss_eval(DP_LOSS_CROSS_ENTROPY, out, &t, (int)n, C, 1.0f / (float)n, dout,
                               NULL);
    cr_assert_eq(dp_model_backward(m2, x, dout, (int)n, false), DP_OK);
    memcpy(g, dp_model_grads(m2), dp_model_n_params(m2) * sizeof *g);
    dp_model_free(&m2);
    free(x);
    free(y);
    free(ids);
    return loss;
}

/* One dp_loop_train_step with global batch `batch` and `accumulate` micro-batches per step
 * covering all n rows must be p - lr * (gradient of the mean loss over all rows): the group
 * is scaled as one batch, however it is cut. */
static void check_one_step_is_sgd(size_t n, size_t batch, int accumulate)
{
    run r;
    run_cfg(&r, n, 1);
    r.cfg.batch = batch;
    r.cfg.accumulate = accumulate;
    run_start(&r, true);
    cr_assert_eq(r.s.steps_per_epoch, 1, "the test wants one step per epoch");
    const size_t np = dp_model_n_params(r.m);
    float *p0 = params_copy(&r), *g = talloc(np);
    const double loss = full_batch_gradient(&r, g);

    dp_loop_begin_epoch(&r.s, 0);
    cr_assert_eq(dp_loop_train_step(&r.s), DP_OK, "%s", dp_errmsg());

    const float *p1 = dp_model_params(r.m);
    double max_err = 0.0, max_move = 0.0;
    for (size_t i = 0; i < np; i++) {
        const float want = p0[i] - LR * g[i];
        max_err = fmax(max_err, fabs((double)p1[i] - want));
        max_move = fmax(max_move, fabs((double)p1[i] - p0[i]));
    }
    /* Summation order differs (the loop visits the rows permuted): float rounding only. */
    cr_assert_lt(max_err, 2e-6, "batch %zu accumulate %d: max |p - (p0 - lr g)| = %g", batch,
                 accumulate, max_err);
    cr_assert_gt(max_move, 1e-3, "the step moved nothing (max move %g)", max_move);
    cr_assert_eq(r.st.step, 1);
    cr_assert_eq(r.st.next_batch, r.s.n_batches);
    cr_assert_eq(r.st.seen, n);
    cr_assert_float_eq(r.st.lr, LR, 0.0f);
    cr_assert_lt(fabs(r.st.loss_sum - loss), 1e-5 * loss, "loss sum %g, want %g", r.st.loss_sum,
                 loss);
    free(p0);
    free(g);
    run_free(&r);
}

Test(loop, train_step_is_an_sgd_step_on_the_full_batch_gradient)
{
    check_one_step_is_sgd(24, 0, 1);
}

Test(loop, train_step_accumulating_micro_batches_is_one_full_batch_step)
{
    check_one_step_is_sgd(24, 12, 2);
    check_one_step_is_sgd(23, 8, 3); /* a last micro-batch of 7 rows */
}

/* Makes the model's predictions bad: the first class gets a logit of +30 on every row. */
static void spoil(run *r)
{
    dp_model_layer(r->m, 1)->b[0] = 30.0f;
}

/* Trains epoch e (one full-batch step), spoils the weights if asked, ends the epoch. */
static void epoch(run *r, int e, bool spoilt)
{
    dp_loop_begin_epoch(&r->s, e);
    while (r->st.next_batch < r->s.n_batches) {
        cr_assert_eq(dp_loop_train_step(&r->s), DP_OK, "%s", dp_errmsg());
    }
    if (spoilt) {
        spoil(r);
    }
    cr_assert_eq(dp_loop_end_epoch(&r->s), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(r->st.epoch, e + 1);
}

Test(loop, end_epoch_keeps_the_best_epoch_and_stops_after_patience_epochs)
{
    run r;
    run_cfg(&r, 32, 5);
    r.cfg.val_fraction = 0.25f;
    r.cfg.patience = 2;
    run_start(&r, true);
    const size_t np = dp_model_n_params(r.m);

    epoch(&r, 0, false);
    const double best = r.res.val.loss;
    float *w1 = params_copy(&r);
    cr_assert(isfinite(best));
    cr_assert_eq(r.st.best_epoch, 1);
    cr_assert_eq(memcmp(r.st.best_params, w1, np * sizeof *w1), 0, "epoch 1's weights kept");
    cr_assert_not(r.st.finished);

    epoch(&r, 1, true);
    cr_assert_gt(r.res.val.loss, best, "the spoilt weights must be worse (test premise)");
    cr_assert_eq(r.st.bad_epochs, 1);
    cr_assert_eq(r.st.best_epoch, 1);
    cr_assert_eq(memcmp(r.st.best_params, w1, np * sizeof *w1), 0, "a worse epoch is not kept");
    cr_assert_not(r.st.finished, "one bad epoch of patience 2 does not stop");

    epoch(&r, 2, true);
    cr_assert_gt(r.res.val.loss, best);
    cr_assert(r.st.finished, "two bad epochs of patience 2 stop");
    cr_assert(r.st.stopped_early, "3 of 5 epochs: stopped early");
    cr_assert_eq(r.st.n_history, 3);
    cr_assert_eq(memcmp(r.st.best_params, w1, np * sizeof *w1), 0);

    cr_assert_eq(dp_loop_finish(&r.s), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(memcmp(dp_model_params(r.m), w1, np * sizeof *w1), 0, "best weights restored");
    cr_assert_eq(r.res.best_epoch, 1);
    cr_assert(r.res.stopped_early);
    cr_assert_eq(r.res.epochs_done, 3);
    cr_assert_eq(r.res.val.loss, best, "the final figures describe the kept weights");
    free(w1);
    run_free(&r);
}

Test(loop, finish_restores_the_best_weights_of_a_run_that_ran_to_the_end)
{
    run r;
    run_cfg(&r, 32, 2);
    r.cfg.val_fraction = 0.25f;
    r.cfg.patience = 5;
    run_start(&r, true);
    const size_t np = dp_model_n_params(r.m);
    epoch(&r, 0, false);
    const double best = r.res.val.loss;
    float *w1 = params_copy(&r);
    epoch(&r, 1, true);
    cr_assert_gt(r.res.val.loss, best);
    cr_assert(r.st.finished, "the last epoch finishes the run");
    cr_assert_neq(memcmp(dp_model_params(r.m), w1, np * sizeof *w1), 0);

    cr_assert_eq(dp_loop_finish(&r.s), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(memcmp(dp_model_params(r.m), w1, np * sizeof *w1), 0, "best weights restored");
    cr_assert_eq(r.res.val.loss, best);
    cr_assert_eq(r.res.best_epoch, 1);
    cr_assert_not(r.res.stopped_early, "all epochs ran");
    cr_assert_eq(r.res.epochs_done, 2);
    free(w1);
    run_free(&r);
}

Test(loop, finish_keeps_the_last_weights_when_the_last_epoch_is_the_best)
{
    run r;
    run_cfg(&r, 32, 2);
    r.cfg.val_fraction = 0.25f;
    r.cfg.patience = 5;
    run_start(&r, true);
    const size_t np = dp_model_n_params(r.m);
    float *w0 = params_copy(&r);
    epoch(&r, 0, true); /* spoilt: the second epoch beats it */
    memcpy(dp_model_params(r.m), w0, np * sizeof *w0);
    epoch(&r, 1, false);
    cr_assert_eq(r.st.best_epoch, 2, "test premise: the last epoch is the best");
    const double last = r.res.val.loss;
    float *w2 = params_copy(&r);
    cr_assert_eq(dp_loop_finish(&r.s), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(memcmp(dp_model_params(r.m), w2, np * sizeof *w2), 0);
    cr_assert_eq(r.res.val.loss, last);
    cr_assert_eq(r.res.best_epoch, 2);
    free(w0);
    free(w2);
    run_free(&r);
}

/* A checkpoint writer that records why and at which step it was asked. */
typedef struct {
    int n;
    dp_ckpt_reason why[16];
    long step[16];
} ckpt_log;

static int log_ckpt(void *ctx, const dp_model *m, const dp_train_state *st, dp_ckpt_reason why)
{
    (void)m;
    ckpt_log *l = ctx;
    cr_assert_lt(l->n, 16);
    l->why[l->n] = why;
    l->step[l->n++] = st->step;
    return DP_OK;
}

static void check_ckpts(const ckpt_log *l, int n, const dp_ckpt_reason *why, const long *step)
{
    cr_assert_eq(l->n, n, "%d checkpoints, want %d", l->n, n);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(l->why[i], why[i], "checkpoint %d: reason %d, want %d", i, l->why[i], why[i]);
        cr_assert_eq(l->step[i], step[i], "checkpoint %d: step %ld, want %ld", i, l->step[i],
                     step[i]);
    }
}

/* 24 rows in batches of 6: 4 steps per epoch, 2 epochs; a checkpoint every 3 steps and
 * every epoch. */
static void ckpt_run_cfg(run *r, ckpt_log *l)
{
    run_cfg(r, 24, 2);
    r->cfg.batch = 6;
    r->cfg.checkpoint_every = 3;
    r->cfg.checkpoint_epochs = 1;
    r->cfg.checkpoint = log_ckpt;
    r->cfg.checkpoint_ctx = l;
}

Test(loop, run_checkpoints_stops_and_resumes_to_the_same_weights)
{
    /* Uninterrupted. */
    run a;
    ckpt_log la = {0};
    dp_step_times times = {0};
    ckpt_run_cfg(&a, &la);
    a.cfg.times = &times;
    run_start(&a, false); /* dp_train_run sets up its own loop */
    cr_assert_eq(dp_train_run(&a.cfg, a.m, &a.d, world, &a.st, &a.res), DP_OK, "%s",
                 dp_errmsg());
    check_ckpts(&la, 4,
                (dp_ckpt_reason[]){DP_CKPT_STEP, DP_CKPT_EPOCH, DP_CKPT_STEP, DP_CKPT_FINAL},
                (long[]){3, 4, 6, 8});
    cr_assert_eq(times.steps, 8);
    cr_assert(times.data >= 0 && times.forward > 0 && times.backward > 0 && times.optim >= 0);
    cr_assert(times.reduce == 0 && times.reduce_wait == 0, "one rank: no allreduce");
    cr_assert_eq(a.res.steps_done, 8);

    /* Stopped by the test hook in step 5, then continued from its state. */
    run b;
    ckpt_log lb = {0};
    const dp_test_hooks hooks = {.stop_at = 5};
    ckpt_run_cfg(&b, &lb);
    b.cfg.hooks = &hooks;
    run_start(&b, false);
    cr_assert_eq(dp_train_run(&b.cfg, b.m, &b.d, world, &b.st, &b.res), DP_ESTOPPED);
    check_ckpts(&lb, 3, (dp_ckpt_reason[]){DP_CKPT_STEP, DP_CKPT_EPOCH, DP_CKPT_STOP},
                (long[]){3, 4, 5});
    cr_assert_eq(b.st.step, 5);
    cr_assert_eq(b.st.epoch, 1);
    cr_assert_eq(b.st.next_batch, 1);
    b.cfg.hooks = NULL;
    lb.n = 0;
    cr_assert_eq(dp_train_run(&b.cfg, b.m, &b.d, world, &b.st, &b.res), DP_OK, "%s",
                 dp_errmsg());
    check_ckpts(&lb, 2, (dp_ckpt_reason[]){DP_CKPT_STEP, DP_CKPT_FINAL}, (long[]){6, 8});
    cr_assert_eq(memcmp(dp_model_params(b.m), dp_model_params(a.m),
                        dp_model_n_params(a.m) * sizeof(float)), 0,
                 "a resumed run ends with the uninterrupted run's weights, bit for bit");
    cr_assert_eq(b.res.train.loss, a.res.train.loss);
    run_free(&a);
    run_free(&b);
}

/* With --shuffle feistel each rank computes only its own slice of a batch: over an epoch the
 * slices of every rank count (1, 2, 3, 5) partition the training rows, each row once, and the
 * ranks' slices of a batch laid end to end are the batch of one rank, for sizes that are not
 * powers of two and batches that do not divide them. Fisher-Yates (the old order) too. */
Test(loop, slices_of_every_rank_count_partition_each_epoch)
{
    const size_t ns[] = {1, 7, 100, 1000, 1025}, Bs[] = {1, 7, 64, 1000};
    const int sizes[] = {1, 2, 3, 5};
    for (int kind = 0; kind < DP_SHUFFLE_COUNT; kind++) {
        for (size_t a = 0; a < sizeof ns / sizeof *ns; a++) {
            const size_t n = ns[a];
            size_t *rows = calloc(n, sizeof *rows), *one = calloc(n, sizeof *one),
                   *buf = calloc(n, sizeof *buf);
            char *seen = calloc(2 * n + 1, 1);
            cr_assert(rows && one && buf && seen);
            for (size_t i = 0; i < n; i++) {
                rows[i] = 2 * i + 1; /* file rows: the odd ones, as if a hold-out took the rest */
            }
            for (size_t bi = 0; bi < sizeof Bs / sizeof *Bs; bi++) {
                const size_t B = Bs[bi] < n ? Bs[bi] : n;
                dp_train_cfg cfg = {.seed = 5, .shuffle = (dp_shuffle)kind};
                dp_loop s = {.cfg = &cfg, .n_rows = n, .B = B, .rows = rows};
                if (kind == DP_SHUFFLE_FISHER_YATES) {
                    s.perm = calloc(n, sizeof *s.perm);
                    s.order = calloc(n, sizeof *s.order);
                }
                const size_t nb = dp_n_batches(n, B, false);
                for (int e = 0; e < 2; e++) {
                    dp_loop_begin_epoch(&s, e);
                    for (size_t b = 0; b < nb; b++) {
                        const size_t rows_b = dp_loop_batch_rows(b, B, n);
                        memcpy(one, dp_loop_ids(&s, b, 0, rows_b, buf), rows_b * sizeof *one);
                        for (size_t z = 0; z < sizeof sizes / sizeof *sizes; z++) {
                            size_t at = 0;
                            for (int r = 0; r < sizes[z]; r++) {
                                size_t lo = 0, hi = 0;
                                dp_shard_rows(rows_b, r, sizes[z], &lo, &hi);
                                cr_assert_eq(lo, at);
                                const size_t *ids = dp_loop_ids(&s, b, lo, hi - lo, buf);
                                for (size_t k = 0; k < hi - lo; k++) {
                                    cr_assert_eq(ids[k], one[lo + k], "n %zu B %zu batch %zu "
                                                 "rank %d of %d", n, B, b, r, sizes[z]);
                                    if (z == 0) {
                                        cr_assert_eq(seen[ids[k]], 0, "row %zu twice", ids[k]);
                                        seen[ids[k]] = 1;
                                    }
                                }
                                at = hi;
                            }
                            cr_assert_eq(at, rows_b);
                        }
                    }
                    for (size_t i = 0; i < n; i++) {
                        cr_assert_eq(seen[rows[i]], 1, "n %zu B %zu: row %zu not visited", n, B,
                                     rows[i]);
                        seen[rows[i]] = 0;
                    }
                }
                free(s.perm);
                free(s.order);
            }
            free(rows);
            free(one);
            free(buf);
            free(seen);
        }
    }
}
