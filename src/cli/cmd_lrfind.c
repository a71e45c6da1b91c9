/* cmd_lrfind.c: `dptrain lr-find`: the learning-rate range test (dp_lrfind_run) with every
 * option of dptrain train for the run it tests, its own options, a progress line per tenth
 * of the steps, the suggestion, OUT/lr_find.csv and OUT/lr_find.png (gnuplot). */
#define _GNU_SOURCE
#include "cli.h"

#include "dptrain/blas.h"
#include "dptrain/err.h"
#include "dptrain/lrfind.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef DPTRAIN_VERSION
#define DPTRAIN_VERSION "dev"
#endif

#define LRFIND_OUT_DEFAULT "runs/lr-find"

static void help(FILE *f)
{
    dp_lrfind_cfg d;
    dp_lrfind_defaults(&d);
    fprintf(f,
"usage: mpirun -np N dptrain lr-find --data FILE.h5 --layers SPEC [options]\n"
"                                   [any option of dptrain train for the run to test]\n"
"\n"
"The learning-rate range test (Smith 2017; fastai's lr_find): from the run's initial weights\n"
"(its --seed, or --init-from), --steps optimizer steps of the run's optimizer on its batches,\n"
"the rate growing exponentially from --lr-min to --lr-max. Each step's training loss is\n"
"smoothed (an exponential average, bias-corrected); the test stops once the smoothed loss\n"
"exceeds --diverge times its minimum, or a step's loss is NaN or explodes. Suggested: the rate\n"
"where the smoothed loss falls fastest against log lr, before its minimum; also printed: the\n"
"rate at the minimum / 10. Data-parallel: every rank computes its slice of each batch, so\n"
"the curve does not depend on the number of ranks (bit for bit with --deterministic).\n"
"The run's --lr, schedule, warmup, --lr-scaling, plateau and early stopping do not apply.\n"
"\n"
"options:\n"
"  --lr-min LR        the first step's rate                               [%g]\n"
"  --lr-max LR        the last step's rate                                [%g]\n"
"  --steps N          steps at most (over as many epochs as they take)    [%d]\n"
"  --smooth BETA      smoothing of the loss, in [0, 1); 0: none           [%g]\n"
"  --diverge F        stop once the smoothed loss exceeds F x its minimum [%g]\n"
"  --skip K           the first K points are not candidates; -1: steps/20, at most 10 [%d]\n"
"  --out DIR          where lr_find.csv and lr_find.png go      [" LRFIND_OUT_DEFAULT "]\n"
"  --no-plot          no picture (no gnuplot needed)\n"
"  --quiet            only the result lines\n"
"  -h, --help         this text\n"
"\n"
"writes: OUT/lr_find.csv (step, lr, loss, smoothed: one line per step; a step's loss is its\n"
"batch's mean before its update) and OUT/lr_find.png (log-scale rates, the raw and the\n"
"smoothed loss, the suggestion marked). No model and no checkpoint.\n"
"\n"
"exit status: 0 done (a suggestion printed), 1 run-time error or no suggestion (the loss\n"
"did not fall before it diverged: lower --lr-min), 2 usage error, 3 stopped by a signal (the\n"
"points so far are written).\n",
            d.lr_min, d.lr_max, d.steps, d.beta, d.diverge, d.skip);
}

typedef struct {
    dp_lrfind_cfg cfg;
    char out[DP_PATH_MAX];
    bool plot, quiet, help;
    const char *lr_given; /* a --lr of the run, not used */
} lrfind_opts;

