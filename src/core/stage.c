/* stage.c: the model's image stage: convolutions (with per-channel batch norm, activation and
 * dropout) and poolings before the dense layers, forward in both modes and backward. The
 * kernels are conv.c's; the layout is model_impl.h's. Local, but for the batch-norm sums,
 * which go through the training context's sum like the dense layers'. */
#include "model_impl.h"

#include "conv_dnnl.h"
#include "dptrain/arena.h"
#include "dptrain/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static size_t plane(const dp_model *m, int j) { return (size_t)m->st_h[j] * m->st_w[j]; }

/* Raises *col and *tmp to the work buffers conv c needs for batches of up to max_batch: a
 * chunk's (conv.c), or the whole batch's if that is less. */
static void work_floats(const dp_conv *c, size_t max_batch, size_t *col, size_t *tmp)
{
    const size_t chunk = (size_t)dp_conv_chunk(c), fit = max_batch < chunk ? max_batch : chunk;
    const size_t need_col = dp_conv_col_floats(c) / chunk * fit;
    const size_t need_tmp = dp_conv_tmp_floats(c) / chunk * fit;
    *col = need_col > *col ? need_col : *col;
    *tmp = need_tmp > *tmp ? need_tmp : *tmp;
}

/* Which kernels compute the convolutions: DPTRAIN_CONV = auto (or unset: oneDNN when this
 * build has it, else im2col), onednn (required) or im2col. */
typedef enum { CONV_AUTO, CONV_IM2COL, CONV_ONEDNN } conv_engine;

static int engine_from_env(conv_engine *e)
{
    const char *v = getenv("DPTRAIN_CONV");
    *e = CONV_AUTO;
    if (!v || !*v || strcmp(v, "auto") == 0) {
        return DP_OK;
    }
    if (strcmp(v, "im2col") == 0) {
        *e = CONV_IM2COL;
    } else if (strcmp(v, "onednn") == 0) {
        *e = CONV_ONEDNN;
    } else {
        return dp_err(DP_EINVAL, "environment: DPTRAIN_CONV=%s: expected auto, onednn or im2col",
                      v);
    }
    if (*e == CONV_ONEDNN && !dp_conv_dnnl_available()) {
        return dp_err(DP_EINVAL, "environment: DPTRAIN_CONV=onednn, but this dptrain was built "
                                 "without oneDNN (install libdnnl-dev and rebuild)");
    }
    return DP_OK;
}

