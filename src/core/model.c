/* model.c: the MLP model: one flat parameter array, one flat gradient array, one flat array
 * of batch-norm running statistics, and the per-layer activation, batch-norm and dropout
 * buffers, all allocated at creation (those that scale with the model or the batch through
 * dptrain/arena.h). Evaluation and training forward, and the backward of
 * whichever ran last. Layouts: model_impl.h. */
#include "model_impl.h"

#include "dptrain/arena.h"
#include "dptrain/blas.h"
#include "dptrain/err.h"
#include "dptrain/exact.h"
#include "dptrain/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_cfg(const dp_model_cfg *c)
{
    if (c->n_layers < 1 || c->n_layers > DP_MAX_LAYERS) {
        return dp_err(DP_EINVAL, "model: %d layers (allowed 1 to %d)", c->n_layers,
                      DP_MAX_LAYERS);
    }
    for (int i = 0; i <= c->n_layers; i++) {
        if (c->sizes[i] < 1) {
            return dp_err(DP_EINVAL, "model: layer size %d is %d (must be >= 1)", i, c->sizes[i]);
        }
    }
    for (int i = 0; i < c->n_layers; i++) {
        if (c->act[i] < 0 || c->act[i] >= DP_ACT_COUNT) {
            return dp_err(DP_EINVAL, "model: layer %d has an unknown activation", i);
        }
    }
    if (c->init < 0 || c->init >= DP_INIT_COUNT) {
        return dp_err(DP_EINVAL, "model: unknown initializer");
    }
    for (int i = 0; i < c->n_layers; i++) {
        const dp_init_spec *sp[2] = {&c->weight_init[i], &c->bias_init[i]};
        for (int t = 0; t < 2; t++) {
            if (sp[t]->set && (sp[t]->kind < 0 || sp[t]->kind >= DP_INIT_COUNT)) {
                return dp_err(DP_EINVAL, "model: layer %d has an unknown %s initializer", i + 1,
                              t ? "bias" : "weight");
            }
        }
    }
    if (c->max_batch < 1) {
        return dp_err(DP_EINVAL, "model: max_batch is %d (must be >= 1)", c->max_batch);
    }
    const int last = c->n_layers - 1;
    for (int i = 0; i < c->n_layers; i++) {
        float p = c->dropout[i];
        if (!(p >= 0.0f && p < 1.0f)) {
            return dp_err(DP_EINVAL, "model: dropout of layer %d is %g (must be in [0, 1))", i,
                          p);
        }
        if (i == last && p != 0.0f) {
            return dp_err(DP_EINVAL,
                          "model: dropout %g on layer %d, the output layer (dropout is only "
                          "allowed on hidden layers)", p, i);
        }
        if (i == last && c->batchnorm[i]) {
            return dp_err(DP_EINVAL,
                          "model: batch norm on layer %d, the output layer (batch norm is only "
                          "allowed on hidden layers)", i);
        }
    }
    if (!(c->bn_momentum >= 0.0f && c->bn_momentum <= 1.0f)) {
        return dp_err(DP_EINVAL, "model: batch-norm momentum %g (must be in (0, 1]; 0 means %g)",
                      c->bn_momentum, DP_BN_MOMENTUM_DEFAULT);
    }
    if (!(c->bn_eps >= 0.0f && isfinite(c->bn_eps))) {
        return dp_err(DP_EINVAL, "model: batch-norm eps %g (must be > 0; 0 means %g)",
                      c->bn_eps, DP_BN_EPS_DEFAULT);
    }
    return DP_OK;
}

