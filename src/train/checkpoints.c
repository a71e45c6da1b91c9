/* checkpoints.c: a job's checkpoints: writing them from the loop, finding the one to resume
 * from, refusing one that belongs to another run, and making room for a new run. */
#define _GNU_SOURCE
#include "job_internal.h"

#include "dptrain/err.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int dp_job_checkpoint(void *ctx, const dp_model *m, const dp_train_state *st, dp_ckpt_reason why)
{
    dp_job_writer *w = ctx;
    int rc = DP_OK;
    if (dp_comm_rank(w->c) == 0) {
        char path[DP_PATH_MAX + 48];
        double t0 = dp_wtime();
        rc = dp_ckpt_path(w->dir, st->step, path, sizeof path);
        if (rc == DP_OK) {
            rc = dp_ckpt_save(path, m, st, &w->meta);
        }
        if (rc == DP_OK) {
            /* Only now that the new one is complete may old ones go. */
            rc = dp_ckpt_prune(w->dir, w->keep_last);
        }
        if (rc == DP_OK) {
            snprintf(w->last, sizeof w->last, "%s", path);
            if (w->log) {
                static const char *const whys[] = {"step", "epoch", "stop", "final"};
                fprintf(w->log, "checkpoint (%s): %s  epoch %d, step %ld, %.2f s\n", whys[why],
                        path, st->epoch + (st->next_batch > 0), st->step, dp_wtime() - t0);
                fflush(w->log);
            }
        }
    }
    int all = dp_comm_agree(w->c, rc);
    if (all != DP_OK && rc == DP_OK) {
        rc = dp_err(DP_EPEER, "rank 0 could not write a checkpoint");
    }
    return all != DP_OK ? (rc != DP_OK ? rc : all) : DP_OK;
}

/* What the newest valid checkpoint of a run says, for the message that refuses a new run
 * into its directory. */
static void describe_run(char **paths, int n, char *buf, size_t cap)
{
    dp_train_state st = {0};
    snprintf(buf, cap, "the newest: %s", paths[n - 1]);
    for (int i = n - 1; i >= 0; i--) {
        if (dp_ckpt_load(paths[i], 1, NULL, &st, NULL) != DP_OK) {
            continue;
        }
        if (!st.finished) {
            snprintf(buf, cap, "an unfinished run, stopped at epoch %d, step %ld: %s",
                     st.epoch + (st.next_batch > 0), st.step, paths[i]);
        } else {
            size_t len = (size_t)snprintf(buf, cap, "a finished run: %d epochs, %ld steps",
                                          st.epoch, st.step);
            const dp_epoch_record *r = st.n_history > 0 ? &st.history[st.n_history - 1] : NULL;
            if (r && r->test_loss == r->test_loss && len < cap) {
                len += (size_t)snprintf(buf + len, cap - len, ", test loss %.4f", r->test_loss);
                if (r->test_accuracy == r->test_accuracy && len < cap) {
                    snprintf(buf + len, cap - len, ", test accuracy %.4f", r->test_accuracy);
                }
            }
        }
        break;
    }
    dp_train_state_free(&st);
}

