/* model_impl.h: the private layout of dp_model (for src/ and tests only).
 *
 * Parameter arena (params; grads has the same layout plus DP_GRAD_TAIL floats), per layer i
 * in order, out = sizes[i+1], in = sizes[i]:
 *   w     (out, in)
 *   b     (out)
 *   gamma (out)      only if cfg.batchnorm[i]; starts at 1
 *   beta  (out)      only if cfg.batchnorm[i]; starts at 0
 * Buffer arena (buffers; not parameters: no gradient, no optimizer, no allreduce), per layer
 * i with cfg.batchnorm[i], in layer order:
 *   running_mean (out)   starts at 0
 *   running_var  (out)   starts at 1
 * The dense bias stays when batch norm follows (redundant but harmless: the layout does not
 * depend on the combination). */
#ifndef DPTRAIN_MODEL_IMPL_H
#define DPTRAIN_MODEL_IMPL_H

#include "dptrain/nn.h"

struct dp_model {
    dp_model_cfg cfg;                /* with bn_momentum/bn_eps defaults filled in */
    size_t n_params;
    float *params, *grads;           /* flat arenas; layers view into them */
    dp_dense layers[DP_MAX_LAYERS];
    float *z[DP_MAX_LAYERS];         /* pre-activation of layer i (after batch norm if any),
                                      * (max_batch, out_i) */
    float *a[DP_MAX_LAYERS];         /* post-activation of layer i, (max_batch, out_i) */
    float *scratch[2];               /* ping-pong backward buffers, (max_batch, max width) */
    float *dout;                     /* (max_batch, outputs) for the caller */

    /* Batch norm (NULL where cfg.batchnorm[i] is false). gamma..dbeta view the arenas. */
    float *gamma[DP_MAX_LAYERS], *beta[DP_MAX_LAYERS];   /* (out_i) in params */
    float *dgamma[DP_MAX_LAYERS], *dbeta[DP_MAX_LAYERS]; /* (out_i) in grads */
    float *run_mean[DP_MAX_LAYERS], *run_var[DP_MAX_LAYERS]; /* (out_i) in buffers */
    float *xhat[DP_MAX_LAYERS];      /* (max_batch, out_i): (u - mean) * invstd, last forward */
    float *invstd[DP_MAX_LAYERS];    /* (out_i): 1 / sqrt(var + eps) of the last forward */
    size_t n_buffers;
    float *buffers;                  /* running statistics arena */

    /* Dropout (NULL where cfg.dropout[i] == 0). */
    float *mask[DP_MAX_LAYERS];      /* (max_batch, out_i): 0 or 1 / (1 - p), last training
                                      * forward */
    float *drop[DP_MAX_LAYERS];      /* (max_batch, out_i): a[i] * mask[i], the input of layer
                                      * i + 1 in training mode */

    /* Mode of the last forward, read by dp_model_backward. */
    bool training;
    const dp_train_ctx *ctx;         /* of the last dp_model_forward_train (caller-owned) */
    double bn_count;                 /* global rows of the last dp_model_forward_train */
    double *red;                     /* (2 * max width + 1) reduction work buffer */

    /* The image stage (stage.c), before the dense layers; its parameters come first in the
     * arenas: per conv stage j, w (out_c,in_c,kh,kw), b (out_c), and with batch norm gamma
     * and beta (out_c); its running statistics come first in the buffer arena. Stage j maps
     * (st_c[j], st_h[j], st_w[j]) to stage j+1's; ssize[j] = st_c[j]*st_h[j]*st_w[j]. */
    int n_stages;
    int st_c[DP_MAX_STAGES + 1], st_h[DP_MAX_STAGES + 1], st_w[DP_MAX_STAGES + 1];
    size_t ssize[DP_MAX_STAGES + 1];
    dp_conv conv[DP_MAX_STAGES];     /* conv stages (w == NULL for a pooling) */
    dp_pool pool[DP_MAX_STAGES];     /* pooling stages */
    float *sz[DP_MAX_STAGES];        /* conv: after the convolution and batch norm, before the
                                      * activation, (max_batch, size[j+1]) */
    float *sa[DP_MAX_STAGES];        /* the stage's output (after the activation) */
    int32_t *arg[DP_MAX_STAGES];     /* max pooling: the index of each output's maximum */
    float *sgamma[DP_MAX_STAGES], *sbeta[DP_MAX_STAGES];
    float *sdgamma[DP_MAX_STAGES], *sdbeta[DP_MAX_STAGES];
    float *srun_mean[DP_MAX_STAGES], *srun_var[DP_MAX_STAGES];
    float *sxhat[DP_MAX_STAGES];     /* (max_batch, size[j+1]) */
    float *sinvstd[DP_MAX_STAGES];   /* (out_c) */
    double sbn_count[DP_MAX_STAGES]; /* global elements per channel of the last training forward */
    float *smask[DP_MAX_STAGES], *sdrop[DP_MAX_STAGES]; /* dropout, as mask and drop */
    float *col, *ctmp;               /* convolution work buffers (the largest stage's) */
    struct dp_conv_dnnl *cdnn[DP_MAX_STAGES]; /* conv stages computed by oneDNN (conv_dnnl.h);
                                      * NULL: by im2col + sgemm (conv.c) */
    float *gap;                      /* (max_batch, C): global average pooling's output */
    float *sg[2];                    /* backward ping-pong, (max_batch, largest size[j]) */
};

/* Shared by model.c and stage.c. */
int dp_model_sum_failed(int rc, const char *what, int layer);
/* Inverted dropout of B rows of n units: mask = 0 or 1/(1-p) from the counter-based RNG keyed
 * by (ctx->seed, ctx->step, key, sample id * n + unit), d = a * mask. */
void dp_model_dropout(float *mask, float *d, const float *a, int B, int n, float p, uint64_t key,
                      const dp_train_ctx *ctx);

/* The image stage (stage.c). counts: the parameters and buffers of cfg's stage, given the
 * input channels c[j] of each stage (dp_model_cfg_shapes). create: sets up the stage's views
 * at the start of the arenas and allocates its buffers, advancing *off and *boff; raises
 * *red_width to the widest reduction (2C + 1) its batch norms need. */
void dp_stage_counts(const dp_model_cfg *cfg, const int *c, size_t *n_params, size_t *n_buffers);
int dp_stage_create(dp_model *m, size_t *off, size_t *boff, int *red_width);
void dp_stage_free(dp_model *m);
size_t dp_stage_bytes(const dp_model *m);
/* Forward of B images through the stage (training mode if ctx, else evaluation); returns the
 * features the dense layers take, (B, sizes[0]), or NULL (message recorded) if a sum fails. */
const float *dp_stage_forward(dp_model *m, const float *x, int B, const dp_train_ctx *ctx);
/* Backward: g = dL/d(features) (B, sizes[0]); writes or adds the stage's gradients. */
int dp_stage_backward(dp_model *m, const float *x, const float *g, int B, bool accumulate);

#endif
