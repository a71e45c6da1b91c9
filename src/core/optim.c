/* optim.c: optimizer updates over flat arrays (torch.optim's documented rules), their
 * hyperparameter checks and state layout, and learning-rate schedules. */
#include "dptrain/optim.h"

#include "names.h"

#include "dptrain/err.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------
 * Names, defaults, checks, state layout */

static const char *const optim_names[DP_OPT_COUNT] = {
    [DP_OPT_SGD] = "sgd",         [DP_OPT_ADAGRAD] = "adagrad", [DP_OPT_RMSPROP] = "rmsprop",
    [DP_OPT_ADADELTA] = "adadelta", [DP_OPT_ADAM] = "adam",     [DP_OPT_ADAMW] = "adamw",
    [DP_OPT_NADAM] = "nadam",     [DP_OPT_ADAMAX] = "adamax",
};

const char *dp_optim_name(dp_optim_kind k)
{
    return ((int)k >= 0 && k < DP_OPT_COUNT) ? optim_names[k] : "?";
}

int dp_optim_parse(const char *s)
{
    return dp_name_index(optim_names, DP_OPT_COUNT, s);
}

#define OPT_BIT(k) (1u << (k))
#define ADAM_FAMILY \
    (OPT_BIT(DP_OPT_ADAM) | OPT_BIT(DP_OPT_ADAMW) | OPT_BIT(DP_OPT_NADAM) | OPT_BIT(DP_OPT_ADAMAX))
#define ALL_OPTIMS ((1u << DP_OPT_COUNT) - 1)
#define FIELD(n, f, m) #n, f, offsetof(dp_optim_cfg, n), m
static const dp_optim_field fields[] = {
    {FIELD(lr, "lr", ALL_OPTIMS), "learning rate"},
    {FIELD(weight_decay, "weight-decay", ALL_OPTIMS), "L2 penalty (adamw: decoupled decay)"},
    {FIELD(momentum, "momentum", OPT_BIT(DP_OPT_SGD) | OPT_BIT(DP_OPT_RMSPROP)),
     "momentum (sgd, rmsprop)"},
    {FIELD(dampening, "dampening", OPT_BIT(DP_OPT_SGD)), "momentum dampening (sgd)"},
    {FIELD(alpha, "alpha", OPT_BIT(DP_OPT_RMSPROP)), "smoothing constant (rmsprop)"},
    {FIELD(rho, "rho", OPT_BIT(DP_OPT_ADADELTA)), "running-average coefficient (adadelta)"},
    {FIELD(lr_decay, "lr-decay", OPT_BIT(DP_OPT_ADAGRAD)), "learning-rate decay (adagrad)"},
    {FIELD(initial_accumulator_value, "initial-accumulator-value", OPT_BIT(DP_OPT_ADAGRAD)),
     "start of the squared-gradient sum (adagrad)"},
    {FIELD(beta1, "beta1", ADAM_FAMILY), "first betas coefficient (adam family)"},
    {FIELD(beta2, "beta2", ADAM_FAMILY), "second betas coefficient (adam family)"},
    {FIELD(eps, "eps", ALL_OPTIMS & ~OPT_BIT(DP_OPT_SGD)), "term added for stability"},
    {FIELD(momentum_decay, "momentum-decay", OPT_BIT(DP_OPT_NADAM)), "momentum decay (nadam)"},
};

const dp_optim_field *dp_optim_fields(int *n)
{
    *n = (int)(sizeof fields / sizeof fields[0]);
    return fields;
}

