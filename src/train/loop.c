/* loop.c: the training loop in named parts (loop.h): set-up, one optimizer step, the end of
 * an epoch and the end of the run. One global permutation per epoch, contiguous per-rank
 * slices of every global batch, one gradient allreduce per optimizer step (the step's loss,
 * accuracy and stop request ride it), the same step on every rank; early stopping, gradient
 * clipping and accumulation, reduce-on-plateau, checkpoints at agreed points. */
#include "loop.h"

#include "dptrain/arena.h"
#include "dptrain/err.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The model's reduction for synchronized batch-norm statistics: an allreduce over the
 * ranks that remembers its status (the model only sees failure as a NULL output). */
typedef struct {
    const dp_comm *c;
    int rc;
} bn_sum;

static int bn_sum_fn(void *p, double *buf, size_t n)
{
    bn_sum *s = p;
    return s->rc = dp_comm_allreduce_sum_f64(s->c, buf, n);
}

static void print_record(FILE *f, const char *name, double loss, double acc)
{
    fprintf(f, "  %s loss %.4f", name, loss);
    if (isfinite(acc)) {
        fprintf(f, " acc %.4f", acc);
    }
}

static void log_epoch(const dp_train_cfg *cfg, const dp_epoch_record *r)
{
    FILE *f = cfg->log;
    if (!f) {
        return;
    }
    fprintf(f, "epoch %3d/%d", r->epoch, cfg->epochs);
    print_record(f, "train", r->train_loss, r->train_accuracy);
    if (!isnan(r->val_loss)) {
        print_record(f, "val", r->val_loss, r->val_accuracy);
    }
    if (!isnan(r->test_loss)) {
        print_record(f, "test", r->test_loss, r->test_accuracy);
    }
    fprintf(f, "  %.0f samples/s  %.2f s\n", r->samples_per_s, r->seconds);
    fflush(f);
}


/* dp_train_ctx.layer_done: starts the bucket that layer i completes, then lets MPI progress
 * the open ones. Collective (non-blocking) when it starts a bucket. */
static int overlap_layer_done(void *p, int layer)
{
    dp_loop_overlap *o = p;
    int rc = DP_OK, k = o->start_at[layer];
    if (k >= 0) {
        if (o->n_started++ == 0) {
            o->t_first = dp_wtime();
        }
        rc = dp_reducer_start(o->r, k);
    }
    return rc == DP_OK ? dp_reducer_test(o->r) : rc;
}

/* The reducer over the buckets of dp_train_buckets: bucket j (started j-th) becomes bucket
 * nb-1-j of the ascending bounds; the last layers' bucket also holds the n_tail floats after
 * the parameters. Local. */
static int overlap_create(dp_loop_overlap *o, const dp_model *m, size_t bucket_bytes, size_t n_tail,
                          const dp_comm *c)
{
    int first[DP_MAX_LAYERS];
    size_t bounds[DP_MAX_LAYERS + 1];
    const int nb = dp_train_buckets(m, bucket_bytes, first);
    for (int i = 0; i < DP_MAX_LAYERS; i++) {
        o->start_at[i] = -1;
    }
    for (int j = 0; j < nb; j++) {
        o->start_at[first[j]] = nb - 1 - j;
        bounds[nb - 1 - j] = dp_model_layer_offset(m, first[j]);
    }
    bounds[nb] = dp_model_n_params(m) + n_tail;
    return dp_reducer_create(c, dp_model_grads((dp_model *)m), nb, bounds, &o->r);
}

/* Checks that st belongs to this configuration and model, and gives its history room for
 * every epoch of the run. Local. */
static int state_fits(const dp_train_cfg *cfg, const dp_model *m, dp_train_state *st,
                      long steps_per_epoch, size_t n_batches)
{
    if (st->n_params != dp_model_n_params(m) || st->n_buffers != dp_model_n_buffers(m) ||
        st->n_slots != dp_optim_n_slots(&cfg->opt) || st->opt.kind != cfg->opt.kind ||
        st->seed != cfg->seed || (cfg->patience > 0) != (st->best_params != NULL)) {
        return dp_err(DP_EINVAL, "the training state does not belong to this model and "
                                 "configuration (parameters, optimizer, seed or early stopping "
                                 "differ)");
    }
    if (st->epoch > cfg->epochs || st->next_batch > n_batches ||
        (st->epoch < cfg->epochs && st->step != (long)st->epoch * steps_per_epoch +
                                                     (long)((st->next_batch + (size_t)cfg->accumulate - 1) /
                                                            (size_t)cfg->accumulate))) {
        return dp_err(DP_EINVAL, "the training state (epoch %d, batch %zu, step %ld) does not "
                                 "fit this run (%d epochs of %zu batches)", st->epoch,
                      st->next_batch, st->step, cfg->epochs, n_batches);
    }
    if (st->cap_history < cfg->epochs) {
        dp_epoch_record *h = realloc(st->history, (size_t)cfg->epochs * sizeof *h);
        if (!h) {
            return dp_err(DP_ENOMEM, "out of memory for the metrics history");
        }
        st->history = h;
        st->cap_history = cfg->epochs;
    }
    return DP_OK;
}

