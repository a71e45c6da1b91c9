/* resume.c: the train command's checkpoints: writing them from the loop, finding the one to
 * resume from, and refusing one that belongs to another run. */
#define _GNU_SOURCE
#include "resume.h"

#include "dptrain/err.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

int dp_cli_checkpoint(void *ctx, const dp_model *m, const dp_train_state *st,
                      dp_ckpt_reason why)
{
    dp_ckpt_writer *w = ctx;
    int rc = DP_OK;
    if (dp_comm_rank(w->c) == 0) {
        char path[4096];
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

int dp_cli_find_resume(const char *resume, const char *dir, const dp_comm *c, FILE *log,
                       char *path, size_t cap)
{
    int rc = DP_OK, n = 0;
    char **paths = NULL;
    long *steps = NULL;
    path[0] = '\0';
    DP_TRY(dp_ckpt_list(dir, &paths, &steps, &n));
    if (!resume) {
        if (n > 0) {
            DP_FAIL(DP_EINVAL, "%s already holds checkpoints of an earlier run (the newest: "
                               "%s); continue it with --resume auto, or give another --out "
                               "(or delete them) to start over", dir, paths[n - 1]);
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

static void describe_arch(const dp_model_cfg *mc, char *buf, size_t cap)
{
    size_t len = (size_t)snprintf(buf, cap, "%d", mc->sizes[0]);
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

/* The next top-level "key":value of a flat JSON object at *p: key and value (the raw text,
 * strings with their quotes) copied into k and v. Returns false at the end. */
static bool next_pair(const char **p, char *k, size_t kcap, char *v, size_t vcap)
{
    const char *s = *p;
    while (*s && *s != '"') {
        s++;
    }
    if (!*s) {
        return false;
    }
    const char *ke = strchr(s + 1, '"');
    if (!ke || ke[1] != ':') {
        return false;
    }
    snprintf(k, kcap, "%.*s", (int)(ke - s - 1), s + 1);
    const char *vs = ke + 2, *ve = vs;
    int depth = 0;
    bool str = false;
    for (; *ve; ve++) {
        if (str) {
            if (*ve == '\\' && ve[1]) {
                ve++;
            } else if (*ve == '"') {
                str = false;
            }
        } else if (*ve == '"') {
            str = true;
        } else if (*ve == '[' || *ve == '{') {
            depth++;
        } else if (*ve == ']' || *ve == '}') {
            if (depth == 0) {
                break;
            }
            depth--;
        } else if (*ve == ',' && depth == 0) {
            break;
        }
    }
    snprintf(v, vcap, "%.*s", (int)(ve - vs), vs);
    *p = *ve ? ve + 1 : ve;
    return true;
}

/* Options that do not change what the run computes. */
static bool ignored_key(const char *k)
{
    static const char *const keys[] = {"version", "data", "eval_batch", "ranks", "out"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (strcmp(k, keys[i]) == 0) {
            return true;
        }
    }
    return false;
}

static bool has_key(const char *json, const char *key)
{
    char k[64], v[1024];
    for (const char *p = json; next_pair(&p, k, sizeof k, v, sizeof v);) {
        if (strcmp(k, key) == 0) {
            return true;
        }
    }
    return false;
}

/* Appends "key V1 (now V2)" for every option whose value differs; returns how many. */
static int config_diff(const char *saved, const char *now, char *out, size_t cap)
{
    char k1[64], v1[1024], k2[64], v2[1024];
    int n = 0;
    size_t len = strlen(out);
    for (const char *p = saved; next_pair(&p, k1, sizeof k1, v1, sizeof v1);) {
        if (ignored_key(k1)) {
            continue;
        }
        const char *q = now;
        bool found = false;
        while (next_pair(&q, k2, sizeof k2, v2, sizeof v2)) {
            if (strcmp(k1, k2) == 0) {
                found = true;
                break;
            }
        }
        if (!found || strcmp(v1, v2) != 0) {
            if (len < cap) {
                len += (size_t)snprintf(out + len, cap - len, "%s%s %s (now %s)", n ? ", " : "",
                                        k1, v1, found ? v2 : "not set");
            }
            n++;
        }
    }
    for (const char *q = now; next_pair(&q, k2, sizeof k2, v2, sizeof v2);) {
        if (!ignored_key(k2) && !has_key(saved, k2)) {
            if (len < cap) {
                len += (size_t)snprintf(out + len, cap - len, "%s%s not set (now %s)",
                                        n ? ", " : "", k2, v2);
            }
            n++;
        }
    }
    return n;
}

int dp_cli_check_resume(const char *path, const dp_ckpt_meta *saved, const dp_model *saved_m,
                        const dp_ckpt_meta *now, const dp_model_cfg *mc)
{
    const dp_model_cfg *sc = dp_model_config(saved_m);
    char a[1024], b[1024];
    describe_arch(sc, a, sizeof a);
    describe_arch(mc, b, sizeof b);
    if (strcmp(a, b) != 0 || sc->bn_momentum != mc->bn_momentum || sc->bn_eps != mc->bn_eps) {
        return dp_err(DP_EINVAL, "--resume %s: the checkpoint's model is %s, this run's is %s",
                      path, a, b);
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
    char diff[2048] = "";
    if (config_diff(saved->config_json, now->config_json, diff, sizeof diff) > 0) {
        return dp_err(DP_EINVAL, "--resume %s: the checkpoint's run had other options: %s. A "
                                 "resumed run continues the same run: give the same options",
                      path, diff);
    }
    return DP_OK;
}

int dp_cli_supersede(const char *dir, long step, FILE *log)
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
