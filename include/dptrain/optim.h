/* dptrain/optim.h: optimizers as pure functions over flat arrays, and learning-rate
 * schedules. Every function here is Local (no MPI). Update rules follow torch.optim's
 * documented algorithms (the pseudo-code in each class's docstring), with torch's
 * hyperparameter names and defaults. */
#ifndef DPTRAIN_OPTIM_H
#define DPTRAIN_OPTIM_H

#include <stdbool.h>
#include <stddef.h>

/* ---------------------------------------------------------------------------------------
 * Optimizers. Parameters p and gradients g are flat arrays of n floats (the model's
 * arenas); per-parameter state lives in dp_optim_n_slots() further arrays of n floats each,
 * owned by the caller. Elements are independent: nothing is accumulated across them, so a
 * step over [0, n) equals steps over any split of it (except NAdam's scalar, see below).
 * Arithmetic is float per element, as torch does for float32 parameters; per-step scalars
 * (bias corrections, decayed learning rates) are computed in double, then rounded once.
 *
 * Rules (g = gradient, p = parameter, t = 1-based step, lr = scheduled learning rate):
 *   L2 (all but AdamW):  g += weight_decay p
 *   sgd:      b = g at t = 1, else momentum b + (1 - dampening) g   (only if momentum != 0)
 *             g = nesterov ? g + momentum b : b;   p -= lr g
 *   adagrad:  clr = lr / (1 + (t - 1) lr_decay);  sum += g^2;  p -= clr g / (sqrt(sum) + eps)
 *   rmsprop:  v = alpha v + (1 - alpha) g^2;  centered: ga = alpha ga + (1 - alpha) g,
 *             v~ = v - ga^2, else v~ = v;  momentum > 0: b = momentum b + g / (sqrt(v~) + eps),
 *             p -= lr b;  else p -= lr g / (sqrt(v~) + eps)
 *   adadelta: v = rho v + (1 - rho) g^2;  d = sqrt(u + eps) / sqrt(v + eps) g;
 *             u = rho u + (1 - rho) d^2;  p -= lr d
 *   adam:     m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
 *             amsgrad: vmax = max(vmax, v) and v is replaced by vmax below;
 *             p -= lr / (1 - beta1^t) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 *   adamw:    p *= 1 - lr weight_decay (decoupled, no L2 term), then adam
 *   nadam:    mu_t = beta1 (1 - 0.5 0.96^(t momentum_decay)), mu_{t+1} likewise;
 *             mu_product *= mu_t;  m, v as adam;  d = sqrt(v / (1 - beta2^t)) + eps;
 *             p -= lr (1 - mu_t) / (1 - mu_product) g / d;
 *             p -= lr mu_{t+1} / (1 - mu_product mu_{t+1}) m / d
 *   adamax:   m = beta1 m + (1 - beta1) g;  u = max(beta2 u, |g| + eps);
 *             p -= lr / (1 - beta1^t) m / u                                              */

typedef enum {
    DP_OPT_SGD = 0,
    DP_OPT_ADAGRAD,
    DP_OPT_RMSPROP,
    DP_OPT_ADADELTA,
    DP_OPT_ADAM,
    DP_OPT_ADAMW,
    DP_OPT_NADAM,
    DP_OPT_ADAMAX,
    DP_OPT_COUNT
} dp_optim_kind;

/* The most state arrays any optimizer needs (adam + amsgrad, rmsprop centered + momentum). */
#define DP_OPTIM_MAX_SLOTS 3

/* Hyperparameters. Fields an optimizer does not use are ignored (booleans it does not use
 * must be false: dp_optim_check rejects them). */
