/* test_optim_rules.c: unit tests of dp_optim_step for every optimizer against an independent
 * double-precision reference written from torch.optim's documented pseudo-code (suite
 * optim_ref), and of the optimizer API around it: names, defaults, checks, state slots (suite
 * optim_api). SGD worked by hand and the learning-rate schedules: test_optim.c. */
#include <criterion/criterion.h>

#include "dptrain/err.h"
#include "dptrain/optim.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------
 * Reference. Straight from the "Algorithm" boxes of the torch.optim docs (SGD, Adagrad,
 * RMSprop, Adadelta, Adam, AdamW, NAdam, Adamax), in double, one element at a time. It
 * shares nothing with src/core/optim.c: it reads the hyperparameters as doubles and keeps
 * its state under torch's names. */

enum { N = 3 };

typedef struct {
    double wd, momentum, dampening, alpha, rho, lr_decay, iav, beta1, beta2, eps, psi;
    bool nesterov, centered, amsgrad;
} ref_hp;

typedef struct {
    double momentum_buffer[N], sum[N], square_avg[N], grad_avg[N], acc_delta[N];
    double exp_avg[N], exp_avg_sq[N], max_exp_avg_sq[N], exp_inf[N];
    double mu_product;
} ref_state;

static ref_hp ref_hp_from(const dp_optim_cfg *c)
{
    return (ref_hp){.wd = c->weight_decay, .momentum = c->momentum, .dampening = c->dampening,
                    .alpha = c->alpha, .rho = c->rho, .lr_decay = c->lr_decay,
                    .iav = c->initial_accumulator_value, .beta1 = c->beta1, .beta2 = c->beta2,
                    .eps = c->eps, .psi = c->momentum_decay, .nesterov = c->nesterov,
                    .centered = c->centered, .amsgrad = c->amsgrad};
}

/* State before step 1: zero, Adagrad's sum = initial_accumulator_value, mu_product = 1. */
static void ref_init(const ref_hp *h, ref_state *s)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < N; i++) {
        s->sum[i] = h->iav;
    }
    s->mu_product = 1.0;
}

/* The reference state array torch calls `name`, or NULL. */
static double *ref_slot(ref_state *s, const char *name)
{
    static const struct { const char *name; size_t off; } tab[] = {
        {"momentum_buffer", offsetof(ref_state, momentum_buffer)},
        {"sum", offsetof(ref_state, sum)},
        {"square_avg", offsetof(ref_state, square_avg)},
        {"grad_avg", offsetof(ref_state, grad_avg)},
        {"acc_delta", offsetof(ref_state, acc_delta)},
        {"exp_avg", offsetof(ref_state, exp_avg)},
        {"exp_avg_sq", offsetof(ref_state, exp_avg_sq)},
        {"max_exp_avg_sq", offsetof(ref_state, max_exp_avg_sq)},
        {"exp_inf", offsetof(ref_state, exp_inf)},
    };
    for (size_t k = 0; name && k < sizeof tab / sizeof tab[0]; k++) {
        if (strcmp(tab[k].name, name) == 0) {
            return (double *)((char *)s + tab[k].off);
        }
    }
    return NULL;
}

/* SGD: g += wd p; if mu != 0: b = (t > 1) ? mu b + (1 - tau) g : g;
 * g = nesterov ? g + mu b : b; p -= lr g. */
static void ref_sgd(const ref_hp *h, int t, double lr, double *p, const double *grad,
                    ref_state *s)
{
    for (int i = 0; i < N; i++) {
        double g = grad[i] + h->wd * p[i];
        if (h->momentum != 0.0) {
            double *b = &s->momentum_buffer[i];
            *b = (t > 1) ? h->momentum * *b + (1.0 - h->dampening) * g : g;
            g = h->nesterov ? g + h->momentum * *b : *b;
        }
        p[i] = p[i] - lr * g;
    }
}

/* Adagrad: gamma~ = gamma / (1 + (t - 1) eta); g += wd p; state_sum += g^2;
 * p -= gamma~ g / (sqrt(state_sum) + eps). */
static void ref_adagrad(const ref_hp *h, int t, double lr, double *p, const double *grad,
                        ref_state *s)
{
    const double clr = lr / (1.0 + (t - 1) * h->lr_decay);
    for (int i = 0; i < N; i++) {
        const double g = grad[i] + h->wd * p[i];
        s->sum[i] += g * g;
        p[i] = p[i] - clr * g / (sqrt(s->sum[i]) + h->eps);
    }
}

/* RMSprop: g += wd p; v = alpha v + (1 - alpha) g^2; v~ = v;
 * centered: g_ave = alpha g_ave + (1 - alpha) g; v~ = v~ - g_ave^2;
 * mu > 0: b = mu b + g / (sqrt(v~) + eps); p -= lr b; else p -= lr g / (sqrt(v~) + eps). */
static void ref_rmsprop(const ref_hp *h, double lr, double *p, const double *grad,
                        ref_state *s)
{
    const double a = h->alpha;
    for (int i = 0; i < N; i++) {
        const double g = grad[i] + h->wd * p[i];
        s->square_avg[i] = a * s->square_avg[i] + (1.0 - a) * g * g;
        double vt = s->square_avg[i];
        if (h->centered) {
            s->grad_avg[i] = a * s->grad_avg[i] + (1.0 - a) * g;
            vt = vt - s->grad_avg[i] * s->grad_avg[i];
        }
        if (h->momentum > 0.0) {
            s->momentum_buffer[i] = h->momentum * s->momentum_buffer[i] + g / (sqrt(vt) + h->eps);
            p[i] = p[i] - lr * s->momentum_buffer[i];
        } else {
            p[i] = p[i] - lr * g / (sqrt(vt) + h->eps);
        }
    }
}

