/* sweep.c: dp_sweep_run: a hyperparameter sweep over the options of a run. The search space
 * gives a fixed list of trials (the plan, saved as OUT/sweep.json); groups of ranks take
 * (trial, rung) jobs from a shared counter and run each as an ordinary job in the trial's own
 * directory, stopping at the rung's epoch with a checkpoint; between rungs every rank makes
 * the same successive-halving decision from the same numbers. Every finished job leaves a
 * rung file, so a rerun after a stop or a kill skips what is done and resumes the rest. */
#define _GNU_SOURCE
#include "dptrain/sweep.h"

#include "job_internal.h"

#include "dptrain/err.h"
#include "dptrain/exact.h"
#include "dptrain/rng.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Options a trial may not vary: the sweep's own, or what must be the same for every trial
 * for their validation figures to compare. */
static const char *const fixed_options[] = {"data", "out", "resume", "init-from", "overwrite",
                                            "epochs", "val-fraction", "threads", "config"};

/* --- the search space ------------------------------------------------------------------- */

/* The i-th value of a list ("a|b|c") into buf. */
static void list_value(const char *spec, int i, char *buf, size_t cap)
{
    const char *p = spec;
    for (int k = 0; k < i && p; k++) {
        p = strchr(p, '|');
        p = p ? p + 1 : NULL;
    }
    const char *end = p ? strchr(p, '|') : NULL;
    size_t n = p ? (end ? (size_t)(end - p) : strlen(p)) : 0;
    n = n < cap - 1 ? n : cap - 1;
    memcpy(buf, p ? p : "", n);
    buf[n] = '\0';
}

/* The spec of p (after "NAME="). */
static const char *spec_of(const dp_sweep_param *p)
{
    return p->text + strlen(p->name) + 1;
}

static int parse_range(const dp_sweep_param *p, const char *range, double *lo, double *hi)
{
    char *end = NULL;
    errno = 0;
    *lo = strtod(range, &end);
    if (end == range || *end != ':') {
        return dp_err(DP_EINVAL, "--param %s: '%s' is not LO:HI", p->text, range);
    }
    const char *h = end + 1;
    *hi = strtod(h, &end);
    if (end == h || *end || errno || !isfinite(*lo) || !isfinite(*hi) || !(*lo < *hi)) {
        return dp_err(DP_EINVAL, "--param %s: '%s' is not LO:HI with LO < HI", p->text, range);
    }
    return DP_OK;
}

/* Checks one value as the option would take it. */
static int check_value(const dp_sweep_param *p, const char *value)
{
    dp_run_opts *o = NULL;
    int rc = dp_run_opts_create(&o);
    if (rc == DP_OK && (rc = dp_run_opts_set(o, p->name, value)) != DP_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", dp_errmsg());
        rc = dp_err(rc, "--param %s: %s", p->text, msg);
    }
    dp_run_opts_free(&o);
    return rc;
}

int dp_sweep_param_parse(const char *text, dp_sweep_param *p)
{
    memset(p, 0, sizeof *p);
    const char *eq = strchr(text, '=');
    if (!eq || eq == text || (size_t)(eq - text) >= sizeof p->name || !eq[1]) {
        return dp_err(DP_EINVAL, "--param '%s': expected NAME=VALUES, e.g. lr=0.1|0.01 or "
                                 "lr=loguniform:1e-4:1e-1", text);
    }
    if (strlen(text) >= sizeof p->text) {
        return dp_err(DP_EINVAL, "--param '%.40s...': too long", text);
    }
    memcpy(p->name, text, (size_t)(eq - text));
    snprintf(p->text, sizeof p->text, "%s", text);
    for (char *c = p->name; *c; c++) {
        *c = *c == '_' ? '-' : *c;
    }
    const int kind = dp_run_option_kind(p->name);
    if (kind < 0) {
        return dp_err(DP_EINVAL, "--param %s: '%s' is not an option of dptrain train", text,
                      p->name);
    }
    for (size_t i = 0; i < sizeof fixed_options / sizeof *fixed_options; i++) {
        if (strcmp(p->name, fixed_options[i]) == 0) {
            return dp_err(DP_EINVAL, "--param %s: --%s is the same for every trial of a sweep "
                                     "(give it once, outside --param)", text, p->name);
        }
    }
    const char *spec = eq + 1;
    static const char *const prefixes[] = {NULL, "loguniform:", "uniform:", "int:"};
    for (int k = DP_PARAM_LOGUNIFORM; k <= DP_PARAM_INT; k++) {
        if (strncmp(spec, prefixes[k], strlen(prefixes[k])) == 0) {
            p->kind = (dp_param_kind)k;
            int rc = parse_range(p, spec + strlen(prefixes[k]), &p->lo, &p->hi);
            if (rc == DP_OK && k == DP_PARAM_LOGUNIFORM && !(p->lo > 0.0)) {
                rc = dp_err(DP_EINVAL, "--param %s: a log-uniform range must be above 0", text);
            }
            if (rc == DP_OK && k == DP_PARAM_INT && (p->lo != floor(p->lo) || p->hi != floor(p->hi))) {
                rc = dp_err(DP_EINVAL, "--param %s: an int range has integer ends", text);
            }
            if (rc == DP_OK && kind == 1) {
                rc = dp_err(DP_EINVAL, "--param %s: --%s is a switch: give true|false", text,
                            p->name);
            }
            char v[64];
            snprintf(v, sizeof v, "%.17g", p->lo);
            rc = rc == DP_OK ? check_value(p, v) : rc;
            snprintf(v, sizeof v, "%.17g", p->hi);
            return rc == DP_OK ? check_value(p, v) : rc;
        }
    }
    p->kind = DP_PARAM_LIST;
    p->n_values = 1;
    for (const char *c = spec; *c; c++) {
        p->n_values += *c == '|';
    }
    for (int i = 0; i < p->n_values; i++) {
        char v[1100];
        list_value(spec, i, v, sizeof v);
        if (!v[0]) {
            return dp_err(DP_EINVAL, "--param %s: value %d is empty", text, i + 1);
        }
        int rc = check_value(p, v);
        if (rc != DP_OK) {
            return rc;
        }
    }
    return DP_OK;
}