/* One of lr-find's own options (dp_cli_take_opts). */
static int lrfind_opt(void *ctx, int which, const char *val)
{
    lrfind_opts *o = ctx;
    int rc = DP_OK;
    long l = 0;
    float v = 0.0f;
    switch (which) {
    case 0:
        DP_TRY(dp_parse_float("--lr-min", val, 0.0, 3.4e38, &v));
        o->cfg.lr_min = v;
        break;
    case 1:
        DP_TRY(dp_parse_float("--lr-max", val, 0.0, 3.4e38, &v));
        o->cfg.lr_max = v;
        break;
    case 2:
        DP_TRY(dp_parse_int("--steps", val, 2, 10000000, &l));
        o->cfg.steps = (int)l;
        break;
    case 3:
        DP_TRY(dp_parse_float("--smooth", val, 0.0, 0.9999999, &v));
        o->cfg.beta = v;
        break;
    case 4:
        DP_TRY(dp_parse_float("--diverge", val, 1.0000001, 1e30, &v));
        o->cfg.diverge = v;
        break;
    case 5:
        DP_TRY(dp_parse_int("--skip", val, -1, 10000000, &l));
        o->cfg.skip = (int)l;
        break;
    case 6:
        if (!val[0] || (size_t)snprintf(o->out, sizeof o->out, "%s", val) >= sizeof o->out) {
            DP_FAIL(DP_EINVAL, "--out '%s': give a directory (at most %d bytes)", val,
                    DP_PATH_MAX - 1);
        }
        break;
    case 7: o->lr_given = val; break;
    case 8: o->plot = false; break;
    case 9: o->quiet = true; break;
    }
done:
    return rc;
}

/* Takes lr-find's own options (and the run's --out, --lr and --quiet) out of argv; the rest
 * goes to the run option parser. Local. */
static int take_opts(int *argc, char **argv, lrfind_opts *o)
{
    static const dp_cli_opt opts[] = {{"--lr-min", true}, {"--lr-max", true},  {"--steps", true},
                                      {"--smooth", true}, {"--diverge", true}, {"--skip", true},
                                      {"--out", true},    {"--lr", true},      {"--no-plot", false},
                                      {"--quiet", false}};
    return dp_cli_take_opts(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), lrfind_opt, o,
                            &o->help);
}

/* A line per tenth of the steps (rank 0). */
static void progress(void *ctx, const dp_lrfind_result *r)
{
    const lrfind_opts *o = ctx;
    const int i = r->n - 1, tenth = o->cfg.steps >= 10 ? o->cfg.steps / 10 : 1;
    if (o->quiet || (r->n % tenth != 0 && r->n != o->cfg.steps)) {
        return;
    }
    printf("lr-find: step %d/%d  lr %.3g  loss %.4g  smoothed %.4g\n", r->n, o->cfg.steps,
           r->lr[i], r->loss[i], r->smooth[i]);
    fflush(stdout);
}

/* OUT/lr_find.png: gnuplot on a temporary copy of the points. Local (rank 0). */
static int plot(const lrfind_opts *o, const dp_lrfind_result *r)
{
    static const char *const files[] = {"lr.dat", "plot.gp", "curves.png"};
    int rc = DP_OK;
    char dir[DP_PATH_MAX], path[DP_PATH_MAX + 32];
    const char *td = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/dptrain-lrfind.XXXXXX", td && td[0] ? td : "/tmp");
    if (!mkdtemp(dir)) {
        return dp_err(DP_EIO, "cannot create a temporary directory %s (%s)", dir,
                      strerror(errno));
    }
    /* The y range: from below the smallest loss, raw or smoothed, to above the largest smoothed
     * one before the minimum (the divergence past it would flatten the curve). */
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < r->n; i++) {
        const double a = r->smooth[i], b = r->loss[i];
        lo = isfinite(a) && a < lo ? a : lo;
        lo = isfinite(b) && b < lo ? b : lo;
        hi = isfinite(a) && i <= r->best && a > hi ? a : hi;
    }
    snprintf(path, sizeof path, "%s/lr.dat", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        DP_FAIL(DP_EIO, "%s: cannot write (%s)", path, strerror(errno));
    }
    for (int i = 0; i < r->n; i++) {
        fprintf(f, "%.9g %.9g %.9g\n", r->lr[i], r->loss[i], r->smooth[i]);
    }
    if (fclose(f) != 0) {
        DP_FAIL(DP_EIO, "%s: cannot write (%s)", path, strerror(errno));
    }
    snprintf(path, sizeof path, "%s/plot.gp", dir);
    if (!(f = fopen(path, "w"))) {
        DP_FAIL(DP_EIO, "%s: cannot write (%s)", path, strerror(errno));
    }
    fprintf(f, "set terminal pngcairo size 900,560 noenhanced\nset output 'curves.png'\n"
               "set datafile missing 'nan'\nset logscale x\nset format x '%%.0e'\n"
               "set xlabel 'learning rate (log scale)'\nset ylabel 'training loss'\n"
               "set grid\nset key top left\n"
               "set title 'dptrain lr-find: %d steps, %s'\n", r->n,
            r->why == DP_LRFIND_END ? "every step" : r->why == DP_LRFIND_STOPPED
                                                         ? "stopped by a signal"
                                                         : "stopped where the loss diverged");
    if (isfinite(lo) && isfinite(hi) && hi > lo) {
        const double pad = 0.05 * (hi - lo);
        fprintf(f, "set yrange [%.9g:%.9g]\n", lo - pad, hi + 3 * pad);
    }
    if (r->steepest >= 0) {
        fprintf(f, "set arrow from %.9g, graph 0 to %.9g, graph 1 nohead dt 2 lc rgb '#d62728'\n",
                r->suggestion, r->suggestion);
        fprintf(f, "set label 'suggested %.3g' at %.9g, graph 0.95 offset 1,0 tc rgb '#d62728'\n",
                r->suggestion, r->suggestion);
    }
    fprintf(f, "plot 'lr.dat' using 1:2 with points pt 7 ps 0.4 lc rgb '#b0b0b0' title "
               "'loss of the step', '' using 1:3 with lines lw 2 lc rgb '#1f77b4' title "
               "'smoothed'\n");
    if (fclose(f) != 0) {
        DP_FAIL(DP_EIO, "%s: cannot write (%s)", path, strerror(errno));
    }
    fflush(stdout);
    DP_TRY(dp_cli_run_gnuplot(dir));
    char png[DP_PATH_MAX + 32], out[DP_PATH_MAX + 32];
    snprintf(png, sizeof png, "%s/curves.png", dir);
    snprintf(out, sizeof out, "%s/lr_find.png", o->out);
    DP_TRY(dp_cli_copy_atomic(png, out));
