/* dptrain/ckpt.h: checkpoints (HDF5): save, verify, load, list, prune. Local: rank 0 writes;
 * any rank may read. The layout is documented in datasets/README.md ("Checkpoint files").
 *
 * A checkpoint is a model file (same attributes and /layers/<i>/ datasets as dp_model_save
 * writes, so dp_model_load and h5py read its weights) plus a /state group holding the
 * dp_train_state, the optimizer slots and the metrics history, and a 512-byte HDF5 user
 * block at the start of the file holding a text header with the CRC-32 (zlib) and length
 * of everything after it. The checksum is verified before HDF5 opens the file, so a
 * truncated or damaged checkpoint is refused without parsing it. */
#ifndef DPTRAIN_CKPT_H
#define DPTRAIN_CKPT_H

#include "dptrain/nn.h"
#include "dptrain/state.h"

#include <stdint.h>

#define DP_CKPT_FORMAT_VERSION 1

/* What a checkpoint says about where it came from; what a resume compares. */
typedef struct {
    char *config_json;      /* the effective configuration, one JSON object (malloc'd) */
    char *data_path;        /* the dataset file as given to the run (malloc'd) */
    uint64_t train_fingerprint, test_fingerprint; /* dp_split_fingerprint; 0 if no split */
    uint64_t train_rows, test_rows, n_features;
    int n_ranks;            /* ranks of the run that wrote it */
    char *program_version;  /* dptrain version that wrote it (malloc'd) */
    int format_version;     /* DP_CKPT_FORMAT_VERSION when written */
    int64_t written_unix;   /* seconds since the epoch, when written */
} dp_ckpt_meta;

void dp_ckpt_meta_free(dp_ckpt_meta *meta); /* frees the strings; NULL-safe */

/* Writes model, state and meta to path: under a temporary name (path.tmp.PID), flushed,
 * synced, checksummed and renamed, and the directory synced; so path is either the old
 * file or the complete new one. meta->format_version and written_unix are filled in here.
 * Refuses (DP_ENONFINITE) non-finite parameters or optimizer state. */
int dp_ckpt_save(const char *path, const dp_model *m, const dp_train_state *st,
                 const dp_ckpt_meta *meta);

/* Checks the header and checksum of path without opening it with HDF5: DP_EFORMAT naming
 * what is wrong (not a checkpoint, truncated, checksum mismatch, newer format version). */
int dp_ckpt_verify(const char *path);

/* Verifies, then reads a checkpoint: a new model whose buffers hold max_batch rows (*m),
 * the training state (*st, which the caller later frees with dp_train_state_free) and the
 * metadata (*meta; free with dp_ckpt_meta_free). Any of m, st, meta may be NULL to skip. */
int dp_ckpt_load(const char *path, int max_batch, dp_model **m, dp_train_state *st,
                 dp_ckpt_meta *meta);

/* True if path starts with a checkpoint header (a quick test; no checksum). */
bool dp_ckpt_is_checkpoint(const char *path);

/* "<dir>/ckpt-<step, 10 digits>.h5" into buf. */
int dp_ckpt_path(const char *dir, long step, char *buf, size_t cap);

/* The checkpoints in dir (names ckpt-<digits>.h5, nothing else), sorted by step, ascending:
 * *paths is a malloc'd array of *n malloc'd strings and *steps of their steps (either may be
 * NULL if not wanted). A missing dir is an empty list. Free with dp_ckpt_list_free. */
int dp_ckpt_list(const char *dir, char ***paths, long **steps, int *n);
void dp_ckpt_list_free(char **paths, long *steps, int n);

/* Deletes all but the `keep` newest checkpoints in dir (keep >= 1), and leftover temporary
 * files (ckpt-*.h5.tmp.*) of earlier, interrupted writes. */
int dp_ckpt_prune(const char *dir, int keep);

/* Test hook: the k-th checkpoint write of this process (from now; 0 = never) pauses half-way
 * for an hour (dp_test_hooks.ckpt_pause). */
void dp_ckpt_test_pause(int k);

#endif
