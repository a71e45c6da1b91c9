/* train.c: the data-parallel training loop: one global permutation per epoch, contiguous
 * per-rank slices of every global batch, one gradient allreduce per step, the same SGD step
 * on every rank; and evaluation that counts each sample once across the ranks. */
#include "dptrain/train.h"

#include "dptrain/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Slots of the gradient arena's tail that ride the allreduce. */
enum { TAIL_LOSS = 0, TAIL_CORRECT = 1 };

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
    if (cfg->loss == DP_LOSS_CROSS_ENTROPY) {
        if (!tr->labels) {
            return dp_err(DP_EINVAL, "--loss cross-entropy needs integer class labels, but "
                                     "/train/y holds float regression targets (use --loss mse)");
        }
        if (k != d->n_classes) {
            return dp_err(DP_EINVAL, "--layers: the model has %d outputs but the data has %d "
                                     "classes", k, d->n_classes);
        }
    } else if (cfg->loss == DP_LOSS_MSE) {
        if (!tr->values) {
            return dp_err(DP_EINVAL, "--loss mse needs float targets, but /train/y holds "
                                     "integer class labels (use --loss cross-entropy)");
        }
        if (k != tr->n_targets) {
            return dp_err(DP_EINVAL, "--layers: the model has %d outputs but /train/y has %d "
                                     "targets per row", k, tr->n_targets);
        }
    } else {
        return dp_err(DP_EINVAL, "unknown loss");
    }
    if (cfg->epochs < 0) {
        return dp_err(DP_EINVAL, "--epochs %d: must be >= 0", cfg->epochs);
    }
    size_t B = effective_batch(cfg, tr->n);
    if (B < (size_t)n_ranks) {
        return dp_err(DP_EINVAL, "--batch %zu is smaller than the number of ranks (%d): every "
                                 "rank needs at least one row of each batch", B, n_ranks);
    }
    if (dp_n_batches(tr->n, B, cfg->drop_last) == 0) {
        return dp_err(DP_EINVAL, "--drop-last leaves no batch: %zu rows, batch %zu", tr->n, B);
    }
    if (cfg->eval_batch < 1) {
        return dp_err(DP_EINVAL, "--eval-batch %d: must be >= 1", cfg->eval_batch);
    }
    if (!(cfg->sgd.lr > 0.0f) || !isfinite(cfg->sgd.lr)) {
        return dp_err(DP_EINVAL, "--lr %g: must be a positive number", cfg->sgd.lr);
    }
    if (cfg->sgd.momentum < 0.0f || cfg->sgd.momentum >= 1.0f) {
        return dp_err(DP_EINVAL, "--momentum %g: must be in [0, 1)", cfg->sgd.momentum);
    }
    if (cfg->sgd.nesterov && cfg->sgd.momentum == 0.0f) {
        return dp_err(DP_EINVAL, "--nesterov needs --momentum > 0");
    }
    return DP_OK;
}

int dp_train_max_rows(const dp_train_cfg *cfg, const dp_dataset *d, int n_ranks)
{
    size_t B = effective_batch(cfg, d->train.n);
    size_t per_rank = (B + (size_t)n_ranks - 1) / (size_t)n_ranks;
    size_t rows = per_rank > (size_t)cfg->eval_batch ? per_rank : (size_t)cfg->eval_batch;
    return rows > (size_t)1 << 30 ? 1 << 30 : (int)rows;
}

int dp_train_sync_params(dp_model *m, const dp_comm *c)
{
    return dp_comm_bcast_f32(c, dp_model_params(m), dp_model_n_params(m), 0);
}

static bool is_classification(dp_loss l) { return l == DP_LOSS_CROSS_ENTROPY; }