int dp_job_find_resume(const char *resume, const char *out, const char *dir, const dp_comm *c,
                       FILE *log, char *path, size_t cap)
{
    int rc = DP_OK, n = 0;
    char **paths = NULL;
    long *steps = NULL;
    path[0] = '\0';
    DP_TRY(dp_ckpt_list(dir, &paths, &steps, &n));
    if (!resume[0]) {
        if (n > 0) {
            char what[1024];
            describe_run(paths, n, what, sizeof what);
            DP_FAIL(DP_EINVAL, "%s already holds checkpoints of an earlier run (%s). To continue "
                               "it or show its result: --resume auto; to start a new run from "
                               "its weights: --init-from %s/model.h5 (or a checkpoint) with "
                               "another --out; to start over here: --overwrite (moves %s aside "
                               "to %s.old-<time>, deleting nothing); or give another --out",
                    dir, what, out, out, out);
        }
    } else if (strcmp(resume, "auto") == 0) {
        for (int i = n - 1; i >= 0; i--) {
            if (dp_ckpt_verify(paths[i]) == DP_OK) {
                snprintf(path, cap, "%s", paths[i]);
                break;
            }
            if (log) {
                fprintf(log, "dptrain: warning: skipping a damaged checkpoint: %s\n",
                        dp_errmsg());
            }
        }
        if (!path[0] && log) {
            fprintf(log, "resume: no valid checkpoint in %s: starting a new run\n", dir);
        }
    } else {
        DP_TRY(dp_ckpt_verify(resume));
        snprintf(path, cap, "%s", resume);
    }
done:
    dp_ckpt_list_free(paths, steps, n);
    /* Every rank must have chosen the same file: a checksum of the name, compared. */
    uint32_t h = 2166136261u;
    for (const char *p = path; *p; p++) {
        h = (h ^ (unsigned char)*p) * 16777619u;
    }
    double mine = rc == DP_OK ? (double)h : -1.0;
    int all = dp_comm_agree(c, rc);
    if (all == DP_OK && (dp_comm_max_f64(c, mine) != mine || dp_comm_max_f64(c, -mine) != -mine)) {
        return dp_err(DP_EIO, "the ranks see different checkpoints in %s (is --out on a file "
                              "system every node shares?)", dir);
    }
    return all != DP_OK ? (rc != DP_OK ? rc : dp_err(DP_EPEER, "another rank failed")) : DP_OK;
}

/* --- refusals ----------------------------------------------------------------------------- */

void dp_model_cfg_text(const dp_model_cfg *mc, char *buf, size_t cap)
{
    size_t len = 0;
    if (mc->n_stages > 0) {
        len = (size_t)snprintf(buf, cap, "%dx%dx%d", mc->in_c, mc->in_h, mc->in_w);
        for (int j = 0; j < mc->n_stages && len < cap; j++) {
            const dp_stage_cfg *st = &mc->stage[j];
            char tok[96];
            dp_stage_format(st, true, tok, sizeof tok);
            len += (size_t)snprintf(buf + len, cap - len, ",%s", tok);
        }
        if (len < cap) {
            len += (size_t)snprintf(buf + len, cap - len, ",%s", mc->gap ? "gap" : "flatten");
        }
    } else {
        len = (size_t)snprintf(buf, cap, "%d", mc->sizes[0]);
    }
    for (int i = 0; i < mc->n_layers && len < cap; i++) {
        len += (size_t)snprintf(buf + len, cap - len, ",%d:%s", mc->sizes[i + 1],
                                dp_act_name(mc->act[i]));
        if (mc->dropout[i] > 0.0f && len < cap) {
            len += (size_t)snprintf(buf + len, cap - len, ":dropout=%g", mc->dropout[i]);
        }
        if (mc->batchnorm[i] && len < cap) {
            len += (size_t)snprintf(buf + len, cap - len, ":bn");
        }
    }
}

bool dp_job_same_arch(const dp_model_cfg *a, const dp_model_cfg *b, char *why, size_t cap)
{
    char da[1024], db[1024];
    dp_model_cfg_text(a, da, sizeof da);
    dp_model_cfg_text(b, db, sizeof db);
    if (strcmp(da, db) == 0 && a->bn_momentum == b->bn_momentum && a->bn_eps == b->bn_eps) {
        return true;
    }
    snprintf(why, cap, "the file's model is %s, this run's is %s", da, db);
    return false;
}

