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
};

#endif
