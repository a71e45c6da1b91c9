/* dptrain/train.h: the data-parallel training loop and evaluation. Collective over the
 * communicator passed in: every rank calls with the same configuration and dataset. */
#ifndef DPTRAIN_TRAIN_H
#define DPTRAIN_TRAIN_H

#include "dptrain/data.h"
#include "dptrain/dist.h"
#include "dptrain/nn.h"
#include "dptrain/optim.h"
#include "dptrain/state.h"

#include <signal.h>
#include <stdio.h>

/* Why the loop asks for a checkpoint. */
typedef enum {
    DP_CKPT_STEP,  /* --checkpoint-every steps */
    DP_CKPT_EPOCH, /* the end of an epoch (after its evaluation) */
    DP_CKPT_STOP,  /* a stop request: the loop returns DP_ESTOPPED after it */
    DP_CKPT_FINAL, /* the run has ended (state.finished) */
} dp_ckpt_reason;

/* Writes a checkpoint of m and st. Called on every rank at the same point; must return the
 * same status on every rank (agree on it). Collective. */
typedef int (*dp_checkpoint_fn)(void *ctx, const dp_model *m, const dp_train_state *st,
                                dp_ckpt_reason why);

/* Test hooks: faults and pauses that the program's tests ask for (dptrain fills them from
 * its DPTRAIN_TEST_* variables; the library never reads the environment). All zero: none. */
typedef struct {
    bool skip_allreduce; /* leave gradients unsummed: the multi-rank tests prove they notice */
    long stop_at;        /* > 0: rank stop_rank (mod the ranks) asks to stop in this step, as a
                          * signal would, so tests stop at a step of their choosing */
    int stop_rank;
    long hold_at;        /* > 0: every rank waits at the start of this step, after printing
                          * its PID, until a stop request arrives (tests signal a run they
                          * know is still going, by PID, without a sleep) */
    const char *hold_until; /* with hold_at: wait until this file exists (or a stop request),
                          * then go on: a test changes the world under a run it knows is
                          * held, then lets it continue */
    int ckpt_pause;      /* > 0: this process's K-th checkpoint write pauses half-way (the
                          * model written, the state not) for an hour, so a test can kill it */
} dp_test_hooks;

/* How the gradient allreduce is done. */
typedef enum {
    DP_REDUCE_BLOCKING, /* one MPI_Allreduce of the whole arena after the backward pass */
    DP_REDUCE_OVERLAP,  /* buckets of layers in reverse order, each an MPI_Iallreduce started
                         * as soon as its layers' gradients are final, progressed during the
                         * rest of the backward pass, waited for after it */
    DP_REDUCE_SHARDED,  /* ZeRO-1: MPI_Reduce_scatter of the gradient, so each rank holds the
                         * sum of its contiguous slice of it (and an MPI_Allreduce of the
                         * trainer's few tail floats); each rank updates its slice of the
                         * parameters with the optimizer state of that slice alone (the state
                         * takes 1/N of the memory); an MPI_Allgatherv of the parameters.
                         * Checkpoints gather the state's slices on rank 0, so files are the
                         * same as replicated runs' and resume either way. With 1 rank, the
                         * blocking step. */
    DP_REDUCE_COUNT
} dp_reduce_mode;

/* How an epoch's rows are shuffled: the order in which the run visits them. */
typedef enum {
    DP_SHUFFLE_FISHER_YATES = 0, /* a Fisher-Yates permutation of every row, made by every rank
                                  * each epoch (O(rows) per rank): the order of runs from before
                                  * --shuffle (their config.json has no training.shuffle) */
    DP_SHUFFLE_FEISTEL,          /* dp_feistel_at per position: each rank computes only the rows
                                  * of its own slices (the default of new runs) */
    DP_SHUFFLE_COUNT
} dp_shuffle;

/* Default --shards of deterministic mode: the most ranks its guarantee covers. */
#define DP_SHARDS_DEFAULT 16

/* Default --bucket-kb: see README "Speed" for the measurement behind it. */
#define DP_BUCKET_KB_DEFAULT 256
/* A step whose mean training loss exceeds this many times the run's reference loss (the
 * larger of its first step's loss and a uniform prediction's) ends the run as diverged. */
#define DP_EXPLODE_FACTOR 100.0

