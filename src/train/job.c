/* job.c: dp_run_job: a whole training job from its configuration on a communicator. Reads
 * like the job: load the data, build the model, start it (seed, --init-from or a checkpoint),
 * open the outputs, train, save. Every part ends in an agreement over the ranks, so a
 * failure on one rank stops every rank at the same point. */
#define _GNU_SOURCE
#include "job_internal.h"

#include "dptrain/blas.h"
#include "dptrain/err.h"
#include "dptrain/io.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    const dp_run_cfg *cfg;
    const dp_run_hooks *hooks;
    const dp_comm *c;
    int rank, size;
    bool root;
    FILE *log;               /* rank 0's lines, or NULL */
    FILE *notice;            /* rank 0's lines shown even when quiet, or NULL */
    dp_job_data data;        /* the dataset, loaded here (--data-memory) */
    const dp_dataset *d;
    dp_train_cfg tc;         /* cfg->train with the scaled rate and the loop's hooks */
    dp_model *m;
    dp_train_state st;
    char *cfgjson;           /* the configuration recorded in outputs */
    dp_job_writer ckw;
    FILE *metrics;
    char resume_path[DP_PATH_MAX];
    dp_run_result *res;
} job;

int dp_job_agree(const dp_comm *c, int rc, const char *ctx, int *failed_rank)
{
    int all = dp_comm_agree(c, rc);
    if (all == DP_OK) {
        return DP_OK;
    }
    int first = dp_comm_first_failed(c, rc == DP_EPEER ? DP_OK : rc);
    if (first >= 0 && first == dp_comm_rank(c)) {
        if (ctx && ctx[0]) {
            char msg[2048];
            snprintf(msg, sizeof msg, "%s", dp_errmsg());
            dp_err(rc, "%s%s", ctx, msg);
        }
    } else if (first >= 0) {
        dp_err(DP_EPEER, "rank %d failed (its message is on its standard error)", first);
    }
    *failed_rank = first;
    return all;
}

static int agree(job *j, int rc, const char *ctx)
{
    return dp_job_agree(j->c, rc, ctx, &j->res->failed_rank);
}

static void say(const job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const job *j, const char *fmt, ...)
{
    if (j->log) {
        va_list ap;
        va_start(ap, fmt);
        vfprintf(j->log, fmt, ap);
        va_end(ap);
        fflush(j->log);
    }
}

int dp_job_mkdir_p(const char *dir)
{
    char buf[DP_PATH_MAX];
    if ((size_t)snprintf(buf, sizeof buf, "%s", dir) >= sizeof buf) {
        return dp_err(DP_EINVAL, "--out: path too long");
    }
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
                return dp_err(DP_EIO, "--out %s: cannot create directory %s (%s)", dir, buf,
                              strerror(errno));
            }
            *p = saved;
            if (saved == '\0') {
                break;
            }
        }
    }
    return DP_OK;
}

/* --- the parts -------------------------------------------------------------------------- */

/* The data (every rank reads the file), and the rate of the linear scaling rule. */
static int load_data(job *j)
{
    const dp_run_cfg *cfg = j->cfg;
    int rc = dp_job_data_load(cfg->data, cfg->data_memory, j->c, &j->data,
                              &j->res->failed_rank);
    if (rc != DP_OK) {
        return rc;
    }
    j->d = j->data.d;
    j->tc = cfg->train;
    if (cfg->lr_scaling > 0) {
        /* Goyal et al.'s linear scaling rule: the rate grows with the rows per step. */
        size_t n = j->d->train.n - dp_val_count(j->d->train.n, cfg->train.val_fraction);
        size_t B = (cfg->train.batch == 0 || cfg->train.batch > n) ? n : cfg->train.batch;
        double f = (double)B * cfg->train.accumulate / cfg->lr_scaling;
        say(j, "lr scaling: %g x %zu rows per step / %d = %g\n", cfg->train.opt.lr,
            B * (size_t)cfg->train.accumulate, cfg->lr_scaling, cfg->train.opt.lr * f);
        j->tc.opt.lr = (float)(cfg->train.opt.lr * f);
    }
    return DP_OK;
}