/* Adadelta: g += wd p; v = rho v + (1 - rho) g^2; dx = sqrt(u + eps) / sqrt(v + eps) g;
 * u = rho u + (1 - rho) dx^2; p -= lr dx. */
static void ref_adadelta(const ref_hp *h, double lr, double *p, const double *grad,
                         ref_state *s)
{
    const double rho = h->rho;
    for (int i = 0; i < N; i++) {
        const double g = grad[i] + h->wd * p[i];
        s->square_avg[i] = rho * s->square_avg[i] + (1.0 - rho) * g * g;
        const double dx = sqrt(s->acc_delta[i] + h->eps) / sqrt(s->square_avg[i] + h->eps) * g;
        s->acc_delta[i] = rho * s->acc_delta[i] + (1.0 - rho) * dx * dx;
        p[i] = p[i] - lr * dx;
    }
}

/* Adam (decoupled = false): g += wd p.  AdamW (decoupled = true): p = p - lr wd p.
 * m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; m^ = m / (1 - b1^t);
 * amsgrad: vmax = max(vmax, v), v^ = vmax / (1 - b2^t); else v^ = v / (1 - b2^t);
 * p -= lr m^ / (sqrt(v^) + eps). */
static void ref_adam(const ref_hp *h, bool decoupled, int t, double lr, double *p,
                     const double *grad, ref_state *s)
{
    for (int i = 0; i < N; i++) {
        double g = grad[i];
        if (decoupled) {
            p[i] = p[i] - lr * h->wd * p[i];
        } else {
            g += h->wd * p[i];
        }
        s->exp_avg[i] = h->beta1 * s->exp_avg[i] + (1.0 - h->beta1) * g;
        s->exp_avg_sq[i] = h->beta2 * s->exp_avg_sq[i] + (1.0 - h->beta2) * g * g;
        const double mhat = s->exp_avg[i] / (1.0 - pow(h->beta1, t));
        double vhat;
        if (h->amsgrad) {
            s->max_exp_avg_sq[i] = fmax(s->max_exp_avg_sq[i], s->exp_avg_sq[i]);
            vhat = s->max_exp_avg_sq[i] / (1.0 - pow(h->beta2, t));
        } else {
            vhat = s->exp_avg_sq[i] / (1.0 - pow(h->beta2, t));
        }
        p[i] = p[i] - lr * mhat / (sqrt(vhat) + h->eps);
    }
}

/* NAdam: g += wd p; mu_t = b1 (1 - 0.5 0.96^(t psi)); mu_{t+1} = b1 (1 - 0.5 0.96^((t+1) psi));
 * m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
 * m^ = mu_{t+1} m / (1 - prod_{i<=t+1} mu_i) + (1 - mu_t) g / (1 - prod_{i<=t} mu_i);
 * v^ = v / (1 - b2^t); p -= lr m^ / (sqrt(v^) + eps). */
static void ref_nadam(const ref_hp *h, int t, double lr, double *p, const double *grad,
                      ref_state *s)
{
    const double mu = h->beta1 * (1.0 - 0.5 * pow(0.96, t * h->psi));
    const double mu_next = h->beta1 * (1.0 - 0.5 * pow(0.96, (t + 1) * h->psi));
    s->mu_product *= mu; /* prod_{i <= t} mu_i */
    for (int i = 0; i < N; i++) {
        const double g = grad[i] + h->wd * p[i];
        s->exp_avg[i] = h->beta1 * s->exp_avg[i] + (1.0 - h->beta1) * g;
        s->exp_avg_sq[i] = h->beta2 * s->exp_avg_sq[i] + (1.0 - h->beta2) * g * g;
        const double mhat = mu_next * s->exp_avg[i] / (1.0 - s->mu_product * mu_next) +
                            (1.0 - mu) * g / (1.0 - s->mu_product);
        const double vhat = s->exp_avg_sq[i] / (1.0 - pow(h->beta2, t));
        p[i] = p[i] - lr * mhat / (sqrt(vhat) + h->eps);
    }
}

/* Adamax: g += wd p; m = b1 m + (1 - b1) g; u = max(b2 u, |g| + eps);
 * p -= lr m / ((1 - b1^t) u). */
static void ref_adamax(const ref_hp *h, int t, double lr, double *p, const double *grad,
                       ref_state *s)
{
    for (int i = 0; i < N; i++) {
        const double g = grad[i] + h->wd * p[i];
        s->exp_avg[i] = h->beta1 * s->exp_avg[i] + (1.0 - h->beta1) * g;
        s->exp_inf[i] = fmax(h->beta2 * s->exp_inf[i], fabs(g) + h->eps);
        p[i] = p[i] - lr * s->exp_avg[i] / ((1.0 - pow(h->beta1, t)) * s->exp_inf[i]);
    }
}

static void ref_step(dp_optim_kind k, const ref_hp *h, int t, double lr, double *p,
                     const double *g, ref_state *s)
{
    switch (k) {
    case DP_OPT_SGD: ref_sgd(h, t, lr, p, g, s); break;
    case DP_OPT_ADAGRAD: ref_adagrad(h, t, lr, p, g, s); break;
    case DP_OPT_RMSPROP: ref_rmsprop(h, lr, p, g, s); break;
    case DP_OPT_ADADELTA: ref_adadelta(h, lr, p, g, s); break;
    case DP_OPT_ADAM: ref_adam(h, false, t, lr, p, g, s); break;
    case DP_OPT_ADAMW: ref_adam(h, true, t, lr, p, g, s); break;
    case DP_OPT_NADAM: ref_nadam(h, t, lr, p, g, s); break;
    case DP_OPT_ADAMAX: ref_adamax(h, t, lr, p, g, s); break;
    default: cr_assert_fail("reference has no optimizer %d", (int)k);
    }
}

