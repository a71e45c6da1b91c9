/* dptrain/use.h: using a trained model: its loss and accuracy on a split of a dataset
 * (dp_eval_job), its outputs for every row of a split written to a file (dp_predict_job),
 * and what a model file or checkpoint holds (dp_describe_file). The jobs run alone or on any
 * number of ranks: every rank does its share, rank 0 writes, and every rank returns the same
 * status. Any driver uses the same calls: the dptrain program's eval, predict and info, a
 * test, a sweep on split communicators. */
#ifndef DPTRAIN_USE_H
#define DPTRAIN_USE_H

#include "dptrain/dist.h"
#include "dptrain/nn.h"
#include "dptrain/run.h"
#include "dptrain/train.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Which rows of the data a job runs on. Data without /train and /test splits (rows at the
 * root, /x, or a CSV file of feature rows) has one set of rows: only DP_USE_TEST applies. */
typedef enum {
    DP_USE_TEST = 0, /* all of /test */
    DP_USE_TRAIN,    /* /train without the training run's validation hold-out */
    DP_USE_VAL,      /* that hold-out, re-created from the saved config's seed and
                      * val_fraction */
} dp_use_split;

/* "test", "train", "val" ("?" for anything else). Local. */
const char *dp_use_split_name(dp_use_split s);
/* The split named s, or -1. Local. */
int dp_use_split_parse(const char *s);

#define DP_USE_LOSS_SAVED (-1)     /* dp_use_cfg.loss: the saved configuration's loss */
#define DP_USE_EVAL_BATCH_DEFAULT 1000

/* A job's configuration. The strings are borrowed: they must outlive the call. */
typedef struct {
    const char *model;   /* a model file (model.h5) or a checkpoint */
    const char *data;    /* an HDF5 dataset (splits, or rows at the root: /x, optional /y) or
                          * a CSV file of feature rows (name ending in .csv or .csv.gz) */
    dp_use_split split;
    int loss;            /* a dp_loss (how the outputs are read; eval: the loss reported),
                          * or DP_USE_LOSS_SAVED */
    int eval_batch;      /* rows per forward pass, per rank, >= 1 */
    const char *output;  /* predict: the file to write. Its name chooses the format (the
                          * writer, dp_predictions_save, decides): ending in .csv: CSV, else
                          * HDF5 */
} dp_use_cfg;

/* model, data and output NULL, split test, the saved loss, eval batch 1000. Local. */
void dp_use_defaults(dp_use_cfg *cfg);

/* --- reading a model's outputs --------------------------------------------------------- */

/* What predict writes for a loss. */
typedef enum {
    DP_PRED_SOFTMAX, /* cross-entropy, categorical-cross-entropy: softmax probabilities and
                      * the class with the largest output (the first maximum) */
    DP_PRED_SIGMOID, /* binary-cross-entropy (logits): sigmoid probabilities; one output:
                      * class 1 when the output is > 0 */
    DP_PRED_PROBS,   /* binary-cross-entropy-probs: the outputs are probabilities already;
                      * one output: class 1 when it is > 0.5 */
    DP_PRED_VALUES,  /* regression (mse, rmse, mae): the raw outputs, no class */
} dp_pred_kind;

dp_pred_kind dp_pred_kind_of(dp_loss l);  /* Local */
/* "softmax probabilities", "sigmoid probabilities", "probabilities (sigmoid output layer)",
 * "raw outputs" (the outputs attribute of a predictions file). Local. */
const char *dp_pred_kind_name(dp_pred_kind kind);
/* Whether rows of k outputs read as kind have a predicted class. Local. */
bool dp_pred_has_labels(dp_pred_kind kind, int k);
/* One row's k outputs o into p (k): probabilities, or the values copied; returns its
 * predicted class, or -1 where there is none (dp_pred_has_labels). Local. */
int32_t dp_pred_transform(dp_pred_kind kind, const float *o, int k, float *p);

/* --- the saved configuration and the rows of a split ----------------------------------- */

/* The saved run configuration of a model file or checkpoint (its config text, as
 * dp_run_cfg_to_json writes it) into *run; false if there is none or it cannot be read
 * (then *run holds dp_run_defaults). Files of dptrain before the typed configuration hold a
 * flat object: its "loss", "val_fraction", "seed" and "plateau_factor" are taken. Local. */
