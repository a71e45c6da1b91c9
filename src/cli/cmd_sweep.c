/* cmd_sweep.c: `dptrain sweep`: the sweep's own options (and an INI file's [sweep] and
 * [space] sections), every option of dptrain train for the trials, MPI start-up, the sweep
 * (dp_sweep_run), the table, the picture of every trial's curves and the best trial. */
#define _GNU_SOURCE
#include "cli.h"

#include "dptrain/blas.h"
#include "dptrain/err.h"
#include "dptrain/sweep.h"

#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef DPTRAIN_VERSION
#define DPTRAIN_VERSION "dev"
#endif

#define SWEEP_OUT_DEFAULT "runs/sweep"
#define SWEEP_TRIALS_DEFAULT 16
#define SWEEP_PLOT_MAX 64 /* dptrain plot's limit: the best ones are drawn */

static void help(FILE *f)
{
    fprintf(f,
"usage: mpirun -np N dptrain sweep --data FILE.h5 --layers SPEC --val-fraction F\n"
"                                 --param NAME=VALUES [--param ...] [sweep options]\n"
"                                 [any option of dptrain train, for every trial]\n"
"\n"
"Trains many configurations of one run and ranks them by a validation metric. The ranks are\n"
"split into groups of --group ranks; each group takes trials from a shared queue and trains\n"
"each as an ordinary run (data-parallel within the group) in OUT/trials/NNN/, with its own\n"
"config.json, metrics.jsonl, checkpoints and model.h5. Trials are compared on the validation\n"
"split only (--val-fraction is required); the test split is never used to choose.\n"
"\n"
"search space (each --param one option of dptrain train, named without dashes):\n"
"  --param NAME=A|B|C            a list of values ('|' between them; a layer spec has commas)\n"
"  --param NAME=loguniform:LO:HI log-uniform in [LO, HI] (rates, weight decay; random only)\n"
"  --param NAME=uniform:LO:HI    uniform in [LO, HI] (random search only)\n"
"  --param NAME=int:LO:HI        a uniform integer in [LO, HI] (random search only)\n"
"  not variable: data, out, resume, init-from, overwrite, epochs, val-fraction, threads\n"
"\n"
"sweep options:\n"
"  --search grid|random   grid: every combination of the lists (the last --param varies\n"
"                         fastest); random: --trials draws, trial T's value of a parameter\n"
"                         from a generator keyed by (--sweep-seed, T, parameter)\n"
"                         [grid when every --param is a list and --trials is not given]\n"
"  --trials N             random search: how many trials                          [%d]\n"
"  --sweep-seed N         seeds the random draws (not the trials' --seed)          [1]\n"
"  --group K              ranks per trial; the ranks must split evenly              [1]\n"
"  --metric val_loss|val_accuracy   the ranking (lower loss / higher accuracy)  [val_loss]\n"
"  --eta E                successive halving: rungs at --min-epochs, x E, x E^2, ... below\n"
"                         --epochs, and --epochs; when every trial of a rung has reached it,\n"
"                         the best ceil(n / E) by the metric go on (ties: the lower trial\n"
"                         number), the others stop there; 0: no early stopping       [3]\n"
"  --min-epochs M         the first rung                                             [1]\n"
"  --out DIR              the sweep's directory                           [" SWEEP_OUT_DEFAULT "]\n"
"  --config FILE.ini      options in sections: [data] [model] [optimizer] [training]\n"
"                         [output] as for dptrain train, [sweep] the options above (search,\n"
"                         trials, sweep-seed, group, metric, eta, min-epochs), [space] one\n"
"                         parameter a line (lr = loguniform:1e-4:1e-1)\n"
"  -h, --help             this text\n"
"\n"
"A stop (SIGTERM, SIGINT, SIGUSR1, Slurm's time limit) ends every group's trial with a\n"
"checkpoint; after it, or after kill -9, run the same command again: finished trials are\n"
"kept, the others resume from their checkpoints, and the table is the same. A trial gives\n"
"the same bits as its configuration trained alone with dptrain train on --group ranks with\n"
"the same BLAS threads (the command is printed for the best one).\n"
"\n"
"writes: OUT/sweep.json (the plan), OUT/trials/NNN/ (each trial's run; rung-E.json when it\n"
"reached epoch E), OUT/results.csv and OUT/results.md (sorted: trials that went further\n"
"first, then by the metric), OUT/curves.png (the curves of every trial that finished an\n"
"epoch, the best %d; needs "
"gnuplot), OUT/model.h5 (the best finished trial's model).\n"
"\n"
"exit status: 0 done, 1 run-time error, 2 usage error, 3 stopped by a signal (run again).\n",
            SWEEP_TRIALS_DEFAULT, SWEEP_PLOT_MAX);
}

