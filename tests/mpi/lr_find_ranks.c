/* lr_find_ranks.c: the learning-rate range test (dp_lrfind_run) in one MPI job of 3 ranks,
 * at 1, 2 and 3 ranks on communicators from dp_comm_split.
 *
 * Linear regression with the mean squared error and full-batch gradient descent: the loss is
 * a quadratic whose Hessian is H = (2/n) X~^T X~ (X~: the rows with a 1 for the bias), so
 * gradient descent is stable for rates below 2 / lambda_max(H) and diverges above it. The
 * test computes lambda_max from the data it wrote (power iteration, in double) and checks
 * that the suggestion lies inside the stable range, and not orders of magnitude below it,
 * and that the test stopped past the edge. Then: 2 and 3 ranks give 1 rank's curve below
 * the edge (to rounding) and the same suggestion; in deterministic mode, the same bits; a run whose
 * gradients are not summed (the test hook) gives another curve, so the comparison can fail;
 * a stop request at step 7 ends the test there on every rank with 7 points.
 * Run under mpirun -np 3 (lr_find.sh); argv[1] is a scratch directory. Prints ok:/FAIL:
 * lines; exits 1 on any failure. */
#include "dptrain/blas.h"
#include "dptrain/data.h"
#include "dptrain/dist.h"
#include "dptrain/err.h"
#include "dptrain/lrfind.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N_ROWS = 480, N_FEAT = 3 };

static int n_fail = 0;

static void check(bool ok, const char *what)
{
    printf("%s: %s\n", ok ? "ok" : "FAIL", what);
    fflush(stdout);
    n_fail += !ok;
}

