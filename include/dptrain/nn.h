/* dptrain/nn.h: the math of a multilayer perceptron: activations, losses, dense layers and
 * the model that owns one flat array of parameters and one of gradients. No MPI, no I/O.
 * Every function here is Local. Matrices are row-major; shapes are written (rows, cols). */
#ifndef DPTRAIN_NN_H
#define DPTRAIN_NN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DP_MAX_LAYERS 32

typedef enum {
    DP_ACT_IDENTITY = 0,
    DP_ACT_RELU,
    DP_ACT_SIGMOID,
    DP_ACT_TANH,
    DP_ACT_SOFTMAX,    /* row-wise; as a model output it is fused into the cross-entropy */
    DP_ACT_STEP,       /* "step": x > 0 ? 1 : 0 (0 at 0); derivative 0 a.e.: not trainable */
    DP_ACT_LEAKY_RELU, /* "leaky-relu": x > 0 ? x : 0.01 x (torch default slope) */
    DP_ACT_ELU,        /* "elu": x > 0 ? x : alpha (exp(x) - 1), alpha = 1 */
    DP_ACT_GELU,       /* "gelu": exact erf form x Phi(x) = x/2 (1 + erf(x/sqrt 2)), as torch */
    DP_ACT_COUNT
} dp_act;

#define DP_LEAKY_RELU_SLOPE 0.01f
#define DP_ELU_ALPHA 1.0f

/* Losses. The model's output is logits for the fused losses (cross-entropy, sparse and
 * categorical cross-entropy, binary-cross-entropy), a probability for
 * binary-cross-entropy-probs (its output layer must be dp_loss_output_act() = sigmoid), and
 * a value for the regression losses. "Per-row loss" is what dp_loss_eval sums. */
typedef enum {
    DP_LOSS_CROSS_ENTROPY = 0, /* "cross-entropy": softmax + CE on integer labels (B):
                                * -log softmax(out)[label] */
    DP_LOSS_MSE,               /* "mse": mean over the k outputs of (out - value)^2 */
    DP_LOSS_SPARSE_CCE,        /* "sparse-categorical-cross-entropy": the same as
                                * cross-entropy (an alias with Keras's name) */
    DP_LOSS_CCE,               /* "categorical-cross-entropy": softmax + CE on float target
                                * rows y = values (B,k), one-hot or probabilities:
                                * -sum_j y_j log softmax(out)_j; gradient
                                * softmax(out) sum_j y_j - y (= softmax - y for rows summing
                                * to 1); correct when argmax out == argmax y */
    DP_LOSS_BCE_LOGITS,        /* "binary-cross-entropy": sigmoid + BCE on logits x, stable
                                * form max(x,0) - x y + log(1 + exp(-|x|)), mean over the k
                                * outputs (torch BCEWithLogitsLoss, per row); targets y in
                                * [0,1] from values (B,k), or, if values == NULL and k == 1,
                                * from labels (B) in {0,1}; correct when every output has
                                * (x > 0) == (y > 0.5) */
    DP_LOSS_BCE_PROBS,         /* "binary-cross-entropy-probs": BCE on probabilities p = out
                                * (after a sigmoid output layer), mean over the k outputs of
                                * -(y log p + (1-y) log(1-p)) with p first clamped to
                                * [DP_BCE_EPS, 1 - DP_BCE_EPS] as Keras does (torch instead
                                * clamps each log at -100). The gradient
                                * (p - y) / (p (1 - p)) / k uses the clamped p, so it stays
                                * finite. Targets and correct rows as binary-cross-entropy,
                                * with p > 0.5 in place of x > 0 */
    DP_LOSS_MAE,               /* "mae": mean over the k outputs of |out - value| (torch
                                * L1Loss); gradient sign(out - value) / k, 0 where equal */
    DP_LOSS_RMSE,              /* "rmse": dp_loss_eval returns the same sum of per-row MSEs
                                * and the same gradient as mse. The trainer takes
                                * rmse = sqrt(global mean MSE) (dp_loss_report) and scales the
                                * allreduced MSE gradient by 1 / (2 rmse), the chain rule of
                                * the square root (leaving it at 0 when rmse == 0) */
    DP_LOSS_COUNT
} dp_loss;