typedef struct {
    dp_optim_kind kind;
    float lr;                      /* base learning rate (the schedule starts from it) */
    float weight_decay;            /* L2 added to the gradient; AdamW: decoupled p *= 1 - lr wd */
    float momentum, dampening;     /* sgd; rmsprop uses momentum too */
    bool nesterov;                 /* sgd */
    float alpha;                   /* rmsprop smoothing constant */
    bool centered;                 /* rmsprop */
    float rho;                     /* adadelta */
    float lr_decay, initial_accumulator_value; /* adagrad */
    float beta1, beta2;            /* adam, adamw, nadam, adamax */
    float eps;                     /* every optimizer but sgd */
    bool amsgrad;                  /* adam, adamw */
    float momentum_decay;          /* nadam (psi) */
} dp_optim_cfg;

/* The float hyperparameters of dp_optim_cfg, one table for every place that names them (the
 * options, the run configuration's JSON, the checkpoint's attributes), so they cannot drift.
 * optims: bit k set if optimizer k uses the field. */
typedef struct {
    const char *name;  /* "weight_decay": the JSON key and checkpoint attribute */
    const char *flag;  /* "weight-decay": the option (--weight-decay) */
    size_t offset;     /* of the float in dp_optim_cfg */
    unsigned optims;
    const char *what;  /* for --help */
} dp_optim_field;

/* The table, *n entries. Local. */
const dp_optim_field *dp_optim_fields(int *n);

/* "sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "nadam", "adamax" ("?" if out
 * of range). */
const char *dp_optim_name(dp_optim_kind k);
/* The kind named s, or -1 if s is NULL or unknown. */
int dp_optim_parse(const char *s);

/* Fills *c with torch's defaults for kind k (fields k does not use are 0 / false):
 *   sgd      lr 1e-3 (momentum 0, dampening 0, nesterov off)
 *   adagrad  lr 1e-2, lr_decay 0, initial_accumulator_value 0, eps 1e-10
 *   rmsprop  lr 1e-2, alpha 0.99, eps 1e-8, momentum 0, centered off
 *   adadelta lr 1.0, rho 0.9, eps 1e-6
 *   adam     lr 1e-3, betas (0.9, 0.999), eps 1e-8, amsgrad off
 *   adamw    as adam, weight_decay 1e-2
 *   nadam    lr 2e-3, betas (0.9, 0.999), eps 1e-8, momentum_decay 4e-3
 *   adamax   lr 2e-3, betas (0.9, 0.999), eps 1e-8
 * weight_decay is 0 except for adamw. Out-of-range k gives the sgd defaults with kind k. */
void dp_optim_defaults(dp_optim_kind k, dp_optim_cfg *c);

/* DP_OK, or DP_EINVAL with a message naming the option and its value (e.g. "--beta2 1.5:
 * must be in [0, 1)"). Checks only what c->kind uses: lr > 0, weight_decay >= 0,
 * momentum in [0, 1), dampening in [0, 1], nesterov needs momentum > 0 and dampening 0,
 * alpha in [0, 1), rho in [0, 1], lr_decay >= 0, initial_accumulator_value >= 0,
 * betas in [0, 1), momentum_decay >= 0, eps > 0 (torch allows 0, but then a parameter whose
 * gradient is exactly 0, such as a dead ReLU unit's, divides 0 by 0), all finite; and
 * nesterov / centered / amsgrad set for an optimizer that has no such option. */
int dp_optim_check(const dp_optim_cfg *c);

/* How many state arrays of n floats c needs (0 to DP_OPTIM_MAX_SLOTS):
 *   sgd: 1 if momentum != 0, else 0;  adagrad 1;  rmsprop 1 + (momentum > 0) + centered;
 *   adadelta 2;  adam/adamw 2 + amsgrad;  nadam 2;  adamax 2. */
int dp_optim_n_slots(const dp_optim_cfg *c);

/* torch's state name of slot i (0 <= i < dp_optim_n_slots(c)), or NULL out of range.
 * Order: sgd {momentum_buffer}; adagrad {sum}; rmsprop {square_avg, momentum_buffer if
 * momentum > 0, grad_avg if centered}; adadelta {square_avg, acc_delta}; adam/adamw
 * {exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad}; nadam {exp_avg, exp_avg_sq};
 * adamax {exp_avg, exp_inf}. NAdam's mu_product is a scalar, not a slot (see step). */
