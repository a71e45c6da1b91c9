/* shards.c: deterministic mode's step (loop.h, README "Deterministic mode"). Every global
 * batch is cut into cfg->shards virtual shards that do not depend on the number of ranks
 * (shard k of a batch of n rows is rows [k n / V, (k + 1) n / V) by dp_shard_rows); rank r
 * holds shards dp_shard_rows(V, r, N), a contiguous run of rows. The model computes each shard
 * on its own (dp_shards) and every sum over shards is exact or in shard order: the dense
 * gradients in int64 fixed point, summed by one int64 allreduce; batch-norm sums and the loss
 * gathered and added in shard order; the correct count as an integer. So parameters,
 * optimizer state, batch-norm statistics and metrics are the same bits on any number of
 * ranks up to V. */
#include "loop.h"

#include "dptrain/err.h"
#include "dptrain/exact.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* dp_shards.gather: the doubles' bits summed as int64 (each slot has one writer). */
static int gather_fn(void *p, double *buf, size_t n)
{
    return dp_comm_allreduce_sum_i64(p, (int64_t *)(void *)buf, n);
}

static int max_fn(void *p, float *buf, size_t n)
{
    return dp_comm_allreduce_max_f32(p, buf, n);
}

int dp_loop_det_alloc(dp_loop *s)
{
    int rc = DP_OK;
    dp_loop_det *d = &s->det;
    const int V = s->cfg->shards;
    const size_t n_params = dp_model_n_params(s->m);
    size_t f0 = 0, f1 = 0;
    dp_shard_rows((size_t)V, s->rank, s->size, &f0, &f1);
    DP_CALLOC(d->rows, V);
    DP_CALLOC(d->acc, n_params + DP_DET_LOSS + (size_t)V);
    DP_CALLOC(d->sh.scratch, (size_t)V * dp_model_shard_scratch(s->m));
    if (s->K > 1) {
        DP_CALLOC(d->sum, n_params);
    }
    d->sh.n_shards = V;
    d->sh.first = (int)f0;
    d->sh.count = (int)(f1 - f0);
    d->sh.rows = d->rows;
    d->sh.acc = d->acc;
    if (s->size > 1) {
        d->sh.gather = gather_fn;
        d->sh.max = max_fn;
        d->sh.fn_ctx = (void *)s->c;
    }
done:
    return rc;
}

void dp_loop_det_free(dp_loop *s)
{
    free(s->det.rows);
    free(s->det.acc);
    free(s->det.sh.scratch);
    free(s->det.sum);
    memset(&s->det, 0, sizeof s->det);
}

/* This rank's shards of global batch b: their row counts in d->rows, the rows' ids (*count
 * of them from the returned pointer, dp_loop_ids) and the largest shard of the batch. */
static const size_t *shard_slice(dp_loop *s, size_t b, int *count)
{
    dp_loop_det *d = &s->det;
    const size_t nb = dp_loop_batch_rows(b, s->B, s->n_rows), V = (size_t)d->sh.n_shards;
    size_t lo = 0, hi = 0, first = 0;
    *count = 0;
    for (int k = 0; k < d->sh.count; k++) {
        dp_shard_rows(nb, d->sh.first + k, (int)V, &lo, &hi);
        first = k == 0 ? lo : first;
        d->rows[k] = (int)(hi - lo);
        *count += d->rows[k];
    }
    d->sh.max_rows = (int)((nb + V - 1) / V);
    return dp_loop_ids(s, b, first, (size_t)*count, s->ids);
}

/* Starts reading this rank's rows of the next global batch (a streamed file's read ahead;
 * the CPU's prefetch in memory), as the default step does. Local. */
static void prefetch_next(dp_loop *s, size_t b)
{
    const dp_loop_det *d = &s->det;
    if (b + 1 >= s->n_batches || d->sh.count <= 0) {
        return;
    }
    const size_t nb = dp_loop_batch_rows(b + 1, s->B, s->n_rows), V = (size_t)d->sh.n_shards;
    size_t lo = 0, hi = 0, lo_last = 0, hi_last = 0;
    dp_shard_rows(nb, d->sh.first, (int)V, &lo, &hi);
    dp_shard_rows(nb, d->sh.first + d->sh.count - 1, (int)V, &lo_last, &hi_last);
    const size_t *next = dp_loop_ids(s, b + 1, lo, hi_last - lo, s->ids_next);
    dp_split_prefetch(s->tr, next, (int)(hi_last - lo));
}

/* The loss of each of this rank's shards, its bits in the gathered tail of acc, the correct
 * rows counted, dout filled (scale 1 / rows in the step). */
