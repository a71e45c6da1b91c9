/* cmd_bench.c: `dptrain bench`: reads the bench options and the run's options, calls
 * dp_bench_run (dptrain/bench.h: the real training step in each mode, the sgemm-only
 * ceiling and the allreduce alone), prints a table and appends CSV / JSON lines. */
#define _GNU_SOURCE
#include "cli.h"

#include "dptrain/bench.h"
#include "dptrain/blas.h"
#include "dptrain/err.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_LAYERS "784,256,128,10"

typedef struct {
    dp_bench_cfg cfg;
    const char *csv, *json, *label;
    const char *allreduce;   /* --allreduce as given, or NULL */
    bool help;
    char layers[1024];
    int threads, local;
} bench_cli;

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
"  --allreduce LIST   the modes, comma-separated: blocking, overlap,       [both]\n"
"                     deterministic (dptrain train --deterministic with\n"
"                     --shards V, default %d: needs ranks <= V), sharded\n"
"                     (ZeRO-1: reduce-scatter, slice update, allgather; its\n"
"                     allgather counts in allred); both = blocking,overlap;\n"
"                     all = the four. One rank: overlap and sharded measure\n"
"                     blocking (nothing to overlap or shard)\n"
"  --deterministic    without --allreduce: --allreduce deterministic; with it,\n"
"                     LIST must name deterministic\n"
"  --csv FILE         append one CSV row per mode (header if FILE is new)\n"
"  --json FILE        append one JSON object per mode and line (JSON Lines)\n"
"  --label TEXT       a label for the rows (e.g. strong-128)\n"
"  -h, --help         this text\n"
"train options that matter here: --layers (default %s), --batch (128),\n"
"  --optimizer and its hyperparameters, --loss, --dropout, --batchnorm, --accumulate,\n"
"  --bucket-kb, --shards, --threads, --data, --seed; see dptrain train --help.\n"
"  --val-fraction and --patience are ignored (no evaluation is timed). Every mode runs\n"
"  with the same BLAS threads: --threads, else 1 when deterministic is measured (as\n"
"  dptrain train --deterministic), else cores / ranks on the node.\n"
"environment: OPENBLAS_CORETYPE / DPTRAIN_BLAS_CORETYPE choose the kernels (see\n"
"  dptrain --help); the table names the kernels in use.\n",
            DP_BENCH_MAX_REPEATS, DP_SHARDS_DEFAULT, DEFAULT_LAYERS);
}

/* --allreduce LIST: comma-separated blocking, overlap, deterministic, sharded, both
 * (blocking and overlap) or all, into modes (which it sets whole). Local. */
static int parse_modes(const char *val, bool *modes)
{
    static const struct {
        const char *name;
        bool on[DP_BENCH_MODES];
    } words[] = {
        {"blocking", {[DP_BENCH_BLOCKING] = true}},
        {"overlap", {[DP_BENCH_OVERLAP] = true}},
        {"deterministic", {[DP_BENCH_DETERMINISTIC] = true}},
        {"sharded", {[DP_BENCH_SHARDED] = true}},
        {"both", {[DP_BENCH_BLOCKING] = true, [DP_BENCH_OVERLAP] = true}},
        {"all", {true, true, true, true}},
    };
    const int n_words = (int)(sizeof words / sizeof words[0]);
    memset(modes, 0, DP_BENCH_MODES * sizeof *modes);
    for (const char *p = val;; p++) {
        const size_t n = strcspn(p, ",");
        int hit = -1;
        for (int j = 0; j < n_words && hit < 0; j++) {
            hit = strlen(words[j].name) == n && strncmp(p, words[j].name, n) == 0 ? j : -1;
        }
        if (hit < 0) {
            return dp_err(DP_EINVAL, "--allreduce: unknown mode '%.*s' in '%s' (a comma-separated "
                                     "list of blocking, overlap, deterministic, sharded, both or all)",
                          (int)n, p, val);
        }
        for (int k = 0; k < DP_BENCH_MODES; k++) {
            modes[k] = modes[k] || words[hit].on[k];
        }
        p += n;
        if (*p == '\0') {
            return DP_OK;
        }
    }
}

