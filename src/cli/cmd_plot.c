/* cmd_plot.c: `dptrain plot RUN_DIR...`: the training curves of one or more runs (their
 * metrics.jsonl, read with jansson) drawn by gnuplot, run as a child process, into one PNG:
 * loss, accuracy and learning rate per epoch, one colour per run. Runs in one process,
 * without MPI. */
#define _GNU_SOURCE
#include "cli.h"

#include "dptrain/err.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define PLOT_MAX_RUNS 64
#define PLOT_W_DEFAULT 1500
#define PLOT_H_DEFAULT 450

/* The columns of a run's data file, after the epoch: the fields of metrics.jsonl drawn. */
enum { C_TRAIN_LOSS, C_VAL_LOSS, C_TEST_LOSS, C_TRAIN_ACC, C_VAL_ACC, C_TEST_ACC, C_LR, N_COLS };
static const char *const col_keys[N_COLS] = {"train_loss", "val_loss", "test_loss",
                                             "train_accuracy", "val_accuracy", "test_accuracy",
                                             "lr"};

typedef struct {
    const char *dir;
    char label[256];
    char dat[32];      /* its data file in the temporary directory */
    int n_records;
    int max_epoch;
    bool has[N_COLS];  /* the column holds at least one number */
    double first_lr;   /* the first positive learning rate, or 0 */
    double max_lr;
} plot_run;

static void plot_help(FILE *f)
{
    fprintf(f,
"usage: dptrain plot RUN_DIR [RUN_DIR...] [--out FILE.png] [--label NAME]... [options]\n"
"\n"
"Draws the training curves of one or more runs (the --out directories of dptrain train)\n"
"from their metrics.jsonl into one PNG: a panel of losses (train solid, test dashed,\n"
"validation dash-dotted), a panel of accuracies (classification runs) and a panel of the\n"
"learning rate, per epoch; one colour per run, named in the legend by its directory name.\n"
"Needs gnuplot (Debian: apt-get install gnuplot-nox, or launch/setup.sh gnuplot-nox); no\n"
"MPI. The PNG is written atomically (FILE.tmp.PID, renamed).\n"
"  --out FILE.png    the picture to write                          [curves.png]\n"
"  --label NAME      the legend name of a run instead of its directory name: give it once\n"
"                    per run, in the order of the runs\n"
"  --title TEXT      the title over the panels        [training curves: the run names]\n"
"  --size WxH        the picture's size in pixels                  [%dx%d]\n"
"  -h, --help        this text\n"
"\n"
"exit status: 0 done, 1 run-time error (a missing or malformed metrics.jsonl, gnuplot\n"
"             missing or failing, the picture cannot be written), 2 usage error.\n",
            PLOT_W_DEFAULT, PLOT_H_DEFAULT);
}

/* s as the body of a gnuplot single-quoted string: quotes doubled, control characters as
 * spaces (it is for legends and titles). */
static void gp_quote(FILE *f, const char *s)
{
    fputc('\'', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\'') {
            fputs("''", f);
        } else {
            fputc(*p < 0x20 ? ' ' : *p, f);
        }
    }
    fputc('\'', f);
}

/* The legend name of a run directory: its last path component (of its real path for "." or
 * ".."), trailing slashes ignored. */
static void dir_label(const char *dir, char *buf, size_t cap)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", dir);
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '/') {
        tmp[--n] = '\0';
    }
    const char *base = strrchr(tmp, '/') ? strrchr(tmp, '/') + 1 : tmp;
    char real[PATH_MAX];
    if ((strcmp(base, ".") == 0 || strcmp(base, "..") == 0 || base[0] == '\0') &&
        realpath(dir, real)) {
        base = strrchr(real, '/') ? strrchr(real, '/') + 1 : real;
        if (base[0] == '\0') {
            base = "/";
        }
    }
    size_t len = strlen(base) < cap ? strlen(base) : cap - 1; /* a long name is cut */
    memcpy(buf, base, len);
    buf[len] = '\0';
}

/* Reads RUN/metrics.jsonl into the data file tmpdir/r->dat: one line per epoch, the epoch
 * then the N_COLS columns, "?" where a figure is absent or null. Local. */