/* --- the plan ----------------------------------------------------------------------------- */

void dp_sweep_plan_free(dp_sweep_plan *plan)
{
    if (plan->value) {
        for (int i = 0; i < plan->n_trials * plan->n_params; i++) {
            free(plan->value[i]);
        }
        free(plan->value);
    }
    memset(plan, 0, sizeof *plan);
}

/* A random draw of parameter p for trial t: its own generator, keyed by (seed, t, p). */
static void draw(const dp_sweep_cfg *cfg, int t, int p, char *buf, size_t cap)
{
    const dp_sweep_param *q = &cfg->params[p];
    dp_rng r = dp_rng_make(dp_rng_hash(cfg->seed, (uint64_t)t), (uint64_t)p);
    const double u = (double)(dp_rng_next(&r) >> 11) * 0x1.0p-53; /* [0, 1) */
    switch (q->kind) {
    case DP_PARAM_LIST:
        list_value(spec_of(q), (int)dp_rng_below(&r, (uint64_t)q->n_values), buf, cap);
        break;
    case DP_PARAM_LOGUNIFORM:
        snprintf(buf, cap, "%.4g", exp(log(q->lo) + u * (log(q->hi) - log(q->lo))));
        break;
    case DP_PARAM_UNIFORM:
        snprintf(buf, cap, "%.4g", q->lo + u * (q->hi - q->lo));
        break;
    case DP_PARAM_INT:
        snprintf(buf, cap, "%.0f", q->lo + (double)dp_rng_below(&r, (uint64_t)(q->hi - q->lo + 1.0)));
        break;
    }
}

static int make_rungs(const dp_sweep_cfg *cfg, int epochs, dp_sweep_plan *plan)
{
    plan->n_rungs = 0;
    if (cfg->eta > 0) {
        for (long e = cfg->min_epochs; e < epochs; e *= cfg->eta) {
            if (plan->n_rungs == DP_SWEEP_MAX_RUNGS - 1) {
                return dp_err(DP_EINVAL, "--eta %d, --min-epochs %d: more than %d rungs below "
                                         "--epochs %d", cfg->eta, cfg->min_epochs,
                              DP_SWEEP_MAX_RUNGS - 1, epochs);
            }
            plan->rung_epochs[plan->n_rungs++] = (int)e;
        }
    }
    plan->rung_epochs[plan->n_rungs++] = epochs;
    return DP_OK;
}

int dp_sweep_plan_make(const dp_sweep_cfg *cfg, int epochs, dp_sweep_plan *plan)
{
    int rc = DP_OK;
    memset(plan, 0, sizeof *plan);
    long n = 1;
    if (cfg->search == DP_SEARCH_GRID) {
        for (int p = 0; p < cfg->n_params; p++) {
            if (cfg->params[p].kind != DP_PARAM_LIST) {
                return dp_err(DP_EINVAL, "--param %s: a grid takes lists of values "
                                         "(NAME=A|B|C); ranges need --search random",
                              cfg->params[p].text);
            }
            n *= cfg->params[p].n_values;
            if (n > DP_SWEEP_MAX_TRIALS) {
                return dp_err(DP_EINVAL, "the grid has more than %d trials", DP_SWEEP_MAX_TRIALS);
            }
        }
    } else {
        if (cfg->trials < 1 || cfg->trials > DP_SWEEP_MAX_TRIALS) {
            return dp_err(DP_EINVAL, "--trials %d: must be in [1, %d]", cfg->trials,
                          DP_SWEEP_MAX_TRIALS);
        }
        n = cfg->trials;
    }
    if (epochs < 1) {
        return dp_err(DP_EINVAL, "--epochs %d: a sweep trains at least one epoch", epochs);
    }
    if (cfg->eta > 0 && (cfg->min_epochs < 1 || cfg->eta < 2)) {
        return dp_err(DP_EINVAL, "--eta %d --min-epochs %d: eta must be 0 (off) or at least 2, "
                                 "min-epochs at least 1", cfg->eta, cfg->min_epochs);
    }
    DP_TRY(make_rungs(cfg, epochs, plan));
    plan->n_trials = (int)n;
    plan->n_params = cfg->n_params;
    DP_CALLOC(plan->value, (size_t)(n * cfg->n_params > 0 ? n * cfg->n_params : 1));
    for (int t = 0; t < plan->n_trials; t++) {
        long rest = t; /* grid: the last parameter varies fastest */
        for (int p = cfg->n_params - 1; p >= 0; p--) {
            char v[1100];
            const dp_sweep_param *q = &cfg->params[p];
            if (cfg->search == DP_SEARCH_GRID) {
                list_value(spec_of(q), (int)(rest % q->n_values), v, sizeof v);
                rest /= q->n_values;
            } else {
                draw(cfg, t, p, v, sizeof v);
            }
            if (!(plan->value[t * cfg->n_params + p] = strdup(v))) {
                DP_FAIL(DP_ENOMEM, "out of memory (sweep plan)");
            }
        }
    }
done:
    if (rc != DP_OK) {
        dp_sweep_plan_free(plan);
    }
    return rc;
}