/* The model, initialised from the seed (every rank gets rank 0's), and a fresh state. */
static int build_model(job *j)
{
    char ctx[DP_PATH_MAX + 8];
    snprintf(ctx, sizeof ctx, "%s: ", j->cfg->data);
    dp_model_cfg mc = j->cfg->model;
    mc.seed = j->tc.seed;
    int rc = dp_train_check(&j->tc, &mc, j->d, j->size);
    if (rc == DP_OK && j->tc.deterministic && j->cfg->threads > 1) {
        rc = dp_err(DP_EINVAL, "--deterministic runs one BLAS thread per rank (its guarantee "
                               "is stated for one), not --threads %d: use more ranks instead",
                    j->cfg->threads);
    }
    if ((rc = agree(j, rc, ctx)) != DP_OK) {
        return rc;
    }
    return agree(j, dp_run_prepare(&j->tc, &j->cfg->model, j->d, j->c, &j->m, &j->st), "");
}

int dp_job_init_weights(const char *path, dp_model *m)
{
    dp_model *src = NULL;
    char why[2100];
    int rc = dp_model_load(path, 1, &src, NULL);
    if (rc == DP_OK && !dp_job_same_arch(dp_model_config(src), dp_model_config(m), why,
                                         sizeof why)) {
        rc = dp_err(DP_EINVAL, "--init-from %s: %s; start from a model of the same layers",
                    path, why);
    }
    if (rc == DP_OK) {
        memcpy(dp_model_params(m), dp_model_params(src), dp_model_n_params(m) * sizeof(float));
        memcpy(dp_model_buffers(m), dp_model_buffers(src),
               dp_model_n_buffers(m) * sizeof(float));
    }
    dp_model_free(&src);
    return rc;
}

/* --init-from: the weights and batch-norm statistics of a model file (or a checkpoint) start
 * the run, if its architecture is this run's. Every rank reads the file. */
static int init_from(job *j)
{
    int rc = agree(j, dp_job_init_weights(j->cfg->init_from, j->m), "");
    if (rc == DP_OK) {
        say(j, "init: weights from %s\n", j->cfg->init_from);
    }
    return rc;
}

/* A run continues from j->resume_path: its weights and state, if the checkpoint is this
 * run's; checkpoints after it are moved aside. */
static int resume_from(job *j)
{
    dp_model *saved = NULL;
    dp_ckpt_meta saved_meta = {0};
    const char *path = j->resume_path;
    dp_train_state_free(&j->st);
    int rc = dp_ckpt_load(path, 1, &saved, &j->st, &saved_meta);
    if (rc == DP_OK) {
        /* A checkpoint of before 2026-12 holds the older kind of fingerprint: the same data
         * is the same data. */
        dp_ckpt_meta now = j->ckw.meta;
        if (saved_meta.train_fingerprint != now.train_fingerprint &&
            dp_split_fingerprint_matches(&j->d->train, saved_meta.train_fingerprint)) {
            now.train_fingerprint = saved_meta.train_fingerprint;
        }
        if (now.test_fingerprint && saved_meta.test_fingerprint != now.test_fingerprint &&
            dp_split_fingerprint_matches(&j->d->test, saved_meta.test_fingerprint)) {
            now.test_fingerprint = saved_meta.test_fingerprint;
        }
        rc = dp_job_check_resume(path, &saved_meta, saved, &now, j->cfg);
    }
    if (rc == DP_OK) {
        memcpy(dp_model_params(j->m), dp_model_params(saved),
               dp_model_n_params(j->m) * sizeof(float));
        memcpy(dp_model_buffers(j->m), dp_model_buffers(saved),
               dp_model_n_buffers(j->m) * sizeof(float));
        const dp_train_state *st = &j->st;
        if (st->finished && j->notice) {
            fprintf(j->notice, "resume: %s: the run is complete (%d epochs, step %ld): nothing "
                    "to train; evaluating it and writing its outputs again\n", path, st->epoch,
                    st->step);
            fflush(j->notice);
        } else if (!st->finished) {
            say(j, "resume: %s: epoch %d, step %ld%s (written by %d rank%s)\n", path,
                st->epoch + (st->next_batch > 0), st->step,
                st->next_batch > 0 ? ", inside the epoch" : "", saved_meta.n_ranks,
                saved_meta.n_ranks == 1 ? "" : "s");
        }
        j->res->resumed = true;
        j->res->was_finished = st->finished;
    }
    if (rc == DP_OK && j->root) {
        rc = dp_job_supersede(j->ckw.dir, j->st.step, j->log);
    }
    dp_model_free(&saved);
    dp_ckpt_meta_free(&saved_meta);
    return agree(j, rc, "");
}