static int read_run(const char *tmpdir, plot_run *r)
{
    int rc = DP_OK;
    char path[PATH_MAX + 32], out_path[PATH_MAX + 64];
    FILE *in = NULL, *out = NULL;
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    json_t *obj = NULL;
    snprintf(path, sizeof path, "%s/metrics.jsonl", r->dir);
    if (!(in = fopen(path, "r"))) {
        DP_FAIL(DP_EIO, "%s: cannot open (%s): is %s the --out directory of a dptrain train "
                        "run?", path, strerror(errno), r->dir);
    }
    snprintf(out_path, sizeof out_path, "%s/%s", tmpdir, r->dat);
    if (!(out = fopen(out_path, "w"))) {
        DP_FAIL(DP_EIO, "%s: cannot create (%s)", out_path, strerror(errno));
    }
    while (getline(&line, &cap, in) >= 0) {
        json_error_t err;
        lineno++;
        if (strspn(line, " \t\r\n") == strlen(line)) {
            continue;
        }
        if (!(obj = json_loads(line, 0, &err))) {
            char at[32] = "";
            if (err.column > 0) {
                snprintf(at, sizeof at, ", column %d", err.column);
            }
            DP_FAIL(DP_EFORMAT, "%s:%ld: not valid JSON (%s%s)", path, lineno, err.text, at);
        }
        if (!json_is_object(obj)) {
            DP_FAIL(DP_EFORMAT, "%s:%ld: not a JSON object (one object per epoch expected)",
                    path, lineno);
        }
        json_t *e = json_object_get(obj, "epoch");
        double ev = e && json_is_number(e) ? json_number_value(e) : -1.0;
        if (!(ev >= 1.0 && ev <= 1e9 && ev == floor(ev))) {
            DP_FAIL(DP_EFORMAT, "%s:%ld: no \"epoch\" (a positive integer)", path, lineno);
        }
        fprintf(out, "%d", (int)ev);
        r->max_epoch = (int)ev > r->max_epoch ? (int)ev : r->max_epoch;
        for (int c = 0; c < N_COLS; c++) {
            json_t *v = json_object_get(obj, col_keys[c]);
            if (v && !json_is_null(v) && !json_is_number(v)) {
                DP_FAIL(DP_EFORMAT, "%s:%ld: \"%s\" is not a number or null", path, lineno,
                        col_keys[c]);
            }
            double x = v && json_is_number(v) ? json_number_value(v) : NAN;
            if (isfinite(x)) {
                fprintf(out, " %.9g", x);
                r->has[c] = true;
                if (c == C_LR && x > 0.0) {
                    r->first_lr = r->first_lr > 0.0 ? r->first_lr : x;
                    r->max_lr = x > r->max_lr ? x : r->max_lr;
                }
            } else {
                fprintf(out, " ?");
            }
        }
        fputc('\n', out);
        json_decref(obj);
        obj = NULL;
        r->n_records++;
    }
    if (ferror(in)) {
        DP_FAIL(DP_EIO, "%s: read error (%s)", path, strerror(errno));
    }
    if (r->n_records == 0) {
        DP_FAIL(DP_EFORMAT, "%s: no epochs recorded (the run has not finished an epoch yet?)",
                path);
    }
    if (!r->has[C_TRAIN_LOSS]) {
        DP_FAIL(DP_EFORMAT, "%s: no line has a \"train_loss\"", path);
    }
done:
    json_decref(obj);
    free(line);
    if (in) {
        fclose(in);
    }
    if (out && fclose(out) != 0 && rc == DP_OK) {
        rc = dp_err(DP_EIO, "%s: cannot write (%s)", out_path, strerror(errno));
    }
    return rc;
}

/* One panel: the given columns of every run that has them (style per column), the runs'
 * names in the key of the first panel only, with one entry per line style. */
