/* prepare.c: the part of a job that makes the model and its fresh state (no files): shared by
 * dp_run_job and the simulation build, which has no HDF5. */
#include "dptrain/run.h"

#include "dptrain/err.h"

int dp_run_prepare(const dp_train_cfg *tc, const dp_model_cfg *mc, const dp_dataset *d,
                   const dp_comm *c, dp_model **m, dp_train_state *st)
{
    const int size = dp_comm_size(c);
    dp_model_cfg cfg = *mc;
    *m = NULL;
    cfg.seed = tc->seed;
    int rc = dp_train_check(tc, &cfg, d, size);
    if (rc == DP_OK) {
        cfg.max_batch = dp_train_max_rows(tc, d, size);
        rc = dp_model_create(&cfg, m);
    }
    if (rc == DP_OK) {
        rc = dp_train_state_fresh(tc, *m, st);
    }
    int all = dp_comm_agree(c, rc); /* before the broadcast, which every rank must reach */
    if (all == DP_OK) {
        /* Rank 0's initialization is everyone's; a failing broadcast aborts the job. */
        rc = all = dp_comm_agree(c, dp_train_sync_params(*m, c));
    }
    if (all != DP_OK) {
        dp_model_free(m);
        if (rc == DP_OK) {
            rc = dp_err(DP_EPEER, "another rank failed");
        }
    }
    return rc;
}
