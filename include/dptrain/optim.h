/* dptrain/optim.h: optimizers as pure functions over flat arrays, and learning-rate
 * schedules. Local. Update rules follow torch.optim's documented definitions. */
#ifndef DPTRAIN_OPTIM_H
#define DPTRAIN_OPTIM_H

#include <stdbool.h>
#include <stddef.h>

/* torch.optim.SGD: g = grad + weight_decay * p;
 * if momentum != 0: buf = g at step 1, else buf = momentum * buf + (1 - dampening) * g;
 *                   g = nesterov ? g + momentum * buf : buf;
 * p -= lr * g. */
typedef struct {
    float lr, momentum, dampening, weight_decay;
    bool nesterov;
} dp_sgd_cfg;

/* One step t (t >= 1 is the 1-based step count) over n parameters p with gradient g and
 * momentum buffer buf (n floats; untouched when momentum == 0). */
void dp_sgd_step(const dp_sgd_cfg *c, long t, size_t n, float *p, const float *g, float *buf);

typedef enum {
    DP_SCHED_CONSTANT = 0, /* lr */
    DP_SCHED_COSINE,       /* lr * (1 + cos(pi * step / total)) / 2, down to 0 at total */
    DP_SCHED_COUNT
} dp_sched;

const char *dp_sched_name(dp_sched s);
int dp_sched_parse(const char *s); /* -1 if unknown */

/* Learning rate for the optimizer step that follows `step` completed steps of `total`. */
float dp_sched_lr(dp_sched s, float base_lr, long step, long total);

#endif
