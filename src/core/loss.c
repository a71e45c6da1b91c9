/* loss.c: losses over a batch, returning the sum of per-row losses and the gradient, and
 * what the trainer needs to know about each loss (targets, output activation, reporting). */
#include "dptrain/nn.h"

#include <math.h>

/* Index of the first maximum of v (k). */
static int argmax(const float *v, int k)
{
    int arg = 0;
    for (int j = 1; j < k; j++) {
        arg = v[j] > v[arg] ? j : arg;
    }
    return arg;
}

static double cross_entropy(const float *out, const int32_t *labels, int B, int k, float scale,
                            float *dout, long *n_correct)
{
    double total = 0.0;
    long correct = 0;
    for (int r = 0; r < B; r++) {
        const float *o = out + (size_t)r * k;
        int arg = argmax(o, k);
        float mx = o[arg];
        double s = 0.0;
        for (int j = 0; j < k; j++) {
            s += exp((double)o[j] - mx);
        }
        int y = labels[r];
        total += log(s) - ((double)o[y] - mx);
        correct += (arg == y);
        if (dout) {
            float *d = dout + (size_t)r * k;
            double inv = 1.0 / s;
            for (int j = 0; j < k; j++) {
                double p = exp((double)o[j] - mx) * inv;
                d[j] = scale * (float)(p - (j == y));
            }
        }
    }
    if (n_correct) {
        *n_correct += correct;
    }
    return total;
}

/* Softmax cross-entropy against float target rows y (B,k): per row
 * L = -sum_j y_j log softmax(o)_j = sum_j y_j (lse(o) - o_j), dL/do_j = softmax_j sum(y) - y_j. */
static double categorical_ce(const float *out, const float *values, int B, int k, float scale,
                             float *dout, long *n_correct)
{
    double total = 0.0;
    long correct = 0;
    for (int r = 0; r < B; r++) {
        const float *o = out + (size_t)r * k, *y = values + (size_t)r * k;
        int arg = argmax(o, k);
        float mx = o[arg];
        double s = 0.0, ysum = 0.0, row = 0.0;
        for (int j = 0; j < k; j++) {
            s += exp((double)o[j] - mx);
        }
        double log_s = log(s);
        for (int j = 0; j < k; j++) {
            row += (double)y[j] * (log_s - ((double)o[j] - mx)); /* o_j - mx <= 0: finite */
            ysum += y[j];
        }
        total += row;
        correct += (arg == argmax(y, k));
        if (dout) {
            float *d = dout + (size_t)r * k;
            double inv = 1.0 / s;
            for (int j = 0; j < k; j++) {
                double p = exp((double)o[j] - mx) * inv;
                d[j] = scale * (float)(p * ysum - y[j]);
            }
        }
    }
    if (n_correct) {
        *n_correct += correct;
    }
    return total;
}

/* Binary cross-entropy, mean over the k outputs of each row. Targets: values (B,k), or labels
 * (B) when values == NULL (k == 1, checked by the caller). probs: out is p, else logits. */
static double binary_ce(const float *out, const dp_targets *t, int B, int k, float scale,
                        float *dout, long *n_correct, bool probs)
{
    double total = 0.0;
    long correct = 0;
    for (int r = 0; r < B; r++) {
        double row = 0.0;
        bool all = true;
        for (int j = 0; j < k; j++) {
            size_t i = (size_t)r * k + j;
            double x = out[i];
            double y = t->values ? (double)t->values[i] : (double)t->labels[r];
            double g;
            if (probs) {
                double p = fmin(fmax(x, DP_BCE_EPS), 1.0 - DP_BCE_EPS);
                row += -(y * log(p) + (1.0 - y) * log1p(-p));
                g = (p - y) / (p * (1.0 - p));
                all = all && ((x > 0.5) == (y > 0.5));
            } else {
                row += fmax(x, 0.0) - x * y + log1p(exp(-fabs(x)));
                double e = exp(-fabs(x)); /* sigmoid without overflow */
                double sig = x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
                g = sig - y;
                all = all && ((x > 0.0) == (y > 0.5));
            }
            if (dout) {
                dout[i] = scale * (float)(g / k);
            }
        }
        total += row / k;
        correct += all;
    }
    if (n_correct) {
        *n_correct += correct;
    }
    return total;
}