/* Evaluates the validation rows (if any) and the test split (if any) into s->res.
 * Collective. */
static int evaluate_held_out(const dp_loop *s)
{
    const dp_train_cfg *cfg = s->cfg;
    dp_train_result *res = s->res;
    int rc = DP_OK;
    if (s->n_val > 0) {
        rc = dp_evaluate(s->m, cfg->loss, s->tr, s->val, s->n_val, cfg->eval_batch, s->c,
                         &res->val);
    }
    if (rc == DP_OK && s->d->test.n > 0) {
        rc = dp_evaluate(s->m, cfg->loss, &s->d->test, NULL, 0, cfg->eval_batch, s->c,
                         &res->test);
    }
    return rc;
}

size_t dp_loop_batch_rows(size_t b, size_t B, size_t n)
{
    size_t g0 = b * B;
    return g0 + B <= n ? B : n - g0;
}

const size_t *dp_loop_ids(const dp_loop *s, size_t b, size_t first, size_t count, size_t *buf)
{
    const size_t g0 = b * s->B + first;
    if (s->cfg->shuffle == DP_SHUFFLE_FISHER_YATES) {
        return s->order + g0;
    }
    for (size_t k = 0; k < count; k++) {
        const size_t i = dp_feistel_at(&s->fe, g0 + k);
        buf[k] = s->rows ? s->rows[i] : i;
    }
    return buf;
}

void dp_loop_gather(dp_loop *s, dp_step_ctx *sc, const size_t *ids, int n)
{
    const int rc = dp_split_gather(s->tr, ids, n, s->x, s->labels, s->values);
    if (rc != DP_OK && sc->read_rc == DP_OK) {
        sc->read_rc = rc; /* the first failure's message stays the error's */
    }
}

/* After the reduction: if a rank could not read its rows, every rank stops here, the one
 * that failed with its message. */
static int read_failure(const dp_loop *s, const dp_step_ctx *sc)
{
    if (sc->read_rc != DP_OK) {
        return dp_err(sc->read_rc, "%s (rank %d, epoch %d, step %ld)", dp_errmsg(), s->rank,
                      s->epoch + 1, s->st->step + 1);
    }
    return dp_err(DP_EPEER, "another rank could not read its rows of the training data "
                            "(epoch %d, step %ld)", s->epoch + 1, s->st->step + 1);
}

/* This rank's slice of global batch b of the epoch's visiting order: *count file rows (in
 * buf with Feistel). */
static const size_t *rank_slice(const dp_loop *s, size_t b, size_t *buf, int *count)
{
    size_t lo = 0, hi = 0;
    dp_shard_rows(dp_loop_batch_rows(b, s->B, s->n_rows), s->rank, s->size, &lo, &hi);
    *count = (int)(hi - lo);
    return dp_loop_ids(s, b, lo, hi - lo, buf);
}

static double sum_squares(const float *g, size_t n)
{
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) {
        ss += (double)g[i] * g[i];
    }
    return ss;
}

/* Scales g (n) so that the gradient's L2 norm, sqrt(ss), is at most max_norm. ss is taken in
 * double over the allreduced gradient (sharded: the sum of the slices' sums), so every rank
 * computes the same factor. */
static void clip_to_norm(float *g, size_t n, double ss, float max_norm)
{
    double norm = sqrt(ss);
    if (norm > max_norm) {
        float f = (float)(max_norm / (norm + 1e-6));
        for (size_t i = 0; i < n; i++) {
            g[i] *= f;
        }
    }
}

static void result_from_record(dp_eval_result *e, double loss, double acc, size_t n)
{
    e->loss = loss;
    e->accuracy = acc;
    e->n = isnan(loss) ? 0 : n;
}

static void add_times(dp_step_times *acc, const dp_step_times *t)
{
    acc->steps += t->steps;
    acc->data += t->data;
    acc->forward += t->forward;
    acc->backward += t->backward;
    acc->reduce += t->reduce;
    acc->reduce_wait += t->reduce_wait;
    acc->optim += t->optim;
}

/* Asks for a checkpoint if the run has a writer. A sharded run gathers the optimizer
 * state's slices into whole arrays on rank 0 first (the writer's rank), so that the file is
 * the one a replicated run writes. Collective. */
static int checkpoint(const dp_loop *s, dp_ckpt_reason why)
{
    const dp_train_cfg *cfg = s->cfg;
    if (!cfg->checkpoint) {
        return DP_OK;
    }
    if (!s->z.on) {
        return cfg->checkpoint(cfg->checkpoint_ctx, s->m, s->st, why);
    }
    int rc = DP_OK;
    dp_train_state whole = *s->st; /* shares everything but the slots */
    float *mine[DP_OPTIM_MAX_SLOTS] = {0};
    if (s->rank == 0) {
        for (int i = 0; i < whole.n_slots && rc == DP_OK; i++) {
            mine[i] = dp_arena_calloc(whole.n_params ? whole.n_params : 1, sizeof(float));
            rc = mine[i] ? DP_OK
                         : dp_err(DP_ENOMEM, "out of memory gathering the optimizer state "
                                             "(%zu floats) for a checkpoint", whole.n_params);
            whole.slots[i] = mine[i];
        }
        whole.slot_off = 0;
        whole.slot_n = whole.n_params;
    }
    rc = dp_comm_agree(s->c, rc);
    for (int i = 0; i < whole.n_slots && rc == DP_OK; i++) {
        rc = dp_comm_agree(s->c, dp_comm_gatherv_f32(s->c, s->st->slots[i], whole.slots[i],
                                                     s->z.counts, s->z.displs, 0));
    }
    if (rc == DP_OK) {
        rc = cfg->checkpoint(cfg->checkpoint_ctx, s->m, &whole, why);
    }
    for (int i = 0; i < DP_OPTIM_MAX_SLOTS; i++) {
        dp_arena_free(mine[i]);
    }
    return rc;
}