const char *dp_optim_slot_name(const dp_optim_cfg *c, int i);

/* Sets the dp_optim_n_slots(c) arrays slots[i] (n floats each) to their state before step
 * 1: zero, except adagrad's sum = initial_accumulator_value. */
void dp_optim_init_slots(const dp_optim_cfg *c, size_t n, float *const *slots);

/* One optimizer step over n parameters: updates p (n) in place from g (n, read only) and
 * the state arrays slots[0 .. dp_optim_n_slots(c) - 1] (n floats each).
 *   t      1-based step count (1 on the first call), the t of torch's bias corrections
 *   lr     the scheduled learning rate for this step; used instead of c->lr
 *   scalar per-run scalar state: NAdam's mu_product, 1.0 before step 1, multiplied by
 *          mu_t on every call (so call once per step over the whole array, and checkpoint
 *          it with the slots). May be NULL: NAdam then recomputes the product of mu_1..mu_t
 *          (O(t) work per call). Other optimizers ignore it.
 * c is assumed to pass dp_optim_check. */
void dp_optim_step(const dp_optim_cfg *c, float lr, long t, size_t n, float *p, const float *g,
                   float *const *slots, double *scalar);


/* ---------------------------------------------------------------------------------------
 * Learning-rate schedules. `step` counts completed optimizer steps (0 before the first),
 * epoch = step / steps_per_epoch. All of them compose with a linear warmup. */

typedef enum {
    DP_SCHED_CONSTANT = 0, /* base_lr */
    DP_SCHED_COSINE,       /* base_lr (1 + cos(pi step / total_steps)) / 2, 0 from total_steps */
    DP_SCHED_STEP,         /* base_lr gamma^floor(epoch / step_size)           (StepLR) */
    DP_SCHED_MULTISTEP,    /* base_lr gamma^(number of milestones <= epoch)    (MultiStepLR) */
    DP_SCHED_EXPONENTIAL,  /* base_lr gamma^epoch                              (ExponentialLR) */
    DP_SCHED_COUNT
} dp_sched;

#define DP_SCHED_MAX_MILESTONES 16

typedef struct {
    dp_sched kind;
    float base_lr;
    float gamma;                              /* step, multistep, exponential */
    int step_size;                            /* step: epochs per decay */
    int milestones[DP_SCHED_MAX_MILESTONES];  /* multistep: epochs, strictly increasing */
    int n_milestones;
    long warmup_steps;        /* 0 = no warmup; else for step < warmup_steps the lr above is
                               * scaled by f + (1 - f) step / warmup_steps (Goyal et al.;
                               * torch LinearLR), so step 0 gets f lr and step warmup_steps
                               * the scheduled lr */
    float warmup_start_factor; /* f, in (0, 1] when warmup_steps > 0 */
} dp_sched_cfg;

/* "constant", "cosine", "step", "multistep", "exponential" ("?" if out of range). */
const char *dp_sched_name(dp_sched s);
/* The schedule named s, or -1 if s is NULL or unknown. */
int dp_sched_parse(const char *s);

/* DP_OK, or DP_EINVAL naming the option and value: base_lr > 0; gamma > 0 (step, multistep,
 * exponential); step_size >= 1 (step); 1 <= n_milestones <= 16, milestones >= 1 and strictly
 * increasing (multistep); warmup_steps >= 0; warmup_start_factor in (0, 1] if warmup_steps
 * > 0; all finite. */
int dp_sched_check(const dp_sched_cfg *s);

/* Learning rate for the optimizer step that follows `step` completed steps (step >= 0),
 * with epoch = step / steps_per_epoch (steps_per_epoch < 1 counts as 1) and total_steps the
 * length of the run (cosine only). s is assumed to pass dp_sched_check. */
float dp_sched_lr_at(const dp_sched_cfg *s, long step, long steps_per_epoch, long total_steps);


#endif