/* The command line and INI file's sweep options. */
typedef struct {
    dp_sweep_cfg cfg;
    bool search_given, trials_given, help;
} sweep_opts;

/* One sweep option by name (command line or [sweep]/[space]). */
static int sweep_option(sweep_opts *o, const char *key, const char *value)
{
    long v = 0;
    int rc = DP_OK;
    if (strcmp(key, "param") == 0) {
        if (o->cfg.n_params == DP_SWEEP_MAX_PARAMS) {
            return dp_err(DP_EINVAL, "--param: at most %d parameters", DP_SWEEP_MAX_PARAMS);
        }
        rc = dp_sweep_param_parse(value, &o->cfg.params[o->cfg.n_params]);
        for (int p = 0; rc == DP_OK && p < o->cfg.n_params; p++) {
            if (strcmp(o->cfg.params[p].name, o->cfg.params[o->cfg.n_params].name) == 0) {
                rc = dp_err(DP_EINVAL, "--param %s: %s is given twice", value,
                            o->cfg.params[p].name);
            }
        }
        o->cfg.n_params += rc == DP_OK;
    } else if (strcmp(key, "search") == 0) {
        if (strcmp(value, "grid") != 0 && strcmp(value, "random") != 0) {
            return dp_err(DP_EINVAL, "--search: '%s' is not grid or random", value);
        }
        o->cfg.search = strcmp(value, "grid") == 0 ? DP_SEARCH_GRID : DP_SEARCH_RANDOM;
        o->search_given = true;
    } else if (strcmp(key, "trials") == 0) {
        rc = dp_parse_int("--trials", value, 1, DP_SWEEP_MAX_TRIALS, &v);
        o->cfg.trials = (int)v;
        o->trials_given = true;
    } else if (strcmp(key, "sweep-seed") == 0) {
        rc = dp_parse_u64("--sweep-seed", value, &o->cfg.seed);
    } else if (strcmp(key, "group") == 0) {
        rc = dp_parse_int("--group", value, 1, 1 << 20, &v);
        o->cfg.group = (int)v;
    } else if (strcmp(key, "eta") == 0) {
        rc = dp_parse_int("--eta", value, 0, 1000, &v);
        o->cfg.eta = (int)v;
        rc = rc == DP_OK && v == 1 ? dp_err(DP_EINVAL, "--eta 1: keeps every trial; give 0 "
                                                       "for no early stopping, or >= 2") : rc;
    } else if (strcmp(key, "min-epochs") == 0) {
        rc = dp_parse_int("--min-epochs", value, 1, 1000000, &v);
        o->cfg.min_epochs = (int)v;
    } else if (strcmp(key, "metric") == 0) {
        if (strcmp(value, "val_loss") != 0 && strcmp(value, "val_accuracy") != 0) {
            return dp_err(DP_EINVAL, "--metric: '%s' is not val_loss or val_accuracy", value);
        }
        o->cfg.maximize = strcmp(value, "val_accuracy") == 0;
    } else {
        return dp_err(DP_EINVAL, "unknown sweep option '%s'", key);
    }
    return rc;
}

static int ini_sweep(void *ctx, const char *section, const char *key, const char *value)
{
    sweep_opts *o = ctx;
    if (strcmp(section, "space") == 0) {
        char text[1100];
        if ((size_t)snprintf(text, sizeof text, "%s=%s", key, value) >= sizeof text) {
            return dp_err(DP_EINVAL, "[space] %s: too long", key);
        }
        return sweep_option(o, "param", text);
    }
    if (strcmp(key, "param") == 0) {
        return dp_err(DP_EINVAL, "[sweep] param: parameters go in the section [space], one a "
                                 "line (lr = loguniform:1e-4:1e-1)");
    }
    return sweep_option(o, key, value);
}