#define DP_BCE_EPS 1e-7 /* probability clamp of binary-cross-entropy-probs (Keras epsilon) */

typedef enum {
    DP_INIT_HE_NORMAL = 0, /* N(0, 2/fan_in) */
    DP_INIT_HE_UNIFORM,    /* U(-sqrt(6/fan_in), +sqrt(6/fan_in)) */
    DP_INIT_XAVIER_NORMAL, /* N(0, 2/(fan_in+fan_out)) */
    DP_INIT_XAVIER_UNIFORM,/* U(-sqrt(6/(fan_in+fan_out)), +...) */
    DP_INIT_ZERO,
    DP_INIT_CONSTANT,      /* every element = a */
    DP_INIT_UNIFORM,       /* U[a, b); the textbook recipe is [0, 1) */
    DP_INIT_NORMAL,        /* N(mean a, std b) */
    DP_INIT_COUNT
} dp_init;

/* An initializer with its parameters (a, b as above; unused by he/xavier/zero). */
typedef struct {
    bool set;     /* false: the model's default (cfg->init for weights, zeros for biases) */
    dp_init kind;
    float a, b;
} dp_init_spec;

/* Parses "name[:a[:b]]" ("he-normal", "constant:0.1", "uniform:-0.5:0.5", "normal:0:0.01");
 * defaults: constant 0, uniform [0, 1), normal (0, 1). Returns DP_EINVAL with a message. */
int dp_init_spec_parse(const char *s, dp_init_spec *out);

/* Name <-> enum ("relu", "cross-entropy", "he-normal"...). Parsers return -1 if unknown. */
const char *dp_act_name(dp_act a);
int dp_act_parse(const char *s);
const char *dp_loss_name(dp_loss l);
int dp_loss_parse(const char *s);
const char *dp_init_name(dp_init i);
int dp_init_parse(const char *s);

/* y (B,n) = f(x (B,n)). Softmax is taken over each row of n. y may equal x. */
void dp_act_forward(dp_act a, float *y, const float *x, int B, int n);
/* dx (B,n) = dy * f'(x), given both x (pre-activation) and y = f(x). dx may equal dy.
 * Softmax uses the full Jacobian row by row. */
void dp_act_backward(dp_act a, float *dx, const float *dy, const float *x, const float *y,
                     int B, int n);

/* False for activations whose derivative is zero almost everywhere (step): a layer with
 * one cannot learn by gradient descent. dp_act_backward still works (writes zeros). */
bool dp_act_trainable(dp_act a);

/* Targets of one batch: labels (B) for classification, or values (B,k) for float targets. */
typedef struct {
    const int32_t *labels;
    const float *values;
} dp_targets;

/* Loss of B rows of model output out (B,k) against t (see dp_loss for each loss).
 * Returns the SUM over rows of the per-row loss, in double (NaN if l is unknown or the
 * targets it needs are NULL).
 * If dout != NULL it is overwritten with scale * d(sum of per-row losses)/d(out), (B,k):
 * pass scale = 1/global_batch to get the gradient of the global mean.
 * If n_correct != NULL and dp_loss_has_accuracy(l), adds the number of correct rows
 * (cross-entropy: argmax == label; see dp_loss for the others); otherwise leaves it. */
double dp_loss_eval(dp_loss l, const float *out, const dp_targets *t, int B, int k, float scale,
                    float *dout, long *n_correct);

/* The reported loss from a sum of per-row losses over count rows: sum/count, or
 * sqrt(sum/count) for rmse. NaN if count == 0. */
double dp_loss_report(dp_loss l, double sum, size_t count);
/* The per-row loss of a uniform prediction over k outputs: ln k for the softmax losses, ln 2
 * for the binary ones, 0 for regression (no such baseline). */
double dp_loss_uniform(dp_loss l, int k);
/* True if l needs integer class labels (cross-entropy, sparse-categorical-cross-entropy). */
bool dp_loss_needs_labels(dp_loss l);
/* True if l needs float targets (B,k) (mse, rmse, mae, categorical-cross-entropy).
 * Both binary-cross-entropy losses need neither: they take float targets (B,k), or labels
 * in {0,1} when the model has k == 1 output. */