int dp_job_check_resume(const char *path, const dp_ckpt_meta *saved, const dp_model *saved_m,
                        const dp_ckpt_meta *now, const dp_run_cfg *cfg)
{
    char why[2100];
    if (!dp_job_same_arch(dp_model_config(saved_m), &cfg->model, why, sizeof why)) {
        return dp_err(DP_EINVAL, "--resume %s: the checkpoint's model is %s", path,
                      why + strlen("the file's model is "));
    }
    if (saved->train_rows != now->train_rows || saved->n_features != now->n_features ||
        saved->test_rows != now->test_rows ||
        saved->train_fingerprint != now->train_fingerprint ||
        saved->test_fingerprint != now->test_fingerprint) {
        return dp_err(DP_EINVAL, "--resume %s: the checkpoint was written for another dataset: "
                      "%s with /train %" PRIu64 " x %" PRIu64 " (fingerprint %016" PRIx64
                      "), /test %" PRIu64 " rows (%016" PRIx64 "); this run's %s has /train %"
                      PRIu64 " x %" PRIu64 " (%016" PRIx64 "), /test %" PRIu64 " rows (%016"
                      PRIx64 ")", path, saved->data_path, saved->train_rows, saved->n_features,
                      saved->train_fingerprint, saved->test_rows, saved->test_fingerprint,
                      now->data_path, now->train_rows, now->n_features, now->train_fingerprint,
                      now->test_rows, now->test_fingerprint);
    }
    dp_run_cfg before;
    dp_run_defaults(&before);
    if (dp_run_cfg_from_json(saved->config_json ? saved->config_json : "", path, &before) !=
        DP_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", dp_errmsg());
        return dp_err(DP_EFORMAT, "--resume %s: its configuration cannot be read (%s): a "
                                  "checkpoint of a dptrain (%s) from before the typed run "
                                  "configuration, or a damaged one. Continue it with the dptrain "
                                  "that wrote it, or start a new run (another --out, or "
                                  "--overwrite; --init-from %s keeps its weights)", path, msg,
                      saved->program_version ? saved->program_version : "?", path);
    }
    char diff[4096];
    if (dp_run_cfg_diff(&before, cfg, diff, sizeof diff) > 0) {
        const bool old_order = before.train.shuffle != cfg->train.shuffle &&
                               before.train.shuffle == DP_SHUFFLE_FISHER_YATES;
        return dp_err(DP_EINVAL, "--resume %s: the checkpoint's run had other options: %s. A "
                                 "resumed run continues the same run: give the same options%s",
                      path, diff, old_order ? " (this run visits its rows in the Fisher-Yates "
                                              "order of dptrain before --shuffle: add --shuffle "
                                              "fisher-yates to continue it exactly)" : "");
    }
    return DP_OK;
}

int dp_job_supersede(const char *dir, long step, FILE *log)
{
    int rc = DP_OK, n = 0;
    char **paths = NULL;
    long *steps = NULL;
    DP_TRY(dp_ckpt_list(dir, &paths, &steps, &n));
    for (int i = 0; i < n; i++) {
        if (steps[i] <= step) {
            continue;
        }
        char to[4200];
        snprintf(to, sizeof to, "%s.superseded", paths[i]);
        if (rename(paths[i], to) != 0) {
            DP_FAIL(DP_EIO, "%s: cannot rename to %s (%s)", paths[i], to, strerror(errno));
        }
        if (log) {
            fprintf(log, "resume: %s is %s; kept as %s\n", paths[i],
                    step < 0 ? "damaged" : "newer than the checkpoint resumed from", to);
        }
    }
done:
    dp_ckpt_list_free(paths, steps, n);
    return rc;
}

int dp_job_move_aside(const char *out, FILE *log)
{
    struct stat sb;
    char probe[DP_PATH_MAX + 32];
    bool has_run = false;
    static const char *const parts[] = {"checkpoints", "model.h5", "metrics.jsonl"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        snprintf(probe, sizeof probe, "%s/%s", out, parts[i]);
        has_run = has_run || stat(probe, &sb) == 0;
    }
    if (!has_run) {
        return DP_OK;
    }
    char stamp[32], to[DP_PATH_MAX + 64];
    time_t now = time(NULL);
    struct tm tm;
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", localtime_r(&now, &tm));
    snprintf(to, sizeof to, "%s.old-%s", out, stamp);
    for (int k = 2; stat(to, &sb) == 0 && k < 1000; k++) {
        snprintf(to, sizeof to, "%s.old-%s-%d", out, stamp, k);
    }
    if (rename(out, to) != 0) {
        return dp_err(DP_EIO, "--overwrite: cannot move %s aside to %s (%s)", out, to,
                      strerror(errno));
    }
    if (log) {
        fprintf(log, "overwrite: the earlier run in %s is kept as %s\n", out, to);
        fflush(log);
    }
    return DP_OK;
}
