/* resume.h: the train command's checkpoints: the writer the training loop calls, finding
 * the checkpoint to resume from, and the checks that it belongs to this run. */
#ifndef DPTRAIN_CLI_RESUME_H
#define DPTRAIN_CLI_RESUME_H

#include "dptrain/ckpt.h"
#include "dptrain/data.h"
#include "dptrain/dist.h"
#include "dptrain/train.h"

#include <stdbool.h>
#include <stdio.h>

typedef struct {
    char dir[4096];      /* <out>/checkpoints */
    int keep_last;
    dp_ckpt_meta meta;   /* what every checkpoint says about the run (strings borrowed) */
    const dp_comm *c;
    FILE *log;           /* a line per checkpoint written (rank 0, or NULL) */
    char last[4096];     /* the last checkpoint written */
} dp_ckpt_writer;

/* A dp_checkpoint_fn: rank 0 writes <dir>/ckpt-<step>.h5 and prunes to keep_last; the
 * status is agreed over the ranks. Collective. */
int dp_cli_checkpoint(void *ctx, const dp_model *m, const dp_train_state *st,
                      dp_ckpt_reason why);

/* The checkpoint a run starts from, into path ("" for a fresh start):
 *   resume NULL   fresh; refused if dir already holds checkpoints (they would be pruned)
 *   "auto"        the newest checkpoint in dir that verifies (damaged ones are skipped
 *                 with a warning on log), or fresh if there is none
 *   a path        that file, which must verify.
 * Every rank looks; they must agree (a shared file system). Collective. */
int dp_cli_find_resume(const char *resume, const char *dir, const dp_comm *c, FILE *log,
                       char *path, size_t cap);

/* Refusals: the checkpoint's model (architecture), dataset (shapes and fingerprints) and
 * configuration (every option that changes the trajectory) must be this run's. Names what
 * differs. Local. */
int dp_cli_check_resume(const char *path, const dp_ckpt_meta *saved, const dp_model *saved_m,
                        const dp_ckpt_meta *now, const dp_model_cfg *mc);

/* Moves checkpoints in dir with a step above `step` (a future the resumed run replaces)
 * out of the way, renaming them to *.superseded; nothing is deleted. Local (rank 0). */
int dp_cli_supersede(const char *dir, long step, FILE *log);

#endif