int dp_model_create(const dp_model_cfg *cfg, dp_model **out)
{
    int rc = DP_OK;
    dp_model *m = NULL;
    *out = NULL;
    DP_TRY(check_cfg(cfg));
    DP_CALLOC(m, 1);
    m->cfg = *cfg;
    if (m->cfg.bn_momentum == 0.0f) {
        m->cfg.bn_momentum = DP_BN_MOMENTUM_DEFAULT;
    }
    if (m->cfg.bn_eps == 0.0f) {
        m->cfg.bn_eps = DP_BN_EPS_DEFAULT;
    }
    int L = cfg->n_layers, widest = cfg->sizes[0], red_width = 0;
    for (int i = L; i < DP_MAX_LAYERS; i++) { /* ignored entries: keep the copy clean */
        m->cfg.dropout[i] = 0.0f;
        m->cfg.batchnorm[i] = false;
    }
    if (cfg->n_stages > 0) {
        int c[DP_MAX_STAGES + 1], h[DP_MAX_STAGES + 1], w[DP_MAX_STAGES + 1], feat;
        DP_TRY(dp_model_cfg_shapes(cfg, c, h, w, &feat));
        dp_stage_counts(cfg, c, &m->n_params, &m->n_buffers);
    } else {
        m->cfg.n_stages = 0;
        m->cfg.in_c = m->cfg.in_h = m->cfg.in_w = 0;
        m->cfg.gap = false;
    }
    for (int j = m->cfg.n_stages; j < DP_MAX_STAGES; j++) {
        m->cfg.stage[j] = (dp_stage_cfg){0};
    }
    for (int i = 0; i < L; i++) {
        size_t o = (size_t)cfg->sizes[i + 1];
        m->n_params += o * cfg->sizes[i] + o + (cfg->batchnorm[i] ? 2 * o : 0);
        m->n_buffers += cfg->batchnorm[i] ? 2 * o : 0;
        widest = cfg->sizes[i + 1] > widest ? cfg->sizes[i + 1] : widest;
    }
    DP_TRY(dp_gemm_check_env());
    DP_ARENA_CALLOC(m->params, m->n_params);
    DP_ARENA_CALLOC(m->grads, m->n_params + DP_GRAD_TAIL);
    DP_ARENA_CALLOC(m->buffers, m->n_buffers);
    size_t off = 0, boff = 0, mb = (size_t)cfg->max_batch;
    if (cfg->n_stages > 0) {
        DP_TRY(dp_stage_create(m, &off, &boff, &red_width));
    }
    red_width = 2 * widest + 1 > red_width ? 2 * widest + 1 : red_width;
    DP_CALLOC(m->red, (size_t)red_width);
    for (int i = 0; i < L; i++) {
        dp_dense *l = &m->layers[i];
        l->in = cfg->sizes[i];
        l->out = cfg->sizes[i + 1];
        l->act = cfg->act[i];
        l->w = m->params + off;
        l->dw = m->grads + off;
        off += (size_t)l->out * l->in;
        l->b = m->params + off;
        l->db = m->grads + off;
        off += (size_t)l->out;
        DP_ARENA_CALLOC(m->z[i], mb * l->out);
        DP_ARENA_CALLOC(m->a[i], mb * l->out);
        dp_init_spec w = cfg->weight_init[i];
        if (!w.set) {
            w = (dp_init_spec){.set = true, .kind = cfg->init,
                               .b = (cfg->init == DP_INIT_UNIFORM || cfg->init == DP_INIT_NORMAL)
                                        ? 1.0f : 0.0f};
        }
        dp_dense_init_spec(l, &w, &cfg->bias_init[i], cfg->seed, i);
        if (cfg->batchnorm[i]) {
            m->gamma[i] = m->params + off;
            m->dgamma[i] = m->grads + off;
            off += (size_t)l->out;
            m->beta[i] = m->params + off;
            m->dbeta[i] = m->grads + off;
            off += (size_t)l->out;
            m->run_mean[i] = m->buffers + boff;
            boff += (size_t)l->out;
            m->run_var[i] = m->buffers + boff;
            boff += (size_t)l->out;
            for (int j = 0; j < l->out; j++) {
                m->gamma[i][j] = 1.0f;
                m->beta[i][j] = 0.0f;
                m->run_mean[i][j] = 0.0f;
                m->run_var[i][j] = 1.0f;
            }
            DP_ARENA_CALLOC(m->xhat[i], mb * l->out);
            DP_CALLOC(m->invstd[i], l->out);
        }
        if (cfg->dropout[i] > 0.0f) {
            DP_ARENA_CALLOC(m->mask[i], mb * l->out);
            DP_ARENA_CALLOC(m->drop[i], mb * l->out);
        }
    }
    DP_ARENA_CALLOC(m->scratch[0], mb * widest);
    DP_ARENA_CALLOC(m->scratch[1], mb * widest);
    DP_ARENA_CALLOC(m->dout, mb * cfg->sizes[L]);
    *out = m;
    m = NULL;
done:
    dp_model_free(&m);
    return rc;
}

