/* data_internal.h: functions shared between the files of src/data only (not public API). */
#ifndef DPTRAIN_DATA_INTERNAL_H
#define DPTRAIN_DATA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "dptrain/data.h"

/* Largest number of feature dimensions (after the row dimension) a dataset file may have. */
#define DP_DATA_MAX_FEATURE_DIMS 8

/* Like dp_dataset_save, but x of both splits is written with shape [n, feat_dims[0], ...,
 * feat_dims[n_feat_dims-1]]; the product of feat_dims must equal n_features. Local. */
int dp_dataset_save_shaped(const char *path, const dp_dataset *d, int n_feat_dims,
                           const size_t *feat_dims);

/* Reads a CSV file (gzipped or not) of feature rows into s (x float, no labels), with the
 * rules of dp_convert_csv: numbers separated by commas, an optional header line. Local. */
int dp_csv_read_features(const char *path, dp_split *s);

/* How an array is stored in a file, for reading it as stored (--data-memory stream):
 * cls 'u' / 'i' (unsigned / signed little-endian integer) or 'f' (IEEE float), size in
 * bytes. */
typedef struct {
    char cls;
    int size;
} dp_raw_type;

/* Where a split's arrays are in its file: x at byte x_off, n rows of x_row bytes; y at
 * y_off, rows of y_row bytes. */
typedef struct {
    size_t n;
    uint64_t x_off, y_off;
    dp_raw_type x, y;
    size_t x_row, y_row;
} dp_raw_split;

/* The metadata of a dataset file with every check of dp_dataset_load that needs no rows, and
 * its arrays' places (raw: train, test); the splits have shapes and no arrays. n_classes is
 * -1 when only the labels can tell (no num_classes attribute). Local. */
int dp_dataset_layout(const char *path, dp_dataset **out, dp_raw_split raw[2]);
/* Reads every row of d's splits once, in blocks, as dp_dataset_load would: the checks that
 * need the rows (x finite, labels in range) and what a load would give for the class count
 * and dp_split_fingerprint of each split. Local. */
int dp_dataset_stream_scan(const char *path, const dp_dataset *d, const dp_raw_split raw[2],
                           dp_stream_info *out);

/* Closes a streamed split's source (stream.c). NULL-safe. */
void dp_stream_free(dp_rowsrc *r);

/* Frees the arrays of s and zeroes it. */
void dp_split_clear(dp_split *s);

#endif
