/* cmd_bench.c: `dptrain bench`: runs the real training step (dp_train_run on synthetic or
 * real data) for one network and global batch on the ranks of the job, phase by phase, in
 * each allreduce mode; measures in the same run the sgemm-only ceiling of the step's GEMM
 * shapes and the gradient allreduce alone; prints a table and appends CSV / JSON lines. */
#define _GNU_SOURCE
#include "cli.h"

#include "dptrain/blas.h"
#include "dptrain/err.h"
#include "dptrain/rng.h"
#include "dptrain/train.h"

#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef DPTRAIN_VERSION
#define DPTRAIN_VERSION "dev"
#endif

#define DEFAULT_LAYERS "784,256,128,10"
#define MAX_REPEATS 100
#define N_ALONE 30 /* timed allreduces of the gradient alone */

typedef struct {
    long steps, warmup;
    int repeats;
    bool modes[DP_REDUCE_COUNT];
    const char *csv, *json, *label;
    bool help;
} bench_opts;

/* One allreduce mode's repeats: wall seconds and this rank's phase sums, per repeat. */
typedef struct {
    double wall[MAX_REPEATS];
    dp_step_times t[MAX_REPEATS];
} mode_runs;

static void help(FILE *f)
{
    fprintf(f,
"usage: mpirun -np N dptrain bench [--layers SPEC] [--batch B] [bench options]\n"
"                                  [any dptrain train option]\n"
"\n"
"Times the real training step (forward, loss, backward, gradient allreduce, optimizer)\n"
"of one network at one global batch on the ranks of the job, on synthetic data (uint8\n"
"pixels, random labels or targets) or on --data FILE. Prints samples/s, the time per\n"
"step by phase, GFLOP/s (6 x parameters x samples / time), the ratio to the sgemm-only\n"
"ceiling (the same GEMM shapes alone, measured in the same run on every rank at once),\n"
"the allreduce of the whole gradient alone and its bus bandwidth, and peak RSS per rank\n"
"against 1.5 x (data + model (parameters, gradients, activation buffers) and optimizer\n"
"state) + 30 MB.\n"
"Every figure is the median over the repeats; modes are interleaved repeat by repeat.\n"
"\n"
"bench options:\n"
"  --steps N          timed optimizer steps per repeat                      [100]\n"
"  --warmup N         untimed steps first, per mode                          [10]\n"
"  --repeats R        repeats (1 to %d)                                      [5]\n"
"  --allreduce MODE   blocking, overlap or both (one rank: blocking only)   [both]\n"
"  --csv FILE         append one CSV row per mode (header if FILE is new)\n"
"  --json FILE        append one JSON object per mode and line (JSON Lines)\n"
"  --label TEXT       a label for the rows (e.g. strong-128)\n"
"  -h, --help         this text\n"
"train options that matter here: --layers (default %s), --batch (128),\n"
"  --optimizer and its hyperparameters, --loss, --dropout, --batchnorm, --accumulate,\n"
"  --bucket-kb, --threads, --data, --seed; see dptrain train --help. --val-fraction and\n"
"  --patience are ignored (no evaluation is timed).\n"
"environment: OPENBLAS_CORETYPE / DPTRAIN_BLAS_CORETYPE choose the kernels (see\n"
"  dptrain --help); the table names the kernels in use.\n",
            MAX_REPEATS, DEFAULT_LAYERS);
}

/* Takes the bench's own options out of argv (compacting it) so that the rest can go to
 * the train option parser. Local. */