/* A loss that explodes without becoming NaN (a learning rate far too high) stops the run as
 * a NaN does: when a step's mean training loss exceeds DP_EXPLODE_FACTOR times the larger of
 * the run's first step loss and a uniform prediction's (st->loss_ref, kept in checkpoints).
 * Every rank sees the same allreduced loss, so all stop at the same step. */
static int check_explosion(const dp_train_cfg *cfg, dp_train_state *st, double mean_loss, int k,
                           int epoch)
{
    if (st->loss_ref <= 0.0) {
        double u = dp_loss_uniform(cfg->loss, k);
        st->loss_ref = mean_loss > u ? mean_loss : u;
        return DP_OK;
    }
    if (mean_loss > DP_EXPLODE_FACTOR * st->loss_ref) {
        return dp_err(DP_ENONFINITE,
                      "the training loss reached %.4g at epoch %d, step %ld (learning rate %g), "
                      "more than %g times its reference %.4g (the larger of the first step's "
                      "loss and a uniform prediction's): training diverged; try a lower --lr",
                      mean_loss, epoch + 1, st->step + 1, st->lr, DP_EXPLODE_FACTOR,
                      st->loss_ref);
    }
    return DP_OK;
}

/* The DPTRAIN_TEST_HOLD_AT hook: waits until *stop is set (by a signal handler), or until
 * the file `until` exists (DPTRAIN_TEST_HOLD_UNTIL). */
static void test_hold(const volatile sig_atomic_t *stop, const char *until, int rank, long step)
{
    fprintf(stderr, "dptrain: test hook: rank %d (pid %ld) holding at step %ld until %s%s\n",
            rank, (long)getpid(), step, until ? "this file exists: " : "a signal",
            until ? until : "");
    fflush(stderr);
    while (!*stop && !(until && access(until, F_OK) == 0)) {
        usleep(10000);
    }
}


/* Phase timing of a step: each lap adds the seconds since the previous lap (or the start)
 * to one field of dp_step_times and starts the next phase. Local. */
double dp_loop_lap(dp_step_ctx *sc, double *field)
{
    const double now = dp_wtime();
    *field += now - sc->t;
    sc->t = now;
    return now;
}

/* --- set-up ---------------------------------------------------------------------------- */

size_t dp_loop_batch(const dp_train_cfg *cfg, size_t n)
{
    return (cfg->batch == 0 || cfg->batch > n) ? n : cfg->batch;
}

size_t dp_loop_max_local(const dp_train_cfg *cfg, size_t B, int size)
{
    const size_t N = (size_t)size;
    if (!cfg->deterministic) {
        return (B + N - 1) / N;
    }
    const size_t V = (size_t)cfg->shards;
    return (V + N - 1) / N * ((B + V - 1) / V);
}

void dp_loop_free(dp_loop *s)
{
    dp_reducer_free(&s->ov.r);
    free(s->rows);
    free(s->val);
    free(s->perm);
    free(s->order);
    free(s->ids);
    free(s->ids_next);
    dp_arena_free(s->x);
    free(s->values);
    free(s->labels);
    dp_loop_det_free(s);
    free(s->z.counts);
    free(s->z.displs);
    free(s->z.tmp);
}

#define DP_ZERO_PIECE 65536

/* --allreduce sharded: the slices of the parameters and the reduce-scatter's buffer. */
static int zero_alloc(dp_loop *s)
{
    int rc = DP_OK;
    const size_t np = dp_model_n_params(s->m);
    if (np > (size_t)INT_MAX) {
        DP_FAIL(DP_EINVAL, "--allreduce sharded: %zu parameters; MPI's counts take at most "
                           "%d: use --allreduce blocking", np, INT_MAX);
    }
    DP_CALLOC(s->z.counts, (size_t)s->size);
    DP_CALLOC(s->z.displs, (size_t)s->size);
    for (int r = 0; r < s->size; r++) {
        size_t lo = 0, hi = 0;
        dp_shard_rows(np, r, s->size, &lo, &hi);
        s->z.counts[r] = (int)(hi - lo);
        s->z.displs[r] = (int)lo;
    }
    s->z.off = (size_t)s->z.displs[s->rank];
    s->z.n = (size_t)s->z.counts[s->rank];
    /* 256 KiB pieces: large enough for the links' bandwidth, small beside any model that
     * sharding helps. */
    s->z.tmp_n = (int)(np / (size_t)s->size + 1 < DP_ZERO_PIECE ? np / (size_t)s->size + 1
                                                                : DP_ZERO_PIECE);
    DP_CALLOC(s->z.tmp, (size_t)s->z.tmp_n);
    s->z.on = true;
done:
    return rc;
}