void dp_optim_defaults(dp_optim_kind k, dp_optim_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->kind = k;
    c->lr = 1e-3f;
    switch (k) {
    case DP_OPT_SGD:
        break;
    case DP_OPT_ADAGRAD:
        c->lr = 1e-2f;
        c->eps = 1e-10f;
        break;
    case DP_OPT_RMSPROP:
        c->lr = 1e-2f;
        c->alpha = 0.99f;
        c->eps = 1e-8f;
        break;
    case DP_OPT_ADADELTA:
        c->lr = 1.0f;
        c->rho = 0.9f;
        c->eps = 1e-6f;
        break;
    case DP_OPT_ADAMW:
        c->weight_decay = 1e-2f;
        /* fall through */
    case DP_OPT_ADAM:
        c->beta1 = 0.9f;
        c->beta2 = 0.999f;
        c->eps = 1e-8f;
        break;
    case DP_OPT_NADAM:
        c->momentum_decay = 4e-3f;
        /* fall through */
    case DP_OPT_ADAMAX:
        c->lr = 2e-3f;
        c->beta1 = 0.9f;
        c->beta2 = 0.999f;
        c->eps = 1e-8f;
        break;
    case DP_OPT_COUNT:
        break;
    }
}

/* Range checks that also reject NaN and infinities. */
static int need_ge0(const char *opt, float x)
{
    if (!(x >= 0.0f) || !isfinite(x)) {
        return dp_err(DP_EINVAL, "%s %g: must be a finite number >= 0", opt, x);
    }
    return DP_OK;
}

static int need_gt0(const char *opt, float x, const char *why)
{
    if (!(x > 0.0f) || !isfinite(x)) {
        return dp_err(DP_EINVAL, "%s %g: must be a positive number%s", opt, x, why);
    }
    return DP_OK;
}

/* x in [0, 1) (open_hi) or [0, 1]. */
static int need_unit(const char *opt, float x, bool open_hi)
{
    if (!(x >= 0.0f) || (open_hi ? !(x < 1.0f) : !(x <= 1.0f))) {
        return dp_err(DP_EINVAL, "%s %g: must be in [0, 1%s", opt, x, open_hi ? ")" : "]");
    }
    return DP_OK;
}

static int need_unused(const char *opt, bool set, dp_optim_kind k, const char *users)
{
    if (set) {
        return dp_err(DP_EINVAL, "%s: the %s optimizer has no such option (only %s)", opt,
                      dp_optim_name(k), users);
    }
    return DP_OK;
}

#define EPS_WHY " (a zero eps divides 0 by 0 where a gradient is exactly 0)"

int dp_optim_check(const dp_optim_cfg *c)
{
    int rc = DP_OK;
    const dp_optim_kind k = c->kind;
    if ((int)k < 0 || k >= DP_OPT_COUNT) {
        DP_FAIL(DP_EINVAL, "--optimizer: unknown optimizer number %d", (int)k);
    }
    DP_TRY(need_gt0("--lr", c->lr, ""));
    DP_TRY(need_ge0("--weight-decay", c->weight_decay));
    DP_TRY(need_unused("--nesterov", c->nesterov && k != DP_OPT_SGD, k, "sgd"));
    DP_TRY(need_unused("--centered", c->centered && k != DP_OPT_RMSPROP, k, "rmsprop"));
    DP_TRY(need_unused("--amsgrad", c->amsgrad && k != DP_OPT_ADAM && k != DP_OPT_ADAMW, k,
                       "adam and adamw"));
    switch (k) {
    case DP_OPT_SGD:
        DP_TRY(need_unit("--momentum", c->momentum, true));
        DP_TRY(need_unit("--dampening", c->dampening, false));
        if (c->nesterov && !(c->momentum > 0.0f && c->dampening == 0.0f)) {
            DP_FAIL(DP_EINVAL, "--nesterov needs --momentum > 0 and --dampening 0 (got "
                               "momentum %g, dampening %g)", c->momentum, c->dampening);
        }
        break;
    case DP_OPT_ADAGRAD:
        DP_TRY(need_ge0("--lr-decay", c->lr_decay));
        DP_TRY(need_ge0("--initial-accumulator-value", c->initial_accumulator_value));
        DP_TRY(need_gt0("--eps", c->eps, EPS_WHY));
        break;
    case DP_OPT_RMSPROP:
        DP_TRY(need_unit("--alpha", c->alpha, true));
        DP_TRY(need_unit("--momentum", c->momentum, true));
        DP_TRY(need_gt0("--eps", c->eps, EPS_WHY));
        break;
    case DP_OPT_ADADELTA:
        DP_TRY(need_unit("--rho", c->rho, false));
        DP_TRY(need_gt0("--eps", c->eps, EPS_WHY));
        break;
    case DP_OPT_NADAM:
        DP_TRY(need_ge0("--momentum-decay", c->momentum_decay));
        /* fall through */
    case DP_OPT_ADAM:
    case DP_OPT_ADAMW:
    case DP_OPT_ADAMAX:
        DP_TRY(need_unit("--beta1", c->beta1, true));
        DP_TRY(need_unit("--beta2", c->beta2, true));
        DP_TRY(need_gt0("--eps", c->eps, EPS_WHY));
        break;
    case DP_OPT_COUNT:
        break;
    }
done:
    return rc;
}