/* ---------------------------------------------------------------------------------------
 * Runner: three steps from P0 with gradients G, then compare p, every state slot (by its
 * torch name) and NAdam's mu_product with the reference after each step. */

static const float P0[N] = {1.0f, -2.0f, 0.5f};
/* Magnitudes fall from step 1 to 2 in element 1 so that AMSGrad's max and Adamax's
 * max(beta2 u, |g| + eps) each take both branches; g3[2] = 0 exercises a zero gradient. */
static const float G[3][N] = {{0.5f, -1.0f, 2.0f}, {0.1f, 0.2f, -1.0f}, {-0.3f, 0.4f, 0.0f}};
/* Learning rate of step t as a fraction of the base, for cases that vary it (a schedule). */
static const double LR_SCALE[3] = {1.0, 0.5, 0.25};
#define SENTINEL 1234.5f

/* Agreement of a float result with the double reference: 1e-6 relative to the largest
 * magnitude the same array has held so far in the run (`scale`, a max-norm relative error).
 * Float arithmetic leaves a few ulps (~1e-7) of the terms that made a value, and a value can
 * be a difference of larger terms: RMSprop's momentum buffer b = mu b + g / avg falls from
 * 3.3 to 0.26 at step 2 of the centered case, so it carries an ulp of 3.3. The largest
 * disagreement seen is 2.2e-7 of scale; each of 36 deliberate one-line bugs in optim.c
 * (bias corrections, eps placement, AMSGrad's max, NAdam's mu terms, ...) fails some case. */
#define REL_TOL 1e-6

static bool close_rel(double got, double want, double scale)
{
    return fabs(got - want) <= REL_TOL * fmax(fabs(want), scale) + 1e-15;
}

/* scale = max(scale, max_i |x_i|) */
static void track_max(double *scale, const double *x, int n)
{
    for (int i = 0; i < n; i++) {
        *scale = fmax(*scale, fabs(x[i]));
    }
}

/* ours: what dp_optim_step gets; ref: the hyperparameters the reference uses (the same
 * numbers, written independently for the default cases). */
static void run_case2(const dp_optim_cfg *ours, const dp_optim_cfg *ref, bool vary_lr,
                      const char *what)
{
    dp_optim_cfg c = *ours;
    const ref_hp h = ref_hp_from(ref);
    const int k = dp_optim_n_slots(&c);
    cr_assert(k >= 0 && k <= DP_OPTIM_MAX_SLOTS, "%s: %d slots", what, k);

    float p[N + 1], g[N + 1], mem[DP_OPTIM_MAX_SLOTS][N + 1];
    float *slots[DP_OPTIM_MAX_SLOTS] = {mem[0], mem[1], mem[2]};
    for (int s = 0; s < DP_OPTIM_MAX_SLOTS; s++) {
        for (int i = 0; i < N; i++) {
            mem[s][i] = 77.0f; /* stale state: init_slots must overwrite it */
        }
        mem[s][N] = SENTINEL;
    }
    dp_optim_init_slots(&c, N, slots);
    double rp[N];
    ref_state rs;
    ref_init(&h, &rs);
    for (int i = 0; i < N; i++) {
        p[i] = P0[i];
        rp[i] = P0[i];
    }
    p[N] = g[N] = SENTINEL;
    double mu_product = 1.0;
    double p_scale = 0.0, slot_scale[DP_OPTIM_MAX_SLOTS] = {0.0};
    const float base_lr = c.lr;
    c.lr = 1e3f; /* dp_optim_step must use its lr argument, never c->lr */

    for (int t = 1; t <= 3; t++) {
        const float lr = (float)(base_lr * (vary_lr ? LR_SCALE[t - 1] : 1.0));
        double gd[N];
        for (int i = 0; i < N; i++) {
            g[i] = G[t - 1][i];
            gd[i] = G[t - 1][i];
        }
        dp_optim_step(&c, lr, t, N, p, g, slots, &mu_product);
        ref_step(ref->kind, &h, t, lr, rp, gd, &rs);
        track_max(&p_scale, rp, N);

        for (int i = 0; i < N; i++) {
            cr_assert(close_rel(p[i], rp[i], p_scale), "%s: step %d p[%d] = %.9g, reference %.9g",
                      what, t, i, p[i], rp[i]);
            cr_assert_eq(g[i], G[t - 1][i], "%s: step %d wrote to g[%d]", what, t, i);
        }
        for (int s = 0; s < k; s++) {
            const char *name = dp_optim_slot_name(&c, s);
            double *want = ref_slot(&rs, name);
            cr_assert_not_null(want, "%s: slot %d is named '%s', not a torch state name",
                               what, s, name ? name : "(null)");
            track_max(&slot_scale[s], want, N);
            for (int i = 0; i < N; i++) {
                cr_assert(close_rel(slots[s][i], want[i], slot_scale[s]),
                          "%s: step %d %s[%d] = %.9g, reference %.9g", what, t, name, i,
                          slots[s][i], want[i]);
            }
        }
        if (ref->kind == DP_OPT_NADAM) {
            cr_assert(fabs(mu_product - rs.mu_product) <= 1e-12,
                      "%s: step %d mu_product = %.15g, reference %.15g", what, t, mu_product,
                      rs.mu_product);
        } else {
            cr_assert_eq(mu_product, 1.0, "%s: scalar state touched", what);
        }
        cr_assert_eq(p[N], SENTINEL, "%s: wrote p[n]", what);
        for (int s = 0; s < DP_OPTIM_MAX_SLOTS; s++) {
            cr_assert_eq(mem[s][N], SENTINEL, "%s: wrote slot %d past n", what, s);
        }
        for (int s = k; s < DP_OPTIM_MAX_SLOTS; s++) {
            for (int i = 0; i < N; i++) {
                cr_assert_eq(mem[s][i], 77.0f, "%s: touched unused slot %d", what, s);
            }
        }
    }
}