int dp_stage_create(dp_model *m, size_t *off, size_t *boff, int *red_width)
{
    int rc = DP_OK, feat = 0;
    const dp_model_cfg *cfg = &m->cfg;
    const size_t mb = (size_t)cfg->max_batch;
    size_t col = 0, tmp = 0, widest = 1;
    conv_engine engine = CONV_AUTO;
    m->n_stages = cfg->n_stages;
    DP_TRY(engine_from_env(&engine));
    DP_TRY(dp_model_cfg_shapes(cfg, m->st_c, m->st_h, m->st_w, &feat));
    if (feat != cfg->sizes[0]) {
        char tok[96];
        const int L = cfg->n_stages;
        dp_stage_format(&cfg->stage[L - 1], false, tok, sizeof tok);
        DP_FAIL(DP_EINVAL, "model: layer %d (%s) gives %dx%dx%d, %d features after %s, but the "
                           "first dense layer takes %d", L, tok, m->st_c[L], m->st_h[L],
                m->st_w[L], feat, cfg->gap ? "global average pooling" : "flatten",
                cfg->sizes[0]);
    }
    for (int j = 0; j <= cfg->n_stages; j++) {
        m->ssize[j] = (size_t)m->st_c[j] * plane(m, j);
        widest = m->ssize[j] > widest ? m->ssize[j] : widest;
    }
    for (int j = 0; j < cfg->n_stages; j++) {
        const dp_stage_cfg *s = &cfg->stage[j];
        const int C = m->st_c[j + 1];
        const size_t out = mb * m->ssize[j + 1];
        if (s->kind != DP_STAGE_CONV) {
            if (s->act != DP_ACT_IDENTITY || s->batchnorm || s->dropout != 0.0f) {
                DP_FAIL(DP_EINVAL, "model: layer %d (%s) is a pooling: it takes no activation, "
                                   "batch norm or dropout", j + 1, dp_stage_kind_name(s->kind));
            }
            m->pool[j] = (dp_pool){.c = C, .in_h = m->st_h[j], .in_w = m->st_w[j],
                                   .out_h = m->st_h[j + 1], .out_w = m->st_w[j + 1],
                                   .kh = s->kh, .kw = s->kw, .sh = s->sh, .sw = s->sw};
            DP_ARENA_CALLOC(m->sa[j], out);
            if (s->kind == DP_STAGE_MAXPOOL) {
                DP_CALLOC(m->arg[j], out);
            }
            continue;
        }
        if (s->act < 0 || s->act >= DP_ACT_COUNT || s->act == DP_ACT_SOFTMAX ||
            !(s->dropout >= 0.0f && s->dropout < 1.0f)) {
            DP_FAIL(DP_EINVAL, "model: layer %d (conv): activation softmax or unknown, or "
                               "dropout %g not in [0, 1)", j + 1, s->dropout);
        }
        dp_conv *c = &m->conv[j];
        *c = (dp_conv){.in_c = m->st_c[j], .in_h = m->st_h[j], .in_w = m->st_w[j],
                       .out_c = C, .out_h = m->st_h[j + 1], .out_w = m->st_w[j + 1],
                       .kh = s->kh, .kw = s->kw, .sh = s->sh, .sw = s->sw, .ph = s->ph,
                       .pw = s->pw};
        const size_t nw = (size_t)C * c->in_c * c->kh * c->kw;
        c->w = m->params + *off;
        c->dw = m->grads + *off;
        *off += nw;
        c->b = m->params + *off;
        c->db = m->grads + *off;
        *off += (size_t)C;
        dp_init_spec w = s->weight_init;
        if (!w.set) {
            w = (dp_init_spec){.set = true, .kind = cfg->init,
                               .b = (cfg->init == DP_INIT_UNIFORM || cfg->init == DP_INIT_NORMAL)
                                        ? 1.0f : 0.0f};
        }
        dp_conv_init_spec(c, &w, &s->bias_init, cfg->seed, j);
        if (engine != CONV_IM2COL && dp_conv_dnnl_available()) {
            rc = dp_conv_dnnl_create(c, cfg->max_batch, j > 0, &m->cdnn[j]);
            if (rc != DP_OK && engine == CONV_ONEDNN) {
                goto done;
            }
            rc = DP_OK;
            if (engine == CONV_AUTO && dp_conv_dnnl_is_ref(m->cdnn[j])) {
                dp_conv_dnnl_free(&m->cdnn[j]);
            }
            dp_err_clear(); /* auto: a shape oneDNN refuses or runs slowly goes to im2col */
        }
        if (!m->cdnn[j]) {
            work_floats(c, mb, &col, &tmp);
        }
        DP_ARENA_CALLOC(m->sz[j], out);
        DP_ARENA_CALLOC(m->sa[j], out);
        if (s->batchnorm) {
            m->sgamma[j] = m->params + *off;
            m->sdgamma[j] = m->grads + *off;
            *off += (size_t)C;
            m->sbeta[j] = m->params + *off;
            m->sdbeta[j] = m->grads + *off;
            *off += (size_t)C;
            m->srun_mean[j] = m->buffers + *boff;
            *boff += (size_t)C;
            m->srun_var[j] = m->buffers + *boff;
            *boff += (size_t)C;
            for (int k = 0; k < C; k++) {
                m->sgamma[j][k] = 1.0f;
                m->srun_var[j][k] = 1.0f;
            }
            DP_ARENA_CALLOC(m->sxhat[j], out);
            DP_CALLOC(m->sinvstd[j], C);
            *red_width = 2 * C + 1 > *red_width ? 2 * C + 1 : *red_width;
        }
        if (s->dropout > 0.0f) {
            DP_ARENA_CALLOC(m->smask[j], out);
            DP_ARENA_CALLOC(m->sdrop[j], out);
        }
    }
    DP_ARENA_CALLOC(m->col, col);
    DP_ARENA_CALLOC(m->ctmp, tmp);
    if (cfg->gap) {
        DP_ARENA_CALLOC(m->gap, mb * (size_t)m->st_c[cfg->n_stages]);
    }
    DP_ARENA_CALLOC(m->sg[0], mb * widest);
    DP_ARENA_CALLOC(m->sg[1], mb * widest);
done:
    return rc;
}

/* The parameter and buffer counts of the stage of cfg (0 without one), for sizing the
 * arenas before dp_stage_create. */
void dp_stage_counts(const dp_model_cfg *cfg, const int *c, size_t *n_params, size_t *n_buffers)
{
    *n_params = 0;
    *n_buffers = 0;
    for (int j = 0; j < cfg->n_stages; j++) {
        const dp_stage_cfg *s = &cfg->stage[j];
        if (s->kind == DP_STAGE_CONV) {
            const size_t C = (size_t)s->out_c;
            *n_params += C * (size_t)c[j] * s->kh * s->kw + C + (s->batchnorm ? 2 * C : 0);
            *n_buffers += s->batchnorm ? 2 * C : 0;
        }
    }
}

