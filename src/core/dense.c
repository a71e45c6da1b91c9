/* dense.c: the dense (fully connected) layer: forward, backward and initialization. */
#include "dptrain/blas.h"
#include "dptrain/nn.h"
#include "dptrain/rng.h"

#include <math.h>
#include <string.h>

/* Tag that keeps initialization streams apart from every other use of the seed. */
#define DP_RNG_TAG_INIT 0x494e4954ULL /* "INIT" */

void dp_dense_forward(const dp_dense *l, float *y, const float *x, int B)
{
    for (int r = 0; r < B; r++) {
        memcpy(y + (size_t)r * l->out, l->b, (size_t)l->out * sizeof *y);
    }
    /* y (B,out) += x (B,in) * w^T, w stored (out,in). */
    dp_sgemm(false, true, B, l->out, l->in, 1.0f, x, l->w, 1.0f, y);
}

void dp_dense_backward(dp_dense *l, float *dx, const float *dy, const float *x, int B,
                       bool accumulate)
{
    float beta = accumulate ? 1.0f : 0.0f;
    if (B == 0) {
        if (!accumulate) {
            memset(l->dw, 0, (size_t)l->out * l->in * sizeof *l->dw);
            memset(l->db, 0, (size_t)l->out * sizeof *l->db);
        }
        return;
    }
    /* dw (out,in) = dy^T (out,B) * x (B,in) */
    dp_sgemm(true, false, l->out, l->in, B, 1.0f, dy, x, beta, l->dw);
    for (int j = 0; j < l->out; j++) {
        float s = 0.0f;
        for (int r = 0; r < B; r++) {
            s += dy[(size_t)r * l->out + j];
        }
        l->db[j] = accumulate ? l->db[j] + s : s;
    }
    if (dx) {
        /* dx (B,in) = dy (B,out) * w (out,in) */
        dp_sgemm(false, false, B, l->in, l->out, 1.0f, dy, l->w, 0.0f, dx);
    }
}

void dp_dense_init(dp_dense *l, dp_init init, uint64_t seed, int layer_index)
{
    dp_rng r = dp_rng_make(seed, DP_RNG_TAG_INIT + (uint64_t)layer_index);
    size_t n = (size_t)l->out * l->in;
    double fan_in = l->in, fan_avg = 0.5 * (l->in + l->out);
    double std = 0.0, bound = 0.0;
    switch (init) {
    case DP_INIT_HE_NORMAL:
        std = sqrt(2.0 / fan_in);
        break;
    case DP_INIT_HE_UNIFORM:
        bound = sqrt(6.0 / fan_in);
        break;
    case DP_INIT_XAVIER_NORMAL:
        std = sqrt(1.0 / fan_avg);
        break;
    case DP_INIT_XAVIER_UNIFORM:
        bound = sqrt(3.0 / fan_avg);
        break;
    case DP_INIT_ZERO:
    case DP_INIT_COUNT:
        break;
    }
    for (size_t i = 0; i < n; i++) {
        if (std > 0.0) {
            l->w[i] = (float)(std * dp_rng_normal(&r));
        } else if (bound > 0.0) {
            l->w[i] = (float)(bound * (2.0 * dp_rng_uniform(&r) - 1.0));
        } else {
            l->w[i] = 0.0f;
        }
    }
    memset(l->b, 0, (size_t)l->out * sizeof *l->b);
}