bool dp_loss_needs_values(dp_loss l);
/* The activation the model's last layer must have: sigmoid for binary-cross-entropy-probs,
 * identity for every other loss (the fused losses take logits). */
dp_act dp_loss_output_act(dp_loss l);
/* True if dp_loss_eval counts correct rows (every classification loss). */
bool dp_loss_has_accuracy(dp_loss l);

/* A dense layer: views into the model's arenas, not owners. w is (out,in), as in PyTorch. */
typedef struct {
    int in, out;
    dp_act act;
    float *w, *b;   /* parameters */
    float *dw, *db; /* gradients, same layout */
} dp_dense;

/* y (B,out) = x (B,in) * w^T + b (pre-activation). */
void dp_dense_forward(const dp_dense *l, float *y, const float *x, int B);
/* Given dy (B,out) = dL/dy for the pre-activation y: writes dw (out,in) = dy^T x and
 * db (out) = column sums of dy, or adds them into dw, db if accumulate;
 * overwrites dx (B,in) = dy w unless dx == NULL. */
void dp_dense_backward(dp_dense *l, float *dx, const float *dy, const float *x, int B,
                       bool accumulate);
/* The input gradient alone: overwrites dx (B,in) = dy (B,out) w. */
void dp_dense_backward_dx(const dp_dense *l, float *dx, const float *dy, int B);
/* Fills w from init (fan_in = in, fan_out = out) and sets b to zero; stream from rng. */
void dp_dense_init(dp_dense *l, dp_init init, uint64_t seed, int layer_index);
/* Fills w from *w and b from *b (zeros if b is NULL or not set), each from its own stream
 * keyed by (seed, layer). */
void dp_dense_init_spec(dp_dense *l, const dp_init_spec *w, const dp_init_spec *b, uint64_t seed,
                        int layer_index);

/* --- the image stage: convolution and pooling --------------------------------------------
 * Images are NCHW, as in PyTorch: sample n, channel c, row h, column w of a (B,C,H,W) array
 * is element ((n*C + c)*H + h)*W + w. Flattening an image (C,H,W) into C*H*W features is
 * therefore the identity on memory, in torch.flatten's order. */

/* A 2-D convolution: views, not owners. w is (out_c, in_c, kh, kw), torch.nn.Conv2d's
 * weight; b is (out_c). Zero padding of ph rows above and below and pw columns left and
 * right; out_h = (in_h + 2 ph - kh) / sh + 1 (floor), out_w likewise. */
typedef struct {
    int in_c, in_h, in_w, out_c, out_h, out_w;
    int kh, kw, sh, sw, ph, pw;
    float *w, *b, *dw, *db;
} dp_conv;

/* Fills w from *w (fan_in = in_c*kh*kw, fan_out = out_c*kh*kw, as torch) and b from *b
 * (zeros if NULL or not set), each from its own stream keyed by (seed, stage). */
void dp_conv_init_spec(dp_conv *c, const dp_init_spec *w, const dp_init_spec *b, uint64_t seed,
                       int stage);

/* Floats of the work buffers the convolution kernels take for chunks of up to
 * dp_conv_chunk(c) samples: col (the unfolded input) and tmp (the product and a row of
 * ones). */
int dp_conv_chunk(const dp_conv *c);
size_t dp_conv_col_floats(const dp_conv *c);
size_t dp_conv_tmp_floats(const dp_conv *c);
/* y (B, out_c, out_h, out_w) = conv(x (B, in_c, in_h, in_w)) + b, by im2col and one sgemm
 * per chunk of samples. col and tmp: work buffers of the sizes above. */
void dp_conv_forward(const dp_conv *c, float *y, const float *x, int B, float *col, float *tmp);
/* Given dy = dL/dy (B, out_c, out_h, out_w): writes (or adds, if accumulate) dw and db;
 * overwrites dx (B, in_c, in_h, in_w) = dL/dx unless dx == NULL. */
void dp_conv_backward(dp_conv *c, float *dx, const float *dy, const float *x, int B,
                      bool accumulate, float *col, float *tmp);

