/* split_ranks.c: one MPI job of 4 ranks trains the same run at 1, 2, 3 and 4 ranks, each on
 * a communicator made with dp_comm_split, through the library's one call (dp_run_job), and
 * compares: the weights do not depend on the number of ranks (up to float summation order;
 * in deterministic mode, bit for bit).
 * Then a run stopped at step 7 on 2 ranks (the test hook a signal would trip) is resumed on
 * 3 ranks: it ends at the uninterrupted run's weights. Run under mpirun -np 4 (split.sh);
 * argv[1] is a scratch directory. Prints ok:/FAIL: lines; exits 1 on any failure. */
#include "dptrain/blas.h"
#include "dptrain/data.h"
#include "dptrain/dist.h"
#include "dptrain/err.h"
#include "dptrain/io.h"
#include "dptrain/run.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_fail = 0;

static void check(bool ok, const char *what)
{
    printf("%s: %s\n", ok ? "ok" : "FAIL", what);
    fflush(stdout);
    n_fail += !ok;
}

/* The run every rank count trains: a small MLP with batch norm and dropout (both must not
 * depend on N), a validation split, momentum and a checkpoint every 4 steps. */
static void run_cfg(dp_run_cfg *cfg, const char *work, const char *out)
{
    dp_run_defaults(cfg);
    snprintf(cfg->data, sizeof cfg->data, "%s/blobs.h5", work);
    snprintf(cfg->out, sizeof cfg->out, "%s/%s", work, out);
    dp_model_cfg *m = &cfg->model;
    m->n_layers = 2;
    m->sizes[0] = 6;
    m->sizes[1] = 24;
    m->sizes[2] = 3;
    m->act[0] = DP_ACT_TANH;
    m->act[1] = DP_ACT_IDENTITY;
    m->dropout[0] = 0.1f;
    m->batchnorm[0] = true;
    cfg->train.epochs = 3;
    cfg->train.batch = 60;
    cfg->train.seed = 5;
    cfg->train.val_fraction = 0.1f;
    cfg->train.opt.lr = 0.1f;
    cfg->train.opt.momentum = 0.9f;
    cfg->train.checkpoint_every = 4;
    cfg->train.eval_batch = 50;
}

/* Runs cfg on the first n ranks of world (the others wait). Returns the agreed status. */
static int run_on(const dp_comm *world, int n, const dp_run_cfg *cfg, const dp_test_hooks *t,
                  dp_run_result *res)
{
    dp_comm *sub = NULL;
    const bool in = dp_comm_rank(world) < n;
    int rc = dp_comm_split(world, in ? 0 : 1, &sub);
    if (rc == DP_OK && in) {
        dp_run_hooks h = {.version = "test"};
        if (t) {
            h.test = *t;
        }
        rc = dp_run_job(cfg, sub, &h, res);
        if (rc != DP_OK && rc != DP_ESTOPPED && res->failed_rank == dp_comm_rank(sub)) {
            fprintf(stderr, "split_ranks: %d ranks: %s\n", n, dp_errmsg());
        }
    }
    dp_comm_free(&sub);
    /* Everyone learns the first group's status (rank 0 is always in it). */
    float st = (float)rc;
    dp_comm_bcast_f32(world, &st, 1, 0);
    return (int)st;
}

/* Largest |a - b| / (atol + rtol |b|) over the two model files' parameters; > 1 fails. */
static double model_gap(const char *a, const char *b)
{
    dp_model *ma = NULL, *mb = NULL;
    double worst = INFINITY;
    if (dp_model_load(a, 1, &ma, NULL) == DP_OK && dp_model_load(b, 1, &mb, NULL) == DP_OK &&
        dp_model_n_params(ma) == dp_model_n_params(mb)) {
        const float *pa = dp_model_params(ma), *pb = dp_model_params(mb);
        worst = 0.0;
        for (size_t i = 0; i < dp_model_n_params(ma); i++) {
            double g = fabs((double)pa[i] - pb[i]) / (1e-5 + 1e-4 * fabs((double)pb[i]));
            worst = g > worst || g != g ? g : worst;
        }
    }
    dp_model_free(&ma);
    dp_model_free(&mb);
    return worst;
}

/* The two model files hold the same bits: parameters and batch-norm statistics. */
static bool model_same(const char *a, const char *b)
{
    dp_model *ma = NULL, *mb = NULL;
    bool same = dp_model_load(a, 1, &ma, NULL) == DP_OK && dp_model_load(b, 1, &mb, NULL) == DP_OK &&
                dp_model_n_params(ma) == dp_model_n_params(mb) &&
                dp_model_n_buffers(ma) == dp_model_n_buffers(mb) &&
                memcmp(dp_model_params(ma), dp_model_params(mb),
                       dp_model_n_params(ma) * sizeof(float)) == 0 &&
                memcmp(dp_model_buffers(ma), dp_model_buffers(mb),
                       dp_model_n_buffers(ma) * sizeof(float)) == 0;
    dp_model_free(&ma);
    dp_model_free(&mb);
    return same;
}

