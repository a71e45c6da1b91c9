/* dptrain/sweep.h: a hyperparameter sweep. A search space (grid or random) over the options
 * of a run gives a fixed list of trials; the world is split into groups of K ranks, each
 * group takes trials from a shared queue and trains each as an ordinary job (dp_run_job) with
 * its own out directory; successive halving stops poor trials at rungs; the sweep survives a
 * stop or a kill (run it again); the results table is sorted by a validation metric. */
#ifndef DPTRAIN_SWEEP_H
#define DPTRAIN_SWEEP_H

#include "dptrain/dist.h"
#include "dptrain/run.h"

#include <stdbool.h>
#include <stdint.h>

#define DP_SWEEP_MAX_PARAMS 16
#define DP_SWEEP_MAX_TRIALS 1000
#define DP_SWEEP_MAX_RUNGS 16

typedef enum { DP_SEARCH_GRID = 0, DP_SEARCH_RANDOM } dp_search;

/* One dimension of the space: an option of dptrain train and how its values are drawn.
 *   "lr=0.1|0.03|0.01"        a list: every value in a grid, one at random in a random search
 *   "lr=loguniform:1e-4:1e-1" log-uniform in [lo, hi] (random search only)
 *   "dropout=uniform:0:0.5"   uniform in [lo, hi] (random search only)
 *   "batch=int:32:256"        a uniform integer in [lo, hi] (random search only)
 * Values of a list are separated by '|' (a layer spec holds commas). */
typedef enum { DP_PARAM_LIST = 0, DP_PARAM_LOGUNIFORM, DP_PARAM_UNIFORM, DP_PARAM_INT } dp_param_kind;

typedef struct {
    char name[64];      /* the option, as dptrain train spells it without dashes */
    char text[1100];    /* "lr=loguniform:1e-4:1e-1", as given */
    dp_param_kind kind;
    int n_values;       /* list: the number of values */
    double lo, hi;      /* the ranges */
} dp_sweep_param;

/* Parses "NAME=SPEC" into *p: NAME must be an option of a run that a sweep may vary (not the
 * data, the out directory, resume, init-from, overwrite, epochs, val-fraction or threads:
 * those are the sweep's own or must be the same for every trial); every value of a list is
 * checked as the option would be. Local. */
int dp_sweep_param_parse(const char *text, dp_sweep_param *p);

typedef struct {
    dp_run_cfg base;           /* defaults or a saved config.json, before the options */
    const dp_run_opts *opts;   /* the options every trial has (command line, INI file) */
    char out[DP_PATH_MAX];     /* the sweep's directory: sweep.json, trials/NNN/, results */
    dp_search search;
    int trials;                /* random: how many trials to draw (grid: every combination) */
    uint64_t seed;             /* draws the random trials */
    int group;                 /* ranks per trial (the world must split evenly) */
    int eta;                   /* successive halving: keep the best 1/eta at each rung; 0: off */
    int min_epochs;            /* the first rung */
    bool maximize;             /* metric: val_accuracy (true) or val_loss (false) */
    int threads;               /* BLAS threads of each rank (recorded in the trials' config) */
    int n_params;
    dp_sweep_param params[DP_SWEEP_MAX_PARAMS];
} dp_sweep_cfg;

/* The trials: every trial's value of every parameter (strings, as an option reads them). */
typedef struct {
    int n_trials, n_params;
    char **value;              /* value[t * n_params + p] */
    int n_rungs;
    int rung_epochs[DP_SWEEP_MAX_RUNGS]; /* ascending; the last is the run's epochs */
} dp_sweep_plan;

/* The trials of cfg over a base run of `epochs` epochs: a grid (lists only; the last
 * parameter varies fastest) or `trials` random draws, trial t's parameter p from a generator
 * keyed by (seed, t, p), so a trial's values do not depend on the others. Rungs: min_epochs,
 * min_epochs x eta, ... below epochs, then epochs. Local and deterministic. */
int dp_sweep_plan_make(const dp_sweep_cfg *cfg, int epochs, dp_sweep_plan *plan);
void dp_sweep_plan_free(dp_sweep_plan *plan);

/* The run configuration of trial t: cfg->base with cfg->opts, then the trial's values (which
 * win over the same options), out = OUT/trials/NNN, resume auto. Local. */
int dp_sweep_trial_cfg(const dp_sweep_cfg *cfg, const dp_sweep_plan *plan, int t,
                       dp_run_cfg *run);

typedef enum {
    DP_TRIAL_PENDING = 0,
    DP_TRIAL_STOPPED,   /* stopped at a rung by successive halving */
    DP_TRIAL_FINISHED,  /* trained every epoch (or stopped by its own early stopping) */
    DP_TRIAL_DIVERGED,  /* the loss became NaN, infinite or exploded */
    DP_TRIAL_FAILED,    /* an error (its message is kept) */
} dp_trial_status;

typedef struct {
    dp_trial_status status;
    int epochs;          /* epochs trained */
    double val_loss, val_accuracy; /* at the last epoch trained (NaN: none) */
    double metric;       /* the ranking value: val_loss, or -val_accuracy (lower is better) */
    double seconds;      /* training time, all epochs trained */
    char message[256];   /* failed: why */
} dp_trial_result;

typedef struct {
    int n_trials;
    dp_trial_result trial[DP_SWEEP_MAX_TRIALS];
    int best;            /* the best finished trial, or -1 */
    int stopped;         /* a stop request ended the sweep before its end */
    int failed_rank;     /* after a failure of the sweep: the rank whose message it is, or -1 */
    double seconds;      /* the sweep's wall time (this run of it) */
} dp_sweep_result;

/* Runs the sweep on the world c: writes OUT/sweep.json (or checks that the one there is this
 * sweep's: a rerun continues it, keeping finished trials and resuming the others from their
 * checkpoints), splits c into groups of cfg->group ranks, and runs the rungs: each group
 * takes (trial, rung) jobs from a shared counter until the rung's jobs are taken; when every
 * job of a rung is done, the best ceil(n / eta) trials by the validation metric (ties: the
 * lower trial number) go on, the others stop. Trials never read the test split for any
 * decision. At the end (rank 0): OUT/results.csv and results.md (sorted by the metric),
 * OUT/model.h5 (the best trial's model). hooks->log gets one line per job (the leader of
 * each group writes); hooks->stop ends the sweep after every group's current job (with its
 * checkpoint) as DP_ESTOPPED. Returns the same status on every rank. Collective. */
int dp_sweep_run(const dp_sweep_cfg *cfg, const dp_comm *c, const dp_run_hooks *hooks,
                 dp_sweep_result *res);

/* The trials in the order of the results table: those that trained further first, then by
 * the metric (better first), the lower trial number on a tie; diverged and failed last.
 * order holds res->n_trials. Local. */
void dp_sweep_order(const dp_sweep_result *res, int *order);

/* The path of trial t's directory, OUT/trials/NNN. Local. */
void dp_sweep_trial_dir(const char *out, int t, char *buf, size_t cap);

#endif