static void shard_losses(dp_loop *s, const dp_step_ctx *sc, const float *o)
{
    dp_loop_det *d = &s->det;
    int64_t *tail = d->acc + dp_model_n_params(s->m);
    float *dout = dp_model_dout(s->m);
    const size_t k = (size_t)s->k;
    size_t r0 = 0;
    long correct = 0;
    for (int j = 0; j < d->sh.count; j++) {
        const dp_targets t = {s->labels ? s->labels + r0 : NULL,
                              s->values ? s->values + r0 * k : NULL};
        double loss = dp_loss_eval(s->cfg->loss, o + r0 * k, &t, d->rows[j], s->k,
                                   1.0f / (float)sc->group, dout + r0 * k, &correct);
        tail[DP_DET_LOSS + d->sh.first + j] = dp_f64_bits(loss);
        r0 += (size_t)d->rows[j];
    }
    tail[DP_DET_CORRECT] = correct;
}

/* After the int64 allreduce: the gradient back in floats (gamma and beta hold their summed
 * gradients already), added into d->sum over the step's batches; the batch's loss (in
 * shard order), correct rows and stop requests into sc. Local. */
static void unpack(dp_loop *s, dp_step_ctx *sc, bool first_batch)
{
    dp_loop_det *d = &s->det;
    dp_model *m = s->m;
    const size_t n_params = dp_model_n_params(m);
    const int64_t *tail = d->acc + n_params;
    float *g = dp_model_grads(m);
    for (int i = 0; i < dp_model_config(m)->n_layers; i++) {
        const dp_dense *l = dp_model_layer_const(m, i);
        const size_t off = dp_model_layer_offset(m, i), nw = (size_t)l->out * (size_t)l->in;
        dp_fixed_get(g + off, d->acc + off, nw, d->sh.exp[2 * i]);
        dp_fixed_get(g + off + nw, d->acc + off + nw, (size_t)l->out, d->sh.exp[2 * i + 1]);
    }
    if (d->sum) {
        for (size_t i = 0; i < n_params; i++) {
            d->sum[i] = first_batch ? g[i] : d->sum[i] + g[i];
        }
    }
    double loss = 0.0;
    for (int j = 0; j < d->sh.n_shards; j++) {
        loss += dp_bits_f64(tail[DP_DET_LOSS + j]);
    }
    sc->loss += loss;
    sc->correct += (long)tail[DP_DET_CORRECT];
    sc->stop = sc->stop || tail[DP_DET_STOP] > 0;
    sc->read_failed = sc->read_failed || tail[DP_DET_FAIL] > 0;
}

int dp_loop_det_batch(dp_loop *s, dp_step_ctx *sc, size_t b)
{
    const dp_train_cfg *cfg = s->cfg;
    dp_loop_det *d = &s->det;
    const size_t n_params = dp_model_n_params(s->m);
    int nl = 0;
    const size_t *ids = shard_slice(s, b, &nl);
    dp_loop_gather(s, sc, ids, nl);
    dp_loop_lap(sc, &sc->tm.data);
    const dp_train_ctx tctx = {.seed = cfg->seed,
                               .step = s->st->step * (long)s->K + (long)(b - sc->b0),
                               .sample_ids = ids, .shards = &d->sh};
    const float *o = dp_model_forward_train(s->m, s->x, nl, &tctx);
    if (!o) {
        return DP_EINVAL;
    }
    memset(d->acc + n_params, 0, (DP_DET_LOSS + (size_t)d->sh.n_shards) * sizeof *d->acc);
    shard_losses(s, sc, o);
    d->acc[n_params + DP_DET_STOP] = b + 1 == sc->b1 && dp_loop_stop_requested(s);
    d->acc[n_params + DP_DET_FAIL] = sc->read_rc != DP_OK;
    prefetch_next(s, b);
    dp_loop_lap(sc, &sc->tm.forward);
    int rc = dp_model_backward(s->m, s->x, dp_model_dout(s->m), nl, false);
    dp_loop_lap(sc, &sc->tm.backward);
    if (rc == DP_OK && d->sh.nonfinite) {
        /* Every rank sees the same agreed bound, so every rank stops here. */
        return dp_err(DP_ENONFINITE, "a gradient became NaN or infinite at epoch %d, step %ld "
                                     "(learning rate %g): training diverged; try a lower --lr",
                      s->epoch + 1, s->st->step + 1, s->st->lr);
    }
    if (rc == DP_OK && s->size > 1 && !s->hooks->skip_allreduce) {
        rc = dp_comm_allreduce_sum_i64(s->c, d->acc, n_params + DP_DET_LOSS +
                                                         (size_t)d->sh.n_shards);
    }
    if (rc == DP_OK) {
        unpack(s, sc, b == sc->b0);
        dp_loop_lap(sc, &sc->tm.reduce);
        sc->tm.reduce_wait = sc->tm.reduce; /* blocking */
    }
    return rc;
}
