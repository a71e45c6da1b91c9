/* train.c: the training API of dptrain/train.h: configuration checks, the validation
 * hold-out, evaluation that counts each row once across the ranks, the buckets of the
 * overlapped allreduce, and dp_train_run, which drives the loop's parts (loop.c). */
#include "dptrain/train.h"

#include "loop.h"

#include "dptrain/err.h"
#include "dptrain/exact.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* The model fits the data and the loss: inputs, outputs, targets, activations. */
static int check_model(const dp_loss l, const dp_model_cfg *mc, const dp_dataset *d)
{
    const dp_split *tr = &d->train;
    int k = mc->sizes[mc->n_layers];
    if (tr->n == 0) {
        return dp_err(DP_EINVAL, "/train has no rows");
    }
    if (dp_model_cfg_inputs(mc) != tr->n_features) {
        if (mc->n_stages > 0) {
            return dp_err(DP_EINVAL,
                          "--layers: the model takes %dx%dx%d images (%d values) but /train/x "
                          "has %d features per row", mc->in_c, mc->in_h, mc->in_w,
                          dp_model_cfg_inputs(mc), tr->n_features);
        }
        return dp_err(DP_EINVAL,
                      "--layers: the model takes %d inputs but /train/x has %d features per row",
                      mc->sizes[0], tr->n_features);
    }
    if (l < 0 || l >= DP_LOSS_COUNT) {
        return dp_err(DP_EINVAL, "unknown loss");
    }
    const char *ln = dp_loss_name(l);
    if (dp_loss_needs_labels(l) && !dp_split_has_labels(tr)) {
        return dp_err(DP_EINVAL, "--loss %s needs integer class labels, but /train/y holds "
                                 "float targets (use mse, rmse, mae or categorical-cross-"
                                 "entropy)", ln);
    }
    if (dp_loss_needs_values(l) && !dp_split_has_values(tr)) {
        return dp_err(DP_EINVAL, "--loss %s needs float targets, but /train/y holds integer "
                                 "class labels (use cross-entropy)", ln);
    }
    if (dp_split_has_labels(tr) && dp_loss_needs_labels(l) && k != d->n_classes) {
        return dp_err(DP_EINVAL, "--layers: the model has %d outputs but the data has %d "
                                 "classes", k, d->n_classes);
    }
    bool bce = !dp_loss_needs_labels(l) && !dp_loss_needs_values(l);
    if (bce && dp_split_has_labels(tr) && (k != 1 || d->n_classes != 2)) {
        return dp_err(DP_EINVAL, "--loss %s on integer labels needs 0/1 labels (2 classes, the "
                                 "data has %d) and a model with 1 output (it has %d)", ln,
                      d->n_classes, k);
    }
    if (dp_split_has_values(tr) && k != tr->n_targets) {
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
    return DP_OK;
}

/* Epochs, the validation split and the batches: every rank gets rows, batch norm gets 2. */
static int check_batches(const dp_train_cfg *cfg, const dp_model_cfg *mc, const dp_dataset *d,
                         int n_ranks)
{
    const dp_split *tr = &d->train;
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
    size_t B = dp_loop_batch(cfg, n);
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
    return DP_OK;
}

int dp_train_check(const dp_train_cfg *cfg, const dp_model_cfg *mc, const dp_dataset *d,
                   int n_ranks)
{
    int rc = check_model(cfg->loss, mc, d);
    if (rc == DP_OK) {
        rc = check_batches(cfg, mc, d, n_ranks);
    }
    if (rc != DP_OK) {
        return rc;
    }
    if (cfg->plateau_factor < 0.0f || cfg->plateau_factor >= 1.0f || cfg->plateau_patience < 0) {
        return dp_err(DP_EINVAL, "--plateau-factor %g / --plateau-patience %d: the factor must "
                                 "be in [0, 1) (0 = off) and the patience >= 0",
                      cfg->plateau_factor, cfg->plateau_patience);
    }
    if (cfg->deterministic && (cfg->shards < 1 || cfg->shards > DP_FIXED_MAX_TERMS)) {
        return dp_err(DP_EINVAL, "--shards %d: must be 1 to %d", cfg->shards,
                      DP_FIXED_MAX_TERMS);
    }
    if (cfg->deterministic && n_ranks > cfg->shards) {
        return dp_err(DP_EINVAL, "--deterministic with %d shards runs on at most %d ranks, not "
                                 "%d: every rank needs whole shards (give --shards %d or more; "
                                 "the run's bits depend on --shards, not on the ranks)",
                      cfg->shards, cfg->shards, n_ranks, n_ranks);
    }
    if (cfg->deterministic && mc->n_stages > 0) {
        return dp_err(DP_EINVAL, "--deterministic: deterministic mode does not take convolution "
                                 "or pooling layers yet (its exact sums cover dense layers "
                                 "only); train this CNN without it");
    }
    if (cfg->deterministic && cfg->reduce == DP_REDUCE_OVERLAP) {
        return dp_err(DP_EINVAL, "--deterministic sums the gradient once, after the backward "
                                 "pass: it does not combine with --allreduce overlap");
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
    rc = dp_optim_check(&cfg->opt);
    if (rc == DP_OK) {
        dp_sched_cfg sc = cfg->sched;
        sc.base_lr = cfg->opt.lr;
        rc = dp_sched_check(&sc);
    }
    return rc;
}

int dp_train_max_rows(const dp_train_cfg *cfg, const dp_dataset *d, int n_ranks)
{
    size_t B = dp_loop_batch(cfg, n_train_rows(cfg, d));
    size_t per_rank = dp_loop_max_local(cfg, B, n_ranks);
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

int dp_evaluate(dp_model *m, dp_loss loss, const dp_split *s, const size_t *rows, size_t n_rows,
                int eval_batch, const dp_comm *c, dp_eval_result *out)
{
    int rc = DP_OK;
    const dp_model_cfg *mc = dp_model_config(m);
    const int k = mc->sizes[mc->n_layers];
    const size_t n = rows ? n_rows : s->n, E = (size_t)eval_batch;
    /* Chunks of eval_batch rows from the first row, whole chunks to each rank: every chunk
     * is the same forward on any number of ranks, and its loss sum is gathered (the bits
     * through an int64 sum) and added in chunk order, so the figures do not depend on the
     * ranks. The last slot counts the correct rows. */
    const size_t n_chunks = (n + E - 1) / E;
    size_t c0 = 0, c1 = 0;
    size_t *idx = NULL;
    float *x = NULL, *values = NULL;
    int32_t *labels = NULL;
    int64_t *sums = NULL;
    dp_shard_rows(n_chunks, dp_comm_rank(c), dp_comm_size(c), &c0, &c1);
    DP_CALLOC(sums, n_chunks + 1);
    DP_CALLOC(idx, eval_batch);
    DP_CALLOC(x, E * s->n_features);
    if (dp_split_has_labels(s)) {
        DP_CALLOC(labels, eval_batch);
    } else {
        DP_CALLOC(values, E * k);
    }
    for (size_t ch = c0; ch < c1; ch++) {
        const size_t r0 = ch * E;
        const int nb = (int)(n - r0 < E ? n - r0 : E);
        for (int i = 0; i < nb; i++) {
            idx[i] = rows ? rows[r0 + (size_t)i] : r0 + (size_t)i;
        }
        DP_TRY(dp_split_gather(s, idx, nb, x, labels, values));
        const float *o = dp_model_forward(m, x, nb);
        if (!o) {
            DP_FAIL(DP_EINVAL, "evaluation: %s", dp_errmsg());
        }
        dp_targets t = {labels, values};
        long correct = 0;
        sums[ch] = dp_f64_bits(dp_loss_eval(loss, o, &t, nb, k, 1.0f, NULL, &correct));
        sums[n_chunks] += correct;
    }
done:
    /* Every rank reaches the reduction, failed or not, so none is left waiting. */
    rc = dp_comm_agree(c, rc);
    if (rc == DP_OK && dp_comm_size(c) > 1) {
        rc = dp_comm_allreduce_sum_i64(c, sums, n_chunks + 1);
    }
    if (rc == DP_OK) {
        double loss_sum = 0.0;
        for (size_t ch = 0; ch < n_chunks; ch++) {
            loss_sum += dp_bits_f64(sums[ch]);
        }
        out->n = n;
        out->loss = dp_loss_report(loss, loss_sum, n);
        out->accuracy = (n && dp_loss_has_accuracy(loss)) ? (double)sums[n_chunks] / (double)n
                                                          : NAN;
    }
    free(sums);
    free(idx);
    free(x);
    free(labels);
    free(values);
    return rc;
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

int dp_train_state_fresh(const dp_train_cfg *cfg, const dp_model *m, dp_train_state *st)
{
    return dp_train_state_init(st, &cfg->opt, dp_model_n_params(m), dp_model_n_buffers(m),
                               cfg->seed, cfg->epochs, cfg->patience > 0);
}

int dp_train_run(const dp_train_cfg *cfg, dp_model *m, const dp_dataset *d, const dp_comm *c,
                 dp_train_state *st, dp_train_result *res)
{
    dp_loop s;
    int rc = dp_loop_init(&s, cfg, m, d, c, st, res);
    if (rc == DP_OK && cfg->stop_epoch > 0 && st->epoch >= cfg->stop_epoch && !st->finished &&
        st->epoch < cfg->epochs) {
        rc = DP_ESTOPPED; /* already where the driver asked to stop: nothing to train */
    }
    for (int epoch = st->epoch; rc == DP_OK && epoch < cfg->epochs && !st->finished; epoch++) {
        dp_loop_begin_epoch(&s, epoch);
        while (rc == DP_OK && st->next_batch < s.n_batches) {
            rc = dp_loop_train_step(&s);
        }
        if (rc == DP_OK) {
            rc = dp_loop_end_epoch(&s);
        }
    }
    if (rc == DP_OK) {
        rc = dp_loop_finish(&s);
    }
    dp_loop_free(&s);
    return rc;
}