/* Seconds this rank spent in each phase of the training steps, summed over steps. */
typedef struct {
    long steps;
    double data;        /* gathering the rows of the batch into floats */
    double forward;     /* training forward and the loss */
    double backward;    /* backward pass (with overlap: including starting and progressing
                         * the bucket allreduces) */
    double reduce;      /* gradient allreduce: blocking: the call; overlap: from the first
                         * bucket's start to the end of the wait */
    double reduce_wait; /* the part of reduce the step waited for after its backward pass
                         * (equal to reduce when blocking) */
    double optim;       /* rmse rescale, clipping, schedule and the optimizer update */
} dp_step_times;

/* Where a run stands after an optimizer step (dp_train_cfg.progress). Counts are of the
 * whole run (every rank sees the same numbers, except seconds, which is this rank's clock). */
typedef struct {
    int epoch;             /* the epoch in progress, from 1 */
    int epochs;            /* epochs of the run */
    long step_in_epoch;    /* optimizer steps done in this epoch, 1..steps_per_epoch */
    long steps_per_epoch;
    long step;             /* optimizer steps done in the run (the global step) */
    long total_steps;      /* steps_per_epoch * epochs */
    size_t samples;        /* training rows seen in this epoch so far (all ranks) */
    double loss_sum;       /* sum of the per-row training losses in this epoch so far (all
                            * ranks; dp_loss_report(loss, loss_sum, loss_count) is the
                            * running loss) */
    size_t loss_count;     /* rows in loss_sum */
    double seconds;        /* training time in this epoch so far (checkpoint writes
                            * excluded; a resumed epoch counts its time before the stop) */
} dp_train_progress;

/* Called on every rank after each optimizer step. Must be cheap and must not call MPI:
 * it runs inside the training loop. */
typedef void (*dp_progress_fn)(void *ctx, const dp_train_progress *p);

typedef struct {
    dp_loss loss;
    int epochs;
    size_t batch;     /* global batch in rows; 0 means the whole training set (full batch) */
    bool drop_last;   /* drop a last partial batch instead of training on it */
    uint64_t seed;    /* drives the per-epoch permutation */
    dp_shuffle shuffle; /* how the permutation is made */
    dp_optim_cfg opt;  /* optimizer and its hyperparameters (opt.lr is the base rate) */
    dp_sched_cfg sched; /* schedule; its base_lr is taken from opt.lr */
    int eval_batch;   /* rows per forward pass during evaluation, per rank */
    float val_fraction; /* hold out this fraction of /train (seeded, deterministic) for
                         * validation; 0 = none */
    int patience;     /* early stopping: stop after this many epochs without a validation
                       * loss below best - min_delta, and keep the best weights; 0 = off */
    float min_delta;
    float clip_norm;  /* scale the gradient down to this global L2 norm; 0 = off */
    int accumulate;   /* micro-batches per optimizer step (gradient accumulation), >= 1 */
    float plateau_factor;  /* reduce-on-plateau: multiply the lr by this when the watched loss
                            * (validation, else training) has not improved by a relative 1e-4
                            * (torch's default threshold) for plateau_patience epochs; 0 = off */
    int plateau_patience;
    long checkpoint_every;  /* checkpoint every this many optimizer steps; 0 = off */
    int checkpoint_epochs;  /* checkpoint every this many epochs; 0 = off */
    dp_checkpoint_fn checkpoint; /* NULL: no checkpoints (not even on a stop request) */
    void *checkpoint_ctx;
    /* Nonzero on any rank: every rank stops after the current step, together (the flag
     * rides the gradient allreduce), writes a checkpoint and returns DP_ESTOPPED. A signal
     * handler sets it. NULL: never. */
    const volatile sig_atomic_t *stop;
    int stop_epoch;         /* > 0: stop at the end of this epoch (if the run is not finished
                             * there) with a checkpoint, as a stop request does (DP_ESTOPPED;
                             * at once if the state is already there), so a driver can run a
                             * job in pieces (a sweep's rungs); the trajectory is the same as
                             * a run without it. 0: off */
    bool deterministic;     /* the same bits for any number of ranks from 1 to shards: every
                             * global batch is cut into `shards` virtual shards, each computed
                             * on its own and summed exactly (README "Deterministic mode");
                             * blocking allreduce only */
    int shards;             /* deterministic: virtual shards per global batch, 1 to
                             * DP_FIXED_MAX_TERMS (exact.h); the run's ranks must not exceed it */
    dp_reduce_mode reduce;  /* blocking (default) or overlapped with the backward pass */
    size_t bucket_bytes;    /* overlap: close a bucket once its layers hold this many bytes
                             * of gradient (0 = one bucket per layer) */
    dp_step_times *times;   /* if not NULL, each phase's seconds are added here */
    FILE *log;        /* one human-readable line per epoch, or NULL (set on rank 0 only) */
    FILE *metrics;    /* one JSON object per epoch, or NULL (set on rank 0 only) */
    dp_progress_fn progress; /* after every optimizer step, or NULL; Local */
    void *progress_ctx;
    const dp_test_hooks *hooks; /* NULL: none */
} dp_train_cfg;