static bool is_sweep_option(const char *key)
{
    static const char *const keys[] = {"param", "search", "trials", "sweep-seed", "group",
                                       "eta", "min-epochs", "metric"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        if (strcmp(key, keys[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* Takes the sweep's options out of argv (the rest are the trials' options, left in place).
 * "--name value" and "--name=value" alike. */
static int take_sweep_options(int *argc, char **argv, sweep_opts *o)
{
    int n = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        char key[64];
        const char *eq = strchr(a, '=');
        const size_t klen = eq ? (size_t)(eq - a - 2) : strlen(a) - 2;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            o->help = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || klen >= sizeof key) {
            argv[n++] = argv[i];
            continue;
        }
        memcpy(key, a + 2, klen);
        key[klen] = '\0';
        if (!is_sweep_option(key)) {
            argv[n++] = argv[i];
            continue;
        }
        const char *value = eq ? eq + 1 : (i + 1 < *argc ? argv[++i] : NULL);
        if (!value) {
            return dp_err(DP_EINVAL, "option '--%s' needs a value", key);
        }
        int rc = sweep_option(o, key, value);
        if (rc != DP_OK) {
            return rc;
        }
    }
    *argc = n;
    argv[n] = NULL;
    return DP_OK;
}

/* Everything from the command line and the INI file into o, base and opts. Local. */
static int parse(int argc, char **argv, sweep_opts *o, dp_run_cfg *base, dp_run_opts **opts)
{
    memset(o, 0, sizeof *o);
    o->cfg.trials = SWEEP_TRIALS_DEFAULT;
    o->cfg.seed = 1;
    o->cfg.group = 1;
    o->cfg.eta = 3;
    o->cfg.min_epochs = 1;
    bool help = false;
    int rc = take_sweep_options(&argc, argv, o);
    if (rc == DP_OK) {
        rc = dp_cli_parse_run_opts(argc, argv, ini_sweep, o, base, opts, &help);
    }
    o->help = o->help || help;
    if (rc != DP_OK || o->help) {
        return rc;
    }
    if (o->cfg.n_params == 0) {
        return dp_err(DP_EINVAL, "give at least one --param NAME=VALUES (see dptrain sweep "
                                 "--help)");
    }
    if (!o->search_given) {
        bool lists = true;
        for (int p = 0; p < o->cfg.n_params; p++) {
            lists = lists && o->cfg.params[p].kind == DP_PARAM_LIST;
        }
        o->cfg.search = lists && !o->trials_given ? DP_SEARCH_GRID : DP_SEARCH_RANDOM;
    } else if (o->cfg.search == DP_SEARCH_GRID && o->trials_given) {
        return dp_err(DP_EINVAL, "--trials is for --search random (a grid has every "
                                 "combination)");
    }
    for (const char *k = "resume"; k; k = strcmp(k, "resume") == 0 ? "overwrite" : NULL) {
        if (dp_run_opts_get(*opts, k)) {
            return dp_err(DP_EINVAL, "--%s is not for a sweep: running the same sweep again "
                                     "continues it; give another --out for a new one", k);
        }
    }
    const char *out = dp_run_opts_get(*opts, "out");
    snprintf(o->cfg.out, sizeof o->cfg.out, "%s", out ? out : SWEEP_OUT_DEFAULT);
    dp_run_cfg applied = *base;
    rc = dp_run_opts_apply(*opts, &applied);
    if (rc == DP_OK && !applied.data[0]) {
        rc = dp_err(DP_EINVAL, "--data FILE is required (see dptrain sweep --help)");
    }
    if (rc == DP_OK && applied.model.n_layers == 0 && !dp_run_opts_get(*opts, "layers")) {
        bool swept = false;
        for (int p = 0; p < o->cfg.n_params; p++) {
            swept = swept || strcmp(o->cfg.params[p].name, "layers") == 0;
        }
        rc = swept ? DP_OK : dp_err(DP_EINVAL, "--layers is required (or --param layers=...)");
    }
    return rc;
}

/* The picture of every trial's curves (the best SWEEP_PLOT_MAX), through dptrain plot. */
static void plot(const dp_sweep_cfg *cfg, const dp_sweep_result *res, const int *order)
{
    static char dirs[SWEEP_PLOT_MAX][DP_PATH_MAX + 16], labels[SWEEP_PLOT_MAX][16];
    char outpng[DP_PATH_MAX + 16], title[64];
    char *args[3 * SWEEP_PLOT_MAX + 8];
    int n = 0, k = 0;
    args[n++] = "plot";
    for (int i = 0; i < res->n_trials && k < SWEEP_PLOT_MAX; i++) {
        if (res->trial[order[i]].epochs < 1) {
            continue; /* diverged or failed in its first epoch: no curve */
        }
        dp_sweep_trial_dir(cfg->out, order[i], dirs[k], sizeof dirs[k]);
        snprintf(labels[k], sizeof labels[k], "trial %d", order[i]);
        args[n++] = dirs[k++];
    }
    if (k == 0) {
        return;
    }
    for (int i = 0; i < k; i++) {
        args[n++] = "--label";
        args[n++] = labels[i];
    }
    snprintf(outpng, sizeof outpng, "%s/curves.png", cfg->out);
    snprintf(title, sizeof title, "sweep: %d trials", res->n_trials);
    args[n++] = "--out";
    args[n++] = outpng;
    args[n++] = "--title";
    args[n++] = title;
    args[n] = NULL;
    optind = 0;
    fflush(stdout);
    if (dp_cmd_plot(n, args) != 0) {
        fprintf(stderr, "dptrain: warning: the picture of the trials' curves was not drawn "
                        "(above); the table stands\n");
    }
}

/* The table, the best trial and how to reproduce it alone. Rank 0. */
static void report(const dp_sweep_cfg *cfg, const dp_sweep_result *res)
{
    char path[DP_PATH_MAX + 32], line[4096], dir[DP_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/results.md", cfg->out);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) {
        fputs(line, stdout);
    }
    if (f) {
        fclose(f);
    }
    int *order = malloc(sizeof *order * (size_t)res->n_trials);
    if (order) {
        dp_sweep_order(res, order);
        plot(cfg, res, order);
        free(order);
    }
    printf("sweep: %.1f s; table: %s/results.md and results.csv\n", res->seconds, cfg->out);
    if (res->best < 0) {
        printf("sweep: no trial finished (every one diverged or failed): no model\n");
        return;
    }
    const dp_trial_result *b = &res->trial[res->best];
    dp_sweep_trial_dir(cfg->out, res->best, dir, sizeof dir);
    printf("best: trial %d, val loss %.4f, val accuracy %.4f after %d epochs; model: %s/model.h5\n",
           res->best, b->val_loss, b->val_accuracy, b->epochs, cfg->out);
    /* The test split's figure of the chosen model, for the record: the choice did not read
     * it. */
    char mpath[DP_PATH_MAX + 32], mline[8192], last[8192] = "";
    snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", dir);
    FILE *mf = fopen(mpath, "r");
    while (mf && fgets(mline, sizeof mline, mf)) {
        snprintf(last, sizeof last, "%s", mline);
    }
    if (mf) {
        fclose(mf);
    }
    json_t *rec = json_loads(last, 0, NULL);
    const json_t *ta = json_object_get(rec, "test_accuracy"), *tl = json_object_get(rec, "test_loss");
    if (json_is_number(tl)) {
        printf("best trial on the test split (reported, not used to choose): loss %.4f",
               json_number_value(tl));
        if (json_is_number(ta)) {
            printf(", accuracy %.4f", json_number_value(ta));
        }
        printf("\n");
    }
    json_decref(rec);
    printf("reproduce it alone: mpirun -np %d dptrain train --config %s/config.json --out "
           "runs/trial-%d\n", cfg->group, dir, res->best);
}

/* SIGTERM, SIGINT, SIGUSR1: every group's trial stops at its next step with a checkpoint. */
static volatile sig_atomic_t g_stop = 0;

static void on_stop(int sig)
{
    static const char msg[] = "dptrain sweep: stop requested: every trial stops at its next "
                              "step with a checkpoint\n";
    if (!g_stop) {
        ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
    }
    g_stop = sig;
}

int dp_cmd_sweep(int argc, char **argv)
{
    dp_comm *c = NULL;
    sweep_opts o;
    dp_run_cfg base;
    dp_run_opts *opts = NULL;
    dp_sweep_result *res = calloc(1, sizeof *res);
    if (!res || dp_cli_start(&argc, &argv, &c) != DP_OK) {
        free(res);
        return DP_EXIT_ERROR;
    }
    const int rank = dp_comm_rank(c);
    dp_cli_on_stop_signals(on_stop);
    int status = parse(argc, argv, &o, &base, &opts);
    if (status != DP_OK || o.help) {
        dp_cli_help_or_error(rank, status, help);
        goto out;
    }
    dp_run_cfg applied = base;
    dp_run_opts_apply(opts, &applied);
    const int local = dp_comm_local_size(c);
    o.cfg.threads = applied.threads > 0           ? applied.threads
                    : applied.train.deterministic ? 1
                                                  : dp_cli_auto_threads(local);
    dp_blas_set_threads(o.cfg.threads);
    o.cfg.base = base;
    o.cfg.opts = opts;
    if (rank == 0) {
        printf("dptrain %s sweep: %d ranks, OpenBLAS %s kernels, %d BLAS thread%s per rank; "
               "out: %s\n", DPTRAIN_VERSION, dp_comm_size(c), dp_blas_corename(), o.cfg.threads,
               o.cfg.threads == 1 ? "" : "s", o.cfg.out);
        fflush(stdout);
    }
    dp_run_hooks hooks = {.stop = &g_stop, .version = DPTRAIN_VERSION, .log = stdout,
                          .notice = stdout};
    dp_cli_test_hooks(&hooks.test);
    status = dp_sweep_run(&o.cfg, c, &hooks, res);
    if (status == DP_ESTOPPED && rank == 0) {
        printf("sweep stopped: finished trials are kept in %s; run the same command again to "
               "continue\n", o.cfg.out);
    } else if (status == DP_OK && rank == 0) {
        report(&o.cfg, res);
    } else if (status != DP_OK && status != DP_ESTOPPED &&
               (res->failed_rank == rank || (res->failed_rank < 0 && rank == 0))) {
        fprintf(stderr, "dptrain: rank %d: error: %s\n", rank, dp_errmsg());
    }
    fflush(stdout);
out:
    dp_run_opts_free(&opts);
    free(res);
    dp_comm_free(&c);
    dp_dist_finalize();
    return dp_cli_exit_code(status);
}