/* Pooling of (B, C, H, W) over windows of kh x kw moved by sh, sw, no padding (floor):
 * out_h = (H - kh) / sh + 1. Max pooling records in arg the index within the sample's
 * channel plane (h*W + w) of each output's maximum, the first in row-major order among ties
 * (as torch on CPU); its backward sends each dy to that element only. Average pooling
 * divides by kh*kw. Backward overwrites dx. */
typedef struct {
    int c, in_h, in_w, out_h, out_w, kh, kw, sh, sw;
} dp_pool;
void dp_maxpool_forward(const dp_pool *p, float *y, int32_t *arg, const float *x, int B);
void dp_maxpool_backward(const dp_pool *p, float *dx, const float *dy, const int32_t *arg, int B);
void dp_avgpool_forward(const dp_pool *p, float *y, const float *x, int B);
void dp_avgpool_backward(const dp_pool *p, float *dx, const float *dy, int B);

typedef enum {
    DP_STAGE_CONV = 0, /* "convCkK[sS][pP]" */
    DP_STAGE_MAXPOOL,  /* "maxpoolK[sS]" */
    DP_STAGE_AVGPOOL,  /* "avgpoolK[sS]" */
    DP_STAGE_COUNT
} dp_stage_kind;

#define DP_MAX_STAGES 16

/* One layer of the image stage. */
typedef struct {
    dp_stage_kind kind;
    int out_c;         /* conv: output channels (filters) */
    int kh, kw;        /* conv: kernel; pool: window */
    int sh, sw;        /* stride (conv default 1, pool default the window) */
    int ph, pw;        /* conv: zero padding */
    dp_act act;        /* conv: activation after it (and after its batch norm) */
    bool batchnorm;    /* conv: batch norm per channel, statistics over (n, h, w) of the
                        * global batch, between the convolution and the activation */
    float dropout;     /* conv: inverted dropout per element of its output, in [0, 1) */
    dp_init_spec weight_init, bias_init; /* unset: the model's init, zero bias */
} dp_stage_cfg;

/* Parses one image-stage layer ("conv32k3p1", "conv16k5x3s2p2x1:tanh:bn:dropout=0.2",
 * "maxpool2", "avgpool3s2") into *st. A conv layer takes act unless a setting names another;
 * a pooling takes no settings. Returns DP_EINVAL with a message. */
int dp_stage_parse(const char *tok, dp_act act, dp_stage_cfg *st);
/* Writes st as a token ("conv32k3p1"), with its settings if settings (":relu:bn");
 * returns snprintf's count. */
int dp_stage_format(const dp_stage_cfg *st, bool settings, char *buf, size_t cap);
const char *dp_stage_kind_name(dp_stage_kind k);

/* The model: a stack of dense layers, each optionally followed by batch normalization of its
 * pre-activation and by dropout on its output. Opaque.
 *
 * Layer i computes, in training mode (dp_model_forward_train):
 *   u = x w^T + b                       dense product (B, out_i)
 *   z = gamma * (u - mean) / sqrt(var + eps) + beta    if batchnorm[i]; else z = u
 *   a = act_i(z)
 *   y = a * mask / (1 - dropout[i])      if dropout[i] > 0; else y = a
 * where mean and var (biased) are taken per feature over the whole global batch (every rank's
 * rows), and mask is 0 or 1 per (sample, unit) from the counter-based RNG. In evaluation mode
 * (dp_model_forward) there is no dropout and batch norm uses the running statistics. */
typedef struct dp_model dp_model;

