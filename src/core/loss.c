/* loss.c: losses over a batch, returning the sum of per-row losses and the gradient. */
#include "dptrain/nn.h"

#include <math.h>

static double cross_entropy(const float *out, const int32_t *labels, int B, int k, float scale,
                            float *dout, long *n_correct)
{
    double total = 0.0;
    long correct = 0;
    for (int r = 0; r < B; r++) {
        const float *o = out + (size_t)r * k;
        int arg = 0;
        for (int j = 1; j < k; j++) {
            arg = o[j] > o[arg] ? j : arg;
        }
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

static double mse(const float *out, const float *values, int B, int k, float scale, float *dout)
{
    double total = 0.0;
    for (int r = 0; r < B; r++) {
        double row = 0.0;
        for (int j = 0; j < k; j++) {
            size_t i = (size_t)r * k + j;
            double e = (double)out[i] - values[i];
            row += e * e;
            if (dout) {
                dout[i] = scale * (float)(2.0 * e / k);
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
        return cross_entropy(out, t->labels, B, k, scale, dout, n_correct);
    case DP_LOSS_MSE:
        return mse(out, t->values, B, k, scale, dout);
    case DP_LOSS_COUNT:
        break;
    }
    return NAN;
}