/* Keeps this rank's slice of the optimizer state (a state already cut to it stays; one cut
 * otherwise is refused). */
static int zero_shard_state(dp_loop *s)
{
    dp_train_state *st = s->st;
    if (st->slot_off == s->z.off && st->slot_n == s->z.n) {
        return DP_OK;
    }
    return dp_train_state_keep_slice(st, s->z.off, s->z.n);
}

/* The state's slots hold what this run updates: every parameter, or (sharded) this rank's
 * slice, or all of them for the slice to be cut from. */
static int slots_fit(const dp_loop *s)
{
    const dp_train_state *st = s->st;
    const bool whole = st->slot_off == 0 && st->slot_n == st->n_params;
    if (whole || (s->z.on && st->slot_off == s->z.off && st->slot_n == s->z.n)) {
        return DP_OK;
    }
    return dp_err(DP_EINVAL, "the training state's optimizer slots hold parameters [%zu, %zu) "
                             "of %zu (a sharded run's slice), which this run (%s, rank %d of "
                             "%d) does not update", st->slot_off, st->slot_off + st->slot_n,
                  st->n_params, s->z.on ? "--allreduce sharded" : "not sharded", s->rank,
                  s->size);
}

static int loop_alloc(dp_loop *s)
{
    int rc = DP_OK;
    const dp_train_cfg *cfg = s->cfg;
    const size_t n = s->tr->n;
    const size_t max_local = dp_loop_max_local(cfg, s->B, s->size);
    if (s->n_val > 0 || cfg->shuffle == DP_SHUFFLE_FISHER_YATES) {
        /* Without a hold-out the training rows are all rows in file order: no list, so a
         * streamed run's memory does not grow with the file. */
        DP_CALLOC(s->rows, n);
        DP_CALLOC(s->val, s->n_val);
        dp_val_split(n, cfg->val_fraction, cfg->seed, s->rows, s->val);
    }
    if (cfg->shuffle == DP_SHUFFLE_FISHER_YATES) {
        DP_CALLOC(s->perm, s->n_rows);
        DP_CALLOC(s->order, s->n_rows);
    } else {
        DP_CALLOC(s->ids, max_local);
        DP_CALLOC(s->ids_next, max_local);
    }
    DP_ARENA_CALLOC(s->x, max_local * (size_t)s->tr->n_features);
    if (dp_split_has_labels(s->tr)) {
        DP_CALLOC(s->labels, max_local);
    } else {
        DP_CALLOC(s->values, max_local * (size_t)s->k);
    }
    if (cfg->reduce == DP_REDUCE_OVERLAP && s->size > 1) {
        DP_TRY(overlap_create(&s->ov, s->m, cfg->bucket_bytes, DP_TAIL_USED, s->c));
    }
    if (cfg->deterministic) {
        DP_TRY(dp_loop_det_alloc(s));
    }
    if (cfg->reduce == DP_REDUCE_SHARDED && s->size > 1) {
        DP_TRY(zero_alloc(s));
    }
done:
    return rc;
}

int dp_loop_init(dp_loop *s, const dp_train_cfg *cfg, dp_model *m, const dp_dataset *d,
                 const dp_comm *c, dp_train_state *st, dp_train_result *res)
{
    static const dp_test_hooks no_hooks = {0};
    const dp_model_cfg *mc = dp_model_config(m);
    *s = (dp_loop){.cfg = cfg, .m = m, .d = d, .tr = &d->train, .c = c, .st = st, .res = res,
                   .hooks = cfg->hooks ? cfg->hooks : &no_hooks,
                   .rank = dp_comm_rank(c), .size = dp_comm_size(c),
                   .k = mc->sizes[mc->n_layers], .sched = cfg->sched};
    s->sched.base_lr = cfg->opt.lr;
    s->n_val = dp_val_count(d->train.n, cfg->val_fraction);
    s->n_rows = d->train.n - s->n_val;
    s->B = dp_loop_batch(cfg, s->n_rows);
    s->n_batches = dp_n_batches(s->n_rows, s->B, cfg->drop_last);
    s->K = (size_t)cfg->accumulate;
    s->steps_per_epoch = (long)((s->n_batches + s->K - 1) / s->K);
    s->total_steps = s->steps_per_epoch * cfg->epochs;
    memset(res, 0, sizeof *res);
    int rc = loop_alloc(s);
    if (rc == DP_OK) {
        rc = state_fits(cfg, m, st, s->steps_per_epoch, s->n_batches);
    }
    if (rc == DP_OK) {
        rc = slots_fit(s);
    }
    if (rc == DP_OK && s->z.on) {
        rc = zero_shard_state(s);
    }
    if ((rc = dp_comm_agree(c, rc)) == DP_OK) {
        /* The log of the epochs before a resume, as they were written. */
        for (int i = 0; i < st->n_history; i++) {
            dp_metrics_write(cfg->metrics, &st->history[i]);
        }
    }
    return rc;
}

