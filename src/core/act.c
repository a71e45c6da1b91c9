/* act.c: activations, forward and backward, and the names of activations, losses and
 * initializers. */
#include "dptrain/nn.h"

#include "names.h"

#include <math.h>
#include <string.h>

static const char *const act_names[DP_ACT_COUNT] = {
    [DP_ACT_IDENTITY] = "identity", [DP_ACT_RELU] = "relu",       [DP_ACT_SIGMOID] = "sigmoid",
    [DP_ACT_TANH] = "tanh",         [DP_ACT_SOFTMAX] = "softmax",   [DP_ACT_STEP] = "step",
    [DP_ACT_LEAKY_RELU] = "leaky-relu", [DP_ACT_ELU] = "elu",       [DP_ACT_GELU] = "gelu",
};
static const char *const loss_names[DP_LOSS_COUNT] = {
    [DP_LOSS_CROSS_ENTROPY] = "cross-entropy",
    [DP_LOSS_MSE] = "mse",
    [DP_LOSS_SPARSE_CCE] = "sparse-categorical-cross-entropy",
    [DP_LOSS_CCE] = "categorical-cross-entropy",
    [DP_LOSS_BCE_LOGITS] = "binary-cross-entropy",
    [DP_LOSS_BCE_PROBS] = "binary-cross-entropy-probs",
    [DP_LOSS_MAE] = "mae",
    [DP_LOSS_RMSE] = "rmse",
};
static const char *const init_names[DP_INIT_COUNT] = {
    [DP_INIT_HE_NORMAL] = "he-normal",         [DP_INIT_HE_UNIFORM] = "he-uniform",
    [DP_INIT_XAVIER_NORMAL] = "xavier-normal", [DP_INIT_XAVIER_UNIFORM] = "xavier-uniform",
    [DP_INIT_ZERO] = "zero",           [DP_INIT_CONSTANT] = "constant",
    [DP_INIT_UNIFORM] = "uniform",     [DP_INIT_NORMAL] = "normal",
};

int dp_name_index(const char *const *names, int n, const char *s)
{
    for (int i = 0; s && i < n; i++) {
        if (strcmp(names[i], s) == 0) {
            return i;
        }
    }
    return -1;
}

const char *dp_act_name(dp_act a) { return (a >= 0 && a < DP_ACT_COUNT) ? act_names[a] : "?"; }
int dp_act_parse(const char *s) { return dp_name_index(act_names, DP_ACT_COUNT, s); }
const char *dp_loss_name(dp_loss l) { return (l >= 0 && l < DP_LOSS_COUNT) ? loss_names[l] : "?"; }
int dp_loss_parse(const char *s) { return dp_name_index(loss_names, DP_LOSS_COUNT, s); }
const char *dp_init_name(dp_init i) { return (i >= 0 && i < DP_INIT_COUNT) ? init_names[i] : "?"; }
int dp_init_parse(const char *s) { return dp_name_index(init_names, DP_INIT_COUNT, s); }

bool dp_act_trainable(dp_act a) { return a >= 0 && a < DP_ACT_COUNT && a != DP_ACT_STEP; }

/* 1/sqrt(2) and 1/sqrt(2 pi), for the normal cdf and density of gelu. */
#define DP_SQRT1_2 0.70710678118654752440f
#define DP_INV_SQRT_2PI 0.39894228040143267794f

static void softmax_rows(float *y, const float *x, int B, int n)
{
    for (int r = 0; r < B; r++) {
        const float *xr = x + (size_t)r * n;
        float *yr = y + (size_t)r * n;
        float mx = xr[0];
        for (int j = 1; j < n; j++) {
            mx = xr[j] > mx ? xr[j] : mx;
        }
        double s = 0.0;
        for (int j = 0; j < n; j++) {
            yr[j] = expf(xr[j] - mx);
            s += yr[j];
        }
        float inv = (float)(1.0 / s);
        for (int j = 0; j < n; j++) {
            yr[j] *= inv;
        }
    }
}