int dp_evaluate(dp_model *m, dp_loss loss, const dp_split *s, int eval_batch, const dp_comm *c,
                dp_eval_result *out)
{
    int rc = DP_OK;
    const dp_model_cfg *mc = dp_model_config(m);
    int k = mc->sizes[mc->n_layers];
    size_t lo = 0, hi = 0;
    size_t *idx = NULL;
    float *x = NULL, *values = NULL;
    int32_t *labels = NULL;
    double sums[2] = {0.0, 0.0}; /* loss, correct */
    dp_shard_rows(s->n, dp_comm_rank(c), dp_comm_size(c), &lo, &hi);
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
            idx[i] = r0 + (size_t)i;
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
        out->n = s->n;
        out->loss = s->n ? sums[0] / (double)s->n : NAN;
        out->accuracy = (s->n && is_classification(loss)) ? sums[1] / (double)s->n : NAN;
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

static void report_epoch(const dp_train_cfg *cfg, int epoch, long step, float lr,
                         const dp_train_result *r, double seconds, double samples_per_s)
{
    if (cfg->log) {
        fprintf(cfg->log, "epoch %3d/%d  train loss %.4f", epoch, cfg->epochs, r->train.loss);
        if (isfinite(r->train.accuracy)) {
            fprintf(cfg->log, " acc %.4f", r->train.accuracy);
        }
        if (r->test.n > 0) {
            fprintf(cfg->log, "  test loss %.4f", r->test.loss);
            if (isfinite(r->test.accuracy)) {
                fprintf(cfg->log, " acc %.4f", r->test.accuracy);
            }
        }
        fprintf(cfg->log, "  %.0f samples/s  %.2f s\n", samples_per_s, seconds);
        fflush(cfg->log);
    }
    if (cfg->metrics) {
        fprintf(cfg->metrics, "{\"epoch\":%d,\"step\":%ld", epoch, step);
        print_json_number(cfg->metrics, "lr", lr);
        print_json_number(cfg->metrics, "train_loss", r->train.loss);
        print_json_number(cfg->metrics, "train_accuracy", r->train.accuracy);
        if (r->test.n > 0) {
            print_json_number(cfg->metrics, "test_loss", r->test.loss);
            print_json_number(cfg->metrics, "test_accuracy", r->test.accuracy);
        }
        print_json_number(cfg->metrics, "samples_per_s", samples_per_s);
        print_json_number(cfg->metrics, "seconds", seconds);
        fprintf(cfg->metrics, "}\n");
        fflush(cfg->metrics);
    }
}

int dp_train_run(const dp_train_cfg *cfg, dp_model *m, const dp_dataset *d, const dp_comm *c,
                 dp_train_result *res)
{
    int rc = DP_OK;
    const dp_split *tr = &d->train;
    const dp_model_cfg *mc = dp_model_config(m);
    const int k = mc->sizes[mc->n_layers], rank = dp_comm_rank(c), size = dp_comm_size(c);
    const size_t n = tr->n, B = effective_batch(cfg, n), n_params = dp_model_n_params(m);
    const size_t nb = dp_n_batches(n, B, cfg->drop_last);
    const long total_steps = (long)nb * cfg->epochs;
    const int max_local = (int)((B + (size_t)size - 1) / (size_t)size);
    size_t *perm = NULL;
    float *x = NULL, *values = NULL, *momentum_buf = NULL;
    int32_t *labels = NULL;
    float *params = dp_model_params(m), *grads = dp_model_grads(m), *dout = dp_model_dout(m);
    long step = 0;
    float lr = cfg->sgd.lr;
    /* Test hook: the multi-rank tests prove that they notice unsummed gradients. */
    const char *fault = getenv("DPTRAIN_TEST_FAULT");
    const bool skip_allreduce = fault && strcmp(fault, "skip-allreduce") == 0;

    memset(res, 0, sizeof *res);
    /* Every buffer of the loop is allocated here; a step allocates nothing. */
    DP_CALLOC(perm, n);
    DP_CALLOC(x, (size_t)max_local * tr->n_features);
    if (tr->labels) {
        DP_CALLOC(labels, max_local);
    } else {
        DP_CALLOC(values, (size_t)max_local * k);
    }
    DP_CALLOC(momentum_buf, n_params);
done:
    if ((rc = dp_comm_agree(c, rc)) != DP_OK) {
        goto out;
    }
    for (int epoch = 0; epoch < cfg->epochs; epoch++) {
        double t0 = dp_wtime(), loss_sum = 0.0, correct_sum = 0.0;
        size_t seen = 0;
        dp_permutation(perm, n, cfg->seed, (uint64_t)epoch);
        for (size_t b = 0; b < nb; b++) {
            size_t g0 = b * B, cnt = (g0 + B <= n) ? B : n - g0, lo = 0, hi = 0;
            dp_shard_rows(cnt, rank, size, &lo, &hi);
            int nl = (int)(hi - lo);
            dp_split_gather(tr, perm + g0 + lo, nl, x, labels, values);
            const float *o = dp_model_forward(m, x, nl);
            dp_targets t = {labels, values};
            long correct = 0;
            /* Each rank's gradient is its slice's SUM scaled by 1/global count, so the
             * allreduced sum is the gradient of the global mean loss. */
            double ls = dp_loss_eval(cfg->loss, o, &t, nl, k, 1.0f / (float)cnt, dout, &correct);
            dp_model_backward(m, x, dout, nl, false);
            grads[n_params + TAIL_LOSS] = (float)ls;
            grads[n_params + TAIL_CORRECT] = (float)correct;
            if (!skip_allreduce &&
                (rc = dp_comm_allreduce_sum_f32(c, grads, n_params + 2)) != DP_OK) {
                goto out;
            }
            float batch_loss = grads[n_params + TAIL_LOSS];
            if (!isfinite(batch_loss)) {
                rc = dp_err(DP_ENONFINITE,
                            "the training loss became %s at epoch %d, step %ld (learning rate "
                            "%g): training diverged; try a lower --lr",
                            isnan(batch_loss) ? "NaN" : "infinite", epoch + 1, step + 1, lr);
                goto out;
            }
            loss_sum += batch_loss;
            correct_sum += grads[n_params + TAIL_CORRECT];
            seen += cnt;
            lr = dp_sched_lr(cfg->sched, cfg->sgd.lr, step, total_steps);
            dp_sgd_cfg sgd = cfg->sgd;
            sgd.lr = lr;
            step++;
            dp_sgd_step(&sgd, step, n_params, params, grads, momentum_buf);
        }
        double seconds = dp_comm_max_f64(c, dp_wtime() - t0);
        res->train_seconds += seconds;
        res->epochs_done = epoch + 1;
        res->steps_done = step;
        res->train.n = seen;
        res->train.loss = loss_sum / (double)seen;
        res->train.accuracy = tr->labels ? correct_sum / (double)seen : NAN;
        if (d->test.n > 0) {
            if ((rc = dp_evaluate(m, cfg->loss, &d->test, cfg->eval_batch, c, &res->test)) !=
                DP_OK) {
                goto out;
            }
        }
        report_epoch(cfg, epoch + 1, step, lr, res, seconds, (double)seen / seconds);
    }
    res->samples_per_s = res->train_seconds > 0.0
                             ? (double)res->train.n * res->epochs_done / res->train_seconds
                             : 0.0;
out:
    free(perm);
    free(x);
    free(labels);
    free(values);
    free(momentum_buf);
    return rc;
}