void dp_loop_begin_epoch(dp_loop *s, int epoch)
{
    s->epoch = epoch;
    s->t0 = dp_wtime();
    if (s->cfg->shuffle == DP_SHUFFLE_FISHER_YATES) {
        dp_permutation(s->perm, s->n_rows, s->cfg->seed, (uint64_t)epoch);
        for (size_t i = 0; i < s->n_rows; i++) {
            s->order[i] = s->rows[s->perm[i]];
        }
    } else {
        dp_feistel_init(&s->fe, s->n_rows, s->cfg->seed, (uint64_t)epoch);
    }
    s->ran_epoch = true;
}

/* --- one optimizer step ---------------------------------------------------------------- */


bool dp_loop_stop_requested(const dp_loop *s)
{
    const long stop_at = s->hooks->stop_at > 0 ? s->hooks->stop_at : -1;
    return (s->cfg->stop && *s->cfg->stop) ||
           (s->st->step + 1 == stop_at && s->rank == s->hooks->stop_rank % s->size);
}

/* Global batch b of the step: gathers this rank's slice, runs the training forward and the
 * loss (into sc->loss, sc->correct), then the backward, which adds into the gradients after
 * the step's first batch. The last batch fills the tail that rides the allreduce, and its
 * backward starts the overlapped allreduce, if any. Collective with batch norm or overlap. */
static int micro_batch(dp_loop *s, dp_step_ctx *sc, size_t b)
{
    const dp_train_cfg *cfg = s->cfg;
    float *tail = dp_model_grads(s->m) + dp_model_n_params(s->m), *dout = dp_model_dout(s->m);
    const bool last = b + 1 == sc->b1;
    int nl = 0;
    const size_t *ids = rank_slice(s, b, s->ids, &nl);
    dp_loop_gather(s, sc, ids, nl);
    dp_loop_lap(sc, &sc->tm.data);
    /* Dropout masks are keyed by (seed, step, layer, file row): any N gives the same masks.
     * Batch-norm statistics are summed over the ranks. */
    bn_sum bs = {s->c, DP_OK};
    const dp_train_ctx tctx = {
        .seed = cfg->seed, .step = s->st->step * (long)s->K + (long)(b - sc->b0),
        .sample_ids = ids, .sum = s->size > 1 ? bn_sum_fn : NULL, .sum_ctx = &bs,
        .layer_done = (last && s->ov.r && !s->hooks->skip_allreduce) ? overlap_layer_done : NULL,
        .layer_ctx = &s->ov};
    const float *o = dp_model_forward_train(s->m, s->x, nl, &tctx);
    if (!o) {
        return bs.rc != DP_OK ? bs.rc : DP_EINVAL;
    }
    const dp_targets t = {s->labels, s->values};
    /* Each rank's gradient is its slices' SUM scaled by 1/(rows in the group), so the
     * allreduced sum is the gradient of the group's mean loss. */
    sc->loss += dp_loss_eval(cfg->loss, o, &t, nl, s->k, 1.0f / (float)sc->group, dout,
                             &sc->correct);
    if (last) {
        tail[DP_TAIL_LOSS] = (float)sc->loss;
        tail[DP_TAIL_CORRECT] = (float)sc->correct;
        tail[DP_TAIL_STOP] = dp_loop_stop_requested(s) ? 1.0f : 0.0f;
        tail[DP_TAIL_FAIL] = sc->read_rc != DP_OK ? 1.0f : 0.0f;
    }
    if (b + 1 < s->n_batches) {
        /* The next batch's rows start moving into the cache during the backward. */
        int n1 = 0;
        const size_t *next = rank_slice(s, b + 1, s->ids_next, &n1);
        dp_split_prefetch(s->tr, next, n1);
    }
    dp_loop_lap(sc, &sc->tm.forward);
    const int rc = dp_model_backward(s->m, s->x, dout, nl, b > sc->b0);
    dp_loop_lap(sc, &sc->tm.backward);
    return rc;
}

/* Sums the gradients and the tail over the ranks: one blocking allreduce, or the wait for
 * the buckets the backward started. Collective. */
static int reduce_grads(dp_loop *s, dp_step_ctx *sc)
{
    int rc = DP_OK;
    if (s->hooks->skip_allreduce || s->size == 1) {
        /* One rank's sum is its own; the test hook leaves gradients unsummed. */
    } else if (s->z.on) {
        /* Each rank sums its slice; the tail (loss, correct rows, stop, failure) goes to
         * every rank. */
        float *g = dp_model_grads(s->m);
        rc = dp_comm_reduce_scatter_sum_f32(s->c, g, s->z.counts, s->z.displs, s->z.tmp,
                                            s->z.tmp_n);
        if (rc == DP_OK) {
            rc = dp_comm_allreduce_sum_f32(s->c, g + dp_model_n_params(s->m), DP_TAIL_USED);
        }
        if (rc == DP_OK) {
            dp_loop_lap(sc, &sc->tm.reduce);
            sc->tm.reduce_wait = sc->tm.reduce;
        }
    } else if (s->ov.r) {
        if ((rc = dp_reducer_wait(s->ov.r)) == DP_OK) {
            sc->tm.reduce = dp_loop_lap(sc, &sc->tm.reduce_wait) - s->ov.t_first;
        }
    } else {
        rc = dp_comm_allreduce_sum_f32(s->c, dp_model_grads(s->m),
                                       dp_model_n_params(s->m) + DP_TAIL_USED);
        if (rc == DP_OK) {
            dp_loop_lap(sc, &sc->tm.reduce);
            sc->tm.reduce_wait = sc->tm.reduce;
        }
    }
    return rc;
}