static void gp_panel(FILE *f, const char *title, const char *ylabel, const int *cols,
                     const char *const *dashes, const char *const *names, int n_cols,
                     const plot_run *runs, int n_runs, bool key)
{
    static const char *const colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                          "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                                          "#bcbd22", "#17becf"};
    const int n_colours = (int)(sizeof colours / sizeof colours[0]);
    fprintf(f, "set title ");
    gp_quote(f, title);
    fprintf(f, "\nset ylabel ");
    gp_quote(f, ylabel);
    fprintf(f, "\n%s\nplot ", key ? "set key top right opaque box" : "unset key");
    bool first = true;
    for (int i = 0; i < n_runs; i++) {
        bool titled = false;
        for (int j = 0; j < n_cols; j++) {
            if (!runs[i].has[cols[j]]) {
                continue;
            }
            fprintf(f, "%s'%s' using 1:%d with linespoints lw 2 pt 7 ps 0.5 lc rgb '%s' dt %s ",
                    first ? "" : ", \\\n     ", runs[i].dat, cols[j] + 2,
                    colours[i % n_colours], dashes[j]);
            if (titled) {
                fprintf(f, "notitle");
            } else {
                fprintf(f, "title ");
                gp_quote(f, runs[i].label);
                titled = true;
            }
            first = false;
        }
    }
    if (key && n_cols > 1) {
        for (int j = 0; j < n_cols; j++) {
            bool any = false;
            for (int i = 0; i < n_runs; i++) {
                any = any || runs[i].has[cols[j]];
            }
            if (any) {
                fprintf(f, ", \\\n     1/0 with lines lw 2 lc rgb 'black' dt %s title ", dashes[j]);
                gp_quote(f, names[j]);
            }
        }
    }
    fprintf(f, "\n");
}

/* The gnuplot script: a row of panels (loss, accuracy if any run has it, learning rate). */
static int write_script(const char *path, const char *title, int w, int h, const plot_run *runs,
                        int n_runs)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        return dp_err(DP_EIO, "%s: cannot create (%s)", path, strerror(errno));
    }
    static const char *const dashes[] = {"1", "2", "4"}; /* solid, dashed, dash-dot */
    static const char *const loss_names[] = {"train (solid)", "test (dashed)",
                                             "val (dash-dot)"};
    const int loss_cols[] = {C_TRAIN_LOSS, C_TEST_LOSS, C_VAL_LOSS};
    const int acc_cols[] = {C_TRAIN_ACC, C_TEST_ACC, C_VAL_ACC};
    const int lr_cols[] = {C_LR};
    bool any_acc = false, any_lr = false;
    int max_epoch = 1;
    for (int i = 0; i < n_runs; i++) {
        any_acc = any_acc || runs[i].has[C_TRAIN_ACC] || runs[i].has[C_TEST_ACC] ||
                  runs[i].has[C_VAL_ACC];
        any_lr = any_lr || runs[i].has[C_LR];
        max_epoch = runs[i].max_epoch > max_epoch ? runs[i].max_epoch : max_epoch;
    }
    fprintf(f, "set terminal pngcairo size %d,%d noenhanced font ',10'\n", w, h);
    fprintf(f, "set output 'curves.png'\n");
    fprintf(f, "set datafile missing '?'\n");
    fprintf(f, "set multiplot layout 1,%d title ", 1 + any_acc + any_lr);
    gp_quote(f, title);
    fprintf(f, "\nset grid\nset xlabel 'epoch'\nset xrange [0.5:%d.5]\n", max_epoch);
    if (max_epoch <= 20) {
        fprintf(f, "set xtics 1\n");
    }
    gp_panel(f, "loss", "loss", loss_cols, dashes, loss_names, 3, runs, n_runs, true);
    if (any_acc) {
        fprintf(f, "set yrange [*:*]\n");
        gp_panel(f, "accuracy", "accuracy", acc_cols, dashes, loss_names, 3, runs, n_runs,
                 false);
    }
    if (any_lr) {
        /* Rates of several orders of magnitude (adadelta's 1 and adam's 0.001): a log scale,
         * down to 1/1000 of the smallest starting rate (a schedule's last steps, towards 0,
         * leave through the bottom). */
        double lo = 0.0, hi = 0.0;
        for (int i = 0; i < n_runs; i++) {
            if (runs[i].first_lr > 0.0) {
                lo = lo > 0.0 && lo < runs[i].first_lr ? lo : runs[i].first_lr;
                hi = runs[i].max_lr > hi ? runs[i].max_lr : hi;
            }
        }
        if (lo > 0.0 && hi / lo > 30.0) {
            fprintf(f, "set logscale y\nset format y '%%g'\nset yrange [%g:%g]\n", lo / 1000.0,
                    hi * 2.0);
        }
        gp_panel(f, "learning rate (last step of the epoch)", "learning rate", lr_cols, dashes,
                 loss_names, 1, runs, n_runs, false);
    }
    fprintf(f, "unset multiplot\n");
    if (ferror(f) | (fclose(f) != 0)) {
        return dp_err(DP_EIO, "%s: cannot write (%s)", path, strerror(errno));
    }
    return DP_OK;
}