typedef struct {
    int n_layers;                    /* dense layers, 1..DP_MAX_LAYERS */
    int sizes[DP_MAX_LAYERS + 1];    /* sizes[0] = inputs, sizes[n_layers] = outputs */
    dp_act act[DP_MAX_LAYERS];       /* activation after each layer */
    dp_init init;                    /* weight initializer; biases start at zero */
    dp_init_spec weight_init[DP_MAX_LAYERS]; /* per layer, overrides init where set */
    dp_init_spec bias_init[DP_MAX_LAYERS];   /* per layer, zeros where not set */
    uint64_t seed;                   /* initialization seed */
    int max_batch;                   /* most rows per forward/backward; buffers sized for it */
    float dropout[DP_MAX_LAYERS];    /* inverted dropout on layer i's output (after its
                                      * activation); 0 = none; in [0, 1); 0 on the last layer */
    bool batchnorm[DP_MAX_LAYERS];   /* batch normalization of layer i's pre-activation (between
                                      * the dense product and the activation), learnable gamma
                                      * (init 1) and beta (init 0); not on the last layer */
    float bn_momentum;               /* running-statistics momentum in (0, 1], torch's
                                      * convention: running = (1 - m) running + m batch;
                                      * 0 means the default 0.1 */
    float bn_eps;                    /* > 0, added to the variance; 0 means the default 1e-5 */
    /* The image stage before the dense layers (n_stages = 0: none; the input is then flat,
     * sizes[0] features). With it the input is an image (in_c, in_h, in_w), NCHW, of
     * in_c*in_h*in_w features; the stages run in order and their output (C,H,W) is
     * flattened into sizes[0] = C*H*W features, or, if gap, averaged over H and W into
     * sizes[0] = C (global average pooling). dp_model_cfg_shapes checks and computes it. */
    int in_c, in_h, in_w;
    int n_stages;
    dp_stage_cfg stage[DP_MAX_STAGES];
    bool gap;
} dp_model_cfg;

/* The number of input features of a model: in_c*in_h*in_w with an image stage, sizes[0]
 * without. */
int dp_model_cfg_inputs(const dp_model_cfg *c);
/* Computes the output shape of every stage: c[j], h[j], w[j] for j = 0 (the input) to
 * n_stages, and the flattened feature count (or C with gap) into *features. Returns DP_OK,
 * or DP_EINVAL naming the stage and both shapes when a window does not fit or a shape is
 * out of range. Without stages: *features = sizes[0]. Pure. */
int dp_model_cfg_shapes(const dp_model_cfg *cfg, int *c, int *h, int *w, int *features);
/* The floating-point operations of one training step per sample: 6 x the dense parameters
 * (forward, weight gradient, input gradient), plus per convolution 2 x its multiply-adds
 * (out_c * in_c * kh * kw * out_h * out_w) for the forward, as much for the weight gradient
 * and, above the first layer, for the input gradient. 0 if the shapes are invalid. Pure. */
double dp_model_cfg_train_flops(const dp_model_cfg *cfg);

#define DP_BN_MOMENTUM_DEFAULT 0.1f
#define DP_BN_EPS_DEFAULT 1e-5f

/* Builds the model, allocates every buffer and initializes the weights from cfg->seed.
 * Entries of dropout/batchnorm beyond n_layers are ignored. */
int dp_model_create(const dp_model_cfg *cfg, dp_model **out);
void dp_model_free(dp_model **m); /* NULL-safe; sets *m = NULL */

/* The config the model was built with, bn_momentum and bn_eps replaced by their defaults
 * where 0 was given. */
const dp_model_cfg *dp_model_config(const dp_model *m);
size_t dp_model_n_params(const dp_model *m);
/* Bytes the model allocated: parameters, gradients, batch-norm statistics and the
 * activation and backward buffers for max_batch rows. */
size_t dp_model_bytes(const dp_model *m);
/* Flat array of n_params. First per conv stage j, in order: w (out_c,in_c,kh,kw), b (out_c),
 * then, if its batchnorm, gamma (out_c) and beta (out_c); then per dense layer i, in order:
 * w (out,in), b (out), then, if batchnorm[i], gamma (out) and beta (out). */
float *dp_model_params(dp_model *m);
/* Flat array of n_params, same layout as the parameters, followed by DP_GRAD_TAIL spare
 * floats: the trainer puts per-step sums there so that they ride the gradient allreduce. */
float *dp_model_grads(dp_model *m);
#define DP_GRAD_TAIL 4
/* Offset of layer i's first parameter in the arenas (0 <= i <= n_layers; i == n_layers gives
 * n_params): layer i's parameters and gradients are [offset(i), offset(i + 1)). The image
 * stage's parameters come first in the arenas and belong to dense layer 0's range:
 * offset(0) is always 0, and layer_done(0) comes after the stage's backward. */
size_t dp_model_layer_offset(const dp_model *m, int i);
dp_dense *dp_model_layer(dp_model *m, int i);
const dp_dense *dp_model_layer_const(const dp_model *m, int i);