void dp_model_free(dp_model **pm)
{
    dp_model *m = pm ? *pm : NULL;
    if (!m) {
        return;
    }
    for (int i = 0; i < DP_MAX_LAYERS; i++) {
        dp_arena_free(m->z[i]);
        dp_arena_free(m->a[i]);
        dp_arena_free(m->xhat[i]);
        free(m->invstd[i]);
        dp_arena_free(m->mask[i]);
        dp_arena_free(m->drop[i]);
    }
    dp_stage_free(m);
    dp_arena_free(m->scratch[0]);
    dp_arena_free(m->scratch[1]);
    dp_arena_free(m->dout);
    dp_arena_free(m->params);
    dp_arena_free(m->grads);
    dp_arena_free(m->buffers);
    free(m->red);
    free(m);
    *pm = NULL;
}

const dp_model_cfg *dp_model_config(const dp_model *m) { return &m->cfg; }
size_t dp_model_n_params(const dp_model *m) { return m->n_params; }

size_t dp_model_bytes(const dp_model *m)
{
    const dp_model_cfg *c = &m->cfg;
    const size_t mb = (size_t)c->max_batch;
    size_t widest = (size_t)c->sizes[0], floats = 2 * m->n_params + DP_GRAD_TAIL + m->n_buffers;
    for (int i = 0; i < c->n_layers; i++) {
        const size_t o = (size_t)c->sizes[i + 1];
        widest = o > widest ? o : widest;
        floats += 2 * mb * o;                                  /* z, a */
        floats += c->batchnorm[i] ? mb * o + o : 0;            /* xhat, invstd */
        floats += c->dropout[i] > 0.0f ? 2 * mb * o : 0;       /* mask, drop */
    }
    floats += 2 * mb * widest + mb * (size_t)c->sizes[c->n_layers]; /* scratch, dout */
    return floats * sizeof(float) + (2 * widest + 1) * sizeof(double) /* + red */
           + dp_stage_bytes(m);
}
size_t dp_model_shard_scratch(const dp_model *m)
{
    int widest = 1;
    for (int i = 0; i < m->cfg.n_layers; i++) {
        widest = m->layers[i].out > widest ? m->layers[i].out : widest;
    }
    return 2 * (size_t)widest + 1;
}

float *dp_model_params(dp_model *m) { return m->params; }
float *dp_model_grads(dp_model *m) { return m->grads; }
dp_dense *dp_model_layer(dp_model *m, int i) { return &m->layers[i]; }
size_t dp_model_layer_offset(const dp_model *m, int i)
{
    return i == 0 ? 0 : i < m->cfg.n_layers ? (size_t)(m->layers[i].w - m->params) : m->n_params;
}
dp_conv *dp_model_conv(dp_model *m, int j)
{
    return (j >= 0 && j < m->n_stages && m->conv[j].w) ? &m->conv[j] : NULL;
}
const dp_conv *dp_model_conv_const(const dp_model *m, int j)
{
    return dp_model_conv((dp_model *)m, j);
}
int dp_model_stage_bn(const dp_model *m, int j, float **gamma, float **beta,
                      float **running_mean, float **running_var)
{
    bool has = j >= 0 && j < m->n_stages && m->sgamma[j];
    float *v[4] = {NULL, NULL, NULL, NULL}, **out[4] = {gamma, beta, running_mean, running_var};
    if (has) {
        v[0] = m->sgamma[j];
        v[1] = m->sbeta[j];
        v[2] = m->srun_mean[j];
        v[3] = m->srun_var[j];
    }
    for (int t = 0; t < 4; t++) {
        if (out[t]) {
            *out[t] = v[t];
        }
    }
    return has ? 1 : 0;
}
const dp_dense *dp_model_layer_const(const dp_model *m, int i) { return &m->layers[i]; }
float *dp_model_dout(dp_model *m) { return m->dout; }
float *dp_model_buffers(dp_model *m) { return m->buffers; }
size_t dp_model_n_buffers(const dp_model *m) { return m->n_buffers; }