/* The slot names of c in order; returns their number. */
static int slot_list(const dp_optim_cfg *c, const char *names[DP_OPTIM_MAX_SLOTS])
{
    int k = 0;
    switch (c->kind) {
    case DP_OPT_SGD:
        if (c->momentum != 0.0f) {
            names[k++] = "momentum_buffer";
        }
        break;
    case DP_OPT_ADAGRAD:
        names[k++] = "sum";
        break;
    case DP_OPT_RMSPROP:
        names[k++] = "square_avg";
        if (c->momentum > 0.0f) {
            names[k++] = "momentum_buffer";
        }
        if (c->centered) {
            names[k++] = "grad_avg";
        }
        break;
    case DP_OPT_ADADELTA:
        names[k++] = "square_avg";
        names[k++] = "acc_delta";
        break;
    case DP_OPT_ADAM:
    case DP_OPT_ADAMW:
        names[k++] = "exp_avg";
        names[k++] = "exp_avg_sq";
        if (c->amsgrad) {
            names[k++] = "max_exp_avg_sq";
        }
        break;
    case DP_OPT_NADAM:
        names[k++] = "exp_avg";
        names[k++] = "exp_avg_sq";
        break;
    case DP_OPT_ADAMAX:
        names[k++] = "exp_avg";
        names[k++] = "exp_inf";
        break;
    case DP_OPT_COUNT:
        break;
    }
    return k;
}

int dp_optim_n_slots(const dp_optim_cfg *c)
{
    const char *names[DP_OPTIM_MAX_SLOTS];
    return slot_list(c, names);
}

const char *dp_optim_slot_name(const dp_optim_cfg *c, int i)
{
    const char *names[DP_OPTIM_MAX_SLOTS];
    int k = slot_list(c, names);
    return (i >= 0 && i < k) ? names[i] : NULL;
}

