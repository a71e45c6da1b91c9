/* dptrain/io.h: trained models on disk (HDF5). Local: called by one rank (rank 0 writes;
 * any rank may read). The layout is documented in datasets/README.md ("Model files"). */
#ifndef DPTRAIN_IO_H
#define DPTRAIN_IO_H

#include "dptrain/nn.h"

/* Writes the model's architecture and parameters (one dataset per layer tensor) and the
 * effective configuration (a JSON text, may be NULL) to path: written under a temporary
 * name, flushed, synced and renamed, so path is either the old file or the complete new
 * one. Refuses (DP_ENONFINITE) to write a model with a NaN or infinite parameter. */
int dp_model_save(const dp_model *m, const char *path, const char *config_json);

/* Reads a model file written by dp_model_save into a new model whose buffers hold
 * max_batch rows. If config_json != NULL it receives the saved configuration text (malloc'd,
 * "" if none; caller frees). */
int dp_model_load(const char *path, int max_batch, dp_model **out, char **config_json);

#endif