/* State that is not a parameter (not trained, not allreduced, but saved with the model): the
 * batch-norm running statistics, per batch-norm conv stage then per batch-norm layer, in
 * order: running_mean (out) then running_var (out). Starts at mean 0, var 1. Every rank holds the same values (they
 * are updated from globally reduced statistics). n_buffers is 0 without batch norm. */
float *dp_model_buffers(dp_model *m);
size_t dp_model_n_buffers(const dp_model *m);
/* If layer i has batch norm, sets the non-NULL pointers to its gamma, beta (parameters),
 * running_mean and running_var (buffers), each of out_i floats, and returns 1; otherwise
 * sets them to NULL and returns 0. */
int dp_model_bn_layer(const dp_model *m, int i, float **gamma, float **beta,
                      float **running_mean, float **running_var);

/* Stage j's convolution (weights and gradients in the arenas), or NULL if stage j is a
 * pooling or out of range. */
dp_conv *dp_model_conv(dp_model *m, int j);
const dp_conv *dp_model_conv_const(const dp_model *m, int j);
/* Which kernels compute stage j's convolution: "oneDNN <implementation>" (e.g. "oneDNN
 * jit:avx512_core") or "im2col + OpenBLAS sgemm"; "" for a pooling or j out of range.
 * oneDNN runs them when the build has it, unless the environment variable DPTRAIN_CONV=im2col
 * (read by dp_model_create; onednn: required, auto: the default) says otherwise, or oneDNN
 * has only its reference kernel for the layer's shape. */
const char *dp_model_conv_kernel(const dp_model *m, int j);
/* As dp_model_bn_layer, for stage j's per-channel batch norm (each of out_c floats). */
int dp_model_stage_bn(const dp_model *m, int j, float **gamma, float **beta,
                      float **running_mean, float **running_var);

/* Runs B rows (B <= max_batch) of x (B, inputs) through the model in evaluation mode (no
 * dropout; batch norm with the running statistics); returns the output
 * (B, sizes[n_layers]) after the last layer's activation, valid until the next forward.
 * NULL, with a dp_err message, only if a oneDNN convolution fails (a batch of a new size
 * makes its primitives, which allocate). */
const float *dp_model_forward(dp_model *m, const float *x, int B);

/* Sums buf[0..n) over every rank, in place (the trainer passes an MPI allreduce). Every rank
 * must make the same calls in the same order, also a rank with B == 0 rows. Returns DP_OK or
 * a dp status (having recorded a dp_err message). */
typedef int (*dp_sum_fn)(void *ctx, double *buf, size_t n);

/* Deterministic mode: the rows of a training forward are this rank's virtual shards of the
 * global batch, in order. Every row-wise product runs shard by shard (the same GEMM shapes
 * whichever rank holds a shard), every sum over rows is taken per shard and the shards are
 * combined exactly: batch-norm sums by gathering every shard's sums and adding them in shard
 * order; the dense gradients (w and b) as fixed-point integers (exact.h) in acc, with
 * exponents from bounds agreed over the ranks (max). The caller sums acc over the ranks
 * (int64) and turns it back into floats with exp; batch-norm gamma and beta gradients come
 * out of the backward already summed over every shard of every rank. */
typedef struct {
    int n_shards;             /* V: virtual shards of the global batch */
    int first, count;         /* this rank's shards [first, first + count) */
    const int *rows;          /* (count): rows of each of this rank's shards, summing to B */
    int max_rows;             /* the most rows in any shard of the global batch */
    /* Exact gather over the ranks: buf holds n_shards blocks, this rank's filled and the
     * others zero; afterwards every block is filled. NULL: one process holds every shard. */
    int (*gather)(void *ctx, double *buf, size_t n);
    /* Element-wise maximum over the ranks, in place. NULL: one process. */
    int (*max)(void *ctx, float *buf, size_t n);
    void *fn_ctx;
    double *scratch;          /* n_shards * dp_model_shard_scratch(m) doubles */
    int64_t *acc;             /* (n_params): written by dp_model_backward: the fixed-point
                               * dense gradients of this rank's shards (gamma and beta slots
                               * are left 0) */
    int exp[2 * DP_MAX_LAYERS]; /* written by dp_model_backward: the exponents of layer i's
                                 * w (2i) and b (2i + 1) in acc */
    bool nonfinite;           /* written by dp_model_backward: a gradient was NaN or
                               * infinite (acc is then meaningless) */
} dp_shards;