int dp_model_bn_layer(const dp_model *m, int i, float **gamma, float **beta,
                      float **running_mean, float **running_var)
{
    bool has = i >= 0 && i < m->cfg.n_layers && m->cfg.batchnorm[i];
    if (gamma) {
        *gamma = has ? m->gamma[i] : NULL;
    }
    if (beta) {
        *beta = has ? m->beta[i] : NULL;
    }
    if (running_mean) {
        *running_mean = has ? m->run_mean[i] : NULL;
    }
    if (running_var) {
        *running_var = has ? m->run_var[i] : NULL;
    }
    return has ? 1 : 0;
}

/* The input of layer i + 1 produced by layer i in the current mode. */
static const float *layer_output(const dp_model *m, int i)
{
    return (m->training && m->drop[i]) ? m->drop[i] : m->a[i];
}

/* z (B,n) = gamma * xhat + beta, xhat = (u - mean) * invstd, where u is z on entry. */
static void bn_apply(dp_model *m, int i, int B, const double *mean)
{
    int n = m->layers[i].out;
    float *z = m->z[i], *xh = m->xhat[i];
    const float *g = m->gamma[i], *be = m->beta[i], *is = m->invstd[i];
    for (int r = 0; r < B; r++) {
        for (int j = 0; j < n; j++) {
            size_t k = (size_t)r * n + j;
            xh[k] = (float)(((double)z[k] - mean[j]) * is[j]);
            z[k] = g[j] * xh[k] + be[j];
        }
    }
}

/* Evaluation-mode batch norm of layer i: the running statistics. */
static void bn_forward_eval(dp_model *m, int i, int B)
{
    int n = m->layers[i].out;
    double *mean = m->red;
    for (int j = 0; j < n; j++) {
        mean[j] = m->run_mean[i][j];
        m->invstd[i][j] = (float)(1.0 / sqrt((double)m->run_var[i][j] + m->cfg.bn_eps));
    }
    bn_apply(m, i, B, mean);
}

/* Copies the current error message (the sum's) into a dp_err naming what failed. */
int dp_model_sum_failed(int rc, const char *what, int layer)
{
    char prev[512];
    snprintf(prev, sizeof prev, "%s", dp_errmsg());
    return dp_err(rc, "model: %s of layer %d: the sum across ranks failed: %s", what, layer,
                  prev[0] ? prev : dp_strstatus(rc));
}

/* s (2n + 1) = per-feature sums of z and z^2 over rows [0, B) of z (B,n), and B. */
static void bn_row_sums(double *s, const float *z, const float *unused, int B, int n)
{
    (void)unused;
    memset(s, 0, (2 * (size_t)n + 1) * sizeof *s);
    for (int r = 0; r < B; r++) {
        for (int j = 0; j < n; j++) {
            double v = z[(size_t)r * n + j];
            s[j] += v;
            s[n + j] += v * v;
        }
    }
    s[2 * n] = (double)B;
}

/* Per-feature sums s over B rows of a and b (both (B,n)). */
typedef void (*row_sums_fn)(double *s, const float *a, const float *b, int B, int n);

/* Deterministic mode: the sums of each of this rank's shards (fill on the shard's rows of a
 * and b, (B,n)), gathered over the ranks and added in shard order into out (len). */
static int shard_sums(dp_shards *sh, size_t len, row_sums_fn fill, const float *a,
                      const float *b, int n, double *out)
{
    int rc = DP_OK;
    size_t row0 = 0;
    memset(sh->scratch, 0, (size_t)sh->n_shards * len * sizeof *sh->scratch);
    for (int k = 0; k < sh->count; k++) {
        fill(sh->scratch + (size_t)(sh->first + k) * len, a + row0 * (size_t)n,
             b ? b + row0 * (size_t)n : NULL, sh->rows[k], n);
        row0 += (size_t)sh->rows[k];
    }
    if (sh->gather && (rc = sh->gather(sh->fn_ctx, sh->scratch, (size_t)sh->n_shards * len))) {
        return rc;
    }
    dp_sum_blocks(out, sh->scratch, sh->n_shards, len);
    return DP_OK;
}

