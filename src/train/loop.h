/* loop.h: the training loop of dp_train_run in named parts (internal to src/train; not
 * installed). dp_train_run (train.c) drives them; the unit tests call them one by one:
 *
 *   dp_loop_init(&s, ...);                         set up; agreed over the ranks
 *   for each epoch from st->epoch:
 *       dp_loop_begin_epoch(&s, epoch);            the epoch's permutation
 *       while (st->next_batch < s.n_batches)
 *           dp_loop_train_step(&s);                one optimizer step
 *       dp_loop_end_epoch(&s);                     evaluate, log, stop early?, checkpoint
 *   dp_loop_finish(&s);                            best weights, final figures
 *   dp_loop_free(&s);
 *
 * Every part but dp_loop_begin_epoch and dp_loop_free is collective, and returns the same
 * status on every rank. A non-DP_OK status ends the run: call only dp_loop_free after it. */
#ifndef DPTRAIN_TRAIN_LOOP_H
#define DPTRAIN_TRAIN_LOOP_H

#include "dptrain/train.h"

/* Slots of the gradient arena's tail (dp_model_grads after n_params) that ride the
 * allreduce: this rank's loss sum and correct count of the step, its stop request, and
 * whether it could not read its rows (a streamed file that failed: every rank stops). */
enum { DP_TAIL_LOSS = 0, DP_TAIL_CORRECT = 1, DP_TAIL_STOP = 2, DP_TAIL_FAIL = 3,
       DP_TAIL_USED = 4 };

/* The overlapped allreduce: buckets of whole layers over the gradient arena, the last
 * layers' bucket holding the tail floats too; bucket start_at[i] starts when layer i is
 * done (-1: none). */
typedef struct {
    dp_reducer *r;
    int start_at[DP_MAX_LAYERS];
    int n_started;
    double t_first; /* when this step's first bucket started */
} dp_loop_overlap;

/* Deterministic mode's buffers (cfg->deterministic): the shard layout of the current
 * global batch and the fixed-point gradient, whose tail after n_params holds, for the int64
 * allreduce, the stop requests, the correct rows and each shard's loss sum (as bits). */
enum { DP_DET_STOP = 0, DP_DET_CORRECT = 1, DP_DET_FAIL = 2, DP_DET_LOSS = 3 };

typedef struct {
    dp_shards sh;
    int *rows;                /* (shards): rows of this rank's shards */
    int64_t *acc;             /* (n_params + DP_DET_LOSS + shards) */
    float *sum;               /* (n_params): the step's gradient over its micro-batches, or NULL
                               * without accumulation */
} dp_loop_det;

/* --allreduce sharded on more than one rank (ZeRO-1): rank r updates parameters
 * [displs[r], displs[r] + counts[r]) (contiguous slices, as dp_shard_rows cuts rows) with
 * the optimizer state of that slice alone (the state's slots are that slice), from its slice
 * of the gradient arena, which the reduce-scatter sums in place; tmp is the reduce-scatter's
 * receive buffer. */
typedef struct {
    bool on;
    int *counts, *displs; /* (size) */
    size_t off, n;        /* this rank's slice */
    float *tmp;           /* (tmp_n) */
    int tmp_n;
} dp_loop_zero;

/* The loop's state: the run it belongs to, the shape of an epoch, buffers allocated once
 * before the first step, and where the loop is. */
typedef struct {
    /* The run (not owned). */
    const dp_train_cfg *cfg;
    dp_model *m;
    const dp_dataset *d;
    const dp_split *tr;       /* &d->train */
    const dp_comm *c;
    dp_train_state *st;
    dp_train_result *res;
    const dp_test_hooks *hooks; /* cfg->hooks, or all zero: never NULL */
    int rank, size;
    int k;                    /* model outputs */
    dp_sched_cfg sched;       /* cfg->sched with base_lr = cfg->opt.lr */
    /* Shape of an epoch. */
    size_t n_rows, n_val;     /* training rows, held-out rows */
    size_t B;                 /* global batch */
    size_t n_batches;         /* global batches per epoch */
    size_t K;                 /* global batches per optimizer step (cfg->accumulate) */
    long steps_per_epoch, total_steps;
    /* Buffers (owned). */
    size_t *rows, *val;       /* file rows used for training / validation (rows NULL: all
                               * of them, in file order, without a validation hold-out) */
    size_t *perm, *order;     /* Fisher-Yates: the epoch's permutation of [0, n_rows), and
                               * rows[perm[i]]; NULL with Feistel */
    dp_feistel fe;            /* Feistel: the epoch's permutation, one index at a time */
    size_t *ids, *ids_next;   /* Feistel: this rank's rows of the current and the next batch */
    float *x, *values;        /* this rank's slice of a batch */
    int32_t *labels;
    dp_loop_overlap ov;       /* DP_REDUCE_OVERLAP on more than one rank */
    dp_loop_det det;          /* deterministic mode */
    dp_loop_zero z;           /* DP_REDUCE_SHARDED on more than one rank */
    /* Where the loop is. */
    int epoch;                /* the epoch in progress, from 0 */
    double t0;                /* this rank's clock when the epoch's training time (still to
                               * add to st->epoch_seconds) started */
    bool ran_epoch;           /* an epoch was trained in this call (its evaluation stands) */
} dp_loop;