/* Where the run starts: a checkpoint (--resume), else a model file's weights (--init-from),
 * else the seed's initialization (already there). */
static int start(job *j)
{
    const dp_run_cfg *cfg = j->cfg;
    int rc = DP_OK;
    snprintf(j->ckw.dir, sizeof j->ckw.dir, "%s/checkpoints", cfg->out);
    j->ckw.keep_last = cfg->keep_last;
    j->ckw.c = j->c;
    j->ckw.log = j->log;
    const dp_split *tr = &j->d->train, *te = &j->d->test;
    j->ckw.meta = (dp_ckpt_meta){.config_json = j->cfgjson, .data_path = (char *)cfg->data,
                                 .train_fingerprint = dp_split_fingerprint(tr),
                                 .test_fingerprint = te->n ? dp_split_fingerprint(te) : 0,
                                 .train_rows = tr->n, .test_rows = te->n,
                                 .n_features = (uint64_t)tr->n_features, .n_ranks = j->size,
                                 .program_version = (char *)j->hooks->version};
    if (cfg->overwrite && j->root) {
        rc = dp_job_move_aside(cfg->out, j->log);
    }
    if ((rc = agree(j, rc, "")) != DP_OK) {
        return rc;
    }
    rc = dp_job_find_resume(cfg->resume, cfg->out, j->ckw.dir, j->c, j->notice,
                            j->resume_path, sizeof j->resume_path);
    if ((rc = agree(j, rc, "")) != DP_OK) {
        return rc;
    }
    if (j->resume_path[0]) {
        return resume_from(j);
    }
    if (cfg->resume[0] && j->root) {
        /* --resume auto found no valid checkpoint: damaged ones are kept, out of the way of
         * the new run's pruning. */
        rc = dp_job_supersede(j->ckw.dir, -1, j->log);
    }
    if ((rc = agree(j, rc, "")) != DP_OK) {
        return rc;
    }
    return cfg->init_from[0] ? init_from(j) : DP_OK;
}

/* out/, out/checkpoints/, out/config.json and out/metrics.jsonl (rank 0). */
static int open_outputs(job *j)
{
    const dp_run_cfg *cfg = j->cfg;
    int rc = DP_OK;
    if (j->root) {
        char path[DP_PATH_MAX + 32];
        rc = dp_job_mkdir_p(cfg->out);
        if (rc == DP_OK) {
            rc = dp_job_mkdir_p(j->ckw.dir);
        }
        if (rc == DP_OK) {
            snprintf(path, sizeof path, "%s/config.json", cfg->out);
            FILE *cf = fopen(path, "w");
            if (!cf || fprintf(cf, "%s\n", j->cfgjson) < 0 || fclose(cf) != 0) {
                rc = dp_err(DP_EIO, "%s: cannot write (%s)", path, strerror(errno));
            }
        }
        if (rc == DP_OK) {
            snprintf(path, sizeof path, "%s/metrics.jsonl", cfg->out);
            if (!(j->metrics = fopen(path, "w"))) {
                rc = dp_err(DP_EIO, "%s: cannot open for writing (%s)", path, strerror(errno));
            }
        }
    }
    return agree(j, rc, "");
}

/* The lines that say what is about to run. */
static void banner(const job *j)
{
    const dp_dataset *d = j->d;
    const size_t B = j->tc.batch ? j->tc.batch : d->train.n;
    say(j, "config: %s\n", j->cfgjson);
    say(j, "data: %s: train %zu x %d, test %zu, %s\n", j->cfg->data,
        d->train.n, d->train.n_features, d->test.n,
        d->n_classes > 0 ? "classification" : "regression");
    char mem[256];
    dp_job_data_describe(&j->data, j->c, mem, sizeof mem);
    say(j, "data memory: %s\n", mem);
    char table[8192];
    dp_model_table(dp_model_config(j->m), "  ", table, sizeof table);
    say(j, "model: %zu parameters; global batch %zu (%zu rows per rank at most)\n%s",
        dp_model_n_params(j->m), B, (B + (size_t)j->size - 1) / (size_t)j->size, table);
    char kernels[512];
    dp_model_conv_kernels(j->m, kernels, sizeof kernels);
    if (kernels[0]) {
        say(j, "convolutions: %s\n", kernels);
    }
    dp_gemm_describe(kernels, sizeof kernels);
    say(j, "dense products: %s\n", kernels);
    say(j, "gradient sum: %s\n", j->size == 1 ? "none (one rank)"
        : j->tc.reduce == DP_REDUCE_OVERLAP ? "MPI_Iallreduce per bucket, overlapped with the "
                                              "backward pass"
        : j->tc.reduce == DP_REDUCE_SHARDED ? "MPI_Reduce_scatter after the backward pass; "
                                              "each rank updates its slice of the parameters "
                                              "and holds that slice's optimizer state "
                                              "(ZeRO-1); MPI_Allgatherv of the parameters"
        : "MPI_Allreduce after the backward pass");
}