/* One of the bench's own options (dp_cli_take_opts). */
static int bench_opt(void *ctx, int which, const char *val)
{
    bench_cli *o = ctx;
    int rc = DP_OK;
    long l = 0;
    switch (which) {
    case 0: DP_TRY(dp_parse_int("--steps", val, 1, 1L << 30, &o->cfg.steps)); break;
    case 1: DP_TRY(dp_parse_int("--warmup", val, 0, 1L << 30, &o->cfg.warmup)); break;
    case 2:
        DP_TRY(dp_parse_int("--repeats", val, 1, DP_BENCH_MAX_REPEATS, &l));
        o->cfg.repeats = (int)l;
        break;
    case 3:
        DP_TRY(parse_modes(val, o->cfg.modes));
        o->allreduce = val;
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
done:
    return rc;
}

/* Takes the bench's own options out of argv (compacting it) so that the rest can go to
 * the train option parser. Local. */
static int take_bench_opts(int *argc, char **argv, bench_cli *o)
{
    static const dp_cli_opt opts[] = {{"--steps", true},   {"--warmup", true}, {"--repeats", true},
                                      {"--allreduce", true}, {"--csv", true},  {"--json", true},
                                      {"--label", true}};
    dp_bench_defaults(&o->cfg);
    o->label = "";
    return dp_cli_take_opts(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), bench_opt, o,
                            &o->help);
}

/* The run's --deterministic (in run.train): alone, it asks for the deterministic mode only;
 * with --allreduce, whose list must then name deterministic. Local. */
static int apply_deterministic(bench_cli *o)
{
    if (!o->cfg.run.train.deterministic) {
        return DP_OK;
    }
    if (!o->allreduce) {
        memset(o->cfg.modes, 0, sizeof o->cfg.modes);
        o->cfg.modes[DP_BENCH_DETERMINISTIC] = true;
        return DP_OK;
    }
    if (!o->cfg.modes[DP_BENCH_DETERMINISTIC]) {
        return dp_err(DP_EINVAL, "--deterministic with --allreduce %s: name it in the list "
                                 "(--allreduce %s,deterministic) or drop --deterministic",
                      o->allreduce, o->allreduce);
    }
    return DP_OK;
}

/* The first line: what is measured (rank 0, once the model is built). */
static void print_header(const dp_bench_result *r, void *ctx)
{
    const bench_cli *o = ctx;
    const dp_run_cfg *run = &o->cfg.run;
    printf("dptrain bench: %s (%zu parameters), global batch %zu (%zu per rank at most), "
           "%d rank%s (%d on this node%s), %d BLAS thread%s per rank, OpenBLAS %s kernels\n"
           "data: %s; %ld timed steps x %d repeats after %ld warm-up steps per mode; "
           "medians%s\n", o->layers, r->n_params, r->batch, r->batch_per_rank, r->ranks,
           r->ranks == 1 ? "" : "s", o->local,
           o->local > sysconf(_SC_NPROCESSORS_ONLN) ? ", oversubscribed" : "", o->threads,
           o->threads == 1 ? "" : "s", dp_blas_corename(), run->data[0] ? run->data : "synthetic",
           o->cfg.steps, o->cfg.repeats, o->cfg.warmup,
           run->flush_subnormals ? "; subnormals flushed to zero" : "");
    fflush(stdout);
}

/* Each mode against blocking, measured in the same run. */
static void print_ratios(const bench_cli *o, const dp_bench_result *res)
{
    const dp_bench_row *by[DP_BENCH_MODES] = {NULL};
    for (int i = 0; i < res->n_rows; i++) {
        by[res->rows[i].mode] = &res->rows[i];
    }
    const dp_bench_row *b = by[DP_BENCH_BLOCKING], *ov = by[DP_BENCH_OVERLAP],
                       *det = by[DP_BENCH_DETERMINISTIC];
    if (b && ov) {
        printf("overlap / blocking: %.3f (%d buckets of >= %zu KiB)\n",
               ov->samples_per_s / b->samples_per_s, ov->n_buckets,
               o->cfg.run.train.bucket_bytes / 1024);
    }
    if (b && det) {
        printf("deterministic / blocking: %.2f of the samples/s (same run, medians; %d shards)\n",
               det->samples_per_s / b->samples_per_s, o->cfg.run.train.shards);
    }
    const dp_bench_row *sh = by[DP_BENCH_SHARDED];
    if (b && sh) {
        printf("sharded / blocking: %.3f of the samples/s (same run, medians; optimizer state "
               "per rank %.1f MB against %.1f MB)\n", sh->samples_per_s / b->samples_per_s,
               res->slots_mb / res->ranks, res->slots_mb);
    }
}

