/* dptrain/lrfind.h: the learning-rate range test (L. N. Smith, "Cyclical Learning Rates for
 * Training Neural Networks", 2017, section 3.3; the rule of fastai's lr_find). From the run's
 * initial weights, `steps` optimizer steps of the run's optimizer, data and batches, the rate
 * growing exponentially from lr_min to lr_max; the training loss of every step is smoothed,
 * the test stops once the smoothed loss has clearly diverged, and the rate where the
 * smoothed loss falls fastest is the suggestion. Data-parallel as training is: every rank
 * computes its slice of each batch and the gradients are summed, so the curve is the same
 * (to rounding; bit for bit in deterministic mode) on any number of ranks. */
#ifndef DPTRAIN_LRFIND_H
#define DPTRAIN_LRFIND_H

#include "dptrain/run.h"

#include <stdbool.h>

struct dp_lrfind_result;

typedef struct {
    double lr_min, lr_max; /* the rates of the first and the last step, 0 < lr_min < lr_max */
    int steps;             /* optimizer steps at most: step i (from 0) uses
                            * lr_min (lr_max / lr_min)^(i / (steps - 1)) */
    double beta;           /* smoothing, in [0, 1): a_i = beta a_(i-1) + (1 - beta) loss_i,
                            * a_(-1) = 0, smoothed_i = a_i / (1 - beta^(i+1)) (bias-corrected) */
    double diverge;        /* > 1: stop once smoothed_i > diverge x the smallest smoothed loss
                            * so far */
    int skip;              /* the first points, where no suggestion is looked for (the
                            * bias-corrected average of a few losses is noisy); -1: steps / 20,
                            * at most 10 */
    /* Called on every rank after each recorded point (progress), or NULL. Local; no MPI. */
    void (*point)(void *ctx, const struct dp_lrfind_result *r);
    void *point_ctx;
} dp_lrfind_cfg;

/* Why the test ended. */
typedef enum {
    DP_LRFIND_END = 0,   /* every step ran */
    DP_LRFIND_DIVERGED,  /* the smoothed loss went past diverge x its minimum */
    DP_LRFIND_EXPLODED,  /* a step's loss was NaN, infinite, or past the loop's explosion
                          * limit (DP_EXPLODE_FACTOR x the first step's) */
    DP_LRFIND_STOPPED,   /* a stop request (a signal): the points so far stand */
} dp_lrfind_stop;

typedef struct dp_lrfind_result {
    int n;               /* points recorded; point i is step i */
    double *lr;          /* (steps) the rate of step i */
    double *loss;        /* (steps) the mean training loss of step i's batch, computed before
                          * its update (the weights after steps 0..i-1); NaN if not finite */
    double *smooth;      /* (steps) the smoothed loss */
    double avg;          /* the running average a_(n-1) */
    int best;            /* the point of the smallest smoothed loss, or -1 */
    dp_lrfind_stop why;
    int steepest;        /* the suggestion: among points skip..best, the one whose smoothed
                          * loss falls fastest against log lr (central differences), or -1
                          * when it does not fall there */
    double suggestion;   /* lr[steepest], or NaN */
    double min_tenth;    /* lr[best] / 10 (the other common rule), or NaN */
    int failed_rank;     /* after dp_lrfind_run failed: the rank whose error it is, or -1 */
    double seconds;      /* the steps' time (rank 0's clock) */
} dp_lrfind_result;

/* lr_min 1e-7, lr_max 10, steps 200, beta 0.98, diverge 4, skip -1, no callback. Local. */
void dp_lrfind_defaults(dp_lrfind_cfg *cfg);

/* DP_OK, or DP_EINVAL naming the option (as the program spells it) and its value. Local. */
int dp_lrfind_check(const dp_lrfind_cfg *cfg);

/* The rate of step i. Local. */
double dp_lrfind_rate(const dp_lrfind_cfg *cfg, int i);

/* An empty result with room for cfg->steps points (free it with dp_lrfind_free). Local. */
int dp_lrfind_init(dp_lrfind_result *r, const dp_lrfind_cfg *cfg);
void dp_lrfind_free(dp_lrfind_result *r); /* frees the arrays; NULL-safe */

/* Records the next point (its rate and its step's mean loss): smoothing, the minimum, and
 * whether to stop (why = DIVERGED, or EXPLODED for a loss that is not finite). Returns true
 * when the test must end here. Local. */
bool dp_lrfind_add(dp_lrfind_result *r, const dp_lrfind_cfg *cfg, double lr, double loss);

/* Fills steepest, suggestion and min_tenth from the points. Local. */
void dp_lrfind_suggest(dp_lrfind_result *r, const dp_lrfind_cfg *cfg);

/* The range test for the run run->train on c: loads run->data, builds the model as
 * dp_run_job does (the seed's initialization, or run->init_from's weights), and trains it
 * for at most cfg->steps steps with the run's optimizer, batch, accumulation, clipping,
 * validation hold-out, deterministic mode and allreduce, the rate of step i from
 * dp_lrfind_rate (the run's lr, schedule, warmup, lr scaling, plateau and early stopping do
 * not apply), over as many epochs as that takes. Writes no file and no checkpoint; a stop
 * request (hooks->stop) ends it with why = STOPPED and the points so far. Fills *res (init
 * it first) the same on every rank, with the suggestion. Returns DP_OK (also when the test
 * ended by divergence or a stop: see res->why) or an error, the same on every rank.
 * Collective. */
int dp_lrfind_run(const dp_run_cfg *run, const dp_lrfind_cfg *cfg, const dp_comm *c,
                  const dp_run_hooks *hooks, dp_lrfind_result *res);

/* The points as dir/lr_find.csv (dir and its parents created): step,lr,loss,smoothed (17
 * significant digits; a loss that was not finite as nan), a header line first. Written
 * atomically (a temporary name, then renamed). Local. */
int dp_lrfind_write_csv(const dp_lrfind_result *r, const char *dir);

#endif
