/* train.c: the data-parallel training loop: one global permutation per epoch, contiguous
 * per-rank slices of every global batch, one gradient allreduce per optimizer step, the
 * same step on every rank; validation hold-out, early stopping, gradient clipping and
 * accumulation; evaluation that counts each row once across the ranks. */
#include "dptrain/train.h"

#include "dptrain/err.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Slots of the gradient arena's tail that ride the allreduce. */
enum { TAIL_LOSS = 0, TAIL_CORRECT = 1, TAIL_STOP = 2, TAIL_USED = 3 };

/* Keys the validation permutation apart from every epoch's. */
#define DP_VAL_TAG 0x56414c4944415445ULL /* "VALIDATE" */

size_t dp_val_count(size_t n, float f)
{
    size_t v = (size_t)llround((double)f * (double)n);
    return v > n ? n : v;
}

void dp_val_split(size_t n, float f, uint64_t seed, size_t *train_rows, size_t *val_rows)
{
    size_t nv = dp_val_count(n, f), it = 0, iv = 0;
    /* The first nv entries of a seeded permutation are held out; the training rows keep
     * file order, so that the per-epoch permutation alone decides the visiting order. */
    dp_permutation(train_rows, n, seed, DP_VAL_TAG);
    for (size_t i = 0; i < nv; i++) {
        val_rows[iv++] = train_rows[i];
    }
    char *held = calloc(n ? n : 1, 1);
    if (held) {
        for (size_t i = 0; i < nv; i++) {
            held[val_rows[i]] = 1;
        }
        for (size_t r = 0; r < n; r++) {
            if (!held[r]) {
                train_rows[it++] = r;
            }
        }
        free(held);
    } else {
        /* No memory for the mask: keep permutation order; still deterministic. */
        memmove(train_rows, train_rows + nv, (n - nv) * sizeof *train_rows);
    }
}

static bool has_batchnorm(const dp_model_cfg *mc)
{
    for (int i = 0; i < mc->n_layers; i++) {
        if (mc->batchnorm[i]) {
            return true;
        }
    }
    return false;
}

static size_t n_train_rows(const dp_train_cfg *cfg, const dp_dataset *d)
{
    return d->train.n - dp_val_count(d->train.n, cfg->val_fraction);
}

static size_t effective_batch(const dp_train_cfg *cfg, size_t n)
{
    return (cfg->batch == 0 || cfg->batch > n) ? n : cfg->batch;
}