int dp_cli_run_gnuplot(const char *dir)
{
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int st = 0;
    char *argv[] = {"gnuplot", "plot.gp", NULL};
    if (posix_spawn_file_actions_init(&fa) != 0) {
        return dp_err(DP_ENOMEM, "cannot start gnuplot (out of memory)");
    }
    int e = posix_spawn_file_actions_addchdir_np(&fa, dir);
    if (e == 0) {
        e = posix_spawnp(&pid, "gnuplot", &fa, NULL, argv, environ);
    }
    posix_spawn_file_actions_destroy(&fa);
    if (e == ENOENT) {
        return dp_err(DP_EIO, "gnuplot is not installed (or not on PATH): install it with "
                              "apt-get install gnuplot-nox, or launch/setup.sh gnuplot-nox");
    }
    if (e != 0) {
        return dp_err(DP_EIO, "cannot start gnuplot (%s)", strerror(e));
    }
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
            return dp_err(DP_EIO, "waiting for gnuplot failed (%s)", strerror(errno));
        }
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        return dp_err(DP_EIO, "gnuplot failed (%s %d; its messages are above)",
                      WIFEXITED(st) ? "exit status" : "signal",
                      WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    }
    return DP_OK;
}

int dp_cli_copy_atomic(const char *src, const char *dst)
{
    int rc = DP_OK;
    char tmp[PATH_MAX + 32], buf[1 << 16];
    FILE *in = NULL, *out = NULL;
    size_t n;
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dst, (long)getpid()) >= sizeof tmp) {
        return dp_err(DP_EINVAL, "%s: path too long", dst);
    }
    if (!(in = fopen(src, "rb"))) {
        DP_FAIL(DP_EIO, "gnuplot wrote no picture (%s: %s)", src, strerror(errno));
    }
    if (!(out = fopen(tmp, "wb"))) {
        DP_FAIL(DP_EIO, "%s: cannot write the picture: cannot create %s (%s)", dst, tmp,
                strerror(errno));
    }
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (fwrite(buf, 1, n, out) != n) {
            DP_FAIL(DP_EIO, "%s: cannot write (%s)", tmp, strerror(errno));
        }
    }
    if (ferror(in)) {
        DP_FAIL(DP_EIO, "%s: read error (%s)", src, strerror(errno));
    }
    if (fflush(out) != 0 || fsync(fileno(out)) != 0) {
        DP_FAIL(DP_EIO, "%s: cannot write (%s)", tmp, strerror(errno));
    }
    int cr = fclose(out);
    out = NULL;
    if (cr != 0) {
        DP_FAIL(DP_EIO, "%s: cannot write (%s)", tmp, strerror(errno));
    }
    if (rename(tmp, dst) != 0) {
        DP_FAIL(DP_EIO, "%s: cannot rename %s onto it (%s)", dst, tmp, strerror(errno));
    }
    tmp[0] = '\0';
done:
    if (in) {
        fclose(in);
    }
    if (out) {
        fclose(out);
    }
    if (tmp[0]) {
        remove(tmp);
    }
    return rc;
}

static int parse_size(const char *s, int *w, int *h)
{
    char *end = NULL;
    long a = strtol(s, &end, 10), b = 0;
    if (end != s && (*end == 'x' || *end == 'X')) {
        const char *p = end + 1;
        b = strtol(p, &end, 10);
        if (end != p && *end == '\0' && a >= 100 && a <= 20000 && b >= 100 && b <= 20000) {
            *w = (int)a;
            *h = (int)b;
            return DP_OK;
        }
    }
    return dp_err(DP_EINVAL, "--size: '%s' is not WIDTHxHEIGHT in pixels, each in [100, 20000] "
                             "(e.g. 1500x450)", s);
}