bool dp_use_saved_cfg(const char *config_json, dp_run_cfg *run);

/* The rows of cfg->split (DP_USE_TRAIN or DP_USE_VAL) of a /train split of n_train rows:
 * the training run's hold-out is dp_val_split with saved's seed and val_fraction (saved
 * NULL: no saved configuration). *rows (malloc'd, free() it) gets them, the training rows
 * in file order and the hold-out in dp_val_split's order, or in file order if file_order;
 * *rows is NULL when the run had no hold-out (every row, DP_USE_TRAIN only). --split val
 * without a hold-out, a val_fraction outside [0, 1) and one that leaves no row on either
 * side are refused, naming cfg->model. Local. */
int dp_use_train_rows(const dp_use_cfg *cfg, const dp_run_cfg *saved, size_t n_train,
                      bool file_order, size_t **rows, size_t *n_rows);

/* --- the jobs -------------------------------------------------------------------------- */

typedef struct {
    int failed_rank;     /* after a failure: the lowest rank whose own error it is (that
                          * rank's dp_errmsg() says what; the others' say which rank
                          * failed), or -1 */
    dp_loss loss;        /* the loss used (cfg->loss, or the saved one) */
    char where[256];     /* the rows, for messages: "/test (10000 rows)", "/train validation
                          * hold-out (120 rows; val_fraction 0.2, seed 1)", "CSV (200 rows)" */
    size_t n_rows;       /* rows run */
    int n_outputs;       /* the model's outputs per row */
    dp_eval_result eval; /* dp_eval_job: mean loss, accuracy (NaN unless classification), n */
    dp_pred_kind outputs; /* dp_predict_job: what was written */
} dp_use_result;

/* Loads cfg->model on every rank (a checkpoint's checksum is verified first; NaN or
 * infinite values are refused), chooses the loss (cfg->loss or the saved one; the model's
 * last layer must be the one it reads), loads cfg->data, chooses the rows of cfg->split and
 * checks that the model fits them (inputs; outputs against the classes or targets; eval
 * needs y), then evaluates: each row counted once over the ranks. Returns DP_OK or an error
 * (DP_EINVAL where the model does not fit the data or the options); the same status on
 * every rank. Collective. */
int dp_eval_job(const dp_use_cfg *cfg, const dp_comm *c, dp_use_result *res);

/* Like dp_eval_job up to the rows (data without y fits), then writes the model's outputs
 * for every row, in row order, to cfg->output (see dp_pred_kind; HDF5 attributes model,
 * data, split, loss, outputs; /true_labels when the data has class labels and there are
 * predicted ones; /rows). Each rank computes a contiguous share of whole blocks of
 * eval_batch rows starting at multiples of eval_batch with one BLAS thread (the BLAS thread
 * count is restored after), so every row goes through the same matrix products at any rank
 * count and the file is the same bytes for any N. Rank 0 writes, atomically. Collective. */
int dp_predict_job(const dp_use_cfg *cfg, const dp_comm *c, dp_use_result *res);

/* eval's result as one JSON object (malloc'd string without a newline, free() it):
 * {"model", "data", "split", "rows", "loss_name", "loss", "accuracy"}; a NaN or infinite
 * figure is null. NULL if out of memory. Local. */
char *dp_eval_json(const dp_use_cfg *cfg, const dp_use_result *res);

/* --- what a file holds ----------------------------------------------------------------- */

/* Reads the model file or checkpoint at path (a checkpoint's checksum is verified first)
 * and describes it: its format, layers, parameter count and saved configuration; for a
 * checkpoint also who wrote it and when, the position in the run, the optimizer and its
 * state arrays, early-stopping and reduce-on-plateau state, the dataset it was trained on
 * and every finished epoch's metrics. text != NULL: the description as lines written to
 * text. json != NULL: *json gets it as one JSON object (malloc'd string without a newline,
 * free() it): "file", "format", "format_version", "sizes", "layers", "n_params",
 * "bn_momentum", "bn_eps", "config" (the saved configuration: an object, or a string if it
 * is not a JSON object, or null) and for a checkpoint "checkpoint". The file is read
 * completely before anything is written. Local. */
int dp_describe_file(const char *path, FILE *text, char **json);

#endif