/* Training-mode batch norm of layer i over the global batch; updates the running stats. */
static int bn_forward_train(dp_model *m, int i, int B, const dp_train_ctx *ctx)
{
    int rc = DP_OK, n = m->layers[i].out;
    double *s1 = m->red, *s2 = m->red + n;
    if (ctx->shards) {
        rc = shard_sums(ctx->shards, 2 * (size_t)n + 1, bn_row_sums, m->z[i], NULL, n, m->red);
    } else {
        bn_row_sums(m->red, m->z[i], NULL, B, n);
        rc = ctx->sum ? ctx->sum(ctx->sum_ctx, m->red, 2 * (size_t)n + 1) : DP_OK;
    }
    if (rc != DP_OK) {
        return dp_model_sum_failed(rc, "batch-norm statistics", i);
    }
    double N = m->red[2 * n];
    if (N < 2.0) {
        return dp_err(DP_EINVAL,
                      "model: batch norm of layer %d needs at least 2 rows in the global batch, "
                      "got %.0f (use a larger batch or drop the last partial batch)", i, N);
    }
    m->bn_count = N;
    double mom = m->cfg.bn_momentum, eps = m->cfg.bn_eps;
    for (int j = 0; j < n; j++) {
        double mean = s1[j] / N, var = s2[j] / N - mean * mean;
        var = var > 0.0 ? var : 0.0;
        s1[j] = mean;
        m->invstd[i][j] = (float)(1.0 / sqrt(var + eps));
        m->run_mean[i][j] = (float)((1.0 - mom) * m->run_mean[i][j] + mom * mean);
        m->run_var[i][j] = (float)((1.0 - mom) * m->run_var[i][j] + mom * var * N / (N - 1.0));
    }
    bn_apply(m, i, B, s1);
    return DP_OK;
}

void dp_model_dropout(float *mask, float *d, const float *a, int B, int n, float p, uint64_t key,
                      const dp_train_ctx *ctx)
{
    const float scale = 1.0f / (1.0f - p);
    dp_rng rng = dp_rng_make(ctx->seed ^ DP_RNG_TAG_DROPOUT, (uint64_t)ctx->step);
    const uint64_t layer_bits = key << 56;
    for (int r = 0; r < B; r++) {
        uint64_t base = (uint64_t)ctx->sample_ids[r] * (uint64_t)n;
        for (int j = 0; j < n; j++) {
            size_t k = (size_t)r * n + j;
            rng.ctr = layer_bits ^ (base + (uint64_t)j);
            mask[k] = dp_rng_uniform(&rng) >= p ? scale : 0.0f;
            d[k] = a[k] * mask[k];
        }
    }
}

/* Dropout of layer i: mask[i] from the counter-based RNG, drop[i] = a[i] * mask[i]. */
static void dropout_forward(dp_model *m, int i, int B, const dp_train_ctx *ctx)
{
    dp_model_dropout(m->mask[i], m->drop[i], m->a[i], B, m->layers[i].out, m->cfg.dropout[i],
                     (uint64_t)i, ctx);
}

const float *dp_model_forward(dp_model *m, const float *x, int B)
{
    m->training = false;
    m->ctx = NULL;
    const float *in = m->n_stages > 0 ? dp_stage_forward(m, x, B, NULL) : x;
    if (!in) {
        return NULL;
    }
    for (int i = 0; i < m->cfg.n_layers; i++) {
        dp_dense *l = &m->layers[i];
        dp_dense_forward(l, m->z[i], in, B);
        if (m->gamma[i]) {
            bn_forward_eval(m, i, B);
        }
        dp_act_forward(l->act, m->a[i], m->z[i], B, l->out);
        in = m->a[i];
    }
    return in;
}

/* Layer i's dense product of B rows of in into z[i]: in one product, or (deterministic mode)
 * one product per shard, so that a shard's rows see the same GEMM shape on any rank. */