void dp_sweep_trial_dir(const char *out, int t, char *buf, size_t cap)
{
    if ((size_t)snprintf(buf, cap, "%s/trials/%03d", out, t) >= cap) {
        buf[0] = '\0'; /* the sweep refuses such an --out first (check_sweep) */
    }
}

int dp_sweep_trial_cfg(const dp_sweep_cfg *cfg, const dp_sweep_plan *plan, int t,
                       dp_run_cfg *run)
{
    int rc = DP_OK;
    dp_run_opts *o = NULL;
    dp_run_cfg c = cfg->base;
    DP_TRY(dp_run_opts_copy(cfg->opts, &o));
    for (int p = 0; p < plan->n_params; p++) {
        DP_TRY(dp_run_opts_set(o, cfg->params[p].name, plan->value[t * plan->n_params + p]));
    }
    if ((rc = dp_run_opts_apply(o, &c)) != DP_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", dp_errmsg());
        DP_FAIL(rc, "trial %d: %s", t, msg);
    }
    dp_sweep_trial_dir(cfg->out, t, c.out, sizeof c.out);
    snprintf(c.resume, sizeof c.resume, "auto");
    c.threads = cfg->threads;
    *run = c;
done:
    dp_run_opts_free(&o);
    return rc;
}

/* --- sweep.json: the plan, written once, compared on a rerun ----------------------------- */

static json_t *plan_json(const dp_sweep_cfg *cfg, const dp_sweep_plan *plan)
{
    dp_run_cfg base = cfg->base;
    json_t *o = json_object(), *a;
    if (dp_run_opts_apply(cfg->opts, &base) == DP_OK) {
        base.out[0] = '\0';
        base.threads = 0;
        char *text = dp_run_cfg_to_json(&base, "-");
        json_object_set_new(o, "base", text ? json_loads(text, 0, NULL) : json_null());
        free(text);
    }
    json_object_set_new(o, "search", json_string(cfg->search == DP_SEARCH_GRID ? "grid" : "random"));
    json_object_set_new(o, "seed", json_integer((json_int_t)cfg->seed));
    json_object_set_new(o, "group", json_integer(cfg->group));
    json_object_set_new(o, "metric", json_string(cfg->maximize ? "val_accuracy" : "val_loss"));
    json_object_set_new(o, "eta", json_integer(cfg->eta));
    json_object_set_new(o, "rungs", a = json_array());
    for (int r = 0; r < plan->n_rungs; r++) {
        json_array_append_new(a, json_integer(plan->rung_epochs[r]));
    }
    json_object_set_new(o, "params", a = json_array());
    for (int p = 0; p < cfg->n_params; p++) {
        json_array_append_new(a, json_string(cfg->params[p].text));
    }
    json_object_set_new(o, "trials", a = json_array());
    for (int t = 0; t < plan->n_trials; t++) {
        json_t *tr = json_object();
        for (int p = 0; p < plan->n_params; p++) {
            json_object_set_new(tr, cfg->params[p].name,
                                json_string(plan->value[t * plan->n_params + p]));
        }
        json_array_append_new(a, tr);
    }
    return o;
}

/* Rank 0: OUT/sweep.json written, or the one there checked to be this sweep's. */
static int plan_file(const dp_sweep_cfg *cfg, const dp_sweep_plan *plan, FILE *log)
{
    int rc = DP_OK;
    char path[DP_PATH_MAX + 32], tmp[DP_PATH_MAX + 48];
    json_t *mine = plan_json(cfg, plan), *saved = NULL;
    snprintf(path, sizeof path, "%s/sweep.json", cfg->out);
    if (access(path, F_OK) == 0) {
        json_error_t err;
        if (!(saved = json_load_file(path, 0, &err))) {
            DP_FAIL(DP_EIO, "%s: not readable as JSON (%s, line %d); give another --out",
                    path, err.text, err.line);
        }
        const char *key;
        json_t *v;
        json_object_foreach(mine, key, v) {
            if (!json_equal(v, json_object_get(saved, key))) {
                DP_FAIL(DP_EINVAL, "%s holds another sweep: its \"%s\" differs from this one's. "
                                   "To continue that sweep, run it with the same options; for "
                                   "a new sweep give another --out", path, key);
            }
        }
        if (log) {
            fprintf(log, "sweep: continuing the sweep in %s (finished jobs are kept, the "
                         "others resume from their checkpoints)\n", cfg->out);
        }
        goto done;
    }
    char trials[DP_PATH_MAX + 16];
    snprintf(trials, sizeof trials, "%s/trials", cfg->out);
    DP_TRY(dp_job_mkdir_p(trials));
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (json_dump_file(mine, tmp, JSON_INDENT(1)) != 0 || rename(tmp, path) != 0) {
        DP_FAIL(DP_EIO, "%s: cannot write (%s)", path, strerror(errno));
    }
done:
    json_decref(mine);
    json_decref(saved);
    return rc;
}