void dp_act_forward(dp_act a, float *y, const float *x, int B, int n)
{
    size_t total = (size_t)B * n;
    switch (a) {
    case DP_ACT_IDENTITY:
        if (y != x) {
            memcpy(y, x, total * sizeof *y);
        }
        break;
    case DP_ACT_RELU:
        for (size_t i = 0; i < total; i++) {
            y[i] = x[i] > 0.0f ? x[i] : 0.0f;
        }
        break;
    case DP_ACT_SIGMOID:
        for (size_t i = 0; i < total; i++) {
            /* exp of a non-positive number only: no overflow for large |x|. */
            float e = expf(-fabsf(x[i]));
            y[i] = x[i] >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
        }
        break;
    case DP_ACT_TANH:
        for (size_t i = 0; i < total; i++) {
            y[i] = tanhf(x[i]);
        }
        break;
    case DP_ACT_SOFTMAX:
        softmax_rows(y, x, B, n);
        break;
    case DP_ACT_STEP:
        for (size_t i = 0; i < total; i++) {
            y[i] = x[i] > 0.0f ? 1.0f : 0.0f;
        }
        break;
    case DP_ACT_LEAKY_RELU:
        for (size_t i = 0; i < total; i++) {
            y[i] = x[i] > 0.0f ? x[i] : DP_LEAKY_RELU_SLOPE * x[i];
        }
        break;
    case DP_ACT_ELU:
        for (size_t i = 0; i < total; i++) {
            y[i] = x[i] > 0.0f ? x[i] : DP_ELU_ALPHA * expm1f(x[i]);
        }
        break;
    case DP_ACT_GELU:
        for (size_t i = 0; i < total; i++) {
            y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * DP_SQRT1_2));
        }
        break;
    case DP_ACT_COUNT:
        break;
    }
}

void dp_act_backward(dp_act a, float *dx, const float *dy, const float *x, const float *y,
                     int B, int n)
{
    size_t total = (size_t)B * n;
    switch (a) {
    case DP_ACT_IDENTITY:
        if (dx != dy) {
            memcpy(dx, dy, total * sizeof *dx);
        }
        break;
    case DP_ACT_RELU:
        /* dy is loaded whatever the branch, so that the loop is a vector select. */
        for (size_t i = 0; i < total; i++) {
            const float g = dy[i];
            dx[i] = x[i] > 0.0f ? g : 0.0f;
        }
        break;
    case DP_ACT_SIGMOID:
        for (size_t i = 0; i < total; i++) {
            dx[i] = dy[i] * y[i] * (1.0f - y[i]);
        }
        break;
    case DP_ACT_TANH:
        for (size_t i = 0; i < total; i++) {
            dx[i] = dy[i] * (1.0f - y[i] * y[i]);
        }
        break;
    case DP_ACT_SOFTMAX:
        for (int r = 0; r < B; r++) {
            const float *yr = y + (size_t)r * n, *dyr = dy + (size_t)r * n;
            float *dxr = dx + (size_t)r * n;
            double dot = 0.0;
            for (int j = 0; j < n; j++) {
                dot += (double)dyr[j] * yr[j];
            }
            for (int j = 0; j < n; j++) {
                dxr[j] = yr[j] * (float)(dyr[j] - dot);
            }
        }
        break;
    case DP_ACT_STEP:
        for (size_t i = 0; i < total; i++) {
            dx[i] = 0.0f;
        }
        break;
    case DP_ACT_LEAKY_RELU:
        for (size_t i = 0; i < total; i++) {
            const float g = dy[i];
            dx[i] = x[i] > 0.0f ? g : DP_LEAKY_RELU_SLOPE * g;
        }
        break;
    case DP_ACT_ELU:
        /* For x <= 0, f'(x) = alpha exp(x) = y + alpha. */
        for (size_t i = 0; i < total; i++) {
            dx[i] = x[i] > 0.0f ? dy[i] : dy[i] * (y[i] + DP_ELU_ALPHA);
        }
        break;
    case DP_ACT_GELU:
        /* f'(x) = Phi(x) + x phi(x). */
        for (size_t i = 0; i < total; i++) {
            float cdf = 0.5f * (1.0f + erff(x[i] * DP_SQRT1_2));
            float pdf = DP_INV_SQRT_2PI * expf(-0.5f * x[i] * x[i]);
            dx[i] = dy[i] * (cdf + x[i] * pdf);
        }
        break;
    case DP_ACT_COUNT:
        break;
    }
}