typedef struct {
    double loss;      /* reported loss (dp_loss_report: the mean; root mean for rmse) */
    double accuracy;  /* fraction correct (classification), else NaN */
    size_t n;         /* samples counted */
} dp_eval_result;

typedef struct {
    int epochs_done;
    long steps_done;
    dp_eval_result train; /* running mean over the last epoch's training steps */
    dp_eval_result val;   /* after the last epoch; n == 0 without --val-fraction */
    dp_eval_result test;  /* at the end (with the kept weights); n == 0 without /test */
    int best_epoch;       /* early stopping: the epoch whose weights were kept, else 0 */
    bool stopped_early;
    double train_seconds; /* time in training steps, all epochs (max over ranks) */
    double samples_per_s; /* training samples per second over all epochs */
} dp_train_result;

/* Checks that cfg, the model and the dataset fit together (sizes, classes, batch >= ranks).
 * Local and deterministic: every rank reaches the same answer from the same inputs. */
int dp_train_check(const dp_train_cfg *cfg, const dp_model_cfg *mcfg, const dp_dataset *d,
                   int n_ranks);

/* The most rows one rank handles in one forward pass; the model's max_batch must be at
 * least this. Local. */
int dp_train_max_rows(const dp_train_cfg *cfg, const dp_dataset *d, int n_ranks);

/* Makes every rank's parameters equal to rank 0's (broadcast). Collective. */
int dp_train_sync_params(dp_model *m, const dp_comm *c);

/* A fresh state for cfg and m (dp_train_state_init with the run's optimizer, seed, epochs
 * and early stopping). Local. */
int dp_train_state_fresh(const dp_train_cfg *cfg, const dp_model *m, dp_train_state *st);

/* Trains m on d->train, from the position in st (fresh, or restored from a checkpoint) to
 * cfg->epochs epochs, evaluating d->test after each one and updating st as it goes; the
 * metrics log (cfg->metrics) is written from st's history first, so a resumed run's log is
 * the whole run's. Returns DP_ENONFINITE (on every rank) if the loss becomes NaN or
 * infinite, DP_ESTOPPED after a stop request and its checkpoint. A state from another run
 * of the same configuration at any number of ranks continues that run: same samples in the
 * same steps; bit for bit at the same number of ranks. Collective. */
int dp_train_run(const dp_train_cfg *cfg, dp_model *m, const dp_dataset *d, const dp_comm *c,
                 dp_train_state *st, dp_train_result *res);

/* The buckets of --allreduce overlap: the layers, last first, grouped until a bucket holds
 * at least bucket_bytes of gradient (the remaining layers form the last bucket). Writes the
 * lowest layer of each bucket, in the order they start, into first_layer (at most n_layers
 * entries) and returns the number of buckets. Local. */
int dp_train_buckets(const dp_model *m, size_t bucket_bytes, int *first_layer);

/* Mean loss and accuracy of m over rows[0..n_rows) of split s (all rows of s if rows is
 * NULL), each row counted once across the ranks. Collective. */
int dp_evaluate(dp_model *m, dp_loss loss, const dp_split *s, const size_t *rows, size_t n_rows,
                int eval_batch, const dp_comm *c, dp_eval_result *out);

/* The validation rows for val_fraction of n rows: count round(f * n), taken from a
 * permutation keyed by (seed, a validation tag); the rest are the training rows, in file
 * order. Deterministic and the same on every rank. Local. */
size_t dp_val_count(size_t n, float val_fraction);
void dp_val_split(size_t n, float val_fraction, uint64_t seed, size_t *train_rows,
                  size_t *val_rows);

#endif