int main(int argc, char **argv)
{
    if (dp_dist_init(&argc, &argv) != DP_OK || argc != 2) {
        fprintf(stderr, "usage: mpirun -np 4 split_ranks WORKDIR\n");
        return 2;
    }
    const char *work = argv[1];
    dp_comm *world = NULL;
    if (dp_comm_world(&world) != DP_OK || dp_comm_size(world) != 4) {
        fprintf(stderr, "split_ranks: run with exactly 4 ranks\n");
        dp_dist_finalize();
        return 2;
    }
    const int rank = dp_comm_rank(world);
    dp_blas_set_threads(1);
    int rc = DP_OK;
    if (rank == 0) {
        dp_dataset *d = NULL;
        char path[DP_PATH_MAX];
        snprintf(path, sizeof path, "%s/blobs.h5", work);
        rc = dp_synth_blobs(600, 120, 6, 3, 0.6f, 3, &d);
        if (rc == DP_OK) {
            rc = dp_dataset_save(path, d);
        }
        dp_dataset_free(&d);
        if (rc != DP_OK) {
            fprintf(stderr, "split_ranks: %s\n", dp_errmsg());
        }
    }
    if (dp_comm_agree(world, rc) != DP_OK) {
        dp_comm_free(&world);
        dp_dist_finalize();
        return 1;
    }

    dp_run_result res[5];
    char name[32], a[DP_PATH_MAX + 32], b[DP_PATH_MAX + 32];
    for (int n = 1; n <= 4; n++) {
        dp_run_cfg cfg;
        snprintf(name, sizeof name, "np%d", n);
        run_cfg(&cfg, work, name);
        rc = run_on(world, n, &cfg, NULL, &res[n]);
        if (rank == 0) {
            snprintf(a, sizeof a, "%d ranks: the job runs (status %d), 3 epochs, 27 steps", n, rc);
            check(rc == DP_OK && res[n].train.epochs_done == 3 && res[n].train.steps_done == 27, a);
        }
    }
    if (rank == 0) {
        snprintf(b, sizeof b, "%s/np1/model.h5", work);
        for (int n = 2; n <= 4; n++) {
            snprintf(a, sizeof a, "%s/np%d/model.h5", work, n);
            double g = model_gap(a, b);
            char msg[256];
            snprintf(msg, sizeof msg, "%d ranks = 1 rank (atol 1e-5, rtol 1e-4; worst %.3g of "
                     "the tolerance); val loss %.6f vs %.6f", n, g, res[n].train.val.loss,
                     res[1].train.val.loss);
            check(g <= 1.0 && fabs(res[n].train.val.loss - res[1].train.val.loss) < 1e-4, msg);
        }
    }

    /* Deterministic mode through the library: 2, 3 and 4 ranks give the 1-rank bits. */
    dp_run_result det[5];
    for (int n = 1; n <= 4; n++) {
        dp_run_cfg cfg;
        snprintf(name, sizeof name, "det%d", n);
        run_cfg(&cfg, work, name);
        cfg.train.deterministic = true;
        rc = run_on(world, n, &cfg, NULL, &det[n]);
        if (rank == 0 && n > 1) {
            snprintf(a, sizeof a, "%s/det%d/model.h5", work, n);
            snprintf(b, sizeof b, "%s/det1/model.h5", work);
            char msg[256];
            snprintf(msg, sizeof msg, "deterministic: %d ranks = 1 rank bit for bit (status %d; "
                     "val loss %.17g vs %.17g)", n, rc, det[n].train.val.loss,
                     det[1].train.val.loss);
            check(rc == DP_OK && model_same(a, b) &&
                      det[n].train.val.loss == det[1].train.val.loss &&
                      det[n].train.train.loss == det[1].train.train.loss, msg);
        }
    }

    /* The comparison can fail: unsummed gradients (the test hook) on 2 ranks differ. */
    {
        dp_run_cfg bad;
        run_cfg(&bad, work, "broken");
        dp_test_hooks skip = {.skip_allreduce = true};
        dp_run_result rb;
        rc = run_on(world, 2, &bad, &skip, &rb);
        if (rank == 0) {
            snprintf(a, sizeof a, "%s/broken/model.h5", work);
            snprintf(b, sizeof b, "%s/np1/model.h5", work);
            char msg[160];
            const double g = model_gap(a, b);
            snprintf(msg, sizeof msg, "unsummed gradients on 2 ranks are noticed (%.3g x the "
                     "tolerance)", g);
            check(rc == DP_OK && g > 1.0, msg);
        }
    }

    /* Stopped on 2 ranks at step 7, resumed on 3: the run that never stopped. */
    dp_run_cfg cfg;
    run_cfg(&cfg, work, "stopped");
    dp_test_hooks stop = {.stop_at = 7};
    dp_run_result r;
    rc = run_on(world, 2, &cfg, &stop, &r);
    if (rank == 0) {
        check(rc == DP_ESTOPPED && r.step == 7 && strstr(r.checkpoint, "ckpt-0000000007.h5"),
              "2 ranks: a stop request at step 7 ends the job with its checkpoint");
    }
    snprintf(cfg.resume, sizeof cfg.resume, "auto");
    rc = run_on(world, 3, &cfg, NULL, &r);
    if (rank == 0) {
        snprintf(a, sizeof a, "%s/stopped/model.h5", work);
        snprintf(b, sizeof b, "%s/np1/model.h5", work);
        double g = model_gap(a, b);
        char msg[256];
        snprintf(msg, sizeof msg, "resumed on 3 ranks: status %d, from step 7 to 27, weights = "
                 "the 1-rank run's (worst %.3g of the tolerance)", rc, g);
        check(rc == DP_OK && r.resumed && r.step == 27 && g <= 1.0, msg);
    }

    /* A changed option is refused by the resume, naming it, on every rank of the group. */
    cfg.train.opt.lr = 0.2f;
    rc = run_on(world, 4, &cfg, NULL, &r);
    if (rank == 0) {
        check(rc == DP_EINVAL && r.failed_rank == 0 &&
                  strstr(dp_errmsg(), "optimizer.lr 0.1 (now 0.2)"),
              "a resume with another --lr is refused and names it");
    }

    int fails = (int)dp_comm_max_f64(world, (double)n_fail);
    dp_comm_free(&world);
    dp_dist_finalize();
    if (rank == 0) {
        printf("%s\n", fails ? "split_ranks: FAILED" : "split_ranks: all passed");
    }
    return fails ? 1 : 0;
}