int dp_train_check(const dp_train_cfg *cfg, const dp_model_cfg *mc, const dp_dataset *d,
                   int n_ranks)
{
    const dp_split *tr = &d->train;
    int k = mc->sizes[mc->n_layers];
    if (tr->n == 0) {
        return dp_err(DP_EINVAL, "/train has no rows");
    }
    if (mc->sizes[0] != tr->n_features) {
        return dp_err(DP_EINVAL,
                      "--layers: the model takes %d inputs but /train/x has %d features per row",
                      mc->sizes[0], tr->n_features);
    }
    const dp_loss l = cfg->loss;
    if (l < 0 || l >= DP_LOSS_COUNT) {
        return dp_err(DP_EINVAL, "unknown loss");
    }
    const char *ln = dp_loss_name(l);
    if (dp_loss_needs_labels(l) && !tr->labels) {
        return dp_err(DP_EINVAL, "--loss %s needs integer class labels, but /train/y holds "
                                 "float targets (use mse, rmse, mae or categorical-cross-"
                                 "entropy)", ln);
    }
    if (dp_loss_needs_values(l) && !tr->values) {
        return dp_err(DP_EINVAL, "--loss %s needs float targets, but /train/y holds integer "
                                 "class labels (use cross-entropy)", ln);
    }
    if (tr->labels && dp_loss_needs_labels(l) && k != d->n_classes) {
        return dp_err(DP_EINVAL, "--layers: the model has %d outputs but the data has %d "
                                 "classes", k, d->n_classes);
    }
    bool bce = !dp_loss_needs_labels(l) && !dp_loss_needs_values(l);
    if (bce && tr->labels && (k != 1 || d->n_classes != 2)) {
        return dp_err(DP_EINVAL, "--loss %s on integer labels needs 0/1 labels (2 classes, the "
                                 "data has %d) and a model with 1 output (it has %d)", ln,
                      d->n_classes, k);
    }
    if (tr->values && k != tr->n_targets) {
        return dp_err(DP_EINVAL, "--layers: the model has %d outputs but /train/y has %d "
                                 "targets per row", k, tr->n_targets);
    }
    for (int i = 0; i < mc->n_layers; i++) {
        if (!dp_act_trainable(mc->act[i])) {
            return dp_err(DP_EINVAL, "layer %d has activation %s, whose gradient is zero "
                                     "almost everywhere: it cannot be trained", i + 1,
                          dp_act_name(mc->act[i]));
        }
    }
    if (mc->act[mc->n_layers - 1] != dp_loss_output_act(l)) {
        return dp_err(DP_EINVAL, "--loss %s needs a %s output layer", ln,
                      dp_act_name(dp_loss_output_act(l)));
    }
    if (cfg->epochs < 0) {
        return dp_err(DP_EINVAL, "--epochs %d: must be >= 0", cfg->epochs);
    }
    if (!(cfg->val_fraction >= 0.0f && cfg->val_fraction < 1.0f)) {
        return dp_err(DP_EINVAL, "--val-fraction %g: must be in [0, 1)", cfg->val_fraction);
    }
    size_t n = n_train_rows(cfg, d);
    if (n == 0) {
        return dp_err(DP_EINVAL, "--val-fraction %g leaves no training rows", cfg->val_fraction);
    }
    if (cfg->val_fraction > 0.0f && dp_val_count(tr->n, cfg->val_fraction) == 0) {
        return dp_err(DP_EINVAL, "--val-fraction %g of %zu rows holds out no row",
                      cfg->val_fraction, tr->n);
    }
    if (cfg->patience < 0 || (cfg->patience > 0 && cfg->val_fraction == 0.0f)) {
        return dp_err(DP_EINVAL, "--patience %d: early stopping needs --val-fraction > 0 "
                                 "(it watches the validation loss)", cfg->patience);
    }
    size_t B = effective_batch(cfg, n);
    if (B < (size_t)n_ranks) {
        return dp_err(DP_EINVAL, "--batch %zu is smaller than the number of ranks (%d): every "
                                 "rank needs at least one row of each batch", B, n_ranks);
    }
    if (has_batchnorm(mc) && (B < 2 || (!cfg->drop_last && n % B == 1))) {
        return dp_err(DP_EINVAL, "batch normalization needs at least 2 rows per batch, but %s "
                                 "(use another --batch or --drop-last)",
                      B < 2 ? "the batch has 1 row" : "the last batch of each epoch has 1 row");
    }
    if (dp_n_batches(n, B, cfg->drop_last) == 0) {
        return dp_err(DP_EINVAL, "--drop-last leaves no batch: %zu rows, batch %zu", n, B);
    }
    if (cfg->plateau_factor < 0.0f || cfg->plateau_factor >= 1.0f || cfg->plateau_patience < 0) {
        return dp_err(DP_EINVAL, "--plateau-factor %g / --plateau-patience %d: the factor must "
                                 "be in [0, 1) (0 = off) and the patience >= 0",
                      cfg->plateau_factor, cfg->plateau_patience);
    }
    if (cfg->accumulate < 1) {
        return dp_err(DP_EINVAL, "--accumulate %d: must be >= 1", cfg->accumulate);
    }
    if (cfg->eval_batch < 1) {
        return dp_err(DP_EINVAL, "--eval-batch %d: must be >= 1", cfg->eval_batch);
    }
    if (!(cfg->clip_norm >= 0.0f) || !isfinite(cfg->clip_norm)) {
        return dp_err(DP_EINVAL, "--clip-norm %g: must be >= 0", cfg->clip_norm);
    }
    int rc = dp_optim_check(&cfg->opt);
    if (rc == DP_OK) {
        dp_sched_cfg sc = cfg->sched;
        sc.base_lr = cfg->opt.lr;
        rc = dp_sched_check(&sc);
    }
    return rc;
}