int dp_cmd_plot(int argc, char **argv)
{
    static const struct option lo[] = {
        {"out", required_argument, 0, 'o'},   {"label", required_argument, 0, 'l'},
        {"title", required_argument, 0, 't'}, {"size", required_argument, 0, 's'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0},
    };
    int rc = DP_OK, c, w = PLOT_W_DEFAULT, h = PLOT_H_DEFAULT, n_runs = 0, n_labels = 0;
    const char *out = "curves.png", *title = NULL, *labels[PLOT_MAX_RUNS];
    plot_run runs[PLOT_MAX_RUNS];
    char tmpdir[PATH_MAX] = "", path[PATH_MAX + 64], deftitle[1024];
    bool usage_error = true;
    memset(runs, 0, sizeof runs);
    opterr = 0;
    optind = 0; /* glibc: 0 also resets getopt's state from an earlier parse (1 does not) */
    while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 't': title = optarg; break;
        case 's': DP_TRY(parse_size(optarg, &w, &h)); break;
        case 'l':
            if (n_labels == PLOT_MAX_RUNS) {
                DP_FAIL(DP_EINVAL, "plot: at most %d --label", PLOT_MAX_RUNS);
            }
            labels[n_labels++] = optarg;
            break;
        case 'h': plot_help(stdout); return DP_EXIT_OK;
        case ':': DP_FAIL(DP_EINVAL, "option '%s' needs a value", argv[optind - 1]);
        default:
            DP_FAIL(DP_EINVAL, "plot: unknown option '%s' (see dptrain plot --help)",
                    argv[optind - 1]);
        }
    }
    n_runs = argc - optind;
    if (n_runs < 1) {
        DP_FAIL(DP_EINVAL, "plot: give at least one run directory (see dptrain plot --help)");
    }
    if (n_runs > PLOT_MAX_RUNS) {
        DP_FAIL(DP_EINVAL, "plot: %d run directories; at most %d", n_runs, PLOT_MAX_RUNS);
    }
    if (n_labels > 0 && n_labels != n_runs) {
        DP_FAIL(DP_EINVAL, "plot: --label given %d time%s for %d run%s: give one per run, in "
                           "the order of the runs", n_labels, n_labels == 1 ? "" : "s", n_runs,
                n_runs == 1 ? "" : "s");
    }
    if (out[0] == '\0') {
        DP_FAIL(DP_EINVAL, "plot: --out is empty");
    }
    usage_error = false;

    const char *td = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/dptrain-plot.XXXXXX", td && td[0] ? td : "/tmp");
    if (!mkdtemp(tmpdir)) {
        int e = errno;
        char t[PATH_MAX];
        snprintf(t, sizeof t, "%s", tmpdir);
        tmpdir[0] = '\0';
        DP_FAIL(DP_EIO, "cannot create a temporary directory %s (%s)", t, strerror(e));
    }
    size_t tl = (size_t)snprintf(deftitle, sizeof deftitle, "training curves:");
    for (int i = 0; i < n_runs; i++) {
        runs[i].dir = argv[optind + i];
        snprintf(runs[i].dat, sizeof runs[i].dat, "run%d.dat", i);
        if (n_labels > 0) {
            snprintf(runs[i].label, sizeof runs[i].label, "%s", labels[i]);
        } else {
            dir_label(runs[i].dir, runs[i].label, sizeof runs[i].label);
        }
        if (tl < sizeof deftitle) {
            tl += (size_t)snprintf(deftitle + tl, sizeof deftitle - tl, "%s %s", i ? "," : "",
                                   runs[i].label);
        }
        DP_TRY(read_run(tmpdir, &runs[i]));
    }
    snprintf(path, sizeof path, "%s/plot.gp", tmpdir);
    DP_TRY(write_script(path, title ? title : deftitle, w, h, runs, n_runs));
    fflush(stdout);
    DP_TRY(dp_cli_run_gnuplot(tmpdir));
    snprintf(path, sizeof path, "%s/curves.png", tmpdir);
    DP_TRY(dp_cli_copy_atomic(path, out));
    printf("plot: %d run%s, %dx%d: %s\n", n_runs, n_runs == 1 ? "" : "s", w, h, out);
done:
    if (tmpdir[0]) {
        static const char *const fixed[] = {"plot.gp", "curves.png"};
        for (int i = 0; i < n_runs && i < PLOT_MAX_RUNS; i++) {
            if (runs[i].dat[0]) {
                snprintf(path, sizeof path, "%s/%s", tmpdir, runs[i].dat);
                unlink(path);
            }
        }
        for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
            snprintf(path, sizeof path, "%s/%s", tmpdir, fixed[i]);
            unlink(path);
        }
        rmdir(tmpdir);
    }
    if (rc != DP_OK) {
        dp_cli_error(dp_errmsg());
        return usage_error ? DP_EXIT_USAGE : dp_cli_exit_code(rc == DP_EINVAL ? DP_EIO : rc);
    }
    return DP_EXIT_OK;
}