/* What one optimizer step carries from part to part. */
typedef struct {
    size_t b0, b1;      /* the step's global batches [b0, b1) */
    size_t group;       /* rows in them, over all ranks */
    double loss;        /* default mode: this rank's sum of its rows' losses (unscaled);
                         * deterministic: the global sum, added in shard and batch order */
    long correct;       /* this rank's correct rows (deterministic: all ranks') */
    bool stop;          /* deterministic: some rank asked to stop */
    int read_rc;        /* this rank could not read its rows (DP_OK: it could) */
    bool read_failed;   /* some rank could not (after the reduction) */
    double t;           /* the phase clock: when the current phase started */
    dp_step_times tm;   /* this step's phase times */
} dp_step_ctx;

/* The batch of this rank's rows ids[0..n) into its buffers: a streamed file that fails
 * leaves zeros there and its status in sc->read_rc (with a message), and the step goes on
 * so that every rank reaches the reduction that tells them all. Local. */
void dp_loop_gather(dp_loop *s, dp_step_ctx *sc, const size_t *ids, int n);

/* Rows in global batch b of an epoch of n rows in batches of B. Local. */
size_t dp_loop_batch_rows(size_t b, size_t B, size_t n);

/* Adds the seconds since sc->t to *field and restarts the clock; returns the time now. */
double dp_loop_lap(dp_step_ctx *sc, double *field);

/* The rank's stop request in this step (a signal, or the stop_at test hook). Local. */
bool dp_loop_stop_requested(const dp_loop *s);

/* Deterministic mode (shards.c): dp_loop_det_alloc sizes s->det for the run (Local);
 * dp_loop_det_batch does global batch b of the step sc, all of it: this rank's shards'
 * rows, forward, loss, backward into fixed point, the int64 allreduce and the gradient back
 * in floats (added over the step's batches in order), with sc->loss, correct and stop
 * summed over the ranks. Collective. */
int dp_loop_det_alloc(dp_loop *s);
void dp_loop_det_free(dp_loop *s);
int dp_loop_det_batch(dp_loop *s, dp_step_ctx *sc, size_t b);

/* The file rows of positions [first, first + count) of global batch b of the epoch: with
 * Fisher-Yates a pointer into s->order; with Feistel computed into buf (count entries).
 * Local. */
const size_t *dp_loop_ids(const dp_loop *s, size_t b, size_t first, size_t count, size_t *buf);

/* The global batch for n training rows: cfg->batch, or n if that is 0 or larger. Local. */
size_t dp_loop_batch(const dp_train_cfg *cfg, size_t n_rows);

/* The most rows of a global batch of B that one of `size` ranks holds: its slice, or in
 * deterministic mode its whole shards. Local. */
size_t dp_loop_max_local(const dp_train_cfg *cfg, size_t B, int size);

/* Sets up s for training m on d from st (fresh or resumed): zeroes *res, allocates the
 * buffers, checks that st fits this run, then writes st's history to the metrics log.
 * *s can be freed with dp_loop_free whatever the outcome. Collective: the status is agreed. */
int dp_loop_init(dp_loop *s, const dp_train_cfg *cfg, dp_model *m, const dp_dataset *d,
                 const dp_comm *c, dp_train_state *st, dp_train_result *res);
void dp_loop_free(dp_loop *s); /* Local */

/* Starts epoch `epoch` (from 0): its clock and its permutation of the training rows.
 * Local. */
void dp_loop_begin_epoch(dp_loop *s, int epoch);

/* One optimizer step over the global batches [st->next_batch, + cfg->accumulate) of the
 * epoch: for each, gather this rank's rows, forward and loss, backward (accumulating);
 * then the gradient allreduce (blocking, or the overlapped buckets), the NaN and explosion
 * checks, rmse rescale, clipping, the schedule and the optimizer update; the progress
 * callback; then a stop (checkpoint, DP_ESTOPPED) or a --checkpoint-every checkpoint.
 * Advances st->next_batch. Collective. */
int dp_loop_train_step(dp_loop *s);

/* Ends the epoch: training figures, validation and test evaluation, the epoch's record
 * (history, log line, metrics), reduce-on-plateau, early stopping (keeping the best
 * weights in st), and the epoch's or the final checkpoint. Collective. */
int dp_loop_end_epoch(dp_loop *s);

/* Ends the run: marks st finished if all epochs are done, fills *res, restores early
 * stopping's best weights and evaluates them (or evaluates if no epoch ran in this
 * call). Collective. */
int dp_loop_finish(dp_loop *s);

/* One JSON object for epoch record r as a line of f (metrics.jsonl), or nothing if f is
 * NULL: epoch, step, lr, train_loss, train_accuracy, val_* (with a validation split), test_*
 * (with a test split), samples_per_s, seconds; NaN or infinite figures as null. Local. */
void dp_metrics_write(FILE *f, const dp_epoch_record *r);

#endif