/* Mean over the k outputs of (out - value)^2 (abs: |out - value|). */
static double regression(const float *out, const float *values, int B, int k, float scale,
                         float *dout, bool abs_err)
{
    double total = 0.0;
    for (int r = 0; r < B; r++) {
        double row = 0.0;
        for (int j = 0; j < k; j++) {
            size_t i = (size_t)r * k + j;
            double e = (double)out[i] - values[i];
            double g;
            if (abs_err) {
                row += fabs(e);
                g = e > 0.0 ? 1.0 : (e < 0.0 ? -1.0 : 0.0);
            } else {
                row += e * e;
                g = 2.0 * e;
            }
            if (dout) {
                dout[i] = scale * (float)(g / k);
            }
        }
        total += row / k;
    }
    return total;
}

double dp_loss_eval(dp_loss l, const float *out, const dp_targets *t, int B, int k, float scale,
                    float *dout, long *n_correct)
{
    switch (l) {
    case DP_LOSS_CROSS_ENTROPY:
    case DP_LOSS_SPARSE_CCE:
        if (!t->labels) {
            break;
        }
        return cross_entropy(out, t->labels, B, k, scale, dout, n_correct);
    case DP_LOSS_CCE:
        if (!t->values) {
            break;
        }
        return categorical_ce(out, t->values, B, k, scale, dout, n_correct);
    case DP_LOSS_BCE_LOGITS:
    case DP_LOSS_BCE_PROBS:
        if (!t->values && !(t->labels && k == 1)) {
            break;
        }
        return binary_ce(out, t, B, k, scale, dout, n_correct, l == DP_LOSS_BCE_PROBS);
    case DP_LOSS_MSE:
    case DP_LOSS_RMSE:
    case DP_LOSS_MAE:
        if (!t->values) {
            break;
        }
        return regression(out, t->values, B, k, scale, dout, l == DP_LOSS_MAE);
    case DP_LOSS_COUNT:
        break;
    }
    return NAN;
}

double dp_loss_report(dp_loss l, double sum, size_t count)
{
    if (count == 0) {
        return NAN;
    }
    double mean = sum / (double)count;
    return l == DP_LOSS_RMSE ? sqrt(mean) : mean;
}

double dp_loss_uniform(dp_loss l, int k)
{
    switch (l) {
    case DP_LOSS_CROSS_ENTROPY:
    case DP_LOSS_SPARSE_CCE:
    case DP_LOSS_CCE:
        return k > 1 ? log((double)k) : 0.0;
    case DP_LOSS_BCE_LOGITS:
    case DP_LOSS_BCE_PROBS:
        return log(2.0);
    default:
        return 0.0;
    }
}

bool dp_loss_needs_labels(dp_loss l)
{
    return l == DP_LOSS_CROSS_ENTROPY || l == DP_LOSS_SPARSE_CCE;
}

bool dp_loss_needs_values(dp_loss l)
{
    return l == DP_LOSS_MSE || l == DP_LOSS_RMSE || l == DP_LOSS_MAE || l == DP_LOSS_CCE;
}

dp_act dp_loss_output_act(dp_loss l)
{
    return l == DP_LOSS_BCE_PROBS ? DP_ACT_SIGMOID : DP_ACT_IDENTITY;
}

bool dp_loss_has_accuracy(dp_loss l)
{
    return l == DP_LOSS_CROSS_ENTROPY || l == DP_LOSS_SPARSE_CCE || l == DP_LOSS_CCE ||
           l == DP_LOSS_BCE_LOGITS || l == DP_LOSS_BCE_PROBS;
}