void dp_stage_free(dp_model *m)
{
    for (int j = 0; j < DP_MAX_STAGES; j++) {
        dp_arena_free(m->sz[j]);
        dp_arena_free(m->sa[j]);
        free(m->arg[j]);
        dp_arena_free(m->sxhat[j]);
        free(m->sinvstd[j]);
        dp_arena_free(m->smask[j]);
        dp_arena_free(m->sdrop[j]);
    }
    for (int j = 0; j < DP_MAX_STAGES; j++) {
        dp_conv_dnnl_free(&m->cdnn[j]);
    }
    dp_arena_free(m->col);
    dp_arena_free(m->ctmp);
    dp_arena_free(m->gap);
    dp_arena_free(m->sg[0]);
    dp_arena_free(m->sg[1]);
}

size_t dp_stage_bytes(const dp_model *m)
{
    const size_t mb = (size_t)m->cfg.max_batch;
    size_t floats = 0, widest = 1, col = 0, tmp = 0, bytes = 0;
    for (int j = 0; j < m->n_stages; j++) {
        const size_t out = mb * m->ssize[j + 1];
        widest = m->ssize[j] > widest ? m->ssize[j] : widest;
        widest = m->ssize[j + 1] > widest ? m->ssize[j + 1] : widest;
        floats += out * (m->conv[j].w ? 2 : 1) + (m->arg[j] ? out : 0);
        floats += m->sxhat[j] ? out + (size_t)m->conv[j].out_c : 0;
        floats += m->smask[j] ? 2 * out : 0;
        if (m->conv[j].w && !m->cdnn[j]) {
            work_floats(&m->conv[j], mb, &col, &tmp);
        }
        bytes += dp_conv_dnnl_bytes(m->cdnn[j]);
    }
    floats += col + tmp + 2 * mb * widest + (m->gap ? mb * (size_t)m->st_c[m->n_stages] : 0);
    return floats * sizeof(float) + bytes;
}

/* Stage j's output as the next stage (or the dense layers) sees it in the current mode. */
static const float *stage_out(const dp_model *m, int j)
{
    return (m->training && m->sdrop[j]) ? m->sdrop[j] : m->sa[j];
}

/* sum of a[p] and of a[p] * b[p] (b == NULL: a[p]^2) over p < n, in double, in four
 * interleaved chains (one chain would wait on each add's latency), combined in a fixed
 * order: the same bits for the same data. */
static void sum_pair(const float *a, const float *b, size_t n, double *sa, double *sab)
{
    double s[4] = {0, 0, 0, 0}, q[4] = {0, 0, 0, 0};
    const float *m = b ? b : a;
    size_t p = 0;
    for (; p + 4 <= n; p += 4) {
        for (int k = 0; k < 4; k++) {
            s[k] += a[p + k];
            q[k] += (double)a[p + k] * m[p + k];
        }
    }
    for (; p < n; p++) {
        s[0] += a[p];
        q[0] += (double)a[p] * m[p];
    }
    *sa = (s[0] + s[1]) + (s[2] + s[3]);
    *sab = (q[0] + q[1]) + (q[2] + q[3]);
}

/* Per-channel sums of z (B, C, P): s[c] = sum z, s[C + c] = sum z^2, s[2C] = B*P. */
static void channel_sums(double *s, const float *z, int B, int C, size_t P)
{
    memset(s, 0, (2 * (size_t)C + 1) * sizeof *s);
    for (int n = 0; n < B; n++) {
        for (int c = 0; c < C; c++) {
            double a, q;
            sum_pair(z + ((size_t)n * C + c) * P, NULL, P, &a, &q);
            s[c] += a;
            s[C + c] += q;
        }
    }
    s[2 * C] = (double)B * (double)P;
}

/* Batch norm of stage j in place on sz[j] (B, C, P): training mode takes the statistics of
 * the global batch (one ctx->sum) and updates the running ones; evaluation mode uses them. */
