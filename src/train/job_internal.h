/* job_internal.h: what the jobs of src/train share: agreeing on a status with one message
 * (job.c, used by use.c too), and the parts of dp_run_job that deal with checkpoints
 * (checkpoints.c): the writer the loop calls, choosing the checkpoint to start from, refusing
 * one of another run, and making room for a new run. Internal. */
#ifndef DPTRAIN_TRAIN_JOB_INTERNAL_H
#define DPTRAIN_TRAIN_JOB_INTERNAL_H

#include "dptrain/ckpt.h"
#include "dptrain/run.h"

#include <stdio.h>

typedef struct {
    char dir[DP_PATH_MAX + 16]; /* <out>/checkpoints */
    int keep_last;
    dp_ckpt_meta meta;      /* what every checkpoint says about the run (strings borrowed) */
    const dp_comm *c;
    FILE *log;              /* a line per checkpoint written (rank 0, or NULL) */
    char last[DP_PATH_MAX + 48]; /* the last checkpoint written */
} dp_job_writer;

/* Agrees on rc over c's ranks. The lowest rank with an error of its own (not DP_EPEER)
 * keeps its message, prefixed with ctx (may be "" or NULL), and every rank's *failed_rank
 * says which rank that is (-1: none); the others' message names it. Returns the agreed
 * status. Collective. */
/* Creates dir and its parents (mode 0777 before the umask); an existing one is fine. */
int dp_job_mkdir_p(const char *dir);

int dp_job_agree(const dp_comm *c, int rc, const char *ctx, int *failed_rank);

/* A dp_checkpoint_fn: rank 0 writes <dir>/ckpt-<step>.h5 and prunes to keep_last; the
 * status is agreed over the ranks. Collective. */
int dp_job_checkpoint(void *ctx, const dp_model *m, const dp_train_state *st, dp_ckpt_reason why);

/* The checkpoint a run starts from, into path ("" for a fresh start):
 *   resume ""     fresh; refused if dir already holds checkpoints, with what they hold (a
 *                 finished run's result) and the ways forward
 *   "auto"        the newest checkpoint in dir that verifies (damaged ones are skipped
 *                 with a warning on log), or fresh if there is none
 *   a path        that file, which must verify.
 * out is the run's --out (for the messages). Every rank looks; they must agree (a shared
 * file system). Collective. */
int dp_job_find_resume(const char *resume, const char *out, const char *dir, const dp_comm *c,
                       FILE *log, char *path, size_t cap);

/* Refusals: the checkpoint's model (architecture), dataset (shapes and fingerprints) and
 * configuration (every option that changes the trajectory, dp_run_cfg_diff) must be this
 * run's. Names what differs. Local. */
int dp_job_check_resume(const char *path, const dp_ckpt_meta *saved, const dp_model *saved_m,
                        const dp_ckpt_meta *now, const dp_run_cfg *cfg);

/* Architecture check of a model whose weights start or continue this run: "" if the same,
 * else a description of both into why. Local. */
bool dp_job_same_arch(const dp_model_cfg *a, const dp_model_cfg *b, char *why, size_t cap);

/* --init-from: the weights and batch-norm statistics of the model file or checkpoint path
 * into m, if its architecture is m's (else refused, naming both). Local. */
int dp_job_init_weights(const char *path, dp_model *m);

/* A job's dataset where --data-memory puts it (data_mem.c). */
typedef struct {
    dp_dataset *d;           /* the dataset (its arrays in shm in node mode) */
    dp_shared *shm;          /* node mode: the node's segment; else NULL */
    dp_data_memory mode;     /* replicate, node or stream: auto resolved */
    size_t bytes;            /* node mode: the segment's size */
    char why[96];            /* how the mode was chosen */
} dp_job_data;

/* Loads path on every rank of c in mode (auto: node when this node runs more than one rank
 * of c, else replicate), with every check of dp_dataset_load. replicate on a node whose
 * available memory cannot hold a copy per rank, and node where it cannot hold one, are
 * refused up front, naming the sizes.
 * *failed_rank as dp_job_agree. Collective. */
int dp_job_data_load(const char *path, dp_data_memory mode, const dp_comm *c, dp_job_data *jd,
                     int *failed_rank);
/* One line for the banner: the mode, why, and the copy's size and sharing. Local. */
void dp_job_data_describe(const dp_job_data *jd, const dp_comm *c, char *buf, size_t cap);
/* Collective over the node (the segment is freed with the node's ranks). */
void dp_job_data_free(dp_job_data *jd);

/* Moves checkpoints in dir with a step above `step` (a future the resumed run replaces)
 * out of the way, renaming them to *.superseded; nothing is deleted. Local (rank 0). */
int dp_job_supersede(const char *dir, long step, FILE *log);

/* --overwrite: if out exists and holds a run (checkpoints, model.h5 or metrics.jsonl),
 * renames it to out.old-<YYYYmmdd-HHMMSS>[-N]; nothing is deleted. Local (rank 0). */
int dp_job_move_aside(const char *out, FILE *log);

#endif