void dp_optim_init_slots(const dp_optim_cfg *c, size_t n, float *const *slots)
{
    const int k = dp_optim_n_slots(c);
    for (int s = 0; s < k; s++) {
        const float v = (c->kind == DP_OPT_ADAGRAD) ? c->initial_accumulator_value : 0.0f;
        for (size_t i = 0; i < n; i++) {
            slots[s][i] = v;
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * Update kernels: one per optimizer, float per element. */

/* max(a, b) that propagates a NaN in b (torch.maximum propagates NaN; fmaxf would drop it). */
static inline float max_nan(float a, float b) { return (a >= b) ? a : b; }

static void sgd_update(float lr, float mu, float dampening, float wd, bool nesterov, long t,
                       size_t n, float *p, const float *g, float *buf)
{
    const float damp = 1.0f - dampening;
    for (size_t i = 0; i < n; i++) {
        float d = g[i] + wd * p[i];
        if (mu != 0.0f) {
            buf[i] = (t <= 1) ? d : mu * buf[i] + damp * d;
            d = nesterov ? d + mu * buf[i] : buf[i];
        }
        p[i] -= lr * d;
    }
}


static void adagrad_update(const dp_optim_cfg *c, float lr, long t, size_t n, float *p,
                           const float *g, float *sum)
{
    const float clr = (float)((double)lr / (1.0 + (double)(t - 1) * (double)c->lr_decay));
    const float wd = c->weight_decay, eps = c->eps;
    for (size_t i = 0; i < n; i++) {
        const float d = g[i] + wd * p[i];
        sum[i] += d * d;
        p[i] -= clr * (d / (sqrtf(sum[i]) + eps));
    }
}

static void rmsprop_update(const dp_optim_cfg *c, float lr, size_t n, float *p, const float *g,
                           float *const *slots)
{
    const float a = c->alpha, a1 = 1.0f - c->alpha, mu = c->momentum;
    const float wd = c->weight_decay, eps = c->eps;
    float *v = slots[0];
    float *buf = (mu > 0.0f) ? slots[1] : NULL;
    float *ga = c->centered ? slots[(mu > 0.0f) ? 2 : 1] : NULL;
    for (size_t i = 0; i < n; i++) {
        const float d = g[i] + wd * p[i];
        v[i] = a * v[i] + a1 * (d * d);
        float avg;
        if (ga) {
            ga[i] = a * ga[i] + a1 * d;
            avg = sqrtf(v[i] - ga[i] * ga[i]) + eps;
        } else {
            avg = sqrtf(v[i]) + eps;
        }
        if (buf) {
            buf[i] = mu * buf[i] + d / avg;
            p[i] -= lr * buf[i];
        } else {
            p[i] -= lr * (d / avg);
        }
    }
}

static void adadelta_update(const dp_optim_cfg *c, float lr, size_t n, float *p, const float *g,
                            float *v, float *u)
{
    const float rho = c->rho, rho1 = 1.0f - c->rho, wd = c->weight_decay, eps = c->eps;
    for (size_t i = 0; i < n; i++) {
        const float d = g[i] + wd * p[i];
        v[i] = rho * v[i] + rho1 * (d * d);
        const float delta = sqrtf(u[i] + eps) / sqrtf(v[i] + eps) * d;
        u[i] = rho * u[i] + rho1 * (delta * delta);
        p[i] -= lr * delta;
    }
}

/* Adam and AdamW (decoupled != 0: p *= 1 - lr wd first and no L2 term). */
static void adam_update(const dp_optim_cfg *c, float lr, long t, bool decoupled, size_t n,
                        float *p, const float *g, float *const *slots)
{
    const float b1 = c->beta1, b2 = c->beta2, b1c = 1.0f - b1, b2c = 1.0f - b2, eps = c->eps;
    const float step_size = (float)((double)lr / (1.0 - pow((double)b1, (double)t)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow((double)b2, (double)t));
    const float l2 = decoupled ? 0.0f : c->weight_decay;
    const float shrink = (float)(1.0 - (double)lr * (double)c->weight_decay);
    float *m = slots[0], *v = slots[1], *vmax = c->amsgrad ? slots[2] : NULL;
    if (!decoupled && !vmax) {
        /* Adam itself, without branches, so that the compiler vectorizes it (with optim.c's
         * -fno-math-errno, sqrtf is the sqrtps instruction); the same operations in the same
         * order as below, each correctly rounded: the same bits. */
        for (size_t i = 0; i < n; i++) {
            const float d = g[i] + l2 * p[i];
            m[i] = b1 * m[i] + b1c * d;
            v[i] = b2 * v[i] + b2c * (d * d);
            p[i] -= step_size * (m[i] / (sqrtf(v[i]) / bc2_sqrt + eps));
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (decoupled) {
            p[i] *= shrink;
        }
        const float d = g[i] + l2 * p[i];
        m[i] = b1 * m[i] + b1c * d;
        v[i] = b2 * v[i] + b2c * (d * d);
        float vv = v[i];
        if (vmax) {
            vmax[i] = max_nan(vmax[i], v[i]);
            vv = vmax[i];
        }
        p[i] -= step_size * (m[i] / (sqrtf(vv) / bc2_sqrt + eps));
    }
}

/* mu_t of NAdam's momentum schedule. */
static double nadam_mu(double beta1, double psi, long t)
{
    return beta1 * (1.0 - 0.5 * pow(0.96, (double)t * psi));
}

static void nadam_update(const dp_optim_cfg *c, float lr, long t, size_t n, float *p,
                         const float *g, float *const *slots, double *scalar)
{
    const double b1d = c->beta1, psi = c->momentum_decay;
    const double mu = nadam_mu(b1d, psi, t), mu_next = nadam_mu(b1d, psi, t + 1);
    double prod;
    if (scalar) {
        *scalar *= mu;
        prod = *scalar;
    } else {
        prod = 1.0;
        for (long s = 1; s <= t; s++) {
            prod *= nadam_mu(b1d, psi, s);
        }
    }
    const float cg = (float)((double)lr * (1.0 - mu) / (1.0 - prod));
    const float cm = (float)((double)lr * mu_next / (1.0 - prod * mu_next));
    const float bc2 = (float)(1.0 - pow((double)c->beta2, (double)t));
    const float b1 = c->beta1, b2 = c->beta2, b1c = 1.0f - b1, b2c = 1.0f - b2;
    const float wd = c->weight_decay, eps = c->eps;
    float *m = slots[0], *v = slots[1];
    for (size_t i = 0; i < n; i++) {
        const float d = g[i] + wd * p[i];
        m[i] = b1 * m[i] + b1c * d;
        v[i] = b2 * v[i] + b2c * (d * d);
        const float denom = sqrtf(v[i] / bc2) + eps;
        p[i] -= cg * (d / denom);
        p[i] -= cm * (m[i] / denom);
    }
}

static void adamax_update(const dp_optim_cfg *c, float lr, long t, size_t n, float *p,
                          const float *g, float *m, float *u)
{
    const float b1 = c->beta1, b2 = c->beta2, b1c = 1.0f - b1;
    const float wd = c->weight_decay, eps = c->eps;
    const float clr = (float)((double)lr / (1.0 - pow((double)b1, (double)t)));
    for (size_t i = 0; i < n; i++) {
        const float d = g[i] + wd * p[i];
        m[i] = b1 * m[i] + b1c * d;
        u[i] = max_nan(b2 * u[i], fabsf(d) + eps);
        p[i] -= clr * (m[i] / u[i]);
    }
}

void dp_optim_step(const dp_optim_cfg *c, float lr, long t, size_t n, float *p, const float *g,
                   float *const *slots, double *scalar)
{
    switch (c->kind) {
    case DP_OPT_SGD:
        sgd_update(lr, c->momentum, c->dampening, c->weight_decay, c->nesterov, t, n, p, g,
                   c->momentum != 0.0f ? slots[0] : NULL);
        break;
    case DP_OPT_ADAGRAD: adagrad_update(c, lr, t, n, p, g, slots[0]); break;
    case DP_OPT_RMSPROP: rmsprop_update(c, lr, n, p, g, slots); break;
    case DP_OPT_ADADELTA: adadelta_update(c, lr, n, p, g, slots[0], slots[1]); break;
    case DP_OPT_ADAM: adam_update(c, lr, t, false, n, p, g, slots); break;
    case DP_OPT_ADAMW: adam_update(c, lr, t, true, n, p, g, slots); break;
    case DP_OPT_NADAM: nadam_update(c, lr, t, n, p, g, slots, scalar); break;
    case DP_OPT_ADAMAX: adamax_update(c, lr, t, n, p, g, slots[0], slots[1]); break;
    case DP_OPT_COUNT: break;
    }
}

/* ---------------------------------------------------------------------------------------
 * Schedules */

static const char *const sched_names[DP_SCHED_COUNT] = {
    [DP_SCHED_CONSTANT] = "constant",   [DP_SCHED_COSINE] = "cosine",
    [DP_SCHED_STEP] = "step",           [DP_SCHED_MULTISTEP] = "multistep",
    [DP_SCHED_EXPONENTIAL] = "exponential",
};

const char *dp_sched_name(dp_sched s)
{
    return ((int)s >= 0 && s < DP_SCHED_COUNT) ? sched_names[s] : "?";
}

int dp_sched_parse(const char *s)
{
    return dp_name_index(sched_names, DP_SCHED_COUNT, s);
}

int dp_sched_check(const dp_sched_cfg *s)
{
    int rc = DP_OK;
    if ((int)s->kind < 0 || s->kind >= DP_SCHED_COUNT) {
        DP_FAIL(DP_EINVAL, "--lr-schedule: unknown schedule number %d", (int)s->kind);
    }
    DP_TRY(need_gt0("--lr", s->base_lr, ""));
    if (s->kind == DP_SCHED_STEP || s->kind == DP_SCHED_MULTISTEP ||
        s->kind == DP_SCHED_EXPONENTIAL) {
        DP_TRY(need_gt0("--gamma", s->gamma, ""));
    }
    if (s->kind == DP_SCHED_STEP && s->step_size < 1) {
        DP_FAIL(DP_EINVAL, "--step-size %d: must be >= 1 (epochs per decay)", s->step_size);
    }
    if (s->kind == DP_SCHED_MULTISTEP) {
        if (s->n_milestones < 1 || s->n_milestones > DP_SCHED_MAX_MILESTONES) {
            DP_FAIL(DP_EINVAL, "--milestones: give 1 to %d epochs (got %d)",
                    DP_SCHED_MAX_MILESTONES, s->n_milestones);
        }
        for (int i = 0; i < s->n_milestones; i++) {
            if (s->milestones[i] < 1) {
                DP_FAIL(DP_EINVAL, "--milestones: epoch %d: must be >= 1", s->milestones[i]);
            }
            if (i > 0 && s->milestones[i] <= s->milestones[i - 1]) {
                DP_FAIL(DP_EINVAL, "--milestones: %d after %d: must be strictly increasing",
                        s->milestones[i], s->milestones[i - 1]);
            }
        }
    }
    if (s->warmup_steps < 0) {
        DP_FAIL(DP_EINVAL, "--warmup-steps %ld: must be >= 0", s->warmup_steps);
    }
    if (s->warmup_steps > 0 &&
        !(s->warmup_start_factor > 0.0f && s->warmup_start_factor <= 1.0f)) {
        DP_FAIL(DP_EINVAL, "--warmup-start-factor %g: must be in (0, 1]",
                s->warmup_start_factor);
    }
done:
    return rc;
}

float dp_sched_lr_at(const dp_sched_cfg *s, long step, long steps_per_epoch, long total_steps)
{
    if (step < 0) {
        step = 0;
    }
    const long epoch = step / (steps_per_epoch >= 1 ? steps_per_epoch : 1);
    const double gamma = s->gamma;
    double lr = s->base_lr;
    switch (s->kind) {
    case DP_SCHED_COSINE:
        lr = (total_steps <= 0 || step >= total_steps)
                 ? 0.0
                 : lr * 0.5 * (1.0 + cos(M_PI * (double)step / (double)total_steps));
        break;
    case DP_SCHED_STEP:
        if (s->step_size >= 1) {
            lr *= pow(gamma, (double)(epoch / s->step_size));
        }
        break;
    case DP_SCHED_MULTISTEP: {
        int k = 0;
        for (int i = 0; i < s->n_milestones && i < DP_SCHED_MAX_MILESTONES; i++) {
            k += (s->milestones[i] <= epoch);
        }
        lr *= pow(gamma, (double)k);
        break;
    }
    case DP_SCHED_EXPONENTIAL:
        lr *= pow(gamma, (double)epoch);
        break;
    case DP_SCHED_CONSTANT:
    case DP_SCHED_COUNT:
        break;
    }
    if (step < s->warmup_steps) {
        const double f = s->warmup_start_factor;
        lr *= f + (1.0 - f) * (double)step / (double)s->warmup_steps;
    }
    return (float)lr;
}