static void print_table(const bench_cli *o, const dp_bench_result *res)
{
    printf("%-13s %10s %9s %8s %6s %6s %6s %13s %6s %7s %6s\n", "allreduce", "samples/s",
           "per rank", "step ms", "data", "fwd", "bwd", "allred wait/all", "optim", "GFLOP/s",
           "ceil%");
    for (int i = 0; i < res->n_rows; i++) {
        const dp_bench_row *r = &res->rows[i];
        printf("%-13s %10.0f %9.0f %8.3f %6.3f %6.3f %6.3f %6.3f/%6.3f %6.3f %7.1f %5.1f%%\n",
               r->mode_name, r->samples_per_s, r->samples_per_s / res->ranks, r->step_ms,
               r->data_ms, r->forward_ms, r->backward_ms, r->allreduce_wait_ms, r->allreduce_ms,
               r->optim_ms, r->gflops, 100.0 * r->ceiling_ratio);
    }
    print_ratios(o, res);
    printf("sgemm-only ceiling: %.0f samples/s (%.3f ms of GEMMs per step, largest rank)\n",
           res->ceiling_samples_per_s, res->gemm_ms);
    if (res->ranks > 1) {
        printf("allreduce alone: %.3f ms for %.2f MB (bus bandwidth %.2f Gbit/s)\n",
               res->allreduce_ms_alone, res->allreduce_bytes / 1e6, res->allreduce_busbw_gbps);
    }
    printf("peak RSS per rank: %.1f MB (data %.1f MB + model and optimizer state %.1f MB; "
           "1.5x that + 30 MB = %.1f MB: %s)\n", res->peak_rss_mb, res->data_mb, res->state_mb,
           res->rss_bound_mb, res->peak_rss_mb <= res->rss_bound_mb ? "within" : "OVER");
    fflush(stdout);
}

static int write_csv(const bench_cli *o, const dp_bench_result *res)
{
    const dp_train_cfg *tc = &o->cfg.run.train;
    struct stat sb;
    bool fresh = stat(o->csv, &sb) != 0 || sb.st_size == 0;
    FILE *f = fopen(o->csv, "a");
    if (!f) {
        return dp_err(DP_EIO, "--csv %s: cannot open for appending", o->csv);
    }
    if (fresh) {
        fprintf(f, "label,layers,n_params,ranks,ranks_per_node,oversubscribed,threads,"
                   "coretype,batch,batch_per_rank,accumulate,steps,repeats,bucket_kb,"
                   "allreduce,samples_per_s,step_ms,data_ms,forward_ms,backward_ms,"
                   "allreduce_ms,allreduce_wait_ms,optim_ms,gflops,ceiling_ratio,"
                   "n_buckets,ceiling_samples_per_s,gemm_ms,allreduce_ms_alone,"
                   "allreduce_busbw_gbps,peak_rss_mb,data_mb,state_mb,optimizer\n");
    }
    for (int i = 0; i < res->n_rows; i++) {
        const dp_bench_row *r = &res->rows[i];
        fprintf(f, "%s,\"%s\",%zu,%d,%d,%d,%d,%s,%zu,%zu,%d,%ld,%d,%zu,%s,%.1f,%.4f,%.4f,%.4f,"
                   "%.4f,%.4f,%.4f,%.4f,%.2f,%.4f,%d,%.1f,%.4f,%.4f,%.4f,%.1f,%.1f,%.1f,%s\n",
                o->label, o->layers, res->n_params, res->ranks, o->local,
                o->local > sysconf(_SC_NPROCESSORS_ONLN), o->threads, dp_blas_corename(),
                res->batch, res->batch_per_rank, tc->accumulate, o->cfg.steps, o->cfg.repeats,
                tc->bucket_bytes / 1024, r->mode_name, r->samples_per_s, r->step_ms, r->data_ms,
                r->forward_ms, r->backward_ms, r->allreduce_ms, r->allreduce_wait_ms,
                r->optim_ms, r->gflops, r->ceiling_ratio, r->n_buckets,
                res->ceiling_samples_per_s, res->gemm_ms, res->allreduce_ms_alone,
                res->allreduce_busbw_gbps, res->peak_rss_mb, res->data_mb, res->state_mb,
                dp_optim_name(tc->opt.kind));
    }
    return fclose(f) == 0 ? DP_OK : dp_err(DP_EIO, "--csv %s: write failed", o->csv);
}