int dp_train_max_rows(const dp_train_cfg *cfg, const dp_dataset *d, int n_ranks)
{
    size_t B = effective_batch(cfg, n_train_rows(cfg, d));
    size_t per_rank = (B + (size_t)n_ranks - 1) / (size_t)n_ranks;
    size_t rows = per_rank > (size_t)cfg->eval_batch ? per_rank : (size_t)cfg->eval_batch;
    return rows > (size_t)1 << 30 ? 1 << 30 : (int)rows;
}

int dp_train_sync_params(dp_model *m, const dp_comm *c)
{
    int rc = dp_comm_bcast_f32(c, dp_model_params(m), dp_model_n_params(m), 0);
    if (rc == DP_OK && dp_model_n_buffers(m) > 0) {
        rc = dp_comm_bcast_f32(c, dp_model_buffers(m), dp_model_n_buffers(m), 0);
    }
    return rc;
}

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

int dp_evaluate(dp_model *m, dp_loss loss, const dp_split *s, const size_t *rows, size_t n_rows,
                int eval_batch, const dp_comm *c, dp_eval_result *out)
{
    int rc = DP_OK;
    const dp_model_cfg *mc = dp_model_config(m);
    int k = mc->sizes[mc->n_layers];
    size_t lo = 0, hi = 0, n = rows ? n_rows : s->n;
    size_t *idx = NULL;
    float *x = NULL, *values = NULL;
    int32_t *labels = NULL;
    double sums[2] = {0.0, 0.0}; /* loss, correct */
    dp_shard_rows(n, dp_comm_rank(c), dp_comm_size(c), &lo, &hi);
    DP_CALLOC(idx, eval_batch);
    DP_CALLOC(x, (size_t)eval_batch * s->n_features);
    if (s->labels) {
        DP_CALLOC(labels, eval_batch);
    } else {
        DP_CALLOC(values, (size_t)eval_batch * k);
    }
    for (size_t r0 = lo; r0 < hi; r0 += (size_t)eval_batch) {
        int nb = (int)(hi - r0 < (size_t)eval_batch ? hi - r0 : (size_t)eval_batch);
        for (int i = 0; i < nb; i++) {
            idx[i] = rows ? rows[r0 + (size_t)i] : r0 + (size_t)i;
        }
        dp_split_gather(s, idx, nb, x, labels, values);
        const float *o = dp_model_forward(m, x, nb);
        dp_targets t = {labels, values};
        long correct = 0;
        sums[0] += dp_loss_eval(loss, o, &t, nb, k, 1.0f, NULL, &correct);
        sums[1] += (double)correct;
    }
done:
    /* Every rank reaches the reduction, failed or not, so none is left waiting. */
    rc = dp_comm_agree(c, rc);
    if (rc == DP_OK) {
        rc = dp_comm_allreduce_sum_f64(c, sums, 2);
    }
    if (rc == DP_OK) {
        out->n = n;
        out->loss = dp_loss_report(loss, sums[0], n);
        out->accuracy = (n && dp_loss_has_accuracy(loss)) ? sums[1] / (double)n : NAN;
    }
    free(idx);
    free(x);
    free(labels);
    free(values);
    return rc;
}