/* --- one job: a trial trained to a rung --------------------------------------------------- */

static const char *const status_names[] = {"pending", "stopped", "finished", "diverged", "failed"};

static double jnum(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* The trial's figures at its last epoch up to `epoch`, from its metrics.jsonl. */
static int read_metrics(const char *dir, int epoch, dp_trial_result *r)
{
    char path[DP_PATH_MAX + 32], line[8192];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        return dp_err(DP_EIO, "%s: cannot open (%s)", path, strerror(errno));
    }
    r->epochs = 0;
    r->seconds = 0.0;
    r->val_loss = r->val_accuracy = NAN;
    while (fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL);
        const int e = (int)json_integer_value(json_object_get(o, "epoch"));
        if (o && e >= 1 && e <= epoch) {
            r->epochs = e;
            r->seconds += isfinite(jnum(o, "seconds")) ? jnum(o, "seconds") : 0.0;
            r->val_loss = jnum(o, "val_loss");
            r->val_accuracy = jnum(o, "val_accuracy");
        }
        json_decref(o);
    }
    fclose(f);
    return DP_OK;
}

static void set_metric(dp_trial_result *r, bool maximize)
{
    const double m = maximize ? -r->val_accuracy : r->val_loss;
    r->metric = r->status == DP_TRIAL_DIVERGED || r->status == DP_TRIAL_FAILED || !isfinite(m)
                    ? INFINITY : m;
}

static void rung_path(const char *out, int t, int epoch, char *buf, size_t cap)
{
    char dir[DP_PATH_MAX + 16];
    dp_sweep_trial_dir(out, t, dir, sizeof dir);
    snprintf(buf, cap, "%s/rung-%d.json", dir, epoch);
}

/* A job's rung file: its result, written when the job is done (write, then rename). */
static int rung_write(const char *out, int t, int epoch, const dp_trial_result *r)
{
    char path[DP_PATH_MAX + 64], tmp[DP_PATH_MAX + 80];
    rung_path(out, t, epoch, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string(status_names[r->status]));
    json_object_set_new(o, "epochs", json_integer(r->epochs));
    json_object_set_new(o, "val_loss", isfinite(r->val_loss) ? json_real(r->val_loss) : json_null());
    json_object_set_new(o, "val_accuracy",
                        isfinite(r->val_accuracy) ? json_real(r->val_accuracy) : json_null());
    json_object_set_new(o, "seconds", json_real(r->seconds));
    json_object_set_new(o, "message", json_string(r->message));
    int rc = json_dump_file(o, tmp, JSON_REAL_PRECISION(17)) == 0 && rename(tmp, path) == 0
                 ? DP_OK : dp_err(DP_EIO, "%s: cannot write (%s)", path, strerror(errno));
    json_decref(o);
    return rc;
}

/* Reads a rung file; false if there is none (or it is not whole). */
static bool rung_read(const char *out, int t, int epoch, dp_trial_result *r)
{
    char path[DP_PATH_MAX + 64];
    rung_path(out, t, epoch, path, sizeof path);
    json_t *o = json_load_file(path, 0, NULL);
    const char *s = o ? json_string_value(json_object_get(o, "status")) : NULL;
    int k = 0;
    while (s && k < 5 && strcmp(s, status_names[k]) != 0) {
        k++;
    }
    if (!s || k == 5) {
        json_decref(o);
        return false;
    }
    memset(r, 0, sizeof *r);
    r->status = (dp_trial_status)k;
    r->epochs = (int)json_integer_value(json_object_get(o, "epochs"));
    r->val_loss = jnum(o, "val_loss");
    r->val_accuracy = jnum(o, "val_accuracy");
    r->seconds = jnum(o, "seconds");
    snprintf(r->message, sizeof r->message, "%s",
             json_string_value(json_object_get(o, "message")) ? json_string_value(json_object_get(o, "message")) : "");
    json_decref(o);
    return true;
}

typedef struct {
    const dp_sweep_cfg *cfg;
    const dp_sweep_plan *plan;
    const dp_comm *world, *g;   /* the world, this rank's group */
    int group_id, n_groups;
    bool leader;                /* rank 0 of the group */
    const dp_run_hooks *hooks;
    FILE *log;                  /* the leader's lines, or NULL */
    dp_sweep_result *res;
} sweep;

/* The leader's value of x on every rank of the group. */
static int64_t group_bcast(const sweep *s, int64_t x)
{
    int64_t v = s->leader ? x : 0;
    return dp_comm_allreduce_sum_i64(s->g, &v, 1) == DP_OK ? v : -1;
}

static bool stop_requested(const sweep *s)
{
    return s->hooks->stop && *s->hooks->stop;
}

/* Trains trial t to rung r's epoch on the group, into *r (the leader's is the result).
 * Returns DP_ESTOPPED if a stop request ended the job before the rung, else DP_OK (a trial's
 * own failure is its result, not the sweep's). Collective over the group. */