static int stage_bn_forward(dp_model *m, int j, int B, const dp_train_ctx *ctx)
{
    const int C = m->conv[j].out_c;
    const size_t P = plane(m, j + 1);
    double *mean = m->red;
    if (ctx) {
        channel_sums(m->red, m->sz[j], B, C, P);
        int rc = ctx->sum ? ctx->sum(ctx->sum_ctx, m->red, 2 * (size_t)C + 1) : DP_OK;
        if (rc != DP_OK) {
            return dp_model_sum_failed(rc, "batch-norm statistics", j);
        }
        const double N = m->red[2 * C], mom = m->cfg.bn_momentum;
        if (N < 2.0) {
            return dp_err(DP_EINVAL, "model: batch norm of conv layer %d needs at least 2 "
                                     "values per channel in the global batch, got %.0f", j + 1,
                          N);
        }
        m->sbn_count[j] = N;
        for (int c = 0; c < C; c++) {
            double mu = m->red[c] / N, var = m->red[C + c] / N - mu * mu;
            var = var > 0.0 ? var : 0.0;
            mean[c] = mu;
            m->sinvstd[j][c] = (float)(1.0 / sqrt(var + m->cfg.bn_eps));
            m->srun_mean[j][c] = (float)((1.0 - mom) * m->srun_mean[j][c] + mom * mu);
            m->srun_var[j][c] =
                (float)((1.0 - mom) * m->srun_var[j][c] + mom * var * N / (N - 1.0));
        }
    } else {
        for (int c = 0; c < C; c++) {
            mean[c] = m->srun_mean[j][c];
            m->sinvstd[j][c] = (float)(1.0 / sqrt((double)m->srun_var[j][c] + m->cfg.bn_eps));
        }
    }
    /* per element in float (vectorized; the statistics above are in double) */
    const float *g = m->sgamma[j], *be = m->sbeta[j], *is = m->sinvstd[j];
    for (int n = 0; n < B; n++) {
        for (int c = 0; c < C; c++) {
            const size_t o = ((size_t)n * C + c) * P;
            const float mu = (float)mean[c], isc = is[c], gc = g[c], bc = be[c];
            float *z = m->sz[j] + o, *xh = m->sxhat[j] + o;
            for (size_t p = 0; p < P; p++) {
                xh[p] = (z[p] - mu) * isc;
                z[p] = gc * xh[p] + bc;
            }
        }
    }
    return DP_OK;
}

const float *dp_stage_forward(dp_model *m, const float *x, int B, const dp_train_ctx *ctx)
{
    const float *in = x;
    for (int j = 0; j < m->n_stages; j++) {
        const dp_stage_cfg *s = &m->cfg.stage[j];
        const size_t n = (size_t)B * m->ssize[j + 1];
        switch (s->kind) {
        case DP_STAGE_MAXPOOL:
            dp_maxpool_forward(&m->pool[j], m->sa[j], m->arg[j], in, B);
            break;
        case DP_STAGE_AVGPOOL:
            dp_avgpool_forward(&m->pool[j], m->sa[j], in, B);
            break;
        default:
            if (!m->cdnn[j]) {
                dp_conv_forward(&m->conv[j], m->sz[j], in, B, m->col, m->ctmp);
            } else if (dp_conv_dnnl_forward(m->cdnn[j], &m->conv[j], m->sz[j], in, B) != DP_OK) {
                return NULL;
            }
            if (m->sgamma[j] && stage_bn_forward(m, j, B, ctx) != DP_OK) {
                return NULL;
            }
            dp_act_forward(s->act, m->sa[j], m->sz[j], (int)(n > 0 ? 1 : 0), (int)n);
            if (ctx && m->smask[j]) {
                dp_model_dropout(m->smask[j], m->sdrop[j], m->sa[j], B, (int)m->ssize[j + 1],
                                 s->dropout, (uint64_t)(DP_MAX_LAYERS + j), ctx);
            }
            break;
        }
        in = stage_out(m, j);
    }
    if (!m->gap) {
        return in; /* flatten: the same memory */
    }
    const int L = m->n_stages, C = m->st_c[L];
    const size_t P = plane(m, L);
    for (size_t q = 0; q < (size_t)B * C; q++) {
        double s, unused;
        sum_pair(in + q * P, in + q * P, P, &s, &unused);
        m->gap[q] = (float)(s / (double)P);
    }
    return m->gap;
}

/* Per-channel sums of dz and dz * xhat (B, C, P) into s (2C). */
static void channel_grad_sums(double *s, const float *dz, const float *xh, int B, int C,
                              size_t P)
{
    memset(s, 0, 2 * (size_t)C * sizeof *s);
    for (int n = 0; n < B; n++) {
        for (int c = 0; c < C; c++) {
            const size_t o = ((size_t)n * C + c) * P;
            double a, q;
            sum_pair(dz + o, xh + o, P, &a, &q);
            s[c] += a;
            s[C + c] += q;
        }
    }
}