/* The loop, with checkpoints on their cadence and on a stop request. */
static int train(job *j)
{
    const dp_run_hooks *h = j->hooks;
    dp_train_cfg *tc = &j->tc;
    tc->log = j->log;
    tc->metrics = j->metrics;
    tc->checkpoint = j->cfg->out[0] ? dp_job_checkpoint : NULL;
    tc->checkpoint_ctx = &j->ckw;
    tc->stop = h->stop;
    tc->progress = h->progress;
    tc->progress_ctx = h->progress_ctx;
    tc->hooks = &h->test;
    dp_ckpt_test_pause(h->test.ckpt_pause);
    int rc = dp_train_run(tc, j->m, j->d, j->c, &j->st, &j->res->train);
    j->res->epoch = j->st.epoch + (j->st.next_batch > 0);
    j->res->step = j->st.step;
    snprintf(j->res->checkpoint, sizeof j->res->checkpoint, "%s", j->ckw.last);
    if (rc == DP_ESTOPPED) {
        return rc; /* every rank stopped at the same step; the checkpoint is written */
    }
    return agree(j, rc, ""); /* the same status on every rank: the root keeps the message */
}

static int save_model(job *j)
{
    int rc = DP_OK;
    snprintf(j->res->model, sizeof j->res->model, "%s/model.h5", j->cfg->out);
    if (j->root) {
        rc = dp_model_save(j->m, j->res->model, j->cfgjson);
    }
    return agree(j, rc, "");
}

/* --- the job ---------------------------------------------------------------------------- */

int dp_run_job(const dp_run_cfg *cfg, const dp_comm *c, const dp_run_hooks *hooks,
               dp_run_result *res)
{
    static const dp_run_hooks none = {0};
    job j = {.cfg = cfg, .hooks = hooks ? hooks : &none, .c = c, .rank = dp_comm_rank(c),
             .size = dp_comm_size(c), .res = res};
    j.root = j.rank == 0;
    j.log = j.root ? j.hooks->log : NULL;
    j.notice = j.root ? j.hooks->notice : NULL;
    memset(res, 0, sizeof *res);
    res->failed_rank = -1;
    const bool writes = cfg->out[0] != '\0';
    if (cfg->flush_subnormals && !dp_fp_flush_subnormals(true) && j.notice) {
        fprintf(j.notice, "dptrain: warning: --flush-subnormals: this build cannot set the "
                          "CPU's flush-to-zero mode; subnormals stay IEEE\n");
    }
    int rc = load_data(&j);
    if (rc == DP_OK) {
        rc = build_model(&j);
    }
    if (rc == DP_OK) {
        j.cfgjson = dp_run_cfg_to_json(cfg, j.hooks->version ? j.hooks->version : "?");
        rc = agree(&j, j.cfgjson ? DP_OK : dp_err(DP_ENOMEM, "out of memory (config JSON)"), "");
    }
    if (rc == DP_OK && writes) {
        rc = start(&j);
    } else if (rc == DP_OK && cfg->init_from[0]) {
        rc = init_from(&j);
    }
    if (rc == DP_OK && writes) {
        rc = open_outputs(&j);
    }
    if (rc == DP_OK) {
        banner(&j);
        rc = train(&j);
    }
    if (rc == DP_OK && writes) {
        rc = save_model(&j);
    }
    if (j.metrics) {
        fclose(j.metrics);
    }
    if (cfg->flush_subnormals) {
        dp_fp_flush_subnormals(false);
    }
    free(j.cfgjson);
    dp_train_state_free(&j.st);
    dp_model_free(&j.m);
    dp_job_data_free(&j.data);
    return rc;
}