static int write_json(const bench_cli *o, const dp_bench_result *res)
{
    const dp_train_cfg *tc = &o->cfg.run.train;
    int rc = DP_OK;
    FILE *f = fopen(o->json, "a");
    if (!f) {
        return dp_err(DP_EIO, "--json %s: cannot open for appending", o->json);
    }
    for (int i = 0; i < res->n_rows; i++) {
        const dp_bench_row *r = &res->rows[i];
        json_t *j = json_pack(
            "{s:s, s:s, s:I, s:i, s:i, s:i, s:s, s:I, s:i, s:s, s:f, s:f, s:f, s:f, s:f,"
            " s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:i, s:I, s:f, s:f, s:f, s:f, s:f}",
            "label", o->label, "layers", o->layers, "n_params", (json_int_t)res->n_params,
            "ranks", res->ranks, "ranks_per_node", o->local, "threads", o->threads,
            "coretype", dp_blas_corename(), "batch", (json_int_t)res->batch,
            "accumulate", tc->accumulate, "allreduce", r->mode_name,
            "samples_per_s", r->samples_per_s, "samples_per_s_per_rank",
            r->samples_per_s / res->ranks, "step_ms", r->step_ms, "data_ms", r->data_ms,
            "forward_ms", r->forward_ms, "backward_ms", r->backward_ms,
            "allreduce_ms", r->allreduce_ms, "allreduce_wait_ms", r->allreduce_wait_ms,
            "optim_ms", r->optim_ms, "gflops", r->gflops,
            "ceiling_samples_per_s", res->ceiling_samples_per_s, "ceiling_ratio",
            r->ceiling_ratio, "n_buckets", r->n_buckets,
            "bucket_kb", (json_int_t)(tc->bucket_bytes / 1024),
            "allreduce_ms_alone", res->allreduce_ms_alone,
            "allreduce_busbw_gbps", res->allreduce_busbw_gbps, "peak_rss_mb", res->peak_rss_mb,
            "data_mb", res->data_mb, "state_mb", res->state_mb);
        if (!j || json_dumpf(j, f, JSON_COMPACT | JSON_REAL_PRECISION(6)) != 0 ||
            fputc('\n', f) == EOF) {
            rc = dp_err(DP_EIO, "--json %s: write failed", o->json);
        }
        json_decref(j);
    }
    if (fclose(f) != 0) {
        rc = dp_err(DP_EIO, "--json %s: write failed", o->json);
    }
    return rc;
}

int dp_cmd_bench(int argc, char **argv)
{
    dp_comm *c = NULL;
    bench_cli o = {0};
    dp_cli_run ro;
    dp_bench_result res = {.failed_rank = -1};

    if (dp_cli_start(&argc, &argv, &c) != DP_OK) {
        return DP_EXIT_ERROR;
    }
    const int rank = dp_comm_rank(c), size = dp_comm_size(c);
    int rc = take_bench_opts(&argc, argv, &o);
    if (rc == DP_OK && !o.help) {
        rc = dp_cli_parse_run(argc, argv, DEFAULT_LAYERS, &ro);
        if (rc == DP_OK) {
            o.cfg.run = ro.run;
            rc = apply_deterministic(&o);
        }
    }
    if (rc != DP_OK || o.help) {
        dp_cli_help_or_error(rank, rc, help);
        goto out;
    }
    snprintf(o.layers, sizeof o.layers, "%s", ro.layers);
    o.local = dp_comm_local_size(c);
    /* One thread count for every mode; deterministic mode's own default is 1 (cmd_train). */
    o.threads = ro.run.threads > 0                        ? ro.run.threads
                : o.cfg.modes[DP_BENCH_DETERMINISTIC] ? 1
                                                      : dp_cli_auto_threads(o.local);
    dp_blas_set_threads(o.threads);
    o.cfg.ready = rank == 0 ? print_header : NULL;
    o.cfg.ready_ctx = &o;
    rc = dp_bench_run(&o.cfg, c, &res);
    if (rc != DP_OK) {
        if (res.failed_rank == rank) {
            if (size > 1) {
                fprintf(stderr, "dptrain: rank %d: error: %s\n", rank, dp_errmsg());
            } else {
                dp_cli_error(dp_errmsg());
            }
            fflush(stderr);
        }
        goto out;
    }
    if (rank == 0) {
        print_table(&o, &res);
        rc = o.csv ? write_csv(&o, &res) : DP_OK;
        rc = rc == DP_OK && o.json ? write_json(&o, &res) : rc;
        if (rc != DP_OK) {
            dp_cli_error(dp_errmsg());
        }
    }
out:
    dp_comm_free(&c);
    dp_dist_finalize();
    return dp_cli_exit_code(rc);
}