/* Batch-norm backward of stage j in place on dz (B, C, P), as model.c's for dense layers. */
static int stage_bn_backward(dp_model *m, int j, float *dz, int B, bool accumulate)
{
    const int C = m->conv[j].out_c;
    const size_t P = plane(m, j + 1);
    const float *g = m->sgamma[j], *is = m->sinvstd[j], *xh = m->sxhat[j];
    double *sdy = m->red, *sdyx = m->red + C;
    channel_grad_sums(m->red, dz, xh, B, C, P);
    for (int c = 0; c < C; c++) {
        m->sdgamma[j][c] = (float)(accumulate ? m->sdgamma[j][c] + sdyx[c] : sdyx[c]);
        m->sdbeta[j][c] = (float)(accumulate ? m->sdbeta[j][c] + sdy[c] : sdy[c]);
    }
    if (!m->training) {
        for (int n = 0; n < B; n++) {
            for (int c = 0; c < C; c++) {
                float *d = dz + ((size_t)n * C + c) * P;
                for (size_t p = 0; p < P; p++) {
                    d[p] *= g[c] * is[c];
                }
            }
        }
        return DP_OK;
    }
    const dp_train_ctx *ctx = m->ctx;
    int rc = ctx->sum ? ctx->sum(ctx->sum_ctx, m->red, 2 * (size_t)C) : DP_OK;
    if (rc != DP_OK) {
        return dp_model_sum_failed(rc, "batch-norm backward sums", j);
    }
    const double inv_n = 1.0 / m->sbn_count[j];
    for (int c = 0; c < C; c++) {
        sdy[c] *= inv_n;
        sdyx[c] *= inv_n;
    }
    for (int n = 0; n < B; n++) {
        for (int c = 0; c < C; c++) {
            const size_t o = ((size_t)n * C + c) * P;
            const float gs = (float)((double)g[c] * is[c]), my = (float)sdy[c];
            const float mx = (float)sdyx[c];
            for (size_t p = 0; p < P; p++) {
                dz[o + p] = gs * (dz[o + p] - my - xh[o + p] * mx);
            }
        }
    }
    return DP_OK;
}

int dp_stage_backward(dp_model *m, const float *x, const float *g, int B, bool accumulate)
{
    const int L = m->n_stages;
    int which = 0, rc = DP_OK;
    if (m->gap) {
        /* each of a channel's P values had weight 1/P in its mean */
        const size_t P = plane(m, L);
        float *d = m->sg[which];
        for (size_t q = 0; q < (size_t)B * m->st_c[L]; q++) {
            const float v = (float)((double)g[q] / (double)P);
            for (size_t p = 0; p < P; p++) {
                d[q * P + p] = v;
            }
        }
        g = d;
        which ^= 1;
    }
    for (int j = L - 1; j >= 0; j--) {
        const dp_stage_cfg *s = &m->cfg.stage[j];
        const size_t n = (size_t)B * m->ssize[j + 1];
        float *dx = j > 0 ? m->sg[which] : NULL;
        const float *in = j > 0 ? stage_out(m, j - 1) : x;
        if (s->kind == DP_STAGE_MAXPOOL) {
            if (dx) {
                dp_maxpool_backward(&m->pool[j], dx, g, m->arg[j], B);
            }
        } else if (s->kind == DP_STAGE_AVGPOOL) {
            if (dx) {
                dp_avgpool_backward(&m->pool[j], dx, g, B);
            }
        } else {
            /* dz in the buffer g is not in: sg[which ^ 1] holds g unless g came from the
             * dense layers, and dx goes to sg[which] */
            float *dz = m->sg[which ^ 1];
            if (m->training && m->smask[j]) {
                for (size_t k = 0; k < n; k++) {
                    dz[k] = g[k] * m->smask[j][k];
                }
                g = dz;
            }
            dp_act_backward(s->act, dz, g, m->sz[j], m->sa[j], 1, (int)n);
            if (m->sgamma[j] && (rc = stage_bn_backward(m, j, dz, B, accumulate)) != DP_OK) {
                return rc;
            }
            if (!m->cdnn[j]) {
                dp_conv_backward(&m->conv[j], dx, dz, in, B, accumulate, m->col, m->ctmp);
            } else if ((rc = dp_conv_dnnl_backward(m->cdnn[j], &m->conv[j], dx, dz, in, B,
                                                   accumulate)) != DP_OK) {
                return rc;
            }
        }
        g = dx;
        which ^= 1;
    }
    return DP_OK;
}

const char *dp_model_conv_kernel(const dp_model *m, int j)
{
    if (j < 0 || j >= m->n_stages || !m->conv[j].w) {
        return "";
    }
    return m->cdnn[j] ? dp_conv_dnnl_impl(m->cdnn[j]) : "im2col + OpenBLAS sgemm";
}