/* A private generator (splitmix64), independent of the library's. */
static double uniform(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

/* y = w.x + b + noise, features of different scales and a nonzero mean, so that H's
 * largest eigenvalue is not simply 2. */
static int write_data(const char *path)
{
    static const double scale[N_FEAT] = {1.0, 2.5, 0.4}, mean[N_FEAT] = {0.0, 0.5, 1.0},
                        w[N_FEAT] = {1.5, -0.5, 2.0};
    dp_dataset d = {.n_classes = 0};
    dp_split *s[2] = {&d.train, &d.test};
    const size_t rows[2] = {N_ROWS, 60};
    uint64_t g = 7;
    int rc = DP_OK;
    for (int k = 0; k < 2 && rc == DP_OK; k++) {
        *s[k] = (dp_split){.n = rows[k], .n_features = N_FEAT, .x_scale = 1.0f, .n_targets = 1};
        s[k]->x_f32 = malloc(sizeof(float) * rows[k] * N_FEAT);
        s[k]->values = malloc(sizeof(float) * rows[k]);
        if (!s[k]->x_f32 || !s[k]->values) {
            rc = DP_ENOMEM;
            break;
        }
        for (size_t i = 0; i < rows[k]; i++) {
            double y = 0.3 + 0.1 * (uniform(&g) - 0.5);
            for (int j = 0; j < N_FEAT; j++) {
                float x = (float)(mean[j] + scale[j] * (2.0 * uniform(&g) - 1.0));
                s[k]->x_f32[i * N_FEAT + j] = x;
                y += w[j] * x;
            }
            s[k]->values[i] = (float)y;
        }
    }
    if (rc == DP_OK) {
        rc = dp_dataset_save(path, &d);
    }
    for (int k = 0; k < 2; k++) {
        free(s[k]->x_f32);
        free(s[k]->values);
    }
    return rc;
}

/* 2 / lambda_max of H = (2/n) X~^T X~ over the training rows of the file, in double. */
static double stable_rate(const char *path)
{
    dp_dataset *d = NULL;
    if (dp_dataset_load(path, &d) != DP_OK) {
        return NAN;
    }
    enum { M = N_FEAT + 1 };
    double H[M][M] = {{0}}, v[M] = {1, 1, 1, 1}, lambda = 0.0;
    const dp_split *s = &d->train;
    for (size_t i = 0; i < s->n; i++) {
        double row[M];
        for (int j = 0; j < N_FEAT; j++) {
            row[j] = s->x_f32[i * N_FEAT + j];
        }
        row[N_FEAT] = 1.0;
        for (int a = 0; a < M; a++) {
            for (int b = 0; b < M; b++) {
                H[a][b] += 2.0 * row[a] * row[b] / (double)s->n;
            }
        }
    }
    for (int it = 0; it < 2000; it++) {
        double u[M] = {0}, norm = 0.0;
        for (int a = 0; a < M; a++) {
            for (int b = 0; b < M; b++) {
                u[a] += H[a][b] * v[b];
            }
            norm += u[a] * u[a];
        }
        norm = sqrt(norm);
        for (int a = 0; a < M; a++) {
            v[a] = u[a] / norm;
        }
        lambda = norm;
    }
    dp_dataset_free(&d);
    return 2.0 / lambda;
}

static void run_cfg(dp_run_cfg *cfg, const char *data)
{
    dp_run_defaults(cfg);
    snprintf(cfg->data, sizeof cfg->data, "%s", data);
    cfg->out[0] = '\0';
    dp_model_cfg *m = &cfg->model;
    m->n_layers = 1;
    m->sizes[0] = N_FEAT;
    m->sizes[1] = 1;
    m->act[0] = DP_ACT_IDENTITY;
    cfg->train.loss = DP_LOSS_MSE;
    cfg->train.batch = 0; /* full batch: gradient descent on the quadratic */
    cfg->train.seed = 3;
    cfg->train.opt.momentum = 0.0f;
}

/* The range test on the first n ranks of world; rank 0 (in every group) keeps the result.
 * Returns the status, broadcast to every rank. */
static int find_on(const dp_comm *world, int n, const dp_run_cfg *cfg, const dp_lrfind_cfg *lf,
                   const dp_test_hooks *t, dp_lrfind_result *res)
{
    dp_comm *sub = NULL;
    const bool in = dp_comm_rank(world) < n;
    int rc = dp_comm_split(world, in ? 0 : 1, &sub);
    if (rc == DP_OK && in) {
        static volatile sig_atomic_t never = 0;
        dp_run_hooks h = {.version = "test", .stop = &never};
        if (t) {
            h.test = *t;
        }
        rc = dp_lrfind_init(res, lf);
        if (rc == DP_OK) {
            rc = dp_lrfind_run(cfg, lf, sub, &h, res);
        }
        if (rc != DP_OK && res->failed_rank == dp_comm_rank(sub)) {
            fprintf(stderr, "lr_find_ranks: %d ranks: %s\n", n, dp_errmsg());
        }
    }
    dp_comm_free(&sub);
    float st = (float)rc;
    dp_comm_bcast_f32(world, &st, 1, 0);
    return (int)st;
}

/* Largest relative difference of two curves' losses over their common points with rates
 * below lr_limit. */
static double curve_gap(const dp_lrfind_result *a, const dp_lrfind_result *b, double lr_limit)
{
    double worst = 0.0;
    for (int i = 0; i < a->n && i < b->n && b->lr[i] < lr_limit; i++) {
        double g = fabs(a->loss[i] - b->loss[i]) / (1e-12 + fabs(b->loss[i]));
        worst = g > worst || g != g ? g : worst;
    }
    return worst;
}

static bool same_bits(const dp_lrfind_result *a, const dp_lrfind_result *b)
{
    const size_t n = (size_t)a->n * sizeof(double);
    return a->n == b->n && memcmp(a->lr, b->lr, n) == 0 && memcmp(a->loss, b->loss, n) == 0 &&
           memcmp(a->smooth, b->smooth, n) == 0 && a->steepest == b->steepest;
}

int main(int argc, char **argv)
{
    if (dp_dist_init(&argc, &argv) != DP_OK || argc != 2) {
        fprintf(stderr, "usage: mpirun -np 3 lr_find_ranks WORKDIR\n");
        return 2;
    }
    dp_comm *world = NULL;
    if (dp_comm_world(&world) != DP_OK || dp_comm_size(world) != 3) {
        fprintf(stderr, "lr_find_ranks: run with exactly 3 ranks\n");
        dp_dist_finalize();
        return 2;
    }
    const int rank = dp_comm_rank(world);
    dp_blas_set_threads(1);
    char data[DP_PATH_MAX], msg[512];
    snprintf(data, sizeof data, "%s/linreg.h5", argv[1]);
    int rc = rank == 0 ? write_data(data) : DP_OK;
    if (dp_comm_agree(world, rc) != DP_OK) {
        fprintf(stderr, "lr_find_ranks: %s: %s\n", data, dp_errmsg());
        dp_comm_free(&world);
        dp_dist_finalize();
        return 1;
    }
    dp_run_cfg cfg;
    run_cfg(&cfg, data);
    dp_lrfind_cfg lf;
    dp_lrfind_defaults(&lf);
    lf.lr_min = 1e-5;
    lf.lr_max = 1e2;
    lf.steps = 140;

    /* The suggestion on one rank lies inside the stable range of gradient descent. */
    dp_lrfind_result r[4] = {{0}};
    for (int n = 1; n <= 3; n++) {
        rc = find_on(world, n, &cfg, &lf, NULL, &r[n]);
        if (rank == 0) {
            snprintf(msg, sizeof msg, "%d rank%s: the test runs (status %d), %d points", n,
                     n == 1 ? "" : "s", rc, r[n].n);
            check(rc == DP_OK && r[n].n >= 2, msg);
        }
    }
    const double edge = rank == 0 ? stable_rate(data) : NAN;
    if (rank == 0) {
        const dp_lrfind_result *a = &r[1];
        snprintf(msg, sizeof msg, "suggested lr %.4g (step %d) is in the stable range "
                 "(edge/30, 2/lambda_max = %.4g); smallest smoothed loss %.4g at lr %.4g; "
                 "stopped at lr %.4g (%s)", a->suggestion, a->steepest, edge,
                 a->best >= 0 ? a->smooth[a->best] : NAN, a->best >= 0 ? a->lr[a->best] : NAN,
                 a->n ? a->lr[a->n - 1] : NAN,
                 a->why == DP_LRFIND_DIVERGED ? "diverged" : a->why == DP_LRFIND_EXPLODED
                                                             ? "exploded" : "other");
        check(a->steepest >= 0 && a->suggestion < edge && a->suggestion > edge / 30.0, msg);
        snprintf(msg, sizeof msg, "the test ended by divergence, past the edge (last lr %.4g > "
                 "%.4g)", a->n ? a->lr[a->n - 1] : NAN, edge);
        check((a->why == DP_LRFIND_DIVERGED || a->why == DP_LRFIND_EXPLODED) &&
                  a->lr[a->n - 1] > edge, msg);
        /* Past the edge the loss grows from what rounding left in the unstable direction,
         * which depends on the summation order: the curves are compared below the edge, and
         * their ends may differ by a few points. */
        for (int n = 2; n <= 3; n++) {
            const double gap = curve_gap(&r[n], a, edge);
            snprintf(msg, sizeof msg, "%d ranks = 1 rank: %d vs %d points, suggestion step %d vs "
                     "%d, losses below the edge within %.3g relative (limit 1e-5)", n, r[n].n,
                     a->n, r[n].steepest, a->steepest, gap);
            check(abs(r[n].n - a->n) <= 5 && r[n].steepest == a->steepest && gap < 1e-5, msg);
        }
    }

    /* Deterministic mode: the same bits on 1, 2 and 3 ranks. */
    dp_lrfind_result d[4] = {{0}};
    cfg.train.deterministic = true;
    cfg.train.shards = 6;
    for (int n = 1; n <= 3; n++) {
        rc = find_on(world, n, &cfg, &lf, NULL, &d[n]);
        if (rank == 0 && n > 1) {
            snprintf(msg, sizeof msg, "deterministic: %d ranks = 1 rank bit for bit (status %d, "
                     "%d vs %d points, suggestion %.17g vs %.17g)", n, rc, d[n].n, d[1].n,
                     d[n].suggestion, d[1].suggestion);
            check(rc == DP_OK && same_bits(&d[n], &d[1]), msg);
        }
    }
    cfg.train.deterministic = false;

    /* The comparison can fail: gradients left unsummed on 2 ranks give another curve. */
    dp_lrfind_result bad = {0};
    dp_test_hooks skip = {.skip_allreduce = true};
    rc = find_on(world, 2, &cfg, &lf, &skip, &bad);
    if (rank == 0) {
        const double gap = curve_gap(&bad, &r[1], edge);
        snprintf(msg, sizeof msg, "unsummed gradients on 2 ranks: another curve (losses differ "
                 "by %.3g relative)", gap);
        check(rc == DP_OK && gap > 1e-2, msg);
    }

    /* A stop request at step 7 (rank 1's, as a signal would) ends the test there. */
    dp_lrfind_result stopped = {0};
    dp_test_hooks stop = {.stop_at = 7, .stop_rank = 1};
    rc = find_on(world, 2, &cfg, &lf, &stop, &stopped);
    if (rank == 0) {
        snprintf(msg, sizeof msg, "a stop request at step 7: status %d, %d points, why %d, the "
                 "points are the uninterrupted test's", rc, stopped.n, (int)stopped.why);
        check(rc == DP_OK && stopped.n == 7 && stopped.why == DP_LRFIND_STOPPED &&
                  curve_gap(&stopped, &r[2], INFINITY) == 0.0, msg);
    }

    for (int n = 1; n <= 3; n++) {
        dp_lrfind_free(&r[n]);
        dp_lrfind_free(&d[n]);
    }
    dp_lrfind_free(&bad);
    dp_lrfind_free(&stopped);
    if (rank == 0) {
        printf(n_fail ? "lr_find_ranks: %d failed\n" : "lr_find_ranks: all passed\n", n_fail);
    }
    rc = n_fail;
    float f = (float)rc;
    dp_comm_bcast_f32(world, &f, 1, 0);
    dp_comm_free(&world);
    dp_dist_finalize();
    return f > 0.0f ? 1 : 0;
}