done:
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    return rc;
}

/* The result lines, the CSV and the picture. Returns the exit status. Rank 0. */
static int report(const lrfind_opts *o, const dp_lrfind_result *r)
{
    static const char *const why[] = {
        [DP_LRFIND_END] = "every step ran (raise --lr-max to see where it diverges)",
        [DP_LRFIND_DIVERGED] = "the smoothed loss passed --diverge x its minimum",
        [DP_LRFIND_EXPLODED] = "a step's loss was NaN or exploded",
        [DP_LRFIND_STOPPED] = "stopped by a signal"};
    char csv[DP_PATH_MAX + 32];
    snprintf(csv, sizeof csv, "%s/lr_find.csv", o->out);
    if (dp_lrfind_write_csv(r, o->out) != DP_OK) {
        dp_cli_error(dp_errmsg());
        return DP_EXIT_ERROR;
    }
    printf("lr-find: %d steps in %.2f s, from lr %.3g to %.3g: %s\n", r->n, r->seconds,
           r->lr[0], r->lr[r->n - 1], why[r->why]);
    if (r->best >= 0) {
        printf("lr-find: smallest smoothed loss %.4g at lr %.3g (step %d); that rate / 10: %.3g\n",
               r->smooth[r->best], r->lr[r->best], r->best, r->min_tenth);
    }
    if (r->steepest >= 0) {
        printf("suggested --lr %.3g (the steepest fall of the smoothed loss, step %d)\n",
               r->suggestion, r->steepest);
    } else {
        printf("lr-find: no suggestion: the smoothed loss did not fall before its minimum "
               "(lower --lr-min, or more --steps)\n");
    }
    printf("lr-find: points: %s\n", csv);
    if (o->plot && r->n >= 2) {
        if (plot(o, r) == DP_OK) {
            printf("lr-find: picture: %s/lr_find.png\n", o->out);
        } else {
            fprintf(stderr, "dptrain: warning: the picture was not drawn: %s (the points "
                            "stand; --no-plot skips it)\n", dp_errmsg());
        }
    }
    fflush(stdout);
    if (r->why == DP_LRFIND_STOPPED) {
        return DP_EXIT_STOPPED;
    }
    return r->steepest >= 0 ? DP_EXIT_OK : DP_EXIT_ERROR;
}