static int run_job(sweep *s, int t, int rung, dp_trial_result *out)
{
    const int epoch = s->plan->rung_epochs[rung];
    const bool last = rung == s->plan->n_rungs - 1;
    dp_trial_result r = {0};
    if (group_bcast(s, s->leader && rung_read(s->cfg->out, t, epoch, &r))) {
        *out = r; /* done before this run of the sweep */
        return DP_OK;
    }
    dp_run_cfg run;
    int rc = dp_sweep_trial_cfg(s->cfg, s->plan, t, &run);
    run.train.stop_epoch = last ? 0 : epoch;
    char logpath[DP_PATH_MAX + 32];
    FILE *tlog = NULL;
    if (s->leader && rc == DP_OK && dp_job_mkdir_p(run.out) == DP_OK) {
        snprintf(logpath, sizeof logpath, "%s/train.log", run.out);
        tlog = fopen(logpath, "a");
    }
    if (s->log) {
        const int k = s->cfg->group;
        fprintf(s->log, "sweep: group %d (ranks %d-%d): trial %d: training to epoch %d (log: "
                        "%s/train.log)\n", s->group_id, s->group_id * k, s->group_id * k + k - 1,
                t, epoch, run.out);
        fflush(s->log);
    }
    dp_run_hooks h = *s->hooks;
    h.log = h.notice = tlog;
    h.progress = NULL;
    dp_run_result rr = {.failed_rank = -1};
    const double t0 = dp_wtime();
    if (rc == DP_OK) {
        rc = dp_run_job(&run, s->g, &h, &rr);
    }
    if (tlog) {
        fclose(tlog);
    }
    if (rc == DP_ESTOPPED && (stop_requested(s) || rr.epoch != epoch)) {
        return DP_ESTOPPED; /* a stop request, not the rung: the job is not done */
    }
    r.status = rc == DP_OK ? DP_TRIAL_FINISHED : rc == DP_ESTOPPED ? DP_TRIAL_PENDING
               : rc == DP_ENONFINITE ? DP_TRIAL_DIVERGED : DP_TRIAL_FAILED;
    if (r.status == DP_TRIAL_FAILED) {
        snprintf(r.message, sizeof r.message, "%s", dp_errmsg());
        if (rr.failed_rank == dp_comm_rank(s->g) && !s->leader) {
            fprintf(stderr, "dptrain sweep: trial %d: rank %d: error: %s\n", t,
                    dp_comm_rank(s->world), dp_errmsg());
        }
    }
    int wr = DP_OK;
    if (s->leader) {
        if (read_metrics(run.out, epoch, &r) != DP_OK && r.status != DP_TRIAL_FAILED) {
            r.status = DP_TRIAL_FAILED;
            snprintf(r.message, sizeof r.message, "%s", dp_errmsg());
        }
        wr = rung_write(s->cfg->out, t, epoch, &r);
    }
    if (s->log) {
        fprintf(s->log, "sweep: group %d: trial %d: epoch %d: %s, val loss %.4f, val accuracy "
                        "%.4f (%.2f s)%s%s\n", s->group_id, t, r.epochs,
                r.status == DP_TRIAL_PENDING ? "rung reached" : status_names[r.status],
                r.val_loss, r.val_accuracy, dp_wtime() - t0, r.message[0] ? ": " : "",
                r.message);
        fflush(s->log);
    }
    *out = r;
    return dp_job_agree(s->g, wr, "", &rr.failed_rank);
}

/* --- a rung ---------------------------------------------------------------------------------- */

/* The fields of a result that cross the world, exactly (doubles as their bits). */
enum { F_STATUS, F_EPOCHS, F_LOSS, F_ACC, F_SECONDS, F_DONE, N_FIELDS };

/* Runs the jobs of one rung (the trials in alive[0..n)) over every group, then gives every
 * rank every job's result. Collective over the world. */