static void dense_forward_rows(dp_model *m, int i, const float *in, int B, const dp_shards *sh)
{
    dp_dense *l = &m->layers[i];
    if (!sh) {
        dp_dense_forward(l, m->z[i], in, B);
        return;
    }
    size_t r0 = 0;
    for (int k = 0; k < sh->count; k++) {
        dp_dense_forward(l, m->z[i] + r0 * (size_t)l->out, in + r0 * (size_t)l->in, sh->rows[k]);
        r0 += (size_t)sh->rows[k];
    }
}

/* The shard layout of a deterministic training forward of B rows: caller bugs. */
static int check_shards(const dp_shards *sh, int B)
{
    long rows = 0;
    for (int k = 0; k < sh->count; k++) {
        rows += sh->rows[k] >= 0 && sh->rows[k] <= sh->max_rows ? sh->rows[k] : -(1L << 40);
    }
    if (sh->n_shards < 1 || sh->first < 0 || sh->count < 0 ||
        sh->first + sh->count > sh->n_shards || rows != B || !sh->scratch || !sh->acc) {
        return dp_err(DP_EINVAL, "model: the shards of a deterministic training forward (%d "
                                 "of %d from %d, %ld rows) do not fit its %d rows", sh->count,
                      sh->n_shards, sh->first, rows, B);
    }
    return DP_OK;
}

const float *dp_model_forward_train(dp_model *m, const float *x, int B, const dp_train_ctx *ctx)
{
    m->training = false; /* until this forward completes, backward has nothing to use */
    m->ctx = NULL;
    if (!ctx) {
        dp_err(DP_EINVAL, "model: training forward without a context");
        return NULL;
    }
    if (B < 0 || B > m->cfg.max_batch) {
        dp_err(DP_EINVAL, "model: training forward of %d rows (allowed 0 to max_batch = %d)", B,
               m->cfg.max_batch);
        return NULL;
    }
    for (int i = 0; i < m->cfg.n_layers; i++) {
        if (m->drop[i] && B > 0 && !ctx->sample_ids) {
            dp_err(DP_EINVAL, "model: layer %d has dropout but the training context has no "
                              "sample ids", i);
            return NULL;
        }
    }
    for (int j = 0; j < m->n_stages; j++) {
        if (m->smask[j] && B > 0 && !ctx->sample_ids) {
            dp_err(DP_EINVAL, "model: conv layer %d has dropout but the training context has "
                              "no sample ids", j + 1);
            return NULL;
        }
    }
    if (ctx->shards && m->n_stages > 0) {
        dp_err(DP_EINVAL, "model: deterministic mode does not take convolution or pooling "
                          "layers yet");
        return NULL;
    }
    if (ctx->shards && check_shards(ctx->shards, B) != DP_OK) {
        return NULL;
    }
    m->training = true;
    m->ctx = ctx; /* the stage's batch norm reads it */
    const float *in = m->n_stages > 0 ? dp_stage_forward(m, x, B, ctx) : x;
    if (!in) {
        m->training = false;
        m->ctx = NULL;
        return NULL;
    }
    for (int i = 0; i < m->cfg.n_layers; i++) {
        dp_dense *l = &m->layers[i];
        dense_forward_rows(m, i, in, B, ctx->shards);
        if (m->gamma[i] && bn_forward_train(m, i, B, ctx) != DP_OK) {
            m->training = false;
            m->ctx = NULL;
            return NULL;
        }
        dp_act_forward(l->act, m->a[i], m->z[i], B, l->out);
        if (m->drop[i]) {
            dropout_forward(m, i, B, ctx);
        }
        in = layer_output(m, i);
    }
    m->ctx = ctx;
    return in;
}

/* s (2n) = per-feature sums of dz and dz * xhat over rows [0, B) (dz, xhat (B,n)). */
static void bn_grad_sums(double *s, const float *dz, const float *xh, int B, int n)
{
    memset(s, 0, 2 * (size_t)n * sizeof *s);
    for (int r = 0; r < B; r++) {
        for (int j = 0; j < n; j++) {
            size_t k = (size_t)r * n + j;
            s[j] += dz[k];
            s[n + j] += (double)dz[k] * xh[k];
        }
    }
}