static int take_bench_opts(int *argc, char **argv, bench_opts *o)
{
    int rc = DP_OK, k = 1;
    long l = 0;
    *o = (bench_opts){.steps = 100, .warmup = 10, .repeats = 5, .label = ""};
    o->modes[DP_REDUCE_BLOCKING] = o->modes[DP_REDUCE_OVERLAP] = true;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        const char *names[] = {"--steps", "--warmup", "--repeats", "--allreduce", "--csv",
                               "--json", "--label"};
        int which = -1;
        const char *val = NULL;
        for (int j = 0; j < (int)(sizeof names / sizeof names[0]); j++) {
            size_t n = strlen(names[j]);
            if (strncmp(a, names[j], n) == 0 && (a[n] == '\0' || a[n] == '=')) {
                which = j;
                if (a[n] == '=') {
                    val = a + n + 1;
                } else if (i + 1 < *argc) {
                    val = argv[++i];
                } else {
                    DP_FAIL(DP_EINVAL, "option '%s' needs a value", a);
                }
            }
        }
        if (which < 0) {
            o->help = o->help || strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
            argv[k++] = argv[i];
            continue;
        }
        switch (which) {
        case 0: DP_TRY(dp_parse_int("--steps", val, 1, 1L << 30, &l)); o->steps = l; break;
        case 1: DP_TRY(dp_parse_int("--warmup", val, 0, 1L << 30, &l)); o->warmup = l; break;
        case 2:
            DP_TRY(dp_parse_int("--repeats", val, 1, MAX_REPEATS, &l));
            o->repeats = (int)l;
            break;
        case 3:
            o->modes[DP_REDUCE_BLOCKING] = strcmp(val, "blocking") == 0 || strcmp(val, "both") == 0;
            o->modes[DP_REDUCE_OVERLAP] = strcmp(val, "overlap") == 0 || strcmp(val, "both") == 0;
            if (!o->modes[DP_REDUCE_BLOCKING] && !o->modes[DP_REDUCE_OVERLAP]) {
                DP_FAIL(DP_EINVAL, "--allreduce: unknown value '%s' (blocking, overlap or both)",
                        val);
            }
            break;
        case 4: o->csv = val; break;
        case 5: o->json = val; break;
        case 6:
            o->label = val;
            if (strpbrk(val, "\",\\\n\r\t")) {
                DP_FAIL(DP_EINVAL, "--label '%s': no quotes, commas, backslashes or control "
                                   "characters (it goes into CSV and JSON)", val);
            }
            break;
        }
    }
    *argc = k;
    argv[k] = NULL;
done:
    return rc;
}

/* Synthetic training rows for the model: uint8 pixels scaled by 1/255, integer labels in
 * [0, outputs) for label losses, else targets in [0, 1). Deterministic in seed. Local. */
static int synth_split(dp_split *s, size_t n, int features, int outputs, dp_loss loss,
                       uint64_t seed)
{
    int rc = DP_OK;
    dp_rng r = dp_rng_make(seed, 0x42454e4348ULL /* "BENCH" */);
    *s = (dp_split){.n = n, .n_features = features, .x_scale = 1.0f / 255.0f};
    DP_CALLOC(s->x_u8, n * (size_t)features);
    for (size_t i = 0; i < n * (size_t)features; i++) {
        s->x_u8[i] = (uint8_t)(dp_rng_uniform(&r) * 256.0);
    }
    if (dp_loss_needs_labels(loss)) {
        DP_CALLOC(s->labels, n);
        for (size_t i = 0; i < n; i++) {
            s->labels[i] = (int32_t)(dp_rng_uniform(&r) * outputs) % outputs;
        }
    } else {
        s->n_targets = outputs;
        DP_CALLOC(s->values, n * (size_t)outputs);
        for (size_t i = 0; i < n * (size_t)outputs; i++) {
            s->values[i] = (float)dp_rng_uniform(&r);
        }
    }
done:
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts a copy). */
static double median(const double *v, int n)
{
    double s[MAX_REPEATS > N_ALONE ? MAX_REPEATS : N_ALONE];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* Seconds per step of the step's GEMMs alone, for B rows on this rank: per layer the
 * forward product, the weight gradient and (above the first layer) the input gradient, with
 * the trainer's shapes and transposes, from constant inputs into outputs of their own (so
 * no value drifts towards overflow or subnormals). Median over repeats of `steps`
 * iterations, the largest over the ranks (all ranks run at once, as in training).
 * Collective. */
