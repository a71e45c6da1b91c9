/* dptrain/run.h: a whole training job: its typed configuration (every default in one place,
 * JSON in and out through jansson), and the one call that runs it on a communicator (data,
 * model, initialise or resume, the loop with its checkpoints, evaluation, the outputs).
 * Any driver uses the same call: the dptrain program, a test training at several rank
 * counts on split communicators, a sweep. */
#ifndef DPTRAIN_RUN_H
#define DPTRAIN_RUN_H

#include "dptrain/data.h"
#include "dptrain/dist.h"
#include "dptrain/nn.h"
#include "dptrain/train.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

#define DP_PATH_MAX 4096

/* Where a job's dataset lives (--data-memory). */
typedef enum {
    DP_DATA_AUTO = 0,   /* stream when the file is larger than half the memory a copy may
                         * take (available memory, the address-space limit); else node
                         * when a node runs more than one rank of the job, else replicate */
    DP_DATA_REPLICATE,  /* every rank reads the whole file into its own memory */
    DP_DATA_NODE,       /* one copy per node, in a node-shared segment (MPI-3 shared memory),
                         * read by the node's first rank */
    DP_DATA_STREAM,     /* no copy: each rank reads only its rows of each batch (and of the
                         * evaluation) from the file (pread), the next batch read ahead */
    DP_DATA_MEMORY_COUNT
} dp_data_memory;

/* "auto", "replicate", "node", "stream" ("?" if out of range); the value of a name, or -1. */
const char *dp_data_memory_name(dp_data_memory m);
int dp_data_memory_parse(const char *s);

/* The run configuration. Filled by dp_run_defaults, then by a saved config.json
 * (dp_run_cfg_from_json), an INI file or options (the program), in that order. */
typedef struct {
    /* data */
    char data[DP_PATH_MAX];  /* the HDF5 dataset (datasets/README.md) */
    /* model: every layer in full; model.seed is train.seed and model.max_batch is set by
     * the job */
    dp_model_cfg model;
    /* training, optimizer and schedule: loss, epochs, batch, seed, opt, sched, eval_batch,
     * val_fraction, patience, min_delta, clip_norm, accumulate, plateau_*, reduce,
     * bucket_bytes, checkpoint_every, checkpoint_epochs. The function and stream fields are
     * not configuration: the job sets them from dp_run_hooks. */
    dp_train_cfg train;
    int lr_scaling;          /* 0, or BASE of the linear scaling rule: the job uses
                              * lr x rows per step / BASE (train.opt.lr stays as given) */
    /* checkpoints */
    int keep_last;           /* keep the K newest checkpoints */
    char resume[DP_PATH_MAX];    /* "": a new run; "auto": the newest valid checkpoint in
                                  * out/checkpoints, else a new run; else a checkpoint file */
    char init_from[DP_PATH_MAX]; /* "" or a model or checkpoint file whose weights (and
                                  * batch-norm statistics) start a new run */
    bool overwrite;          /* a new run into an out that holds a run moves that run aside
                              * (to out.old-<time>) instead of being refused */
    /* output */
    char out[DP_PATH_MAX];   /* out/model.h5, out/metrics.jsonl, out/config.json,
                              * out/checkpoints/ */
    /* runtime: do not change what is computed */
    int threads;             /* BLAS threads per rank, 0 = cores / ranks on the node (the
                              * program sets them: a process-wide setting) */
    dp_data_memory data_memory; /* where the dataset lives: the same values on every rank
                                 * whatever the mode */
    bool flush_subnormals;   /* CPU FTZ/DAZ: changes results below 1.2e-38, so a resume
                              * must use the same */
    float step_timeout;      /* the watchdog's limit, s; 0: off; < 0: auto */
} dp_run_cfg;

/* The defaults of every field (README lists them; dptrain train --help prints them):
 * no data, model 0 layers (the program requires --layers), cross-entropy, 10 epochs,
 * batch 128, seed 1, sgd with torch's defaults, cosine schedule, eval_batch 1000,
 * checkpoints every epoch, keep 3, out "runs/dptrain". Local. */
void dp_run_defaults(dp_run_cfg *cfg);

/* The configuration as one JSON object (malloc'd string, free() it): sections "data",
 * "model", "training", "optimizer", "schedule", "checkpoints", "output", "runtime", and
 * "version" (the program's, for the record). Valid JSON whatever the strings hold; exact:
 * dp_run_cfg_from_json gives back the same struct. NULL on out of memory. Local. */
char *dp_run_cfg_to_json(const dp_run_cfg *cfg, const char *version);

/* Reads a JSON object written by dp_run_cfg_to_json over *cfg (fields it does not hold keep
 * their value, except training.shuffle: a configuration without it is from before it, of a
 * run that visited its rows in Fisher-Yates order, and is read so). An unknown section or key, a value of the wrong type or out of range is
 * refused with DP_EINVAL naming it (what names the source, e.g. the file). Local. */
int dp_run_cfg_from_json(const char *json, const char *what, dp_run_cfg *cfg);

/* The fields of saved and now that change the trajectory and differ, as
 * "training.epochs 10 (now 12), optimizer.lr 0.1 (now 0.05)" into buf; returns how many.
 * Fields that do not change what is computed (data path, out, eval batch, checkpoint
 * cadence, resume, init_from, overwrite, threads, allreduce mode, step timeout) are not
 * compared. Local. */
int dp_run_cfg_diff(const dp_run_cfg *saved, const dp_run_cfg *now, char *buf, size_t cap);