/* Deterministic mode, after the step's batches: the step's gradient in the arena, and its
 * loss, correct rows and stop request in the tail, as reduce_grads leaves them. Local. */
static int det_step_sums(dp_loop *s, const dp_step_ctx *sc)
{
    const size_t n_params = dp_model_n_params(s->m);
    float *g = dp_model_grads(s->m);
    if (s->det.sum) {
        memcpy(g, s->det.sum, n_params * sizeof *g);
    }
    g[n_params + DP_TAIL_LOSS] = (float)sc->loss;
    g[n_params + DP_TAIL_CORRECT] = (float)sc->correct;
    g[n_params + DP_TAIL_STOP] = sc->stop ? 1.0f : 0.0f;
    g[n_params + DP_TAIL_FAIL] = sc->read_failed ? 1.0f : 0.0f;
    return DP_OK;
}

/* The step's summed loss must be finite and must not explode. The same on every rank. */
static int check_loss(dp_loop *s, float group_loss, size_t group)
{
    if (!isfinite(group_loss)) {
        return dp_err(DP_ENONFINITE,
                      "the training loss became %s at epoch %d, step %ld (learning rate %g): "
                      "training diverged; try a lower --lr",
                      isnan(group_loss) ? "NaN" : "infinite", s->epoch + 1, s->st->step + 1,
                      s->st->lr);
    }
    return check_explosion(s->cfg, s->st, group_loss / (double)group, s->k, s->epoch);
}

/* Counts the step into the epoch's sums, then updates the parameters from the summed
 * gradient: rmse rescale, clipping, the scheduled rate, the optimizer. Local; sharded, each
 * rank updates its slice, then the parameters are allgathered (Collective). */
static int update(dp_loop *s, dp_step_ctx *sc)
{
    const dp_train_cfg *cfg = s->cfg;
    dp_train_state *st = s->st;
    const size_t n_params = dp_model_n_params(s->m);
    float *grads = dp_model_grads(s->m);
    const float group_loss = grads[n_params + DP_TAIL_LOSS];
    st->loss_sum += group_loss;
    st->correct_sum += grads[n_params + DP_TAIL_CORRECT];
    st->seen += sc->group;
    /* The gradient this rank applies: all of it, or its slice [off, off + n). */
    float *g = grads;
    size_t off = 0, n = n_params;
    int rc = DP_OK;
    if (s->z.on) {
        off = s->z.off;
        n = s->z.n;
        g = grads + off;
    }
    if (cfg->loss == DP_LOSS_RMSE) {
        /* The gradient is that of the mean squared error m; d sqrt(m) = dm/(2 sqrt m). */
        double rmse = dp_loss_report(DP_LOSS_RMSE, group_loss, sc->group);
        float f = rmse > 0.0 ? (float)(0.5 / rmse) : 0.0f;
        for (size_t i = 0; i < n; i++) {
            g[i] *= f;
        }
    }
    if (cfg->clip_norm > 0.0f) {
        double ss = sum_squares(g, n);
        if (s->z.on && (rc = dp_comm_allreduce_sum_f64(s->c, &ss, 1)) != DP_OK) {
            return rc;
        }
        clip_to_norm(g, n, ss, cfg->clip_norm);
    }
    st->lr = st->lr_factor * dp_sched_lr_at(&s->sched, st->step, s->steps_per_epoch,
                                            s->total_steps);
    st->step++;
    float *params = dp_model_params(s->m);
    dp_optim_step(&cfg->opt, st->lr, st->step, n, params + off, g, st->slots, &st->opt_scalar);
    if (s->z.on) {
        /* The allgather is communication: counted with the reduction. */
        const double t = dp_loop_lap(sc, &sc->tm.optim);
        rc = dp_comm_allgatherv_f32(s->c, params, s->z.counts, s->z.displs);
        sc->tm.reduce_wait += dp_loop_lap(sc, &sc->tm.reduce) - t;
    }
    return rc;
}

/* The progress callback, with plain numbers the loop already holds: no allocation, I/O or
 * collective. Local. */
static void report_progress(const dp_loop *s)
{
    const dp_train_cfg *cfg = s->cfg;
    const dp_train_state *st = s->st;
    if (!cfg->progress) {
        return;
    }
    const dp_train_progress pr = {
        .epoch = s->epoch + 1, .epochs = cfg->epochs,
        .step_in_epoch = (long)((st->next_batch + s->K - 1) / s->K),
        .steps_per_epoch = s->steps_per_epoch, .step = st->step, .total_steps = s->total_steps,
        .samples = st->seen, .loss_sum = st->loss_sum, .loss_count = st->seen,
        .seconds = st->epoch_seconds + (dp_wtime() - s->t0)};
    cfg->progress(cfg->progress_ctx, &pr);
}