static int gemm_ceiling(const dp_comm *c, const dp_model_cfg *mc, int B, long steps,
                        int repeats, double *out)
{
    int rc = DP_OK, L = mc->n_layers, widest = 0;
    size_t wmax = 0;
    float *x = NULL, *dy = NULL, *y = NULL, *dx = NULL, *w = NULL, *dw = NULL;
    double t[MAX_REPEATS];
    for (int i = 0; i <= L; i++) {
        widest = mc->sizes[i] > widest ? mc->sizes[i] : widest;
        if (i < L && (size_t)mc->sizes[i] * mc->sizes[i + 1] > wmax) {
            wmax = (size_t)mc->sizes[i] * mc->sizes[i + 1];
        }
    }
    const size_t act = (size_t)(B > 0 ? B : 1) * widest;
    DP_CALLOC(x, act);
    DP_CALLOC(dy, act);
    DP_CALLOC(y, act);
    DP_CALLOC(dx, act);
    DP_CALLOC(w, wmax);
    DP_CALLOC(dw, wmax);
    dp_rng r = dp_rng_make(7, 7);
    for (size_t i = 0; i < act; i++) {
        x[i] = (float)dp_rng_uniform(&r);
        dy[i] = 1e-3f * ((float)dp_rng_uniform(&r) - 0.5f);
    }
    for (size_t i = 0; i < wmax; i++) {
        w[i] = 0.05f * ((float)dp_rng_uniform(&r) - 0.5f);
    }
done:
    rc = dp_comm_agree(c, rc);
    for (int rep = -1; rc == DP_OK && rep < repeats; rep++) { /* rep -1 warms up */
        dp_comm_barrier(c);
        double t0 = dp_wtime();
        for (long s = 0; s < steps && B > 0; s++) {
            for (int i = 0; i < L; i++) {
                int in = mc->sizes[i], o = mc->sizes[i + 1];
                dp_sgemm(false, true, B, o, in, 1.0f, x, w, 0.0f, y);
                dp_sgemm(true, false, o, in, B, 1.0f, dy, x, 0.0f, dw);
                if (i > 0) {
                    dp_sgemm(false, false, B, in, o, 1.0f, dy, w, 0.0f, dx);
                }
            }
        }
        if (rep >= 0) {
            t[rep] = (dp_wtime() - t0) / (double)steps;
        }
    }
    if (rc == DP_OK) {
        *out = dp_comm_max_f64(c, median(t, repeats));
    }
    free(x);
    free(dy);
    free(y);
    free(dx);
    free(w);
    free(dw);
    return rc;
}

/* Median seconds of one blocking allreduce of n floats (the gradient arena), the largest
 * over the ranks. Collective. */
static int allreduce_alone(const dp_comm *c, float *buf, size_t n, double *out)
{
    double t[N_ALONE];
    int rc = DP_OK;
    for (int i = -3; i < N_ALONE && rc == DP_OK; i++) {
        double t0 = dp_wtime();
        rc = dp_comm_allreduce_sum_f32(c, buf, n);
        if (i >= 0) {
            t[i] = dp_wtime() - t0;
        }
    }
    rc = dp_comm_agree(c, rc);
    if (rc == DP_OK) {
        *out = dp_comm_max_f64(c, median(t, N_ALONE));
    }
    return rc;
}

/* One timed pass: a fresh state, rows [0, n) of the training view, one epoch. Collective. */
static int run_pass(const dp_train_cfg *tc0, dp_reduce_mode mode, dp_model *m,
                    const dp_dataset *d, size_t n, const dp_comm *c, double *wall,
                    dp_step_times *times)
{
    dp_train_cfg tc = *tc0;
    dp_dataset view = *d;
    dp_train_state st = {0};
    dp_train_result res;
    view.train.n = n;
    tc.reduce = mode;
    tc.times = times;
    memset(times, 0, sizeof *times);
    int rc = dp_train_state_fresh(&tc, m, &st);
    rc = dp_comm_agree(c, rc);
    if (rc == DP_OK) {
        dp_comm_barrier(c);
        double t0 = dp_wtime();
        rc = dp_train_run(&tc, m, &view, c, &st, &res);
        *wall = dp_comm_max_f64(c, dp_wtime() - t0);
    }
    dp_train_state_free(&st);
    return rc;
}

