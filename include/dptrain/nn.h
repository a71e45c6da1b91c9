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
    DP_ACT_SOFTMAX, /* row-wise; as a model output it is fused into the cross-entropy */
    DP_ACT_COUNT
} dp_act;

typedef enum {
    DP_LOSS_CROSS_ENTROPY = 0, /* softmax + cross-entropy on integer class labels */
    DP_LOSS_MSE,               /* mean over outputs of squared error, float targets */
    DP_LOSS_COUNT
} dp_loss;

typedef enum {
    DP_INIT_HE_NORMAL = 0, /* N(0, 2/fan_in) */
    DP_INIT_HE_UNIFORM,    /* U(-sqrt(6/fan_in), +sqrt(6/fan_in)) */
    DP_INIT_XAVIER_NORMAL, /* N(0, 2/(fan_in+fan_out)) */
    DP_INIT_XAVIER_UNIFORM,/* U(-sqrt(6/(fan_in+fan_out)), +...) */
    DP_INIT_ZERO,
    DP_INIT_COUNT
} dp_init;

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

/* Targets of one batch: labels (B) for classification, or values (B,k) for regression. */
typedef struct {
    const int32_t *labels;
    const float *values;
} dp_targets;

/* Loss of B rows of model output out (B,k) against t.
 * Returns the SUM over rows of the per-row loss (cross-entropy: -log softmax(out)[label];
 * MSE: mean over the k outputs of (out - value)^2), in double.
 * If dout != NULL it is overwritten with scale * d(sum of per-row losses)/d(out), (B,k):
 * pass scale = 1/global_batch to get the gradient of the global mean.
 * If n_correct != NULL, adds the number of rows whose argmax equals the label (CE only). */
double dp_loss_eval(dp_loss l, const float *out, const dp_targets *t, int B, int k, float scale,
                    float *dout, long *n_correct);

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
/* Fills w from init (fan_in = in, fan_out = out) and sets b to zero; stream from rng. */
void dp_dense_init(dp_dense *l, dp_init init, uint64_t seed, int layer_index);

/* The model: a stack of dense layers. Opaque. */
typedef struct dp_model dp_model;

typedef struct {
    int n_layers;                    /* dense layers, 1..DP_MAX_LAYERS */
    int sizes[DP_MAX_LAYERS + 1];    /* sizes[0] = inputs, sizes[n_layers] = outputs */
    dp_act act[DP_MAX_LAYERS];       /* activation after each layer */
    dp_init init;                    /* weight initializer; biases start at zero */
    uint64_t seed;                   /* initialization seed */
    int max_batch;                   /* most rows per forward/backward; buffers sized for it */
} dp_model_cfg;

/* Builds the model, allocates every buffer and initializes the weights from cfg->seed. */
int dp_model_create(const dp_model_cfg *cfg, dp_model **out);
void dp_model_free(dp_model **m); /* NULL-safe; sets *m = NULL */

const dp_model_cfg *dp_model_config(const dp_model *m);
size_t dp_model_n_params(const dp_model *m);
float *dp_model_params(dp_model *m); /* flat array of n_params */
/* Flat array of n_params, same layout as the parameters, followed by DP_GRAD_TAIL spare
 * floats: the trainer puts per-step sums there so that they ride the gradient allreduce. */
float *dp_model_grads(dp_model *m);
#define DP_GRAD_TAIL 4
dp_dense *dp_model_layer(dp_model *m, int i);
const dp_dense *dp_model_layer_const(const dp_model *m, int i);

/* Runs B rows (B <= max_batch) of x (B, sizes[0]) through the model; returns the output
 * (B, sizes[n_layers]) after the last layer's activation, valid until the next forward. */
const float *dp_model_forward(dp_model *m, const float *x, int B);
/* Backpropagates dout (B, outputs) = dL/d(output of the last forward) through the model;
 * x must be the input of that forward. Writes (or, if accumulate, adds) the gradients. */
void dp_model_backward(dp_model *m, const float *x, const float *dout, int B, bool accumulate);
/* A scratch buffer of (max_batch, outputs) floats for the caller's dL/d(output). */
float *dp_model_dout(dp_model *m);

#endif