static volatile sig_atomic_t g_stop = 0;

static void on_stop(int sig)
{
    static const char msg[] = "dptrain lr-find: stop requested: ending after this step\n";
    if (!g_stop) {
        ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
    }
    g_stop = sig;
}

int dp_cmd_lr_find(int argc, char **argv)
{
    dp_comm *c = NULL;
    lrfind_opts o = {.plot = true};
    dp_cli_run ro;
    dp_lrfind_result res = {.failed_rank = -1};
    int exit_code = DP_EXIT_OK;
    dp_lrfind_defaults(&o.cfg);
    snprintf(o.out, sizeof o.out, "%s", LRFIND_OUT_DEFAULT);
    if (dp_cli_start(&argc, &argv, &c) != DP_OK) {
        return DP_EXIT_ERROR;
    }
    const int rank = dp_comm_rank(c), size = dp_comm_size(c);
    dp_cli_on_stop_signals(on_stop);
    int rc = take_opts(&argc, argv, &o);
    if (rc == DP_OK && !o.help) {
        rc = dp_cli_parse_run(argc, argv, NULL, &ro);
        o.help = rc == DP_OK && ro.help;
    }
    if (rc == DP_OK && !o.help && ro.run.resume[0]) {
        rc = dp_err(DP_EINVAL, "--resume: lr-find starts from the run's initial weights (give "
                               "--init-from FILE to start from a model)");
    }
    if (rc == DP_OK && !o.help) {
        rc = dp_lrfind_check(&o.cfg);
    }
    if (rc != DP_OK || o.help) {
        dp_cli_help_or_error(rank, rc, help);
        exit_code = rc == DP_OK ? DP_EXIT_OK : DP_EXIT_USAGE;
        goto out;
    }
    const int threads = ro.run.threads > 0          ? ro.run.threads
                        : ro.run.train.deterministic ? 1
                                                     : dp_cli_auto_threads(dp_comm_local_size(c));
    dp_blas_set_threads(threads);
    if (rank == 0 && !o.quiet) {
        printf("dptrain %s lr-find: %d rank%s, OpenBLAS %s kernels, %d BLAS thread%s per rank; "
               "model %s; %s; global batch %zu; lr %g to %g over %d steps\n", DPTRAIN_VERSION,
               size, size == 1 ? "" : "s", dp_blas_corename(), threads, threads == 1 ? "" : "s",
               ro.layers, dp_optim_name(ro.run.train.opt.kind), ro.run.train.batch,
               o.cfg.lr_min, o.cfg.lr_max, o.cfg.steps);
        if (o.lr_given) {
            printf("lr-find: --lr %s is not used: the test sets every step's rate\n", o.lr_given);
        }
        fflush(stdout);
    }
    if ((rc = dp_lrfind_init(&res, &o.cfg)) != DP_OK) {
        dp_cli_error(dp_errmsg());
        exit_code = DP_EXIT_ERROR;
        goto out;
    }
    o.cfg.point = rank == 0 ? progress : NULL;
    o.cfg.point_ctx = &o;
    dp_run_hooks hooks = {.stop = &g_stop, .version = DPTRAIN_VERSION};
    dp_cli_test_hooks(&hooks.test);
    rc = dp_lrfind_run(&ro.run, &o.cfg, c, &hooks, &res);
    if (rc != DP_OK) {
        if (res.failed_rank == rank) {
            if (size > 1) {
                fprintf(stderr, "dptrain: rank %d: error: %s\n", rank, dp_errmsg());
            } else {
                dp_cli_error(dp_errmsg());
            }
        }
        exit_code = dp_cli_exit_code(rc);
    } else if (res.n == 0) {
        exit_code = DP_EXIT_STOPPED;
        if (rank == 0) {
            printf("lr-find: stopped before its first step: nothing written\n");
        }
    } else {
        exit_code = rank == 0 ? report(&o, &res)
                    : res.why == DP_LRFIND_STOPPED ? DP_EXIT_STOPPED
                    : res.steepest >= 0            ? DP_EXIT_OK
                                                   : DP_EXIT_ERROR;
    }
out:
    dp_lrfind_free(&res);
    dp_comm_free(&c);
    dp_dist_finalize();
    return exit_code;
}