/* The model as a layer spec with every layer's settings: "784,256:relu:dropout=0.2:bn,
 * 10:identity" (what --layers reads, and how refusals name an architecture). Local. */
void dp_model_cfg_text(const dp_model_cfg *mc, char *buf, size_t cap);
/* The model as a table, one line per layer: its output shape and parameter count, and its
 * activation, batch norm and dropout, e.g. "  1  conv32k3p1   32x28x28      320  relu bn".
 * Lines start with indent. Local. */
void dp_model_table(const dp_model_cfg *mc, const char *indent, char *buf, size_t cap);
/* The kernels of the model's convolutions as one line (dp_model_conv_kernel, layers with the
 * same kernels grouped): "oneDNN jit:avx512_core: layer 1, 3"; "" without convolutions. Local. */
void dp_model_conv_kernels(const dp_model *m, char *buf, size_t cap);

/* What the driver gives a job besides its configuration. */
typedef struct {
    FILE *log;       /* human-readable lines (start-up, resume, checkpoints, epochs), rank 0
                      * only, or NULL */
    FILE *notice;    /* lines shown even when log is off (warnings: a damaged checkpoint
                      * skipped; a complete run resumed), rank 0 only, or NULL */
    dp_progress_fn progress; /* after every optimizer step (rank 0), or NULL */
    void *progress_ctx;
    const volatile sig_atomic_t *stop; /* a stop request (a signal handler sets it), or NULL */
    dp_test_hooks test;
    const char *version;     /* the program's version, recorded in outputs */
} dp_run_hooks;

typedef struct {
    int failed_rank;         /* after a failure: the lowest rank whose own error it is (that
                              * rank's dp_errmsg() says what; the others' say which rank
                              * failed), or -1 */
    dp_train_result train;
    int epoch;               /* where the run stands (after a stop: where it stopped) */
    long step;
    bool resumed;            /* started from a checkpoint */
    bool was_finished;       /* --resume auto found the run complete: nothing trained */
    char checkpoint[DP_PATH_MAX + 48]; /* the last checkpoint written, or "" */
    char model[DP_PATH_MAX + 16];  /* the model file written, or "" */
} dp_run_result;

/* Runs the job cfg on c: loads the data (every rank), builds the model, initialises it
 * (seed, or cfg->init_from) or resumes (cfg->resume: the checkpoint must be this run's:
 * model, dataset and every option that changes the trajectory, named when not), writes
 * cfg->out/config.json and metrics.jsonl, trains with checkpoints on their cadence and on a
 * stop request, evaluates and writes out/model.h5 (rank 0 writes; every rank agrees on the
 * status). cfg->out "" writes nothing (no checkpoints). Returns DP_OK, DP_ESTOPPED (stopped
 * by a request, checkpoint written), DP_ENONFINITE (diverged) or an error with its message;
 * the same status on every rank. Collective. */
int dp_run_job(const dp_run_cfg *cfg, const dp_comm *c, const dp_run_hooks *hooks,
               dp_run_result *res);

/* The part of a job that makes the model: checks cfg's training against the dataset,
 * creates the model for it (buffers for the most rows a rank handles), initialises it from
 * the seed and makes every rank's parameters rank 0's, and a fresh training state (free it
 * with dp_train_state_free). The simulation build calls this with its in-memory dataset.
 * Returns DP_OK on every rank, or this rank's error, or DP_EPEER where only another rank
 * failed. Collective. */
int dp_run_prepare(const dp_train_cfg *tc, const dp_model_cfg *mc, const dp_dataset *d,
                   const dp_comm *c, dp_model **m, dp_train_state *st);

/* --- options: the run configuration by option name ---------------------------------------
 * What the program's flags, an INI file and a sweep give: "lr" = "0.05", "layers" =
 * "784,256:tanh,10", "nesterov" (a switch). dp_run_opts_set records one (its value checked
 * alone, the last one given wins); dp_run_opts_apply applies all of them over a base
 * configuration (the defaults, or a saved config.json), in an order that does not depend on
 * the order they were given: the optimizer's torch defaults (if "optimizer" is given), then
 * its hyperparameters (one that does not apply is refused), the layer spec, then the
 * per-layer settings (settings written in the spec win). Messages name the option as the
 * program spells it ("--lr: 'fast' is not a number"). All Local. */
typedef struct dp_run_opts dp_run_opts;

int dp_run_opts_create(dp_run_opts **out);
void dp_run_opts_free(dp_run_opts **o); /* NULL-safe; sets *o = NULL */
/* A copy of src's options (a sweep's trial: the base options, then the trial's own). */
int dp_run_opts_copy(const dp_run_opts *src, dp_run_opts **out);
/* 1 if key (without dashes; '_' and '-' alike) is a switch, 0 if it takes a value, -1 if it
 * is not an option of a run. */
int dp_run_option_kind(const char *key);
/* Records key = value (NULL for a switch; "true"/"false" also accepted for a switch). */
int dp_run_opts_set(dp_run_opts *o, const char *key, const char *value);
/* The value recorded for key, or NULL. */
const char *dp_run_opts_get(const dp_run_opts *o, const char *key);
int dp_run_opts_apply(const dp_run_opts *o, dp_run_cfg *cfg);

/* Strict value parsing: the whole string, in range, or "OPT: 'text' is not ..." (DP_EINVAL). */
int dp_parse_int(const char *opt, const char *s, long lo, long hi, long *out);
int dp_parse_u64(const char *opt, const char *s, uint64_t *out);
int dp_parse_size(const char *opt, const char *s, size_t *out);
int dp_parse_float(const char *opt, const char *s, double lo, double hi, float *out);

#endif