/* After a step: a stop request of any rank (its flag was summed with the gradients) stops
 * every rank here, with a checkpoint, as DP_ESTOPPED; else the --checkpoint-every
 * checkpoint, whose writing is not training time. Collective. */
static int step_checkpoint(dp_loop *s)
{
    dp_train_state *st = s->st;
    const float *tail = dp_model_grads(s->m) + dp_model_n_params(s->m);
    int rc = DP_OK;
    if (tail[DP_TAIL_STOP] > 0.0f) {
        st->epoch_seconds += dp_comm_max_f64(s->c, dp_wtime() - s->t0);
        rc = checkpoint(s, DP_CKPT_STOP);
        return rc == DP_OK ? DP_ESTOPPED : rc;
    }
    if (s->cfg->checkpoint_every > 0 && st->step % s->cfg->checkpoint_every == 0) {
        st->epoch_seconds += dp_comm_max_f64(s->c, dp_wtime() - s->t0);
        if ((rc = checkpoint(s, DP_CKPT_STEP)) == DP_OK) {
            s->t0 = dp_wtime();
        }
    }
    return rc;
}

int dp_loop_train_step(dp_loop *s)
{
    dp_train_state *st = s->st;
    const float *tail = dp_model_grads(s->m) + dp_model_n_params(s->m);
    dp_step_ctx sc = {.b0 = st->next_batch, .tm = {.steps = 1}};
    sc.b1 = sc.b0 + s->K < s->n_batches ? sc.b0 + s->K : s->n_batches;
    for (size_t b = sc.b0; b < sc.b1; b++) {
        sc.group += dp_loop_batch_rows(b, s->B, s->n_rows);
    }
    if (s->hooks->hold_at > 0 && st->step + 1 == s->hooks->hold_at && s->cfg->stop) {
        test_hold(s->cfg->stop, s->hooks->hold_until, s->rank, s->hooks->hold_at);
    }
    sc.t = dp_wtime();
    s->ov.n_started = 0;
    int rc = DP_OK;
    for (size_t b = sc.b0; b < sc.b1 && rc == DP_OK; b++) {
        rc = s->cfg->deterministic ? dp_loop_det_batch(s, &sc, b) : micro_batch(s, &sc, b);
    }
    if (rc == DP_OK) {
        rc = s->cfg->deterministic ? det_step_sums(s, &sc) : reduce_grads(s, &sc);
    }
    if (rc == DP_OK && tail[DP_TAIL_FAIL] > 0.0f) {
        rc = read_failure(s, &sc);
    }
    if (rc == DP_OK) {
        rc = check_loss(s, tail[DP_TAIL_LOSS], sc.group);
    }
    if (rc != DP_OK) {
        return rc;
    }
    if ((rc = update(s, &sc)) != DP_OK) {
        return rc;
    }
    dp_loop_lap(&sc, &sc.tm.optim);
    dp_comm_step_done(s->c, st->step);
    if (s->cfg->times) {
        add_times(s->cfg->times, &sc.tm);
    }
    st->next_batch = sc.b1;
    report_progress(s);
    return step_checkpoint(s);
}

/* --- the end of an epoch --------------------------------------------------------------- */

/* The epoch's training figures (from the running sums) and evaluation into s->res, its
 * record appended to the history, logged and written to the metrics; then the sums start
 * over for the next epoch. Collective. */
static int record_epoch(dp_loop *s, double seconds)
{
    const dp_train_cfg *cfg = s->cfg;
    dp_train_state *st = s->st;
    dp_train_result *res = s->res;
    res->train.n = st->seen;
    /* For rmse: the root of the epoch's mean squared error, not a mean of roots. */
    res->train.loss = dp_loss_report(cfg->loss, st->loss_sum, st->seen);
    res->train.accuracy = dp_loss_has_accuracy(cfg->loss)
                              ? st->correct_sum / (double)st->seen : NAN;
    int rc = evaluate_held_out(s);
    if (rc != DP_OK) {
        return rc;
    }
    const dp_epoch_record r = {.epoch = s->epoch + 1, .step = st->step, .lr = st->lr,
                               .train_loss = res->train.loss,
                               .train_accuracy = res->train.accuracy,
                               .val_loss = res->val.n > 0 ? res->val.loss : NAN,
                               .val_accuracy = res->val.n > 0 ? res->val.accuracy : NAN,
                               .test_loss = res->test.n > 0 ? res->test.loss : NAN,
                               .test_accuracy = res->test.n > 0 ? res->test.accuracy : NAN,
                               .samples_per_s = (double)st->seen / seconds,
                               .seconds = seconds};
    st->history[st->n_history++] = r;
    log_epoch(cfg, &r);
    dp_metrics_write(cfg->metrics, &r);
    st->epoch = s->epoch + 1;
    st->next_batch = 0;
    st->loss_sum = st->correct_sum = st->epoch_seconds = 0.0;
    st->seen = 0;
    return DP_OK;
}