static int run_rung(sweep *s, int rung, const int *alive, int n, dp_counter *queue)
{
    int rc = DP_OK, stopped = 0;
    int64_t *f = calloc((size_t)n * N_FIELDS + 1, sizeof *f);
    if (!f) {
        return dp_err(DP_ENOMEM, "out of memory (sweep)");
    }
    for (;;) {
        int64_t next = n;
        if (s->leader && !stopped && !stop_requested(s)) {
            rc = dp_counter_next(queue, rung, &next);
        }
        next = group_bcast(s, rc == DP_OK ? next : -1);
        if (next < 0) {
            rc = rc == DP_OK ? dp_err(DP_EPEER, "the group's leader failed") : rc;
            break;
        }
        if (next >= n) {
            break;
        }
        dp_trial_result r;
        const int st = run_job(s, alive[next], rung, &r);
        if (st == DP_ESTOPPED) {
            stopped = 1;
            continue; /* take no more jobs; the rung ends with the others */
        }
        if (st != DP_OK) {
            rc = st;
            break;
        }
        if (s->leader) {
            int64_t *x = f + next * N_FIELDS;
            x[F_STATUS] = r.status;
            x[F_EPOCHS] = r.epochs;
            x[F_LOSS] = dp_f64_bits(r.val_loss);
            x[F_ACC] = dp_f64_bits(r.val_accuracy);
            x[F_SECONDS] = dp_f64_bits(r.seconds);
            x[F_DONE] = 1;
        }
    }
    f[(size_t)n * N_FIELDS] = (s->leader && (stopped || stop_requested(s))) ? 1 : 0;
    int all = dp_comm_agree(s->world, rc);
    if (all == DP_OK) {
        all = dp_comm_allreduce_sum_i64(s->world, f, (size_t)n * N_FIELDS + 1);
    }
    if (all == DP_OK) {
        s->res->stopped = f[(size_t)n * N_FIELDS] > 0;
        for (int j = 0; j < n; j++) {
            const int64_t *x = f + j * N_FIELDS;
            dp_trial_result *r = &s->res->trial[alive[j]];
            if (!x[F_DONE]) {
                continue; /* not run: the sweep was stopped */
            }
            r->status = (dp_trial_status)x[F_STATUS];
            r->epochs = (int)x[F_EPOCHS];
            r->val_loss = dp_bits_f64(x[F_LOSS]);
            r->val_accuracy = dp_bits_f64(x[F_ACC]);
            r->seconds = dp_bits_f64(x[F_SECONDS]);
            set_metric(r, s->cfg->maximize);
        }
    } else if (rc == DP_OK) {
        rc = dp_err(DP_EPEER, "another rank failed");
    }
    free(f);
    return all == DP_OK ? DP_OK : rc;
}

/* Trial order for a rung's decision and the table: lower metric first, the lower trial
 * number on a tie. */
static const dp_sweep_result *g_order_res;
static int by_metric(const void *a, const void *b)
{
    const int x = *(const int *)a, y = *(const int *)b;
    const double mx = g_order_res->trial[x].metric, my = g_order_res->trial[y].metric;
    return mx < my ? -1 : mx > my ? 1 : (x > y) - (x < y);
}

/* Successive halving: of the trials that reached this rung, the best ceil(n / eta) go on
 * (never a diverged or failed one); the others are stopped. alive is updated. Local: every
 * rank holds the same numbers. */
static int promote(sweep *s, int *alive, int n)
{
    dp_sweep_result *res = s->res;
    g_order_res = res;
    qsort(alive, (size_t)n, sizeof *alive, by_metric);
    const int keep = s->cfg->eta > 0 ? (n + s->cfg->eta - 1) / s->cfg->eta : n;
    int m = 0;
    for (int j = 0; j < n; j++) {
        dp_trial_result *r = &res->trial[alive[j]];
        if (j < keep && isfinite(r->metric)) {
            alive[m++] = alive[j];
        } else if (r->status == DP_TRIAL_PENDING) {
            r->status = DP_TRIAL_STOPPED;
        }
    }
    /* The next rung's queue in trial order. */
    for (int i = 1; i < m; i++) {
        for (int j = i; j > 0 && alive[j - 1] > alive[j]; j--) {
            const int tmp = alive[j];
            alive[j] = alive[j - 1];
            alive[j - 1] = tmp;
        }
    }
    return m;
}

/* --- results ------------------------------------------------------------------------------- */

/* Table order: more epochs first (trials that went further), then the metric. */
static int by_table(const void *a, const void *b)
{
    const int x = *(const int *)a, y = *(const int *)b;
    const dp_trial_result *rx = &g_order_res->trial[x], *ry = &g_order_res->trial[y];
    const int bx = isfinite(rx->metric), by = isfinite(ry->metric);
    if (bx != by) {
        return by - bx;
    }
    if (rx->epochs != ry->epochs) {
        return ry->epochs - rx->epochs;
    }
    return by_metric(a, b);
}

static void table_row(FILE *f, bool md, int rank, int t, const dp_sweep_result *res,
                      const dp_sweep_cfg *cfg, const dp_sweep_plan *plan)
{
    const dp_trial_result *r = &res->trial[t];
    const char *sep = md ? " | " : ",";
    fprintf(f, md ? "| %d | %d | %s" : "%d,%d,%s", rank, t, status_names[r->status]);
    char loss[32] = "", acc[32] = "";
    if (isfinite(r->val_loss)) {
        snprintf(loss, sizeof loss, "%.6g", r->val_loss);
    }
    if (isfinite(r->val_accuracy)) {
        snprintf(acc, sizeof acc, "%.6g", r->val_accuracy);
    }
    fprintf(f, "%s%d%s%s%s%s%s%.2f", sep, r->epochs, sep, md && !loss[0] ? "-" : loss, sep,
            md && !acc[0] ? "-" : acc, sep, r->seconds);
    for (int p = 0; p < plan->n_params; p++) {
        const char *v = plan->value[t * plan->n_params + p];
        fprintf(f, md ? " | `%s`" : ",\"%s\"", v);
    }
    (void)cfg;
    fprintf(f, md ? " |\n" : "\n");
}

void dp_sweep_order(const dp_sweep_result *res, int *order)
{
    for (int t = 0; t < res->n_trials; t++) {
        order[t] = t;
    }
    g_order_res = res;
    qsort(order, (size_t)res->n_trials, sizeof *order, by_table);
}

