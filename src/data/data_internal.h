/* data_internal.h: functions shared between the files of src/data only (not public API). */
#ifndef DPTRAIN_DATA_INTERNAL_H
#define DPTRAIN_DATA_INTERNAL_H

#include <stddef.h>

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

/* Frees the arrays of s and zeroes it. */
void dp_split_clear(dp_split *s);

#endif
