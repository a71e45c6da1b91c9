/* model.c: the MLP model: one flat parameter array, one flat gradient array, and the
 * per-layer activation buffers, all allocated at creation. */
#include "model_impl.h"

#include "dptrain/err.h"

#include <stdlib.h>

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
    if (c->max_batch < 1) {
        return dp_err(DP_EINVAL, "model: max_batch is %d (must be >= 1)", c->max_batch);
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
    int L = cfg->n_layers, widest = cfg->sizes[0];
    for (int i = 0; i < L; i++) {
        m->n_params += (size_t)cfg->sizes[i + 1] * cfg->sizes[i] + cfg->sizes[i + 1];
        widest = cfg->sizes[i + 1] > widest ? cfg->sizes[i + 1] : widest;
    }
    DP_CALLOC(m->params, m->n_params);
    DP_CALLOC(m->grads, m->n_params + DP_GRAD_TAIL);
    size_t off = 0, mb = (size_t)cfg->max_batch;
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
        DP_CALLOC(m->z[i], mb * l->out);
        DP_CALLOC(m->a[i], mb * l->out);
        dp_dense_init(l, cfg->init, cfg->seed, i);
    }
    DP_CALLOC(m->scratch[0], mb * widest);
    DP_CALLOC(m->scratch[1], mb * widest);
    DP_CALLOC(m->dout, mb * cfg->sizes[L]);
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
        free(m->z[i]);
        free(m->a[i]);
    }
    free(m->scratch[0]);
    free(m->scratch[1]);
    free(m->dout);
    free(m->params);
    free(m->grads);
    free(m);
    *pm = NULL;
}

const dp_model_cfg *dp_model_config(const dp_model *m) { return &m->cfg; }
size_t dp_model_n_params(const dp_model *m) { return m->n_params; }
float *dp_model_params(dp_model *m) { return m->params; }
float *dp_model_grads(dp_model *m) { return m->grads; }
dp_dense *dp_model_layer(dp_model *m, int i) { return &m->layers[i]; }
const dp_dense *dp_model_layer_const(const dp_model *m, int i) { return &m->layers[i]; }
float *dp_model_dout(dp_model *m) { return m->dout; }

const float *dp_model_forward(dp_model *m, const float *x, int B)
{
    const float *in = x;
    for (int i = 0; i < m->cfg.n_layers; i++) {
        dp_dense *l = &m->layers[i];
        dp_dense_forward(l, m->z[i], in, B);
        dp_act_forward(l->act, m->a[i], m->z[i], B, l->out);
        in = m->a[i];
    }
    return in;
}

void dp_model_backward(dp_model *m, const float *x, const float *dout, int B, bool accumulate)
{
    const float *g = dout; /* dL/d(post-activation output of layer i) */
    int which = 0;
    for (int i = m->cfg.n_layers - 1; i >= 0; i--) {
        dp_dense *l = &m->layers[i];
        float *dz = m->scratch[which];
        dp_act_backward(l->act, dz, g, m->z[i], m->a[i], B, l->out);
        float *dx = (i > 0) ? m->scratch[which ^ 1] : NULL;
        dp_dense_backward(l, dx, dz, i > 0 ? m->a[i - 1] : x, B, accumulate);
        g = dx;
        which ^= 1;
    }
}