/* Batch-norm backward of layer i, in place: dz (B,n) = dL/dz on entry, dL/du on return.
 * Writes or adds dgamma = sum dz xhat and dbeta = sum dz (this process's rows; in
 * deterministic mode, every shard of every rank, added in shard order). */
static int bn_backward(dp_model *m, int i, float *dz, int B, bool accumulate)
{
    int rc = DP_OK, n = m->layers[i].out;
    const float *xh = m->xhat[i], *g = m->gamma[i], *is = m->invstd[i];
    double *sdy = m->red, *sdyx = m->red + n;
    dp_shards *sh = m->training ? m->ctx->shards : NULL;
    if (sh) {
        rc = shard_sums(sh, 2 * (size_t)n, bn_grad_sums, dz, xh, n, m->red);
        if (rc != DP_OK) {
            return dp_model_sum_failed(rc, "batch-norm backward sums", i);
        }
    } else {
        bn_grad_sums(m->red, dz, xh, B, n);
    }
    for (int j = 0; j < n; j++) {
        m->dgamma[i][j] = (float)(accumulate ? m->dgamma[i][j] + sdyx[j] : sdyx[j]);
        m->dbeta[i][j] = (float)(accumulate ? m->dbeta[i][j] + sdy[j] : sdy[j]);
    }
    if (!m->training) {
        /* Evaluation mode: z = gamma (u - running_mean) invstd + beta, affine in u. */
        for (int r = 0; r < B; r++) {
            for (int j = 0; j < n; j++) {
                dz[(size_t)r * n + j] *= g[j] * is[j];
            }
        }
        return DP_OK;
    }
    const dp_train_ctx *ctx = m->ctx;
    if (!sh && ctx->sum && (rc = ctx->sum(ctx->sum_ctx, m->red, 2 * (size_t)n)) != DP_OK) {
        return dp_model_sum_failed(rc, "batch-norm backward sums", i);
    }
    /* dxhat = dz gamma; du = invstd (dxhat - mean_N(dxhat) - xhat mean_N(dxhat xhat)). */
    const double inv_n = 1.0 / m->bn_count;
    for (int j = 0; j < n; j++) {
        sdy[j] *= inv_n;
        sdyx[j] *= inv_n;
    }
    for (int r = 0; r < B; r++) {
        for (int j = 0; j < n; j++) {
            size_t k = (size_t)r * n + j;
            double gs = (double)g[j] * is[j];
            dz[k] = (float)(gs * ((double)dz[k] - sdy[j] - (double)xh[k] * sdyx[j]));
        }
    }
    return DP_OK;
}

/* Deterministic mode: layer i's weight and bias gradients of every shard of this rank,
 * each product on the shard's rows alone, rounded to fixed point and added into sh->acc,
 * with exponents from bounds agreed over the ranks: |dw| <= rows * max|dz| * max|x| and
 * |db| <= rows * max|dz| for any shard. Writes l->dw and l->db as scratch. Collective. */
static int dense_grads_shards(dp_model *m, int i, const float *dz, const float *x, int B,
                              dp_shards *sh)
{
    dp_dense *l = &m->layers[i];
    const size_t in = (size_t)l->in, out = (size_t)l->out, off = (size_t)(l->w - m->params);
    int64_t *acc_w = sh->acc + off, *acc_b = acc_w + out * in;
    float bound[2] = {dp_absmax(dz, (size_t)B * out), dp_absmax(x, (size_t)B * in)};
    int rc = sh->max ? sh->max(sh->fn_ctx, bound, 2) : DP_OK;
    if (rc != DP_OK) {
        return dp_model_sum_failed(rc, "gradient bounds", i);
    }
    const double bb = (double)sh->max_rows * bound[0], bw = bb * bound[1];
    /* gamma and beta (after b, if any) get their sums from bn_backward, not from acc. */
    memset(acc_b + out, 0, (dp_model_layer_offset(m, i + 1) - off - out * in - out) *
                               sizeof *acc_b);
    if (!isfinite(bw) || !isfinite(bb)) {
        sh->nonfinite = true;
        return DP_OK;
    }
    sh->exp[2 * i] = dp_fixed_exp(bw);
    sh->exp[2 * i + 1] = dp_fixed_exp(bb);
    size_t r0 = 0;
    for (int k = 0; k < sh->count; k++) {
        void (*put)(int64_t *, const float *, size_t, int) = k ? dp_fixed_add : dp_fixed_set;
        dp_dense_backward(l, NULL, dz + r0 * out, x + r0 * in, sh->rows[k], false);
        put(acc_w, l->dw, out * in, sh->exp[2 * i]);
        put(acc_b, l->db, out, sh->exp[2 * i + 1]);
        r0 += (size_t)sh->rows[k];
    }
    if (sh->count == 0) {
        memset(acc_w, 0, (out * in + out) * sizeof *acc_w);
    }
    return DP_OK;
}

