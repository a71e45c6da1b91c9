/* optim.c: optimizer updates over flat arrays, and learning-rate schedules. */
#include "dptrain/optim.h"

#include <math.h>
#include <string.h>

void dp_sgd_step(const dp_sgd_cfg *c, long t, size_t n, float *p, const float *g, float *buf)
{
    const float lr = c->lr, mu = c->momentum, wd = c->weight_decay;
    const float damp = 1.0f - c->dampening;
    for (size_t i = 0; i < n; i++) {
        float d = g[i] + wd * p[i];
        if (mu != 0.0f) {
            buf[i] = (t <= 1) ? d : mu * buf[i] + damp * d;
            d = c->nesterov ? d + mu * buf[i] : buf[i];
        }
        p[i] -= lr * d;
    }
}

static const char *const sched_names[DP_SCHED_COUNT] = {
    [DP_SCHED_CONSTANT] = "constant",
    [DP_SCHED_COSINE] = "cosine",
};

const char *dp_sched_name(dp_sched s)
{
    return (s >= 0 && s < DP_SCHED_COUNT) ? sched_names[s] : "?";
}

int dp_sched_parse(const char *s)
{
    for (int i = 0; s && i < DP_SCHED_COUNT; i++) {
        if (strcmp(sched_names[i], s) == 0) {
            return i;
        }
    }
    return -1;
}

float dp_sched_lr(dp_sched s, float base_lr, long step, long total)
{
    switch (s) {
    case DP_SCHED_COSINE:
        if (total <= 0 || step >= total) {
            return 0.0f;
        }
        return (float)(base_lr * 0.5 * (1.0 + cos(M_PI * (double)step / (double)total)));
    case DP_SCHED_CONSTANT:
    case DP_SCHED_COUNT:
        break;
    }
    return base_lr;
}