/* Doubles per shard that dp_shards.scratch needs for model m. */
size_t dp_model_shard_scratch(const dp_model *m);

typedef struct {
    uint64_t seed;            /* dropout masks */
    long step;                /* dropout masks: the optimizer step (plus micro-batch index if
                               * accumulating, the trainer decides) */
    const size_t *sample_ids; /* (B): global id of each row (its row in the dataset file);
                               * may be NULL if B == 0 or no layer has dropout */
    dp_sum_fn sum;            /* NULL: this process holds the whole batch */
    void *sum_ctx;
    /* Called by dp_model_backward as soon as layer i's gradients (its range of the gradient
     * arena, dp_model_layer_offset) are final, for i = n_layers-1 down to 0, so that their
     * allreduce can start while the layers below are still computing. NULL: not called.
     * A non-zero return stops the backward with that status. */
    int (*layer_done)(void *ctx, int layer);
    void *layer_ctx;
    dp_shards *shards;        /* NULL: the default mode (sum is used); else deterministic mode
                               * (sum and layer_done are not used) */
} dp_train_ctx;

/* Tag of the dropout masks. Row r, unit j of layer i is kept iff
 *   u = (dp_rng_hash(dp_rng_hash(seed ^ DP_RNG_TAG_DROPOUT, step),
 *                    ((uint64_t)i << 56) ^ (sample_ids[r] * out_i + j)) >> 40) * 2^-24
 * (that is dp_rng_uniform of dp_rng_make(seed ^ TAG, step) at that counter) is >= dropout[i];
 * kept units are scaled by 1 / (1 - dropout[i]). The mask depends on the sample id, not the
 * row position, so any split of the global batch over ranks gives the same masks. */
#define DP_RNG_TAG_DROPOUT 0x44524f50ULL /* "DROP" */

/* Training-mode forward of B rows (0 <= B <= max_batch): dropout masks keyed by
 * (ctx->seed, ctx->step, layer, sample id, unit), batch norm with per-feature statistics
 * over the whole global batch (sums of x and x^2 per feature in double, plus the row count,
 * reduced with one ctx->sum call per batch-norm layer, in layer order), running statistics
 * updated (unbiased variance for running_var, like torch). Returns the output as
 * dp_model_forward. Returns NULL, with a dp_err message, if ctx->sum fails, if a batch-norm
 * layer sees fewer than 2 rows in the global batch (the same on every rank), or on a bad
 * argument (ctx NULL, B out of range, sample_ids NULL with B > 0 and dropout: caller bugs,
 * checked before any sum). Collective over the ranks behind ctx->sum if the model has batch
 * norm; Local otherwise. Allocates nothing. The model keeps the pointer ctx for the next
 * dp_model_backward: the caller keeps *ctx alive (and unchanged) until then. */
const float *dp_model_forward_train(dp_model *m, const float *x, int B, const dp_train_ctx *ctx);

/* Backpropagates dout (B, outputs) = dL/d(output of the last forward) through the model;
 * x and B must be those of that forward. Writes (or, if accumulate, adds) the gradients.
 * Uses the mode of the last forward: after dp_model_forward, the evaluation-mode derivative
 * (batch norm as the fixed affine map of the running statistics); after
 * dp_model_forward_train, the dropout masks and the training-mode batch-norm backward, whose
 * per-feature global sums of dy and dy*xhat go through the ctx->sum of that forward (one
 * call per batch-norm layer, last layer first; collective as the forward). Each rank's
 * gradient is its rows' contribution: summed over ranks it is the gradient of the global
 * loss. Returns DP_OK, or the status of a failed ctx->sum (message recorded). */
int dp_model_backward(dp_model *m, const float *x, const float *dout, int B, bool accumulate);
/* A scratch buffer of (max_batch, outputs) floats for the caller's dL/d(output). */
float *dp_model_dout(dp_model *m);

#endif