/* The input gradient dx (B,in) = dz (B,out) w, shard by shard in deterministic mode. */
static void dense_dx_rows(const dp_dense *l, float *dx, const float *dz, int B,
                          const dp_shards *sh)
{
    if (!sh) {
        dp_dense_backward_dx(l, dx, dz, B);
        return;
    }
    size_t r0 = 0;
    for (int k = 0; k < sh->count; k++) {
        dp_dense_backward_dx(l, dx + r0 * (size_t)l->in, dz + r0 * (size_t)l->out, sh->rows[k]);
        r0 += (size_t)sh->rows[k];
    }
}

/* The input of dense layer 0 when the model has an image stage: the stage's last output
 * (flattened), or its global average. */
static const float *stage_features(const dp_model *m)
{
    const int j = m->n_stages - 1;
    if (m->gap) {
        return m->gap;
    }
    return (m->training && m->sdrop[j]) ? m->sdrop[j] : m->sa[j];
}

/* Tells the training context that layer i's gradients are final. */
static int layer_done(dp_model *m, int i)
{
    if (m->training && m->ctx->layer_done) {
        return m->ctx->layer_done(m->ctx->layer_ctx, i);
    }
    return DP_OK;
}

int dp_model_backward(dp_model *m, const float *x, const float *dout, int B, bool accumulate)
{
    dp_shards *sh = m->training ? m->ctx->shards : NULL;
    if (sh) {
        sh->nonfinite = false;
        accumulate = false; /* the caller adds the fixed-point sums */
    }
    const float *g = dout; /* dL/d(output of layer i, after its dropout if any) */
    int which = 0, rc = DP_OK;
    for (int i = m->cfg.n_layers - 1; i >= 0; i--) {
        dp_dense *l = &m->layers[i];
        float *dz = m->scratch[which];
        if (m->training && m->mask[i]) {
            const float *mask = m->mask[i];
            for (size_t k = 0; k < (size_t)B * l->out; k++) {
                dz[k] = g[k] * mask[k];
            }
            g = dz;
        }
        dp_act_backward(l->act, dz, g, m->z[i], m->a[i], B, l->out);
        if (m->gamma[i] && (rc = bn_backward(m, i, dz, B, accumulate)) != DP_OK) {
            return rc;
        }
        float *dx = (i > 0 || m->n_stages > 0) ? m->scratch[which ^ 1] : NULL;
        const float *in = i > 0 ? layer_output(m, i - 1) : m->n_stages > 0 ? stage_features(m) : x;
        if (sh) {
            if ((rc = dense_grads_shards(m, i, dz, in, B, sh)) != DP_OK) {
                return rc;
            }
        } else {
            /* The weight gradients first: their allreduce may start while dx is computed. */
            dp_dense_backward(l, NULL, dz, in, B, accumulate);
            if (i > 0 || m->n_stages == 0) {
                DP_TRY(layer_done(m, i));
            }
        }
        if (dx) {
            dense_dx_rows(l, dx, dz, B, sh);
        }
        g = dx;
        which ^= 1;
    }
    if (m->n_stages > 0) {
        /* the stage's parameters are in dense layer 0's range: done after them */
        DP_TRY(dp_stage_backward(m, x, g, B, accumulate));
        DP_TRY(layer_done(m, 0));
    }
done:
    return rc;
}
