/* dptrain/io.h: trained models on disk (HDF5). Local: called by one rank (rank 0 writes;
 * any rank may read). The layout is documented in datasets/README.md ("Model files"). */
#ifndef DPTRAIN_IO_H
#define DPTRAIN_IO_H

#include "dptrain/nn.h"

#include <stdint.h>

/* Writes the model's architecture and parameters (one dataset per layer tensor) and the
 * effective configuration (a JSON text, may be NULL) to path: written under a temporary
 * name, flushed, synced and renamed, so path is either the old file or the complete new
 * one. Refuses (DP_ENONFINITE) to write a model with a NaN or infinite parameter. */
int dp_model_save(const dp_model *m, const char *path, const char *config_json);

/* Reads a model file written by dp_model_save into a new model whose buffers hold
 * max_batch rows. If config_json != NULL it receives the saved configuration text (malloc'd,
 * "" if none; caller frees). */
int dp_model_load(const char *path, int max_batch, dp_model **out, char **config_json);

/* The model layout version of a model file or checkpoint (root attribute format_version),
 * or 0 if it cannot be read. */
int dp_model_format_version(const char *path);

/* A model's outputs for the rows of a dataset split. */
typedef struct {
    const float *values;    /* (n, k) row-major */
    size_t n;
    int k;
    const int32_t *labels;  /* n predicted classes, or NULL */
    const int32_t *true_labels; /* n true classes (the data's y), or NULL: only with labels */
    const int64_t *rows;    /* n: the dataset row of each prediction */
    const char *column;     /* CSV column prefix ("p" or "y") */
    int first_column;       /* CSV: number of the first column (1 for one binary output) */
    const char *attrs[8][2]; /* HDF5: string attributes (name, value) */
    int n_attrs;
} dp_predictions;

/* Writes p to path: CSV if path ends in .csv (a header "predicted,p0,p1,...[,true_label]",
 * "predicted" and "true_label" only when labels and true_labels are given, then one line
 * per row), else HDF5 (/predictions float32 [n, k], /labels int32 [n] (the predicted
 * classes), /true_labels int32 [n], /rows int64 [n] and the attributes). Under a temporary
 * name, synced and renamed, like dp_model_save. */
int dp_predictions_save(const char *path, const dp_predictions *p);

#endif