/* torch.optim.lr_scheduler.ReduceLROnPlateau, mode min, relative threshold 1e-4, on the
 * validation loss (the training loss without a validation split). Local: every rank holds
 * the same losses. */
static void reduce_on_plateau(dp_loop *s)
{
    const dp_train_cfg *cfg = s->cfg;
    dp_train_state *st = s->st;
    const double watched = s->n_val > 0 ? s->res->val.loss : s->res->train.loss;
    if (watched < st->plateau_best * (1.0 - 1e-4)) {
        st->plateau_best = watched;
        st->plateau_bad = 0;
    } else if (++st->plateau_bad > cfg->plateau_patience) {
        st->lr_factor *= cfg->plateau_factor;
        st->plateau_bad = 0;
        if (cfg->log) {
            fprintf(cfg->log, "reduce-on-plateau: %s loss has not improved for %d epochs; "
                              "learning rate x %g\n",
                    s->n_val > 0 ? "validation" : "training", cfg->plateau_patience + 1,
                    cfg->plateau_factor);
        }
    }
}

/* Early stopping: keeps the weights of an epoch whose validation loss beats the best by
 * more than min_delta; finishes the run after `patience` epochs without. Local: every rank
 * holds the same validation loss, so the decision is the same everywhere. */
static void early_stopping(dp_loop *s)
{
    const dp_train_cfg *cfg = s->cfg;
    dp_train_state *st = s->st;
    if (s->res->val.loss < st->best_val - cfg->min_delta) {
        st->best_val = s->res->val.loss;
        st->best_epoch = s->epoch + 1;
        st->bad_epochs = 0;
        memcpy(st->best_params, dp_model_params(s->m),
               dp_model_n_params(s->m) * sizeof *st->best_params);
        memcpy(st->best_buffers, dp_model_buffers(s->m),
               dp_model_n_buffers(s->m) * sizeof *st->best_buffers);
    } else if (++st->bad_epochs >= cfg->patience) {
        st->stopped_early = s->epoch + 1 < cfg->epochs;
        st->finished = true;
    }
}

int dp_loop_end_epoch(dp_loop *s)
{
    const dp_train_cfg *cfg = s->cfg;
    dp_train_state *st = s->st;
    const double seconds = st->epoch_seconds + dp_comm_max_f64(s->c, dp_wtime() - s->t0);
    st->train_seconds += seconds;
    int rc = record_epoch(s, seconds);
    if (rc != DP_OK) {
        return rc;
    }
    if (cfg->plateau_factor > 0.0f) {
        reduce_on_plateau(s);
    }
    if (cfg->patience > 0) {
        early_stopping(s);
    }
    st->finished = st->finished || st->epoch == cfg->epochs;
    if (st->finished) {
        rc = checkpoint(s, DP_CKPT_FINAL);
    } else if (cfg->stop_epoch > 0 && st->epoch >= cfg->stop_epoch) {
        rc = checkpoint(s, DP_CKPT_STOP);
        rc = rc == DP_OK ? DP_ESTOPPED : rc;
    } else if (cfg->checkpoint_epochs > 0 && st->epoch % cfg->checkpoint_epochs == 0) {
        rc = checkpoint(s, DP_CKPT_EPOCH);
    }
    return rc;
}

/* --- the end of the run ---------------------------------------------------------------- */

int dp_loop_finish(dp_loop *s)
{
    const dp_train_cfg *cfg = s->cfg;
    dp_train_state *st = s->st;
    dp_train_result *res = s->res;
    if (cfg->epochs == 0 || st->epoch == cfg->epochs) {
        st->finished = true;
    }
    res->epochs_done = st->epoch;
    res->steps_done = st->step;
    res->best_epoch = st->best_epoch;
    res->stopped_early = st->stopped_early;
    res->train_seconds = st->train_seconds;
    if (st->n_history > 0) {
        const dp_epoch_record *last = &st->history[st->n_history - 1];
        result_from_record(&res->train, last->train_loss, last->train_accuracy,
                           s->n_rows - (cfg->drop_last ? s->n_rows % s->B : 0));
    }
    /* The last epoch's evaluation stands, unless no epoch ran here or other weights are
     * kept. */
    bool evaluate = !s->ran_epoch;
    if (cfg->patience > 0 && st->best_epoch > 0 && st->best_epoch != st->epoch) {
        /* Keep the best weights; the final figures describe them. */
        memcpy(dp_model_params(s->m), st->best_params,
               dp_model_n_params(s->m) * sizeof *st->best_params);
        memcpy(dp_model_buffers(s->m), st->best_buffers,
               dp_model_n_buffers(s->m) * sizeof *st->best_buffers);
        evaluate = true;
    }
    int rc = evaluate ? evaluate_held_out(s) : DP_OK;
    if (rc == DP_OK) {
        size_t per_epoch = res->train.n;
        res->samples_per_s = res->train_seconds > 0.0
                                 ? (double)per_epoch * res->epochs_done / res->train_seconds
                                 : 0.0;
    }
    return rc;
}
