/* conv_dnnl.h: a convolution (dp_conv) computed by oneDNN in its blocked layouts, with NCHW at
 * the edges: the input is reordered into the layout oneDNN's fastest kernel reads (channels in
 * blocks of 8 or 16 on AVX2 and AVX-512 machines), the convolution runs there, and the output
 * is reordered back, so the rest of the image stage (batch norm, activation, dropout,
 * pooling) and the model file keep NCHW and torch's weight layout. The weights are reordered
 * at every call (they change at every step; they are small).
 *
 * Primitives are made for one batch size; a handle keeps those of the DP_CONV_DNNL_SIZES
 * batch sizes used last (a training run sees two or three: the ranks' shares of a batch, the
 * epoch's last batch, the evaluation blocks). A batch of a new size makes its primitives
 * first (a few milliseconds; oneDNN allocates their scratch memory then). The activation
 * buffers in the blocked layouts are allocated by dp_conv_dnnl_create, for max_batch samples.
 *
 * Built only with oneDNN (DPTRAIN_HAVE_DNNL); without it dp_conv_dnnl_available() is false
 * and dp_conv_dnnl_create fails. One thread of oneDNN's runtime per rank unless
 * dp_blas_set_threads says otherwise. Local. */
#ifndef DPTRAIN_CONV_DNNL_H
#define DPTRAIN_CONV_DNNL_H

#include "dptrain/nn.h"

#include <stdbool.h>

#define DP_CONV_DNNL_SIZES 4

typedef struct dp_conv_dnnl dp_conv_dnnl;

/* Whether this build has oneDNN. */
bool dp_conv_dnnl_available(void);
/* A handle for convolution c (its shape; the weights are read at each call from c->w) and
 * batches of 1 to max_batch samples, with the input gradient if need_dx (not for the first
 * layer); makes the primitives for max_batch. */
int dp_conv_dnnl_create(const dp_conv *c, int max_batch, bool need_dx, dp_conv_dnnl **out);
/* NULL-safe; sets *e = NULL. */
void dp_conv_dnnl_free(dp_conv_dnnl **e);
/* Bytes of the handle's own buffers (the blocked activations and weights). */
size_t dp_conv_dnnl_bytes(const dp_conv_dnnl *e);
/* y (B, out_c, out_h, out_w) = conv(x (B, in_c, in_h, in_w)) + b, as dp_conv_forward. Keeps
 * x in the blocked layout for the next dp_conv_dnnl_backward. */
int dp_conv_dnnl_forward(dp_conv_dnnl *e, const dp_conv *c, float *y, const float *x, int B);
/* As dp_conv_backward for the x of the last dp_conv_dnnl_forward (B must be its B): writes
 * (or adds, if accumulate) c->dw and c->db; overwrites dx unless dx == NULL. */
int dp_conv_dnnl_backward(dp_conv_dnnl *e, dp_conv *c, float *dx, const float *dy,
                          const float *x, int B, bool accumulate);
/* "oneDNN " and the implementation oneDNN chose for the forward at max_batch (e.g. "oneDNN
 * jit:avx512_core"), for the banner; "" without oneDNN. */
const char *dp_conv_dnnl_impl(const dp_conv_dnnl *e);
/* Whether one of the three passes at max_batch runs oneDNN's reference kernel (a plain loop
 * nest, 100 times slower than im2col): oneDNN 2.6 has no fast weight gradient for some
 * shapes, e.g. 8 input channels in its 16-channel blocks. */
bool dp_conv_dnnl_is_ref(const dp_conv_dnnl *e);

#endif