static void print_json_number(FILE *f, const char *key, double v)
{
    if (isfinite(v)) {
        fprintf(f, ",\"%s\":%.9g", key, v);
    } else {
        fprintf(f, ",\"%s\":null", key);
    }
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

/* One JSON object per epoch; the fields a run has (no val_* without a validation split). */
static void metrics_epoch(FILE *f, const dp_epoch_record *r)
{
    if (!f) {
        return;
    }
    fprintf(f, "{\"epoch\":%d,\"step\":%ld", r->epoch, r->step);
    print_json_number(f, "lr", r->lr);
    print_json_number(f, "train_loss", r->train_loss);
    print_json_number(f, "train_accuracy", r->train_accuracy);
    if (!isnan(r->val_loss)) {
        print_json_number(f, "val_loss", r->val_loss);
        print_json_number(f, "val_accuracy", r->val_accuracy);
    }
    if (!isnan(r->test_loss)) {
        print_json_number(f, "test_loss", r->test_loss);
        print_json_number(f, "test_accuracy", r->test_accuracy);
    }
    print_json_number(f, "samples_per_s", r->samples_per_s);
    print_json_number(f, "seconds", r->seconds);
    fprintf(f, "}\n");
    fflush(f);
}

/* The overlapped allreduce: buckets of whole layers over the gradient arena, the last
 * layers' bucket holding the tail floats too; bucket start_at[i] starts when layer i is
 * done (-1: none). */
typedef struct {
    dp_reducer *r;
    int start_at[DP_MAX_LAYERS];
    int n_started;
    double t_first; /* when this step's first bucket started */
} overlap_ctx;

/* dp_train_ctx.layer_done: starts the bucket that layer i completes, then lets MPI progress
 * the open ones. Collective (non-blocking) when it starts a bucket. */
static int overlap_layer_done(void *p, int layer)
{
    overlap_ctx *o = p;
    int rc = DP_OK, k = o->start_at[layer];
    if (k >= 0) {
        if (o->n_started++ == 0) {
            o->t_first = dp_wtime();
        }
        rc = dp_reducer_start(o->r, k);
    }
    return rc == DP_OK ? dp_reducer_test(o->r) : rc;
}

int dp_train_buckets(const dp_model *m, size_t bucket_bytes, int *first_layer)
{
    int L = dp_model_config(m)->n_layers, nb = 0;
    size_t acc = 0;
    for (int i = L - 1; i >= 0; i--) {
        acc += (dp_model_layer_offset(m, i + 1) - dp_model_layer_offset(m, i)) * sizeof(float);
        if (acc >= bucket_bytes || i == 0) {
            first_layer[nb++] = i;
            acc = 0;
        }
    }
    return nb;
}

/* The reducer over the buckets of dp_train_buckets: bucket j (started j-th) becomes bucket
 * nb-1-j of the ascending bounds; the last layers' bucket also holds the n_tail floats after
 * the parameters. Local. */
static int overlap_create(overlap_ctx *o, const dp_model *m, size_t bucket_bytes, size_t n_tail,
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

/* Everything the loop needs, allocated once before the first step. */
typedef struct {
    const dp_train_cfg *cfg;
    dp_model *m;
    const dp_split *tr;
    const dp_comm *c;
    size_t n_rows, n_val;   /* training rows, held-out rows */
    size_t *rows, *val;     /* file rows used for training / validation */
    size_t *perm, *order;   /* per-epoch permutation of [0, n_rows), and rows[perm[i]] */
    float *x, *values;
    int32_t *labels;
    overlap_ctx ov;         /* DP_REDUCE_OVERLAP on more than one rank */
} loop_state;

static void loop_free(loop_state *s)
{
    dp_reducer_free(&s->ov.r);
    free(s->rows);
    free(s->val);
    free(s->perm);
    free(s->order);
    free(s->x);
    free(s->values);
    free(s->labels);
}

static int loop_alloc(loop_state *s, const dp_dataset *d)
{
    int rc = DP_OK;
    const dp_train_cfg *cfg = s->cfg;
    const dp_model_cfg *mc = dp_model_config(s->m);
    const size_t n = d->train.n;
    s->n_val = dp_val_count(n, cfg->val_fraction);
    s->n_rows = n - s->n_val;
    const size_t B = effective_batch(cfg, s->n_rows);
    const size_t max_local = (B + (size_t)dp_comm_size(s->c) - 1) / (size_t)dp_comm_size(s->c);
    DP_CALLOC(s->rows, n);
    DP_CALLOC(s->val, s->n_val);
    dp_val_split(n, cfg->val_fraction, cfg->seed, s->rows, s->val);
    DP_CALLOC(s->perm, s->n_rows);
    DP_CALLOC(s->order, s->n_rows);
    DP_CALLOC(s->x, max_local * (size_t)d->train.n_features);
    if (d->train.labels) {
        DP_CALLOC(s->labels, max_local);
    } else {
        DP_CALLOC(s->values, max_local * (size_t)mc->sizes[mc->n_layers]);
    }
    if (cfg->reduce == DP_REDUCE_OVERLAP && dp_comm_size(s->c) > 1) {
        DP_TRY(overlap_create(&s->ov, s->m, cfg->bucket_bytes, TAIL_USED, s->c));
    }
done:
    return rc;
}

int dp_train_state_fresh(const dp_train_cfg *cfg, const dp_model *m, dp_train_state *st)
{
    return dp_train_state_init(st, &cfg->opt, dp_model_n_params(m), dp_model_n_buffers(m),
                               cfg->seed, cfg->epochs, cfg->patience > 0);
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

/* Evaluates the validation rows (if any) and the test split (if any) into res. Collective. */
static int evaluate_held_out(const loop_state *s, const dp_dataset *d, dp_train_result *res)
{
    const dp_train_cfg *cfg = s->cfg;
    int rc = DP_OK;
    if (s->n_val > 0) {
        rc = dp_evaluate(s->m, cfg->loss, s->tr, s->val, s->n_val, cfg->eval_batch, s->c,
                         &res->val);
    }
    if (rc == DP_OK && d->test.n > 0) {
        rc = dp_evaluate(s->m, cfg->loss, &d->test, NULL, 0, cfg->eval_batch, s->c, &res->test);
    }
    return rc;
}

/* Rows in global batch b of an epoch of n rows. */
static size_t batch_rows(size_t b, size_t B, size_t n)
{
    size_t g0 = b * B;
    return g0 + B <= n ? B : n - g0;
}

/* This rank's slice of global batch b: *count file rows, from the returned pointer into
 * order (the epoch's visiting order of n rows, batches of B). */
static const size_t *rank_slice(const size_t *order, size_t b, size_t B, size_t n, int rank,
                                int size, int *count)
{
    size_t lo = 0, hi = 0;
    dp_shard_rows(batch_rows(b, B, n), rank, size, &lo, &hi);
    *count = (int)(hi - lo);
    return order + b * B + lo;
}

/* Scales g (n) so that its L2 norm is at most max_norm; the norm is taken in double over
 * the allreduced gradient, so every rank computes the same factor. */
static void clip_global_norm(float *g, size_t n, float max_norm)
{
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) {
        ss += (double)g[i] * g[i];
    }
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

/* Asks for a checkpoint if the run has a writer. */
static int checkpoint(const dp_train_cfg *cfg, const dp_model *m, const dp_train_state *st,
                      dp_ckpt_reason why)
{
    return cfg->checkpoint ? cfg->checkpoint(cfg->checkpoint_ctx, m, st, why) : DP_OK;
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

/* The DPTRAIN_TEST_HOLD_AT hook: waits until *stop is set (by a signal handler). */
static void test_hold(const volatile sig_atomic_t *stop, int rank, long step)
{
    fprintf(stderr, "dptrain: test hook: rank %d (pid %ld) holding at step %ld until a signal\n",
            rank, (long)getpid(), step);
    fflush(stderr);
    while (!*stop) {
        usleep(10000);
    }
}

int dp_train_run(const dp_train_cfg *cfg, dp_model *m, const dp_dataset *d, const dp_comm *c,
                 dp_train_state *st, dp_train_result *res)
{
    int rc = DP_OK;
    const dp_split *tr = &d->train;
    const dp_model_cfg *mc = dp_model_config(m);
    const int k = mc->sizes[mc->n_layers], rank = dp_comm_rank(c), size = dp_comm_size(c);
    const size_t n_params = dp_model_n_params(m);
    float *params = dp_model_params(m), *grads = dp_model_grads(m), *dout = dp_model_dout(m);
    float *buffers = dp_model_buffers(m);
    const size_t n_buffers = dp_model_n_buffers(m);
    loop_state s = {.cfg = cfg, .m = m, .tr = tr, .c = c};
    dp_sched_cfg sched = cfg->sched;
    sched.base_lr = cfg->opt.lr;
    static const dp_test_hooks no_hooks = {0};
    const dp_test_hooks *hk = cfg->hooks ? cfg->hooks : &no_hooks;
    const bool skip_allreduce = hk->skip_allreduce;
    const long stop_at = hk->stop_at > 0 ? hk->stop_at : -1;
    const int stop_rank = hk->stop_rank;
    const long hold_at = hk->hold_at > 0 ? hk->hold_at : -1;
    bool ran_epoch = false;

    memset(res, 0, sizeof *res);
    rc = loop_alloc(&s, d);
    const size_t n = s.n_rows, B = effective_batch(cfg, n);
    const size_t nb = dp_n_batches(n, B, cfg->drop_last), K = (size_t)cfg->accumulate;
    const long steps_per_epoch = (long)((nb + K - 1) / K);
    const long total_steps = steps_per_epoch * cfg->epochs;
    if (rc == DP_OK) {
        rc = state_fits(cfg, m, st, steps_per_epoch, nb);
    }
    if ((rc = dp_comm_agree(c, rc)) != DP_OK) {
        goto out;
    }
    /* The log of the epochs before a resume, as they were written. */
    for (int i = 0; i < st->n_history; i++) {
        metrics_epoch(cfg->metrics, &st->history[i]);
    }

    for (int epoch = st->epoch; epoch < cfg->epochs && !st->finished; epoch++) {
        double t0 = dp_wtime();
        dp_permutation(s.perm, n, cfg->seed, (uint64_t)epoch);
        for (size_t i = 0; i < n; i++) {
            s.order[i] = s.rows[s.perm[i]];
        }
        ran_epoch = true;
        /* One optimizer step per group of up to K global batches. */
        for (size_t b0 = st->next_batch; b0 < nb; b0 += K) {
            size_t b1 = b0 + K < nb ? b0 + K : nb, group = 0;
            for (size_t b = b0; b < b1; b++) {
                group += batch_rows(b, B, n);
            }
            double ls = 0.0;
            long correct = 0;
            if (st->step + 1 == hold_at && cfg->stop) {
                test_hold(cfg->stop, rank, hold_at);
            }
            dp_step_times tm = {.steps = 1};
            double tp = dp_wtime(), tq;
            s.ov.n_started = 0;
            for (size_t b = b0; b < b1; b++) {
                int nl = 0;
                const size_t *ids = rank_slice(s.order, b, B, n, rank, size, &nl);
                const bool last = b + 1 == b1;
                dp_split_gather(tr, ids, nl, s.x, s.labels, s.values);
                tm.data += (tq = dp_wtime()) - tp;
                tp = tq;
                /* Dropout masks are keyed by (seed, step, layer, file row): any N gives the
                 * same masks. Batch-norm statistics are summed over the ranks. The last
                 * micro-batch's backward starts the overlapped allreduce, if any. */
                bn_sum bs = {c, DP_OK};
                dp_train_ctx tctx = {.seed = cfg->seed,
                                     .step = st->step * (long)K + (long)(b - b0),
                                     .sample_ids = ids,
                                     .sum = size > 1 ? bn_sum_fn : NULL,
                                     .sum_ctx = &bs,
                                     .layer_done = (last && s.ov.r && !skip_allreduce)
                                                       ? overlap_layer_done : NULL,
                                     .layer_ctx = &s.ov};
                const float *o = dp_model_forward_train(m, s.x, nl, &tctx);
                if (!o) {
                    rc = bs.rc != DP_OK ? bs.rc : DP_EINVAL;
                    goto out;
                }
                dp_targets t = {s.labels, s.values};
                /* Each rank's gradient is its slices' SUM scaled by 1/(rows in the group),
                 * so the allreduced sum is the gradient of the group's mean loss. */
                ls += dp_loss_eval(cfg->loss, o, &t, nl, k, 1.0f / (float)group, dout, &correct);
                if (last) {
                    /* The tail rides the allreduce (with overlap: the first bucket). */
                    grads[n_params + TAIL_LOSS] = (float)ls;
                    grads[n_params + TAIL_CORRECT] = (float)correct;
                    bool stop_here = (cfg->stop && *cfg->stop) ||
                                     (st->step + 1 == stop_at && rank == stop_rank % size);
                    grads[n_params + TAIL_STOP] = stop_here ? 1.0f : 0.0f;
                }
                if (b + 1 < nb) {
                    /* The next batch's rows start moving into the cache during the backward. */
                    int n1 = 0;
                    const size_t *next = rank_slice(s.order, b + 1, B, n, rank, size, &n1);
                    dp_split_prefetch(tr, next, n1);
                }
                tm.forward += (tq = dp_wtime()) - tp;
                tp = tq;
                if ((rc = dp_model_backward(m, s.x, dout, nl, b > b0)) != DP_OK) {
                    goto out;
                }
                tm.backward += (tq = dp_wtime()) - tp;
                tp = tq;
            }
            if (skip_allreduce || size == 1) {
                /* One rank's sum is its own; the test hook leaves gradients unsummed. */
            } else if (s.ov.r) {
                if ((rc = dp_reducer_wait(s.ov.r)) != DP_OK) {
                    goto out;
                }
                tq = dp_wtime();
                tm.reduce_wait = tq - tp;
                tm.reduce = tq - s.ov.t_first;
                tp = tq;
            } else {
                if ((rc = dp_comm_allreduce_sum_f32(c, grads, n_params + TAIL_USED)) != DP_OK) {
                    goto out;
                }
                tq = dp_wtime();
                tm.reduce = tm.reduce_wait = tq - tp;
                tp = tq;
            }
            float group_loss = grads[n_params + TAIL_LOSS];
            if (!isfinite(group_loss)) {
                rc = dp_err(DP_ENONFINITE,
                            "the training loss became %s at epoch %d, step %ld (learning rate "
                            "%g): training diverged; try a lower --lr",
                            isnan(group_loss) ? "NaN" : "infinite", epoch + 1, st->step + 1,
                            st->lr);
                goto out;
            }
            if ((rc = check_explosion(cfg, st, group_loss / (double)group, k, epoch)) != DP_OK) {
                goto out;
            }
            st->loss_sum += group_loss;
            st->correct_sum += grads[n_params + TAIL_CORRECT];
            st->seen += group;
            if (cfg->loss == DP_LOSS_RMSE) {
                /* The gradient is that of the mean squared error m; d sqrt(m) = dm/(2 sqrt m). */
                double rmse = dp_loss_report(DP_LOSS_RMSE, group_loss, group);
                float f = rmse > 0.0 ? (float)(0.5 / rmse) : 0.0f;
                for (size_t i = 0; i < n_params; i++) {
                    grads[i] *= f;
                }
            }
            if (cfg->clip_norm > 0.0f) {
                clip_global_norm(grads, n_params, cfg->clip_norm);
            }
            st->lr = st->lr_factor * dp_sched_lr_at(&sched, st->step, steps_per_epoch, total_steps);
            st->step++;
            dp_optim_step(&cfg->opt, st->lr, st->step, n_params, params, grads, st->slots,
                          &st->opt_scalar);
            tm.optim = dp_wtime() - tp;
            dp_comm_step_done(c, st->step);
            if (cfg->times) {
                add_times(cfg->times, &tm);
            }
            st->next_batch = b1;
            if (cfg->progress) {
                /* Plain numbers the loop already holds: no allocation, I/O or collective. */
                const dp_train_progress pr = {
                    .epoch = epoch + 1, .epochs = cfg->epochs,
                    .step_in_epoch = (long)((b1 + K - 1) / K), .steps_per_epoch = steps_per_epoch,
                    .step = st->step, .total_steps = total_steps, .samples = st->seen,
                    .loss_sum = st->loss_sum, .loss_count = st->seen,
                    .seconds = st->epoch_seconds + (dp_wtime() - t0)};
                cfg->progress(cfg->progress_ctx, &pr);
            }
            if (grads[n_params + TAIL_STOP] > 0.0f) {
                /* Every rank saw the same sum: all stop here, together. */
                st->epoch_seconds += dp_comm_max_f64(c, dp_wtime() - t0);
                if ((rc = checkpoint(cfg, m, st, DP_CKPT_STOP)) == DP_OK) {
                    rc = DP_ESTOPPED;
                }
                goto out;
            }
            if (cfg->checkpoint_every > 0 && st->step % cfg->checkpoint_every == 0) {
                double t1 = dp_wtime();
                st->epoch_seconds += dp_comm_max_f64(c, t1 - t0);
                if ((rc = checkpoint(cfg, m, st, DP_CKPT_STEP)) != DP_OK) {
                    goto out;
                }
                t0 = dp_wtime(); /* the write is not training time */
            }
        }
        const double seconds = st->epoch_seconds + dp_comm_max_f64(c, dp_wtime() - t0);
        st->train_seconds += seconds;
        res->train.n = st->seen;
        /* For rmse: the root of the epoch's mean squared error, not a mean of roots. */
        res->train.loss = dp_loss_report(cfg->loss, st->loss_sum, st->seen);
        res->train.accuracy = dp_loss_has_accuracy(cfg->loss)
                                  ? st->correct_sum / (double)st->seen : NAN;
        if ((rc = evaluate_held_out(&s, d, res)) != DP_OK) {
            goto out;
        }
        dp_epoch_record r = {.epoch = epoch + 1, .step = st->step, .lr = st->lr,
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
        metrics_epoch(cfg->metrics, &r);
        st->epoch = epoch + 1;
        st->next_batch = 0;
        st->loss_sum = st->correct_sum = st->epoch_seconds = 0.0;
        st->seen = 0;
        if (cfg->plateau_factor > 0.0f) {
            /* torch.optim.lr_scheduler.ReduceLROnPlateau, mode min, relative threshold 1e-4. */
            double watched = s.n_val > 0 ? res->val.loss : res->train.loss;
            if (watched < st->plateau_best * (1.0 - 1e-4)) {
                st->plateau_best = watched;
                st->plateau_bad = 0;
            } else if (++st->plateau_bad > cfg->plateau_patience) {
                st->lr_factor *= cfg->plateau_factor;
                st->plateau_bad = 0;
                if (cfg->log) {
                    fprintf(cfg->log, "reduce-on-plateau: %s loss has not improved for %d "
                                      "epochs; learning rate x %g\n",
                            s.n_val > 0 ? "validation" : "training", cfg->plateau_patience + 1,
                            cfg->plateau_factor);
                }
            }
        }
        if (cfg->patience > 0) {
            /* Every rank holds the same validation loss: the decision is collective. */
            if (res->val.loss < st->best_val - cfg->min_delta) {
                st->best_val = res->val.loss;
                st->best_epoch = epoch + 1;
                st->bad_epochs = 0;
                memcpy(st->best_params, params, n_params * sizeof *params);
                memcpy(st->best_buffers, buffers, n_buffers * sizeof *buffers);
            } else if (++st->bad_epochs >= cfg->patience) {
                st->stopped_early = epoch + 1 < cfg->epochs;
                st->finished = true;
            }
        }
        st->finished = st->finished || st->epoch == cfg->epochs;
        if (st->finished) {
            rc = checkpoint(cfg, m, st, DP_CKPT_FINAL);
        } else if (cfg->checkpoint_epochs > 0 && st->epoch % cfg->checkpoint_epochs == 0) {
            rc = checkpoint(cfg, m, st, DP_CKPT_EPOCH);
        }
        if (rc != DP_OK) {
            goto out;
        }
    }
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
                           s.n_rows - (cfg->drop_last ? s.n_rows % B : 0));
    }
    if (cfg->patience > 0 && st->best_epoch > 0 && st->best_epoch != st->epoch) {
        /* Keep the best weights; the final figures describe them. */
        memcpy(params, st->best_params, n_params * sizeof *params);
        memcpy(buffers, st->best_buffers, n_buffers * sizeof *buffers);
        ran_epoch = false;
    }
    if (!ran_epoch && (rc = evaluate_held_out(&s, d, res)) != DP_OK) {
        goto out;
    }
    size_t per_epoch = res->train.n;
    res->samples_per_s = res->train_seconds > 0.0
                             ? (double)per_epoch * res->epochs_done / res->train_seconds
                             : 0.0;
out:
    loop_free(&s);
    return rc;
}