static const char *mode_name(int k) { return k == DP_REDUCE_OVERLAP ? "overlap" : "blocking"; }

/* One configuration's figures, as printed and written. */
typedef struct {
    const char *mode;
    double sps, step, data, fwd, bwd, red, red_wait, opt, gflops, ratio;
    int n_buckets;
} row;

static void csv_row(FILE *f, const char *lead, const row *r, const char *tail)
{
    fprintf(f, "%s,%s,%.1f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.2f,%.4f,%d,%s\n", lead, r->mode,
            r->sps, r->step * 1e3, r->data * 1e3, r->fwd * 1e3, r->bwd * 1e3, r->red * 1e3,
            r->red_wait * 1e3, r->opt * 1e3, r->gflops, r->ratio, r->n_buckets, tail);
}

int dp_cmd_bench(int argc, char **argv)
{
    int rc = DP_OK, status = DP_OK;
    dp_comm *c = NULL;
    dp_dataset *loaded = NULL;
    dp_dataset synth = {0};
    dp_model *m = NULL;
    mode_runs *runs = NULL;
    bench_opts bo;
    dp_cli_run ro;

    if (dp_cli_start(&argc, &argv, &c) != DP_OK) {
        return DP_EXIT_ERROR;
    }
    const int rank = dp_comm_rank(c), size = dp_comm_size(c);
    const bool root = rank == 0;
    rc = take_bench_opts(&argc, argv, &bo);
    if (rc == DP_OK && !bo.help) {
        rc = dp_cli_parse_run(argc, argv, DEFAULT_LAYERS, &ro);
    }
    if (rc != DP_OK || bo.help) {
        if (root) {
            if (rc == DP_OK) {
                help(stdout);
            } else {
                dp_cli_error(dp_errmsg());
            }
        }
        status = rc;
        goto out;
    }
    if (size == 1) {
        bo.modes[DP_REDUCE_OVERLAP] = false; /* nothing to overlap */
        bo.modes[DP_REDUCE_BLOCKING] = true;
    }
    const int threads = ro.run.threads > 0 ? ro.run.threads : dp_cli_auto_threads(dp_comm_local_size(c));
    dp_blas_set_threads(threads);
    dp_fp_flush_subnormals(ro.run.flush_subnormals);
    dp_train_cfg tc = ro.run.train;
    dp_model_cfg mc = ro.run.model;
    tc.epochs = 1;
    tc.val_fraction = 0.0f;
    tc.patience = 0;
    tc.plateau_factor = 0.0f;
    const int L = mc.n_layers, k = mc.sizes[L];
    const size_t B = tc.batch > 0 ? tc.batch : 128;
    tc.batch = B;
    const size_t rows_per_step = B * (size_t)tc.accumulate;
    const size_t n_timed = rows_per_step * (size_t)bo.steps;
    const size_t n_warm = rows_per_step * (size_t)bo.warmup;
    const size_t n_need = n_timed > n_warm ? n_timed : n_warm;

    /* Data: the file's training rows, or synthetic rows; either way every rank holds all. */
    const dp_dataset *d = &synth;
    if (ro.run.data[0]) {
        rc = dp_dataset_load(ro.run.data, &loaded);
        if (rc == DP_OK && loaded->train.n < n_need) {
            rc = dp_err(DP_EINVAL, "%s has %zu training rows; %ld steps of %zu rows need %zu "
                                   "(use fewer --steps or --warmup)", ro.run.data,
                        loaded->train.n, bo.steps > bo.warmup ? bo.steps : bo.warmup,
                        rows_per_step, n_need);
        }
        if (rc == DP_OK) {
            loaded->test.n = 0;
            d = loaded;
        }
    } else {
        rc = synth_split(&synth.train, n_need, mc.sizes[0], k, tc.loss, tc.seed);
        synth.n_classes = dp_loss_needs_labels(tc.loss) ? k : 0;
    }
    if ((status = dp_cli_agree(c, rc, "")) != DP_OK) {
        goto out;
    }
    dp_dataset view = *d;
    view.train.n = n_need;
    rc = dp_train_check(&tc, &mc, &view, size);
    if (rc == DP_OK) {
        mc.seed = tc.seed;
        mc.max_batch = dp_train_max_rows(&tc, &view, size);
        rc = dp_model_create(&mc, &m);
    }
    if (rc == DP_OK) {
        rc = dp_train_sync_params(m, c);
    }
    DP_CALLOC(runs, DP_REDUCE_COUNT);
done:
    if ((status = dp_cli_agree(c, rc, "")) != DP_OK) {
        goto out;
    }
    const size_t n_params = dp_model_n_params(m);
    size_t lo = 0, hi = 0;
    dp_shard_rows(B, rank, size, &lo, &hi);
    if (root) {
        printf("dptrain bench: %s (%zu parameters), global batch %zu (%zu per rank at most), "
               "%d rank%s (%d on this node%s), %d BLAS thread%s per rank, OpenBLAS %s kernels\n"
               "data: %s; %ld timed steps x %d repeats after %ld warm-up steps per mode; "
               "medians%s\n", ro.layers, n_params, B, (B + (size_t)size - 1) / (size_t)size, size,
               size == 1 ? "" : "s", dp_comm_local_size(c),
               dp_comm_local_size(c) > sysconf(_SC_NPROCESSORS_ONLN) ? ", oversubscribed" : "",
               threads, threads == 1 ? "" : "s", dp_blas_corename(),
               ro.run.data[0] ? ro.run.data : "synthetic", bo.steps, bo.repeats, bo.warmup,
               ro.run.flush_subnormals ? "; subnormals flushed to zero" : "");
        fflush(stdout);
    }

    /* Warm-up, then the repeats, modes interleaved so that they see the same machine. */
    for (int mode = 0; mode < DP_REDUCE_COUNT && status == DP_OK; mode++) {
        double w;
        dp_step_times t;
        if (bo.modes[mode] && bo.warmup > 0) {
            status = run_pass(&tc, (dp_reduce_mode)mode, m, d, n_warm, c, &w, &t);
        }
    }
    for (int rep = 0; rep < bo.repeats && status == DP_OK; rep++) {
        for (int mode = 0; mode < DP_REDUCE_COUNT && status == DP_OK; mode++) {
            if (bo.modes[mode]) {
                status = run_pass(&tc, (dp_reduce_mode)mode, m, d, n_timed, c,
                                  &runs[mode].wall[rep], &runs[mode].t[rep]);
            }
        }
    }
    /* Peak RSS of the training (before this command's own measurement buffers below). */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double rss_mb = dp_comm_max_f64(c, (double)ru.ru_maxrss / 1024.0);
    double t_gemm = 0.0, t_alone = 0.0;
    if (status == DP_OK) {
        status = gemm_ceiling(c, &mc, (int)(hi - lo), bo.steps, bo.repeats, &t_gemm);
    }
    if (status == DP_OK) {
        status = allreduce_alone(c, dp_model_grads(m), n_params + DP_GRAD_TAIL, &t_alone);
    }

    if ((status = dp_cli_agree(c, status, "")) != DP_OK) {
        goto out;
    }

    /* What the run holds: the data, the model (parameters, gradients, activation buffers)
     * and the optimizer's slots. */
    const dp_split *s = &view.train;
    const double data_mb = ((double)s->n * s->n_features * (s->x_u8 ? 1.0 : 4.0) +
                            (s->labels ? 4.0 * s->n : 4.0 * s->n * s->n_targets)) / 1048576.0;
    const double slots_bytes = (double)n_params * sizeof(float) * dp_optim_n_slots(&tc.opt);
    const double state_mb = ((double)dp_model_bytes(m) + slots_bytes) / 1048576.0;
    const double rss_bound = 1.5 * (data_mb + state_mb) + 30.0;
    const double bytes = (double)(n_params + DP_GRAD_TAIL) * sizeof(float);
    const double busbw = size > 1 ? 2.0 * (size - 1) / size * bytes * 8.0 / t_alone / 1e9 : 0.0;
    const double ceiling = (double)B / t_gemm;

    /* Phases: per step, mean over the ranks, median over the repeats. */
    row rows[DP_REDUCE_COUNT];
    int nr = 0;
    for (int mode = 0; mode < DP_REDUCE_COUNT; mode++) {
        if (!bo.modes[mode]) {
            continue;
        }
        double v[7][MAX_REPEATS];
        for (int rep = 0; rep < bo.repeats; rep++) {
            const dp_step_times *t = &runs[mode].t[rep];
            double p[6] = {t->data, t->forward, t->backward, t->reduce, t->reduce_wait, t->optim};
            dp_comm_allreduce_sum_f64(c, p, 6);
            for (int j = 0; j < 6; j++) {
                v[j][rep] = p[j] / size / (double)bo.steps;
            }
            v[6][rep] = (double)n_timed / runs[mode].wall[rep];
        }
        row *r = &rows[nr++];
        *r = (row){.mode = mode_name(mode), .data = median(v[0], bo.repeats),
                   .fwd = median(v[1], bo.repeats), .bwd = median(v[2], bo.repeats),
                   .red = median(v[3], bo.repeats), .red_wait = median(v[4], bo.repeats),
                   .opt = median(v[5], bo.repeats), .sps = median(v[6], bo.repeats)};
        r->step = (double)rows_per_step / r->sps;
        r->gflops = 6.0 * (double)n_params * r->sps / 1e9;
        r->ratio = r->sps / ceiling; /* the ceiling is per row: accumulation does not change it */
        int first[DP_MAX_LAYERS];
        r->n_buckets = mode == DP_REDUCE_OVERLAP ? dp_train_buckets(m, tc.bucket_bytes, first) : 1;
    }
    if (!root) {
        goto out;
    }
    printf("%-9s %10s %9s %8s %6s %6s %6s %13s %6s %7s %6s\n", "allreduce", "samples/s",
           "per rank", "step ms", "data", "fwd", "bwd", "allred wait/all", "optim", "GFLOP/s",
           "ceil%");
    for (int i = 0; i < nr; i++) {
        const row *r = &rows[i];
        printf("%-9s %10.0f %9.0f %8.3f %6.3f %6.3f %6.3f %6.3f/%6.3f %6.3f %7.1f %5.1f%%\n",
               r->mode, r->sps, r->sps / size, r->step * 1e3, r->data * 1e3, r->fwd * 1e3,
               r->bwd * 1e3, r->red_wait * 1e3, r->red * 1e3, r->opt * 1e3, r->gflops,
               100.0 * r->ratio);
    }
    if (nr == 2) {
        printf("overlap / blocking: %.3f (%d buckets of >= %zu KiB)\n", rows[1].sps / rows[0].sps,
               rows[1].n_buckets, tc.bucket_bytes / 1024);
    }
    printf("sgemm-only ceiling: %.0f samples/s (%.3f ms of GEMMs per step, largest rank)\n",
           ceiling, t_gemm * 1e3);
    if (size > 1) {
        printf("allreduce alone: %.3f ms for %.2f MB (bus bandwidth %.2f Gbit/s)\n",
               t_alone * 1e3, bytes / 1e6, busbw);
    }
    printf("peak RSS per rank: %.1f MB (data %.1f MB + model and optimizer state %.1f MB; "
           "1.5x that + 30 MB = %.1f MB: %s)\n", rss_mb, data_mb, state_mb,
           rss_bound, rss_mb <= rss_bound ? "within" : "OVER");
    fflush(stdout);

    char lead[2048], tail[512];
    snprintf(lead, sizeof lead, "%s,\"%s\",%zu,%d,%d,%d,%d,%s,%zu,%zu,%d,%ld,%d,%zu", bo.label,
             ro.layers, n_params, size, dp_comm_local_size(c),
             dp_comm_local_size(c) > sysconf(_SC_NPROCESSORS_ONLN), threads, dp_blas_corename(),
             B, (B + (size_t)size - 1) / (size_t)size, tc.accumulate, bo.steps, bo.repeats,
             tc.bucket_bytes / 1024);
    snprintf(tail, sizeof tail, "%.1f,%.4f,%.4f,%.4f,%.1f,%.1f,%.1f,%s", ceiling, t_gemm * 1e3,
             t_alone * 1e3, busbw, rss_mb, data_mb, state_mb, dp_optim_name(tc.opt.kind));
    if (bo.csv) {
        struct stat sb;
        bool fresh = stat(bo.csv, &sb) != 0 || sb.st_size == 0;
        FILE *f = fopen(bo.csv, "a");
        if (!f) {
            rc = dp_err(DP_EIO, "--csv %s: cannot open for appending", bo.csv);
        } else {
            if (fresh) {
                fprintf(f, "label,layers,n_params,ranks,ranks_per_node,oversubscribed,threads,"
                           "coretype,batch,batch_per_rank,accumulate,steps,repeats,bucket_kb,"
                           "allreduce,samples_per_s,step_ms,data_ms,forward_ms,backward_ms,"
                           "allreduce_ms,allreduce_wait_ms,optim_ms,gflops,ceiling_ratio,"
                           "n_buckets,ceiling_samples_per_s,gemm_ms,allreduce_ms_alone,"
                           "allreduce_busbw_gbps,peak_rss_mb,data_mb,state_mb,optimizer\n");
            }
            for (int i = 0; i < nr; i++) {
                csv_row(f, lead, &rows[i], tail);
            }
            if (fclose(f) != 0) {
                rc = dp_err(DP_EIO, "--csv %s: write failed", bo.csv);
            }
        }
    }
    if (rc == DP_OK && bo.json) {
        FILE *f = fopen(bo.json, "a");
        if (!f) {
            rc = dp_err(DP_EIO, "--json %s: cannot open for appending", bo.json);
        } else {
            for (int i = 0; i < nr; i++) {
                const row *r = &rows[i];
                json_t *o = json_pack(
                    "{s:s, s:s, s:I, s:i, s:i, s:i, s:s, s:I, s:i, s:s, s:f, s:f, s:f, s:f, s:f,"
                    " s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:i, s:I, s:f, s:f, s:f, s:f, s:f}",
                    "label", bo.label, "layers", ro.layers, "n_params", (json_int_t)n_params,
                    "ranks", size, "ranks_per_node", dp_comm_local_size(c), "threads", threads,
                    "coretype", dp_blas_corename(), "batch", (json_int_t)B,
                    "accumulate", tc.accumulate, "allreduce", r->mode,
                    "samples_per_s", r->sps, "samples_per_s_per_rank", r->sps / size,
                    "step_ms", r->step * 1e3, "data_ms", r->data * 1e3,
                    "forward_ms", r->fwd * 1e3, "backward_ms", r->bwd * 1e3,
                    "allreduce_ms", r->red * 1e3, "allreduce_wait_ms", r->red_wait * 1e3,
                    "optim_ms", r->opt * 1e3, "gflops", r->gflops,
                    "ceiling_samples_per_s", ceiling, "ceiling_ratio", r->ratio,
                    "n_buckets", r->n_buckets, "bucket_kb", (json_int_t)(tc.bucket_bytes / 1024),
                    "allreduce_ms_alone", t_alone * 1e3, "allreduce_busbw_gbps", busbw,
                    "peak_rss_mb", rss_mb, "data_mb", data_mb, "state_mb", state_mb);
                if (!o || json_dumpf(o, f, JSON_COMPACT | JSON_REAL_PRECISION(6)) != 0 ||
                    fputc('\n', f) == EOF) {
                    rc = dp_err(DP_EIO, "--json %s: write failed", bo.json);
                }
                json_decref(o);
            }
            if (fclose(f) != 0) {
                rc = dp_err(DP_EIO, "--json %s: write failed", bo.json);
            }
        }
    }
    if (rc != DP_OK) {
        dp_cli_error(dp_errmsg());
        status = rc;
    }
out:
    free(runs);
    dp_model_free(&m);
    dp_dataset_free(&loaded);
    free(synth.train.x_u8);
    free(synth.train.labels);
    free(synth.train.values);
    dp_comm_free(&c);
    dp_dist_finalize();
    return dp_cli_exit_code(status);
}