static int write_tables(const dp_sweep_cfg *cfg, const dp_sweep_plan *plan,
                        const dp_sweep_result *res)
{
    int rc = DP_OK;
    int *order = malloc(sizeof *order * (size_t)plan->n_trials);
    if (!order) {
        return dp_err(DP_ENOMEM, "out of memory (sweep table)");
    }
    dp_sweep_order(res, order);
    for (int md = 0; md < 2 && rc == DP_OK; md++) {
        char path[DP_PATH_MAX + 32], tmp[DP_PATH_MAX + 48];
        snprintf(path, sizeof path, "%s/results.%s", cfg->out, md ? "md" : "csv");
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        FILE *f = fopen(tmp, "w");
        if (!f) {
            rc = dp_err(DP_EIO, "%s: cannot write (%s)", tmp, strerror(errno));
            break;
        }
        fprintf(f, md ? "| rank | trial | status | epochs | val_loss | val_accuracy | seconds"
                      : "rank,trial,status,epochs,val_loss,val_accuracy,seconds");
        for (int p = 0; p < plan->n_params; p++) {
            fprintf(f, md ? " | %s" : ",%s", cfg->params[p].name);
        }
        fprintf(f, md ? " |\n|---|---|---|---|---|---|---" : "\n");
        for (int p = 0; md && p < plan->n_params; p++) {
            fprintf(f, "|---");
        }
        fprintf(f, md ? "|\n" : "");
        for (int i = 0; i < plan->n_trials; i++) {
            table_row(f, md, i + 1, order[i], res, cfg, plan);
        }
        if (fclose(f) != 0 || rename(tmp, path) != 0) {
            rc = dp_err(DP_EIO, "%s: cannot write (%s)", path, strerror(errno));
        }
    }
    free(order);
    return rc;
}

/* OUT/model.h5: a copy of the best trial's model (write, then rename). */
static int copy_best(const char *out, int t)
{
    char from[DP_PATH_MAX + 32], to[DP_PATH_MAX + 32], tmp[DP_PATH_MAX + 48], dir[DP_PATH_MAX + 16];
    dp_sweep_trial_dir(out, t, dir, sizeof dir);
    snprintf(from, sizeof from, "%s/model.h5", dir);
    snprintf(to, sizeof to, "%s/model.h5", out);
    snprintf(tmp, sizeof tmp, "%s.tmp", to);
    FILE *in = fopen(from, "rb"), *o = in ? fopen(tmp, "wb") : NULL;
    int rc = in && o ? DP_OK : dp_err(DP_EIO, "cannot copy %s to %s (%s)", from, tmp, strerror(errno));
    char buf[65536];
    size_t k;
    while (rc == DP_OK && (k = fread(buf, 1, sizeof buf, in)) > 0) {
        rc = fwrite(buf, 1, k, o) == k ? DP_OK : dp_err(DP_EIO, "%s: cannot write", tmp);
    }
    if (in) {
        rc = ferror(in) && rc == DP_OK ? dp_err(DP_EIO, "%s: cannot read", from) : rc;
        fclose(in);
    }
    if (o && fclose(o) != 0 && rc == DP_OK) {
        rc = dp_err(DP_EIO, "%s: cannot write (%s)", tmp, strerror(errno));
    }
    if (rc == DP_OK && rename(tmp, to) != 0) {
        rc = dp_err(DP_EIO, "%s: cannot write (%s)", to, strerror(errno));
    }
    return rc;
}

/* --- the sweep ------------------------------------------------------------------------------- */

/* What every rank checks before anything runs: the world splits into groups, every trial's
 * configuration is valid, there is a validation split. Local and deterministic. */
static int check_sweep(const dp_sweep_cfg *cfg, const dp_sweep_plan *plan, int world)
{
    if (strlen(cfg->out) > DP_PATH_MAX - 64) {
        return dp_err(DP_EINVAL, "--out %.60s...: too long for a sweep", cfg->out);
    }
    if (cfg->group < 1 || world % cfg->group != 0) {
        return dp_err(DP_EINVAL, "--group %d: the %d ranks do not split into groups of %d",
                      cfg->group, world, cfg->group);
    }
    for (int t = 0; t < plan->n_trials; t++) {
        dp_run_cfg run;
        int rc = dp_sweep_trial_cfg(cfg, plan, t, &run);
        if (rc != DP_OK) {
            return rc;
        }
        if (!(run.train.val_fraction > 0.0f)) {
            return dp_err(DP_EINVAL, "a sweep compares trials on a validation split, never on "
                                     "the test set: give --val-fraction (e.g. 0.1)");
        }
        if (run.train.deterministic && run.train.shards < cfg->group) {
            return dp_err(DP_EINVAL, "trial %d: --shards %d is fewer than the %d ranks of a "
                                     "group", t, run.train.shards, cfg->group);
        }
    }
    return DP_OK;
}

/* The leader of each group names its ranks (world ranks, gathered over the group). */
static int say_group(const sweep *s)
{
    int rc = DP_OK;
    const int k = dp_comm_size(s->g);
    int64_t *ranks = NULL;
    DP_CALLOC(ranks, (size_t)k);
    ranks[dp_comm_rank(s->g)] = dp_comm_rank(s->world);
    DP_TRY(dp_comm_allreduce_sum_i64(s->g, ranks, (size_t)k));
    if (s->log) {
        char buf[512];
        size_t len = 0;
        for (int i = 0; i < k && len < sizeof buf - 24; i++) {
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%lld", i ? "," : "",
                                    (long long)ranks[i]);
        }
        fprintf(s->log, "sweep: group %d: world ranks %s\n", s->group_id, buf);
        fflush(s->log);
    }
