/* dptrain/bench.h: measuring the training step of a run: the real step (dp_train_run on
 * synthetic or real data) in each mode (the allreduce modes and deterministic mode), the
 * sgemm-only ceiling of its GEMM shapes and the gradient allreduce alone, measured in one
 * collective call; the median over repeats of each figure. `dptrain bench` prints and
 * writes what this returns; a script, a sweep or a test can call it on any communicator. */
#ifndef DPTRAIN_BENCH_H
#define DPTRAIN_BENCH_H

#include "dptrain/dist.h"
#include "dptrain/run.h"
#include "dptrain/train.h"

#include <stdbool.h>
#include <stddef.h>

#define DP_BENCH_MAX_REPEATS 100
#define DP_BENCH_N_ALONE 30      /* timed allreduces of the gradient alone */
#define DP_BENCH_BATCH_DEFAULT 128 /* the global batch when run.train.batch is 0 */

typedef struct dp_bench_result dp_bench_result;

/* What a row of the bench measures: how the step sums its gradient. */
typedef enum {
    DP_BENCH_BLOCKING,      /* the default step, one blocking allreduce (DP_REDUCE_BLOCKING) */
    DP_BENCH_OVERLAP,       /* bucket allreduces overlapped with the backward pass */
    DP_BENCH_DETERMINISTIC, /* deterministic mode (run.train.shards virtual shards, one
                             * blocking int64 allreduce); needs ranks <= shards */
    DP_BENCH_SHARDED,       /* ZeRO-1 (DP_REDUCE_SHARDED): reduce-scatter, slice update,
                             * allgather; on one rank, the blocking step */
    DP_BENCH_MODES
} dp_bench_mode;

typedef struct {
    /* What is measured: run.model, run.train (batch 0 stands for DP_BENCH_BATCH_DEFAULT;
     * one epoch, no validation, early stopping or plateau: nothing but steps is timed),
     * run.data ("" = synthetic rows: uint8 pixels, random labels or targets, from
     * run.train.seed) and run.flush_subnormals. run.threads is not applied (BLAS threads
     * are a process-wide setting: the driver's); out, resume, init_from and the checkpoint
     * fields are ignored, and so are run.train.reduce and run.train.deterministic (the
     * modes below say what each pass runs). */
    dp_run_cfg run;
    long steps;              /* timed optimizer steps per repeat, >= 1 */
    long warmup;             /* untimed steps per mode before the repeats, >= 0 */
    int repeats;             /* 1 to DP_BENCH_MAX_REPEATS; modes interleave repeat by repeat */
    bool modes[DP_BENCH_MODES]; /* which modes, at least one, interleaved in enum order;
                                 * on one rank, overlap measures blocking instead
                                 * (nothing to overlap) */
    size_t synth_rows;       /* synthetic rows; 0: what the longer of the warm-up and the
                              * timed passes needs (fewer is refused) */
    /* If not NULL, called on every rank once the model is built, before anything is
     * timed, with the result's run-wide sizes filled (n_params, batch, rows_per_step,
     * ranks): the driver can say what is being measured. Local. */
    void (*ready)(const dp_bench_result *res, void *ctx);
    void *ready_ctx;
} dp_bench_cfg;

/* The defaults: dp_run_defaults, 100 steps, 10 warm-up steps, 5 repeats, the blocking and
 * overlap modes, synth_rows 0, no ready callback. Local. */
void dp_bench_defaults(dp_bench_cfg *cfg);

/* "blocking", "overlap" or "deterministic"; NULL for anything else. Local. */
const char *dp_bench_mode_name(dp_bench_mode mode);

/* One mode's figures. Phases are per optimizer step, the mean over the ranks; every figure
 * is the median over the repeats. */
typedef struct {
    dp_bench_mode mode;
    const char *mode_name;   /* dp_bench_mode_name(mode) */
    double samples_per_s;    /* rows of the timed pass / its wall time (the slowest rank) */
    double step_ms;          /* rows per step / samples_per_s */
    double data_ms, forward_ms, backward_ms, allreduce_ms, allreduce_wait_ms, optim_ms;
    double gflops;           /* 6 x n_params x samples_per_s / 1e9 */
    double ceiling_ratio;    /* samples_per_s / ceiling_samples_per_s */
    int n_buckets;           /* overlap: the allreduce buckets; otherwise 1 */
} dp_bench_row;

struct dp_bench_result {
    int failed_rank;         /* after a failure: the lowest rank whose own error it is (that
                              * rank's dp_errmsg() says what; the others' say which rank
                              * failed), or -1 */
    int n_rows;              /* the modes measured, in dp_bench_mode order */
    dp_bench_row rows[DP_BENCH_MODES];
    /* the run */
    int ranks;
    size_t n_params;
    size_t batch, batch_per_rank; /* global rows per micro-batch; the most a rank takes */
    size_t rows_per_step;    /* batch x accumulate */
    /* the sgemm-only ceiling: the step's GEMM shapes alone, every rank at once */
    double gemm_ms;          /* per step, the slowest rank */
    double ceiling_samples_per_s; /* batch / gemm time (per row: accumulation does not
                                   * change it) */
    /* the gradient allreduce alone (blocking, n_params + DP_GRAD_TAIL floats) */
    double allreduce_bytes;
    double allreduce_ms_alone;    /* median, the slowest rank */
    double allreduce_busbw_gbps;  /* dp_bench_busbw_gbps; 0 on one rank */
    /* memory */
    double peak_rss_mb;      /* the largest over the ranks, after the timed passes */
    double data_mb;          /* the rows the passes use */
    double state_mb;         /* the model (parameters, gradients, activation buffers) and
                              * the optimizer's slots */
    double rss_bound_mb;     /* 1.5 x (data_mb + state_mb) + 30 */
    double slots_mb;         /* the optimizer's slots over all parameters (a sharded run holds
                              * 1/ranks of them per rank) */
};

/* Measures cfg on c: loads run.data (every rank holds all the training rows it needs) or
 * makes synthetic rows, checks every mode's training configuration (dp_train_check: the
 * deterministic mode's --shards against the ranks), builds the model (rank 0's initial
 * weights on every rank; buffers for the most rows any mode gives a rank), runs the
 * warm-up passes, then the repeats with the modes interleaved (each pass a fresh optimizer
 * state over the same rows), measures the GEMM ceiling and the allreduce alone, and fills
 * *res. Refusals name the option (--steps, --repeats, --allreduce, --shards, --data FILE).
 * Returns DP_OK, or the same error on every rank: this rank's own error, or DP_EPEER where
 * only another rank failed (res->failed_rank says which). Collective. */
int dp_bench_run(const dp_bench_cfg *cfg, const dp_comm *c, dp_bench_result *res);

/* The median of v[0..n) (n >= 1; the mean of the middle two when n is even); v is not
 * changed. n at most DP_BENCH_MAX_REPEATS or DP_BENCH_N_ALONE, whichever is larger. Local. */
double dp_bench_median(const double *v, int n);

/* Bus bandwidth of an allreduce of `bytes` over `ranks` ranks taking `seconds`, in Gbit/s:
 * 2 (ranks - 1) / ranks x bytes x 8 / seconds / 1e9 (what a ring allreduce moves per rank,
 * as NCCL's tests count it); 0 for one rank or seconds <= 0. Local. */
double dp_bench_busbw_gbps(double bytes, int ranks, double seconds);

#endif
