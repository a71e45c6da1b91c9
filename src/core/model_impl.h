/* model_impl.h: the private layout of dp_model (for src/ and tests only). */
#ifndef DPTRAIN_MODEL_IMPL_H
#define DPTRAIN_MODEL_IMPL_H

#include "dptrain/nn.h"

struct dp_model {
    dp_model_cfg cfg;
    size_t n_params;
    float *params, *grads;           /* flat arenas; layers view into them */
    dp_dense layers[DP_MAX_LAYERS];
    float *z[DP_MAX_LAYERS];         /* pre-activation of layer i, (max_batch, out_i) */
    float *a[DP_MAX_LAYERS];         /* post-activation of layer i, (max_batch, out_i) */
    float *scratch[2];               /* ping-pong backward buffers, (max_batch, max width) */
    float *dout;                     /* (max_batch, outputs) for the caller */
};

#endif