done:
    free(ranks);
    return rc;
}

static int sweep_rungs(sweep *s, int *alive)
{
    int rc = DP_OK, n = s->plan->n_trials;
    dp_counter *queue = NULL;
    DP_TRY(dp_counter_create(s->world, s->plan->n_rungs, &queue));
    for (int rung = 0; rung < s->plan->n_rungs && n > 0; rung++) {
        if (s->hooks->log && dp_comm_rank(s->world) == 0) {
            fprintf(s->hooks->log, "sweep: rung %d of %d: %d trial%s to epoch %d\n", rung + 1,
                    s->plan->n_rungs, n, n == 1 ? "" : "s", s->plan->rung_epochs[rung]);
            fflush(s->hooks->log);
        }
        DP_TRY(run_rung(s, rung, alive, n, queue));
        if (s->res->stopped) {
            break;
        }
        n = rung + 1 < s->plan->n_rungs ? promote(s, alive, n) : n;
    }
done:
    dp_counter_free(&queue);
    return rc;
}

int dp_sweep_run(const dp_sweep_cfg *cfg, const dp_comm *c, const dp_run_hooks *hooks,
                 dp_sweep_result *res)
{
    static const dp_run_hooks none = {0};
    int rc = DP_OK, epochs = 0;
    dp_sweep_plan plan = {0};
    dp_comm *g = NULL;
    int *alive = NULL;
    const int rank = dp_comm_rank(c), size = dp_comm_size(c);
    hooks = hooks ? hooks : &none;
    memset(res, 0, sizeof *res);
    res->best = -1;
    res->failed_rank = -1;
    const double t0 = dp_wtime();
    {
        dp_run_cfg base = cfg->base;
        rc = dp_run_opts_apply(cfg->opts, &base);
        epochs = base.train.epochs;
    }
    rc = rc == DP_OK ? dp_sweep_plan_make(cfg, epochs, &plan) : rc;
    rc = rc == DP_OK ? check_sweep(cfg, &plan, size) : rc;
    if (rc == DP_OK && rank == 0) {
        rc = plan_file(cfg, &plan, hooks->log);
    }
    if ((rc = dp_job_agree(c, rc, "", &res->failed_rank)) != DP_OK) {
        goto done;
    }
    res->n_trials = plan.n_trials;
    for (int t = 0; t < plan.n_trials; t++) {
        res->trial[t] = (dp_trial_result){.val_loss = NAN, .val_accuracy = NAN, .metric = INFINITY};
    }
    DP_TRY(dp_comm_split(c, rank / cfg->group, &g));
    sweep s = {.cfg = cfg, .plan = &plan, .world = c, .g = g, .group_id = rank / cfg->group,
               .n_groups = size / cfg->group, .leader = dp_comm_rank(g) == 0, .hooks = hooks,
               .res = res};
    s.log = s.leader ? hooks->notice : NULL;
    DP_TRY(say_group(&s));
    if (hooks->log && rank == 0) {
        fprintf(hooks->log, "sweep: %d trials (%s search), %d group%s of %d rank%s, rungs at "
                            "epoch", plan.n_trials, cfg->search == DP_SEARCH_GRID ? "grid" : "random",
                s.n_groups, s.n_groups == 1 ? "" : "s", cfg->group, cfg->group == 1 ? "" : "s");
        for (int r = 0; r < plan.n_rungs; r++) {
            fprintf(hooks->log, "%s %d", r ? "," : "", plan.rung_epochs[r]);
        }
        if (cfg->eta > 0) {
            fprintf(hooks->log, " (keep the best 1/%d by %s at each)\n", cfg->eta,
                    cfg->maximize ? "validation accuracy" : "validation loss");
        } else {
            fprintf(hooks->log, " (no early stopping; ranked by %s)\n",
                    cfg->maximize ? "validation accuracy" : "validation loss");
        }
        fflush(hooks->log);
    }
    DP_CALLOC(alive, (size_t)plan.n_trials);
    for (int t = 0; t < plan.n_trials; t++) {
        alive[t] = t;
    }
    DP_TRY(sweep_rungs(&s, alive));
    res->seconds = dp_wtime() - t0;
    if (res->stopped) {
        rc = DP_ESTOPPED;
        goto done;
    }
    for (int t = 0; t < plan.n_trials; t++) {
        const dp_trial_result *r = &res->trial[t];
        if (r->status == DP_TRIAL_FINISHED && isfinite(r->metric) &&
            (res->best < 0 || r->metric < res->trial[res->best].metric)) {
            res->best = t;
        }
    }
    rc = DP_OK;
    if (rank == 0) {
        rc = write_tables(cfg, &plan, res);
        if (rc == DP_OK && res->best >= 0) {
            rc = copy_best(cfg->out, res->best);
        }
    }
    rc = dp_job_agree(c, rc, "", &res->failed_rank);
done:
    free(alive);
    dp_comm_free(&g);
    dp_sweep_plan_free(&plan);
    return rc;
}