static void run_case(const dp_optim_cfg *c, bool vary_lr, const char *what)
{
    run_case2(c, c, vary_lr, what);
}

/* torch's defaults, written out here (not taken from dp_optim_defaults). */
static dp_optim_cfg torch_defaults(dp_optim_kind k)
{
    switch (k) {
    case DP_OPT_SGD: return (dp_optim_cfg){.kind = k, .lr = 1e-3f};
    case DP_OPT_ADAGRAD: return (dp_optim_cfg){.kind = k, .lr = 1e-2f, .eps = 1e-10f};
    case DP_OPT_RMSPROP:
        return (dp_optim_cfg){.kind = k, .lr = 1e-2f, .alpha = 0.99f, .eps = 1e-8f};
    case DP_OPT_ADADELTA: return (dp_optim_cfg){.kind = k, .lr = 1.0f, .rho = 0.9f, .eps = 1e-6f};
    case DP_OPT_ADAM:
        return (dp_optim_cfg){.kind = k, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    case DP_OPT_ADAMW:
        return (dp_optim_cfg){.kind = k, .lr = 1e-3f, .weight_decay = 1e-2f, .beta1 = 0.9f,
                              .beta2 = 0.999f, .eps = 1e-8f};
    case DP_OPT_NADAM:
        return (dp_optim_cfg){.kind = k, .lr = 2e-3f, .beta1 = 0.9f, .beta2 = 0.999f,
                              .eps = 1e-8f, .momentum_decay = 4e-3f};
    case DP_OPT_ADAMAX:
        return (dp_optim_cfg){.kind = k, .lr = 2e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    default: break;
    }
    cr_assert_fail("no torch defaults for %d", (int)k);
    return (dp_optim_cfg){0};
}

/* Runs kind k with dp_optim_defaults against the reference with torch_defaults. */
static void run_defaults(dp_optim_kind k)
{
    dp_optim_cfg ours, ref = torch_defaults(k);
    dp_optim_defaults(k, &ours);
    char what[64];
    snprintf(what, sizeof what, "%s defaults", dp_optim_name(k));
    run_case2(&ours, &ref, false, what);
}

/* ---------------------------------------------------------------------------------------
 * 9. Every optimizer: defaults, then non-default hyperparameters (with a learning rate
 * that changes every step, as under a schedule). */

TestSuite(optim_ref);

Test(optim_ref, sgd)
{
    run_defaults(DP_OPT_SGD);
    run_case(&(dp_optim_cfg){.kind = DP_OPT_SGD, .lr = 0.1f, .momentum = 0.9f,
                             .dampening = 0.5f, .weight_decay = 0.1f},
             true, "sgd momentum 0.9 dampening 0.5 wd 0.1");
    run_case(&(dp_optim_cfg){.kind = DP_OPT_SGD, .lr = 0.1f, .momentum = 0.8f, .nesterov = true,
                             .weight_decay = 0.01f},
             true, "sgd nesterov 0.8 wd 0.01");
}

Test(optim_ref, adagrad)
{
    run_defaults(DP_OPT_ADAGRAD);
    run_case(&(dp_optim_cfg){.kind = DP_OPT_ADAGRAD, .lr = 0.1f, .lr_decay = 0.5f,
                             .initial_accumulator_value = 0.25f, .eps = 1e-6f,
                             .weight_decay = 0.1f},
             true, "adagrad lr_decay 0.5 iav 0.25 eps 1e-6 wd 0.1");
    /* A large eps pins where eps goes (sqrt(sum) + eps, not sqrt(sum + eps)). */
    run_case(&(dp_optim_cfg){.kind = DP_OPT_ADAGRAD, .lr = 0.1f, .eps = 0.5f}, false,
             "adagrad eps 0.5");
}

Test(optim_ref, rmsprop)
{
    run_defaults(DP_OPT_RMSPROP);
    run_case(&(dp_optim_cfg){.kind = DP_OPT_RMSPROP, .lr = 0.01f, .alpha = 0.9f, .eps = 1e-6f,
                             .centered = true, .momentum = 0.5f, .weight_decay = 0.1f},
             true, "rmsprop centered momentum 0.5 alpha 0.9 wd 0.1");
    run_case(&(dp_optim_cfg){.kind = DP_OPT_RMSPROP, .lr = 0.01f, .alpha = 0.9f, .eps = 1e-6f,
                             .centered = true},
             false, "rmsprop centered");
    run_case(&(dp_optim_cfg){.kind = DP_OPT_RMSPROP, .lr = 0.01f, .alpha = 0.99f, .eps = 1e-8f,
                             .momentum = 0.9f},
             false, "rmsprop momentum 0.9");
    run_case(&(dp_optim_cfg){.kind = DP_OPT_RMSPROP, .lr = 0.01f, .alpha = 0.9f, .eps = 0.1f,
                             .centered = true},
             false, "rmsprop centered eps 0.1");
}

Test(optim_ref, adadelta)
{
    run_defaults(DP_OPT_ADADELTA);
    run_case(&(dp_optim_cfg){.kind = DP_OPT_ADADELTA, .lr = 0.5f, .rho = 0.5f, .eps = 1e-4f,
                             .weight_decay = 0.1f},
             true, "adadelta rho 0.5 eps 1e-4 wd 0.1");
}

Test(optim_ref, adam)
{
    run_defaults(DP_OPT_ADAM);
    run_case(&(dp_optim_cfg){.kind = DP_OPT_ADAM, .lr = 0.01f, .beta1 = 0.8f, .beta2 = 0.9f,
                             .eps = 1e-6f, .weight_decay = 0.1f, .amsgrad = true},
             true, "adam betas (0.8, 0.9) eps 1e-6 wd 0.1 amsgrad");
    run_case(&(dp_optim_cfg){.kind = DP_OPT_ADAM, .lr = 0.01f, .beta1 = 0.8f, .beta2 = 0.9f,
                             .eps = 1e-6f, .weight_decay = 0.1f},
             true, "adam betas (0.8, 0.9) eps 1e-6 wd 0.1");
    run_case(&(dp_optim_cfg){.kind = DP_OPT_ADAM, .lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.999f,
                             .eps = 0.1f},
             false, "adam eps 0.1");
}

Test(optim_ref, adamw)
{
    run_defaults(DP_OPT_ADAMW);
    run_case(&(dp_optim_cfg){.kind = DP_OPT_ADAMW, .lr = 0.01f, .beta1 = 0.8f, .beta2 = 0.9f,
                             .eps = 1e-6f, .weight_decay = 0.5f, .amsgrad = true},
             true, "adamw betas (0.8, 0.9) eps 1e-6 wd 0.5 amsgrad");
    run_case(&(dp_optim_cfg){.kind = DP_OPT_ADAMW, .lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.999f,
                             .eps = 0.1f, .weight_decay = 0.01f},
             false, "adamw eps 0.1");
}

Test(optim_ref, nadam)
{
    run_defaults(DP_OPT_NADAM);
    run_case(&(dp_optim_cfg){.kind = DP_OPT_NADAM, .lr = 0.01f, .beta1 = 0.8f, .beta2 = 0.9f,
                             .eps = 1e-6f, .weight_decay = 0.1f, .momentum_decay = 0.01f},
             true, "nadam betas (0.8, 0.9) eps 1e-6 wd 0.1 momentum_decay 0.01");
    /* momentum_decay 1 makes mu_t and mu_{t+1} differ by ~2% (0.96^t vs 0.96^(t+1)), so the
     * two terms of m^ are told apart; eps 0.1 pins where eps goes. */
    run_case(&(dp_optim_cfg){.kind = DP_OPT_NADAM, .lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.999f,
                             .eps = 0.1f, .momentum_decay = 1.0f},
             true, "nadam momentum_decay 1 eps 0.1");
}

Test(optim_ref, adamax)
{
    run_defaults(DP_OPT_ADAMAX);
    run_case(&(dp_optim_cfg){.kind = DP_OPT_ADAMAX, .lr = 0.01f, .beta1 = 0.8f, .beta2 = 0.9f,
                             .eps = 1e-4f, .weight_decay = 0.1f},
             true, "adamax betas (0.8, 0.9) eps 1e-4 wd 0.1");
    run_case(&(dp_optim_cfg){.kind = DP_OPT_ADAMAX, .lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.999f,
                             .eps = 0.1f},
             false, "adamax eps 0.1");
}

/* The reference itself, checked at step 1 against closed forms worked by hand from the
 * docs (torch defaults, p0 = 1, g = -0.5, so g and |g| are exact):
 *   sgd      p1 = 1 - 1e-3 g                                     = 1.0005
 *   adagrad  sum = g^2, p1 = 1 - 1e-2 g / (|g| + 1e-10)           = 1.01 (to 2e-12)
 *   rmsprop  v = 0.01 g^2, p1 = 1 - 1e-2 g / (0.1 |g| + 1e-8)     = 1 + 0.1 / (1 + 2e-7)
 *   adadelta v = 0.1 g^2, dx = sqrt(1e-6) g / sqrt(0.025 + 1e-6)  p1 = 1 - dx
 *   adam     m^ = g, v^ = g^2, p1 = 1 - 1e-3 g / (|g| + 1e-8)     = 1 + 1e-3 / (1 + 2e-8)
 *   adamax   m^ = g, u = |g| + 1e-8, same as adam with lr 2e-3
 *   adamw    p1 = (1 - 1e-3 * 1e-2) - 1e-3 g / (|g| + 1e-8)
 * and that the AMSGrad case really takes the max (else it would test nothing). */
Test(optim_ref, reference_closed_forms)
{
    const double p0 = 1.0, g = -0.5;
    const double want[DP_OPT_COUNT] = {
        [DP_OPT_SGD] = 1.0005,
        [DP_OPT_ADAGRAD] = 1.0 + 1e-2 * 0.5 / (0.5 + 1e-10),
        [DP_OPT_RMSPROP] = 1.0 + 0.1 / (1.0 + 2e-7),
        [DP_OPT_ADADELTA] = 1.0 + 1e-3 * 0.5 / sqrt(0.025 + 1e-6),
        [DP_OPT_ADAM] = 1.0 + 1e-3 / (1.0 + 2e-8),
        [DP_OPT_ADAMW] = 1.0 - 1e-5 + 1e-3 / (1.0 + 2e-8),
        [DP_OPT_NADAM] = NAN,
        [DP_OPT_ADAMAX] = 1.0 + 2e-3 / (1.0 + 2e-8),
    };
    for (int k = 0; k < DP_OPT_COUNT; k++) {
        if (isnan(want[k])) {
            continue;
        }
        dp_optim_cfg c = torch_defaults(k);
        ref_hp h = ref_hp_from(&c);
        ref_state s;
        ref_init(&h, &s);
        double p[N] = {p0, p0, p0}, gg[N] = {g, g, g};
        ref_step(k, &h, 1, c.lr, p, gg, &s);
        /* 1e-7: the float-stored hyperparameters (1e-3f, 0.9f, ...) are within 3e-8. */
        cr_assert(fabs(p[0] - want[k]) <= 1e-7, "reference %s: p1 = %.12g, by hand %.12g",
                  dp_optim_name(k), p[0], want[k]);
    }
    /* NAdam, step 1 with momentum_decay 0 (mu_t = mu_{t+1} = 0.45 for beta1 0.9):
     * m^ = 0.45 * 0.1 g / (1 - 0.45^2) + 0.55 g / (1 - 0.45) = g (0.045 / 0.7975 + 1),
     * v^ = g^2, p1 = 1 - 2e-3 m^ / (|g| + 1e-8) = 1 + 2e-3 (0.045 / 0.7975 + 1) / (1 + 2e-8). */
    dp_optim_cfg c = torch_defaults(DP_OPT_NADAM);
    c.momentum_decay = 0.0f;
    ref_hp h = ref_hp_from(&c);
    ref_state s;
    ref_init(&h, &s);
    double p[N] = {p0, p0, p0}, gg[N] = {g, g, g};
    ref_step(DP_OPT_NADAM, &h, 1, c.lr, p, gg, &s);
    const double nadam = 1.0 + 2e-3 * (0.045 / 0.7975 + 1.0) / (1.0 + 2e-8);
    cr_assert(fabs(p[0] - nadam) <= 1e-7, "reference nadam: p1 = %.12g, by hand %.12g", p[0],
              nadam);

    /* AMSGrad case of Test(optim_ref, adam): element 1 has g = -1.2 then 0 (with wd 0.1), so
     * v falls and max_exp_avg_sq keeps step 1's value. */
    c = (dp_optim_cfg){.kind = DP_OPT_ADAM, .lr = 0.01f, .beta1 = 0.8f, .beta2 = 0.9f,
                       .eps = 1e-6f, .weight_decay = 0.1f, .amsgrad = true};
    h = ref_hp_from(&c);
    ref_init(&h, &s);
    double q[N] = {P0[0], P0[1], P0[2]};
    for (int t = 1; t <= 3; t++) {
        double gd[N] = {G[t - 1][0], G[t - 1][1], G[t - 1][2]};
        ref_step(DP_OPT_ADAM, &h, t, c.lr * LR_SCALE[t - 1], q, gd, &s);
    }
    cr_assert_gt(s.max_exp_avg_sq[1], s.exp_avg_sq[1] * 1.1, "amsgrad case never took the max");
}

Test(optim_ref, lr_argument_scales_sgd_exactly)
{
    /* Plain SGD, lr argument 0.5 while c->lr says 0.001: p = 2 - 0.5 * 1 = 1.5 exactly. */
    dp_optim_cfg c = {.kind = DP_OPT_SGD, .lr = 1e-3f};
    float p = 2.0f, g = 1.0f;
    dp_optim_step(&c, 0.5f, 1, 1, &p, &g, NULL, NULL);
    cr_assert_eq(p, 1.5f, "p = %.9g", p);
}

Test(optim_ref, nadam_without_scalar_recomputes_the_product)
{
    /* scalar == NULL: the product of mu_1..mu_t is recomputed from t; same result. */
    dp_optim_cfg c = {.kind = DP_OPT_NADAM, .lr = 0.01f, .beta1 = 0.8f, .beta2 = 0.9f,
                      .eps = 1e-6f, .momentum_decay = 0.01f};
    float pa[N], pb[N], ma[2][N] = {{0}}, mb[2][N] = {{0}};
    float *sa[2] = {ma[0], ma[1]}, *sb[2] = {mb[0], mb[1]};
    memcpy(pa, P0, sizeof pa);
    memcpy(pb, P0, sizeof pb);
    double prod = 1.0;
    for (int t = 1; t <= 3; t++) {
        dp_optim_step(&c, c.lr, t, N, pa, G[t - 1], sa, &prod);
        dp_optim_step(&c, c.lr, t, N, pb, G[t - 1], sb, NULL);
    }
    for (int i = 0; i < N; i++) {
        cr_assert(close_rel(pb[i], pa[i], 0.0), "p[%d]: %.9g without scalar, %.9g with", i, pb[i],
                  pa[i]);
    }
    /* prod_{t=1..3} 0.8 (1 - 0.5 0.96^(0.01 t)), with 0.8 and 0.01 as stored (float) */
    double want = 1.0;
    for (int t = 1; t <= 3; t++) {
        want *= (double)0.8f * (1.0 - 0.5 * pow(0.96, (double)0.01f * t));
    }
    cr_assert(fabs(prod - want) <= 1e-12, "mu_product %.15g, want %.15g", prod, want);
}

/* ---------------------------------------------------------------------------------------
 * 10. Optimizer API: names, defaults, slots, checks */

TestSuite(optim_api);

Test(optim_api, names)
{
    static const char *const want[DP_OPT_COUNT] = {"sgd",  "adagrad", "rmsprop", "adadelta",
                                                   "adam", "adamw",   "nadam",   "adamax"};
    for (int k = 0; k < DP_OPT_COUNT; k++) {
        cr_assert_str_eq(dp_optim_name(k), want[k]);
        cr_assert_eq(dp_optim_parse(want[k]), k, "parse(%s)", want[k]);
    }
    cr_assert_eq(dp_optim_parse("Adam"), -1);
    cr_assert_eq(dp_optim_parse("lamb"), -1);
    cr_assert_eq(dp_optim_parse(""), -1);
    cr_assert_eq(dp_optim_parse(NULL), -1);
    cr_assert_str_eq(dp_optim_name(DP_OPT_COUNT), "?");
}

Test(optim_api, defaults_are_torchs)
{
    for (int k = 0; k < DP_OPT_COUNT; k++) {
        dp_optim_cfg got, want = torch_defaults(k);
        memset(&got, 0x5a, sizeof got); /* every field must be written */
        dp_optim_defaults(k, &got);
        const char *n = dp_optim_name(k);
        cr_assert_eq(got.kind, want.kind, "%s kind", n);
        cr_assert_eq(got.lr, want.lr, "%s lr %g", n, got.lr);
        cr_assert_eq(got.weight_decay, want.weight_decay, "%s weight_decay %g", n,
                     got.weight_decay);
        cr_assert_eq(got.momentum, want.momentum, "%s momentum", n);
        cr_assert_eq(got.dampening, want.dampening, "%s dampening", n);
        cr_assert_eq(got.nesterov, want.nesterov, "%s nesterov", n);
        cr_assert_eq(got.alpha, want.alpha, "%s alpha %g", n, got.alpha);
        cr_assert_eq(got.centered, want.centered, "%s centered", n);
        cr_assert_eq(got.rho, want.rho, "%s rho %g", n, got.rho);
        cr_assert_eq(got.lr_decay, want.lr_decay, "%s lr_decay", n);
        cr_assert_eq(got.initial_accumulator_value, want.initial_accumulator_value, "%s iav", n);
        cr_assert_eq(got.beta1, want.beta1, "%s beta1 %g", n, got.beta1);
        cr_assert_eq(got.beta2, want.beta2, "%s beta2 %g", n, got.beta2);
        cr_assert_eq(got.eps, want.eps, "%s eps %g", n, got.eps);
        cr_assert_eq(got.amsgrad, want.amsgrad, "%s amsgrad", n);
        cr_assert_eq(got.momentum_decay, want.momentum_decay, "%s momentum_decay", n);
        cr_assert_eq(dp_optim_check(&got), DP_OK, "%s defaults rejected: %s", n, dp_errmsg());
    }
}

Test(optim_api, slots)
{
    static const struct {
        dp_optim_cfg c;
        int n;
        const char *names[DP_OPTIM_MAX_SLOTS];
    } cases[] = {
        {{.kind = DP_OPT_SGD}, 0, {NULL}},
        {{.kind = DP_OPT_SGD, .momentum = 0.9f}, 1, {"momentum_buffer"}},
        {{.kind = DP_OPT_ADAGRAD}, 1, {"sum"}},
        {{.kind = DP_OPT_RMSPROP}, 1, {"square_avg"}},
        {{.kind = DP_OPT_RMSPROP, .momentum = 0.9f}, 2, {"square_avg", "momentum_buffer"}},
        {{.kind = DP_OPT_RMSPROP, .centered = true}, 2, {"square_avg", "grad_avg"}},
        {{.kind = DP_OPT_RMSPROP, .centered = true, .momentum = 0.5f},
         3,
         {"square_avg", "momentum_buffer", "grad_avg"}},
        {{.kind = DP_OPT_ADADELTA}, 2, {"square_avg", "acc_delta"}},
        {{.kind = DP_OPT_ADAM}, 2, {"exp_avg", "exp_avg_sq"}},
        {{.kind = DP_OPT_ADAM, .amsgrad = true}, 3, {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}},
        {{.kind = DP_OPT_ADAMW}, 2, {"exp_avg", "exp_avg_sq"}},
        {{.kind = DP_OPT_ADAMW, .amsgrad = true}, 3, {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}},
        {{.kind = DP_OPT_NADAM}, 2, {"exp_avg", "exp_avg_sq"}},
        {{.kind = DP_OPT_ADAMAX}, 2, {"exp_avg", "exp_inf"}},
    };
    for (size_t j = 0; j < sizeof cases / sizeof cases[0]; j++) {
        const dp_optim_cfg *c = &cases[j].c;
        const char *n = dp_optim_name(c->kind);
        cr_assert_eq(dp_optim_n_slots(c), cases[j].n, "case %zu (%s): %d slots, want %d", j, n,
                     dp_optim_n_slots(c), cases[j].n);
        for (int i = 0; i < cases[j].n; i++) {
            const char *got = dp_optim_slot_name(c, i);
            cr_assert(got && strcmp(got, cases[j].names[i]) == 0,
                      "case %zu (%s): slot %d is '%s', want '%s'", j, n, i, got ? got : "(null)",
                      cases[j].names[i]);
        }
        cr_assert_null(dp_optim_slot_name(c, cases[j].n), "case %zu: name past the end", j);
        cr_assert_null(dp_optim_slot_name(c, -1), "case %zu: name at -1", j);
    }
}

Test(optim_api, init_slots)
{
    /* Zero everywhere except Adagrad's sum, which starts at initial_accumulator_value; only
     * n elements of the n_slots arrays are written. */
    float mem[DP_OPTIM_MAX_SLOTS][4];
    float *slots[DP_OPTIM_MAX_SLOTS] = {mem[0], mem[1], mem[2]};
    const dp_optim_cfg cfgs[] = {
        {.kind = DP_OPT_ADAGRAD, .initial_accumulator_value = 0.25f},
        {.kind = DP_OPT_ADAGRAD},
        {.kind = DP_OPT_ADAM, .amsgrad = true},
        {.kind = DP_OPT_RMSPROP, .centered = true, .momentum = 0.9f},
        {.kind = DP_OPT_SGD, .momentum = 0.9f},
        {.kind = DP_OPT_ADADELTA},
    };
    const float want0[] = {0.25f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    for (size_t j = 0; j < sizeof cfgs / sizeof cfgs[0]; j++) {
        for (int s = 0; s < DP_OPTIM_MAX_SLOTS; s++) {
            for (int i = 0; i < 4; i++) {
                mem[s][i] = -9.0f;
            }
        }
        dp_optim_init_slots(&cfgs[j], 3, slots);
        const int k = dp_optim_n_slots(&cfgs[j]);
        for (int s = 0; s < DP_OPTIM_MAX_SLOTS; s++) {
            for (int i = 0; i < 4; i++) {
                const float want = (s < k && i < 3) ? want0[j] : -9.0f;
                cr_assert_eq(mem[s][i], want, "cfg %zu (%s) slot %d [%d] = %g, want %g", j,
                             dp_optim_name(cfgs[j].kind), s, i, mem[s][i], want);
            }
        }
    }
}

/* dp_optim_check must fail with DP_EINVAL and a message containing `msg`. */
static void expect_reject(dp_optim_cfg c, const char *msg)
{
    dp_err_clear();
    int rc = dp_optim_check(&c);
    cr_assert_eq(rc, DP_EINVAL, "%s: accepted (rc %d), want rejection with '%s'",
                 dp_optim_name(c.kind), rc, msg);
    cr_assert(strstr(dp_errmsg(), msg) != NULL, "message '%s' lacks '%s'", dp_errmsg(), msg);
}

static dp_optim_cfg with_defaults(dp_optim_kind k)
{
    dp_optim_cfg c;
    dp_optim_defaults(k, &c);
    return c;
}

Test(optim_api, check_rejects)
{
    dp_optim_cfg c;
    c = with_defaults(DP_OPT_ADAM), c.beta2 = 1.5f;
    expect_reject(c, "--beta2 1.5: must be in [0, 1)");
    c = with_defaults(DP_OPT_ADAMW), c.beta2 = 1.0f;
    expect_reject(c, "--beta2 1: must be in [0, 1)");
    c = with_defaults(DP_OPT_NADAM), c.beta1 = -0.1f;
    expect_reject(c, "--beta1 -0.1: must be in [0, 1)");
    c = with_defaults(DP_OPT_ADAMAX), c.beta1 = NAN;
    expect_reject(c, "--beta1 nan");
    c = with_defaults(DP_OPT_ADAM), c.eps = 0.0f;
    expect_reject(c, "--eps 0: must be a positive number");
    c = with_defaults(DP_OPT_ADAGRAD), c.eps = -1e-10f;
    expect_reject(c, "--eps -1e-10");
    c = with_defaults(DP_OPT_SGD), c.lr = 0.0f;
    expect_reject(c, "--lr 0: must be a positive number");
    c = with_defaults(DP_OPT_ADAM), c.lr = INFINITY;
    expect_reject(c, "--lr inf");
    c = with_defaults(DP_OPT_ADAMW), c.weight_decay = -0.01f;
    expect_reject(c, "--weight-decay -0.01: must be a finite number >= 0");
    c = with_defaults(DP_OPT_SGD), c.momentum = 1.0f;
    expect_reject(c, "--momentum 1: must be in [0, 1)");
    c = with_defaults(DP_OPT_SGD), c.momentum = 0.9f, c.dampening = 1.5f;
    expect_reject(c, "--dampening 1.5: must be in [0, 1]");
    c = with_defaults(DP_OPT_SGD), c.nesterov = true;
    expect_reject(c, "--nesterov needs --momentum > 0 and --dampening 0");
    c = with_defaults(DP_OPT_SGD), c.nesterov = true, c.momentum = 0.9f, c.dampening = 0.1f;
    expect_reject(c, "--nesterov needs --momentum > 0 and --dampening 0");
    c = with_defaults(DP_OPT_RMSPROP), c.alpha = 1.0f;
    expect_reject(c, "--alpha 1: must be in [0, 1)");
    c = with_defaults(DP_OPT_RMSPROP), c.momentum = -0.5f;
    expect_reject(c, "--momentum -0.5");
    c = with_defaults(DP_OPT_RMSPROP), c.nesterov = true;
    expect_reject(c, "--nesterov: the rmsprop optimizer has no such option");
    c = with_defaults(DP_OPT_ADADELTA), c.rho = 1.5f;
    expect_reject(c, "--rho 1.5: must be in [0, 1]");
    c = with_defaults(DP_OPT_ADAGRAD), c.lr_decay = -1.0f;
    expect_reject(c, "--lr-decay -1");
    c = with_defaults(DP_OPT_ADAGRAD), c.initial_accumulator_value = -0.1f;
    expect_reject(c, "--initial-accumulator-value -0.1");
    c = with_defaults(DP_OPT_NADAM), c.momentum_decay = -4e-3f;
    expect_reject(c, "--momentum-decay -0.004");
    c = with_defaults(DP_OPT_SGD), c.amsgrad = true;
    expect_reject(c, "--amsgrad: the sgd optimizer has no such option");
    c = with_defaults(DP_OPT_NADAM), c.amsgrad = true;
    expect_reject(c, "--amsgrad: the nadam optimizer");
    c = with_defaults(DP_OPT_ADAM), c.centered = true;
    expect_reject(c, "--centered: the adam optimizer");
    c = with_defaults(DP_OPT_ADAM), c.kind = DP_OPT_COUNT;
    expect_reject(c, "--optimizer");
}

Test(optim_api, check_accepts_edges)
{
    dp_optim_cfg c;
    c = with_defaults(DP_OPT_ADAM), c.beta1 = 0.0f, c.beta2 = 0.0f, c.amsgrad = true;
    cr_assert_eq(dp_optim_check(&c), DP_OK, "%s", dp_errmsg());
    c = with_defaults(DP_OPT_SGD), c.momentum = 0.9f, c.dampening = 1.0f;
    cr_assert_eq(dp_optim_check(&c), DP_OK, "%s", dp_errmsg());
    c = with_defaults(DP_OPT_SGD), c.momentum = 0.9f, c.nesterov = true;
    cr_assert_eq(dp_optim_check(&c), DP_OK, "%s", dp_errmsg());
    c = with_defaults(DP_OPT_ADADELTA), c.rho = 1.0f;
    cr_assert_eq(dp_optim_check(&c), DP_OK, "%s", dp_errmsg());
    c = with_defaults(DP_OPT_RMSPROP), c.centered = true, c.momentum = 0.9f;
    cr_assert_eq(dp_optim_check(&c), DP_OK, "%s", dp_errmsg());
    /* Fields another optimizer uses are ignored: rho means nothing to adam. */
    c = with_defaults(DP_OPT_ADAM), c.rho = 7.0f;
    cr_assert_eq(dp_optim_check(&c), DP_OK, "%s", dp_errmsg());
}
