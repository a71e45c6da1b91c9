/* bench.c: dp_bench_run: the training step of a run measured phase by phase in each mode
 * (blocking, overlap, deterministic), with the sgemm-only ceiling of its GEMM shapes and the
 * gradient allreduce alone, medians over repeats; what `dptrain bench` prints. Every part
 * ends in an agreement over the ranks. */
#define _GNU_SOURCE
#include "dptrain/bench.h"

#include "dptrain/blas.h"
#include "dptrain/err.h"
#include "dptrain/rng.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define MEDIAN_MAX (DP_BENCH_MAX_REPEATS > DP_BENCH_N_ALONE ? DP_BENCH_MAX_REPEATS : DP_BENCH_N_ALONE)

void dp_bench_defaults(dp_bench_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    dp_run_defaults(&cfg->run);
    cfg->steps = 100;
    cfg->warmup = 10;
    cfg->repeats = 5;
    cfg->modes[DP_BENCH_BLOCKING] = cfg->modes[DP_BENCH_OVERLAP] = true;
}

const char *dp_bench_mode_name(dp_bench_mode mode)
{
    static const char *const names[DP_BENCH_MODES] = {"blocking", "overlap", "deterministic",
                                                      "sharded"};
    return (unsigned)mode < DP_BENCH_MODES ? names[mode] : NULL;
}

/* The training configuration of one mode's passes: the allreduce mode, and deterministic
 * mode on or off. Local. */
static void mode_cfg(const dp_train_cfg *tc, dp_bench_mode mode, dp_train_cfg *out)
{
    *out = *tc;
    out->reduce = mode == DP_BENCH_OVERLAP   ? DP_REDUCE_OVERLAP
                  : mode == DP_BENCH_SHARDED ? DP_REDUCE_SHARDED
                                             : DP_REDUCE_BLOCKING;
    out->deterministic = mode == DP_BENCH_DETERMINISTIC;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double dp_bench_median(const double *v, int n)
{
    double s[MEDIAN_MAX];
    if (n < 1 || n > MEDIAN_MAX) {
        return 0.0;
    }
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

double dp_bench_busbw_gbps(double bytes, int ranks, double seconds)
{
    if (ranks < 2 || !(seconds > 0.0)) {
        return 0.0;
    }
    return 2.0 * (ranks - 1) / ranks * bytes * 8.0 / seconds / 1e9;
}

/* Agrees on rc over the ranks; the lowest rank with an error of its own keeps its message,
 * the others record which rank failed. Collective. */
static int agree(const dp_comm *c, int rc, dp_bench_result *res)
{
    int all = dp_comm_agree(c, rc);
    if (all == DP_OK) {
        return DP_OK;
    }
    int first = dp_comm_first_failed(c, rc == DP_EPEER ? DP_OK : rc);
    if (first != dp_comm_rank(c)) {
        dp_err(DP_EPEER, "rank %d failed (its message is on its standard error)", first);
    }
    res->failed_rank = first;
    return all;
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

/* The convolutions' GEMMs of a step (conv.c's shapes: per chunk of samples the forward
 * (out_c, n*P, K), the weight gradient (out_c, K, n*P) and, above the first layer, the input
 * gradient (K, n*P, out_c)), on buffers of their own. */
typedef struct {
    int n;
    dp_conv conv[DP_MAX_STAGES];
    bool first[DP_MAX_STAGES];
    float *w, *col, *tmp, *dw;
} conv_gemms;

static int conv_gemms_create(const dp_model_cfg *mc, int B, conv_gemms *g)
{
    int rc = DP_OK, ch[DP_MAX_STAGES + 1], h[DP_MAX_STAGES + 1], w[DP_MAX_STAGES + 1], feat;
    size_t nw = 1, ncol = 1, ntmp = 1;
    if (mc->n_stages == 0) {
        return DP_OK;
    }
    DP_TRY(dp_model_cfg_shapes(mc, ch, h, w, &feat));
    for (int j = 0; j < mc->n_stages; j++) {
        const dp_stage_cfg *s = &mc->stage[j];
        if (s->kind != DP_STAGE_CONV) {
            continue;
        }
        dp_conv *c = &g->conv[g->n];
        *c = (dp_conv){.in_c = ch[j], .in_h = h[j], .in_w = w[j], .out_c = s->out_c,
                       .out_h = h[j + 1], .out_w = w[j + 1], .kh = s->kh, .kw = s->kw,
                       .sh = s->sh, .sw = s->sw, .ph = s->ph, .pw = s->pw};
        g->first[g->n++] = j == 0;
        const size_t K = (size_t)ch[j] * s->kh * s->kw, P = (size_t)h[j + 1] * w[j + 1];
        const size_t nb = (size_t)(B < dp_conv_chunk(c) ? B : dp_conv_chunk(c));
        nw = K * s->out_c > nw ? K * s->out_c : nw;
        ncol = K * nb * P > ncol ? K * nb * P : ncol;
        ntmp = (size_t)s->out_c * nb * P > ntmp ? (size_t)s->out_c * nb * P : ntmp;
    }
    DP_CALLOC(g->w, nw);
    DP_CALLOC(g->dw, nw);
    DP_CALLOC(g->col, ncol);
    DP_CALLOC(g->tmp, ntmp);
    dp_rng r = dp_rng_make(9, 9);
    for (size_t i = 0; i < nw; i++) {
        g->w[i] = 0.05f * ((float)dp_rng_uniform(&r) - 0.5f);
    }
    for (size_t i = 0; i < ncol; i++) {
        g->col[i] = (float)dp_rng_uniform(&r);
    }
done:
    return rc;
}

static void conv_gemms_run(conv_gemms *g, int B)
{
    for (int k = 0; k < g->n; k++) {
        const dp_conv *c = &g->conv[k];
        const int chunk = dp_conv_chunk(c), K = c->in_c * c->kh * c->kw, P = c->out_h * c->out_w;
        for (int n0 = 0; n0 < B; n0 += chunk) {
            const int nb = B - n0 < chunk ? B - n0 : chunk;
            dp_sgemm(false, false, c->out_c, nb * P, K, 1.0f, g->w, g->col, 0.0f, g->tmp);
            dp_sgemm(false, true, c->out_c, K, nb * P, 1e-3f, g->tmp, g->col, 0.0f, g->dw);
            if (!g->first[k]) {
                dp_sgemm(true, false, K, nb * P, c->out_c, 1.0f, g->w, g->tmp, 0.0f, g->col);
            }
        }
    }
}

static void conv_gemms_free(conv_gemms *g)
{
    free(g->w);
    free(g->dw);
    free(g->col);
    free(g->tmp);
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
    double t[DP_BENCH_MAX_REPEATS];
    conv_gemms cg = {0};
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
    DP_TRY(conv_gemms_create(mc, B, &cg));
done:
    rc = dp_comm_agree(c, rc);
    for (int rep = -1; rc == DP_OK && rep < repeats; rep++) { /* rep -1 warms up */
        dp_comm_barrier(c);
        double t0 = dp_wtime();
        for (long s = 0; s < steps && B > 0; s++) {
            conv_gemms_run(&cg, B);
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
        *out = dp_comm_max_f64(c, dp_bench_median(t, repeats));
    }
    free(x);
    free(dy);
    free(y);
    free(dx);
    free(w);
    free(dw);
    conv_gemms_free(&cg);
    return rc;
}

/* Median seconds of one blocking allreduce of n floats (the gradient arena), the largest
 * over the ranks. Collective. */
static int allreduce_alone(const dp_comm *c, float *buf, size_t n, double *out)
{
    double t[DP_BENCH_N_ALONE];
    int rc = DP_OK;
    for (int i = -3; i < DP_BENCH_N_ALONE && rc == DP_OK; i++) {
        double t0 = dp_wtime();
        rc = dp_comm_allreduce_sum_f32(c, buf, n);
        if (i >= 0) {
            t[i] = dp_wtime() - t0;
        }
    }
    rc = dp_comm_agree(c, rc);
    if (rc == DP_OK) {
        *out = dp_comm_max_f64(c, dp_bench_median(t, DP_BENCH_N_ALONE));
    }
    return rc;
}

/* One timed pass: a fresh state, rows [0, n) of the training view, one epoch. Collective. */
static int run_pass(const dp_train_cfg *tc0, dp_bench_mode mode, dp_model *m,
                    const dp_dataset *d, size_t n, const dp_comm *c, double *wall,
                    dp_step_times *times)
{
    dp_train_cfg tc;
    dp_dataset view = *d;
    dp_train_state st = {0};
    dp_train_result res;
    view.train.n = n;
    mode_cfg(tc0, mode, &tc);
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

/* One mode's repeats: wall seconds and this rank's phase sums, per repeat. */
typedef struct {
    double wall[DP_BENCH_MAX_REPEATS];
    dp_step_times t[DP_BENCH_MAX_REPEATS];
} mode_runs;

static int check_cfg(const dp_bench_cfg *cfg)
{
    if (cfg->steps < 1) {
        return dp_err(DP_EINVAL, "--steps: %ld: at least 1", cfg->steps);
    }
    if (cfg->warmup < 0) {
        return dp_err(DP_EINVAL, "--warmup: %ld: at least 0", cfg->warmup);
    }
    if (cfg->repeats < 1 || cfg->repeats > DP_BENCH_MAX_REPEATS) {
        return dp_err(DP_EINVAL, "--repeats: %d: from 1 to %d", cfg->repeats,
                      DP_BENCH_MAX_REPEATS);
    }
    if (cfg->run.model.n_layers < 1) {
        return dp_err(DP_EINVAL, "--layers: no layers");
    }
    bool any = false;
    for (int mode = 0; mode < DP_BENCH_MODES; mode++) {
        any = any || cfg->modes[mode];
    }
    if (!any) {
        return dp_err(DP_EINVAL, "--allreduce: no mode to measure");
    }
    return DP_OK;
}

/* The rows a bench runs on: the file's training rows, or synthetic rows (every rank holds
 * all of them); *d points at whichever it is. Local. */
static int bench_data(const dp_bench_cfg *cfg, size_t n_need, size_t rows_per_step,
                      dp_dataset **loaded, dp_dataset *synth, const dp_dataset **d)
{
    const dp_train_cfg *tc = &cfg->run.train;
    const dp_model_cfg *mc = &cfg->run.model;
    const int k = mc->sizes[mc->n_layers];
    const long passes = cfg->steps > cfg->warmup ? cfg->steps : cfg->warmup;
    int rc = DP_OK;
    *d = synth;
    if (cfg->run.data[0]) {
        rc = dp_dataset_load(cfg->run.data, loaded);
        if (rc == DP_OK && (*loaded)->train.n < n_need) {
            rc = dp_err(DP_EINVAL, "%s has %zu training rows; %ld steps of %zu rows need %zu "
                                   "(use fewer --steps or --warmup)", cfg->run.data,
                        (*loaded)->train.n, passes, rows_per_step, n_need);
        }
        if (rc == DP_OK) {
            (*loaded)->test.n = 0;
            *d = *loaded;
        }
    } else if (cfg->synth_rows > 0 && cfg->synth_rows < n_need) {
        rc = dp_err(DP_EINVAL, "%zu synthetic rows; %ld steps of %zu rows need %zu",
                    cfg->synth_rows, passes, rows_per_step, n_need);
    } else {
        rc = synth_split(&synth->train, cfg->synth_rows > 0 ? cfg->synth_rows : n_need,
                         dp_model_cfg_inputs(mc), k, tc->loss, tc->seed);
        synth->n_classes = dp_loss_needs_labels(tc->loss) ? k : 0;
    }
    return rc;
}

/* Warm-up, then the repeats, modes interleaved so that they see the same machine. */
static int time_passes(const dp_bench_cfg *cfg, const dp_train_cfg *tc, const bool *modes,
                       dp_model *m, const dp_dataset *d, size_t n_warm, size_t n_timed,
                       const dp_comm *c, mode_runs *runs)
{
    int rc = DP_OK;
    for (int mode = 0; mode < DP_BENCH_MODES && rc == DP_OK; mode++) {
        double w;
        dp_step_times t;
        if (modes[mode] && cfg->warmup > 0) {
            rc = run_pass(tc, (dp_bench_mode)mode, m, d, n_warm, c, &w, &t);
        }
    }
    for (int rep = 0; rep < cfg->repeats && rc == DP_OK; rep++) {
        for (int mode = 0; mode < DP_BENCH_MODES && rc == DP_OK; mode++) {
            if (modes[mode]) {
                rc = run_pass(tc, (dp_bench_mode)mode, m, d, n_timed, c,
                              &runs[mode].wall[rep], &runs[mode].t[rep]);
            }
        }
    }
    return rc;
}

/* A mode's row: phases per step, mean over the ranks, median over the repeats. Collective. */
static void summarize_mode(const dp_bench_cfg *cfg, int mode, const mode_runs *run,
                           size_t n_timed, const dp_model *m, size_t bucket_bytes,
                           const dp_comm *c, dp_bench_result *res)
{
    const int size = dp_comm_size(c), R = cfg->repeats;
    const size_t n_params = dp_model_n_params(m);
    const dp_model_cfg *mc = dp_model_config(m);
    double v[7][DP_BENCH_MAX_REPEATS];
    for (int rep = 0; rep < R; rep++) {
        const dp_step_times *t = &run->t[rep];
        double p[6] = {t->data, t->forward, t->backward, t->reduce, t->reduce_wait, t->optim};
        dp_comm_allreduce_sum_f64(c, p, 6);
        for (int j = 0; j < 6; j++) {
            v[j][rep] = p[j] / size / (double)cfg->steps * 1e3;
        }
        v[6][rep] = (double)n_timed / run->wall[rep];
    }
    dp_bench_row *r = &res->rows[res->n_rows++];
    *r = (dp_bench_row){
        .mode = (dp_bench_mode)mode,
        .mode_name = dp_bench_mode_name((dp_bench_mode)mode),
        .data_ms = dp_bench_median(v[0], R), .forward_ms = dp_bench_median(v[1], R),
        .backward_ms = dp_bench_median(v[2], R), .allreduce_ms = dp_bench_median(v[3], R),
        .allreduce_wait_ms = dp_bench_median(v[4], R), .optim_ms = dp_bench_median(v[5], R),
        .samples_per_s = dp_bench_median(v[6], R)};
    r->step_ms = (double)res->rows_per_step / r->samples_per_s * 1e3;
    r->gflops = (mc->n_stages > 0 ? dp_model_cfg_train_flops(mc) : 6.0 * (double)n_params) *
                r->samples_per_s / 1e9;
    /* the ceiling is per row: accumulation does not change it */
    r->ceiling_ratio = r->samples_per_s / res->ceiling_samples_per_s;
    int first[DP_MAX_LAYERS];
    r->n_buckets = mode == DP_BENCH_OVERLAP ? dp_train_buckets(m, bucket_bytes, first) : 1;
}

/* Checks every mode's training configuration against the model and the rows (deterministic
 * mode: its shards against the ranks), then builds the model (rank 0's initial weights on
 * every rank) with buffers for the mode whose passes give a rank the most rows. Returns the
 * same status on every rank (dp_train_check is deterministic, dp_run_prepare agrees).
 * Collective. */
static int bench_model(const dp_train_cfg *tc, const bool *modes, const dp_model_cfg *mc,
                       const dp_dataset *view, const dp_comm *c, dp_model **m)
{
    const int size = dp_comm_size(c);
    int rc = DP_OK, most = -1;
    dp_train_cfg t, widest = *tc;
    dp_train_state st0 = {0};
    for (int mode = 0; mode < DP_BENCH_MODES && rc == DP_OK; mode++) {
        if (!modes[mode]) {
            continue;
        }
        mode_cfg(tc, (dp_bench_mode)mode, &t);
        rc = dp_train_check(&t, mc, view, size);
        const int rows = rc == DP_OK ? dp_train_max_rows(&t, view, size) : -1;
        if (rows > most) {
            most = rows;
            widest = t;
        }
    }
    if (rc == DP_OK) {
        rc = dp_run_prepare(&widest, mc, view, c, m, &st0);
        dp_train_state_free(&st0);
    }
    return rc;
}

/* What the run holds (the data, the model's parameters, gradients and activation buffers,
 * the optimizer's slots) and the ceilings measured. Local. */
static void footprint(const dp_split *s, const dp_model *m, const dp_optim_cfg *opt, int size,
                      double t_gemm, double t_alone, dp_bench_result *res)
{
    const size_t n_params = dp_model_n_params(m);
    res->data_mb = ((double)s->n * s->n_features * (s->x_u8 ? 1.0 : 4.0) +
                    (s->labels ? 4.0 * s->n : 4.0 * s->n * s->n_targets)) / 1048576.0;
    const double slots_bytes = (double)n_params * sizeof(float) * dp_optim_n_slots(opt);
    res->state_mb = ((double)dp_model_bytes(m) + slots_bytes) / 1048576.0;
    res->slots_mb = slots_bytes / 1048576.0;
    res->rss_bound_mb = 1.5 * (res->data_mb + res->state_mb) + 30.0;
    res->allreduce_bytes = (double)(n_params + DP_GRAD_TAIL) * sizeof(float);
    res->allreduce_ms_alone = t_alone * 1e3;
    res->allreduce_busbw_gbps = dp_bench_busbw_gbps(res->allreduce_bytes, size, t_alone);
    res->gemm_ms = t_gemm * 1e3;
    res->ceiling_samples_per_s = (double)res->batch / t_gemm;
}

int dp_bench_run(const dp_bench_cfg *cfg, const dp_comm *c, dp_bench_result *res)
{
    const int rank = dp_comm_rank(c), size = dp_comm_size(c);
    dp_dataset *loaded = NULL, synth = {0};
    const dp_dataset *d = NULL;
    dp_model *m = NULL;
    mode_runs *runs = NULL;
    bool modes[DP_BENCH_MODES], flushed = false;

    memset(res, 0, sizeof *res);
    res->failed_rank = -1;
    res->ranks = size;
    int rc = check_cfg(cfg);
    if ((rc = agree(c, rc, res)) != DP_OK) {
        return rc;
    }
    memcpy(modes, cfg->modes, sizeof modes);
    if (size == 1 && (modes[DP_BENCH_OVERLAP] || modes[DP_BENCH_SHARDED])) {
        modes[DP_BENCH_OVERLAP] = modes[DP_BENCH_SHARDED] = false; /* nothing to overlap or
                                                                    * shard */
        modes[DP_BENCH_BLOCKING] = true;
    }
    if (cfg->run.flush_subnormals) {
        flushed = dp_fp_flush_subnormals(true);
    }
    dp_train_cfg tc = cfg->run.train;
    tc.epochs = 1;
    tc.val_fraction = 0.0f;
    tc.patience = 0;
    tc.plateau_factor = 0.0f;
    tc.log = tc.metrics = NULL;
    tc.progress = NULL;
    const size_t B = tc.batch > 0 ? tc.batch : DP_BENCH_BATCH_DEFAULT;
    tc.batch = B;
    const size_t rows_per_step = B * (size_t)tc.accumulate;
    const size_t n_timed = rows_per_step * (size_t)cfg->steps;
    const size_t n_warm = rows_per_step * (size_t)cfg->warmup;
    const size_t n_need = n_timed > n_warm ? n_timed : n_warm;
    res->batch = B;
    res->batch_per_rank = (B + (size_t)size - 1) / (size_t)size;
    res->rows_per_step = rows_per_step;

    rc = bench_data(cfg, n_need, rows_per_step, &loaded, &synth, &d);
    if ((rc = agree(c, rc, res)) != DP_OK) {
        goto out;
    }
    dp_dataset view = *d;
    view.train.n = n_need;
    /* The model, for every mode; each pass makes its own state. */
    rc = bench_model(&tc, modes, &cfg->run.model, &view, c, &m);
    if (rc == DP_OK && !(runs = calloc(DP_BENCH_MODES, sizeof *runs))) {
        rc = dp_err(DP_ENOMEM, "out of memory (bench timings)");
    }
    if ((rc = agree(c, rc, res)) != DP_OK) {
        goto out;
    }
    res->n_params = dp_model_n_params(m);
    if (cfg->ready) {
        cfg->ready(res, cfg->ready_ctx);
    }
    rc = time_passes(cfg, &tc, modes, m, d, n_warm, n_timed, c, runs);
    /* Peak RSS of the training (before the measurement buffers below). */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    res->peak_rss_mb = dp_comm_max_f64(c, (double)ru.ru_maxrss / 1024.0);
    size_t lo = 0, hi = 0;
    dp_shard_rows(B, rank, size, &lo, &hi);
    double t_gemm = 0.0, t_alone = 0.0;
    if (rc == DP_OK) {
        rc = gemm_ceiling(c, &cfg->run.model, (int)(hi - lo), cfg->steps, cfg->repeats, &t_gemm);
    }
    if (rc == DP_OK) {
        rc = allreduce_alone(c, dp_model_grads(m), res->n_params + DP_GRAD_TAIL, &t_alone);
    }
    if ((rc = agree(c, rc, res)) != DP_OK) {
        goto out;
    }
    footprint(&view.train, m, &tc.opt, size, t_gemm, t_alone, res);
    for (int mode = 0; mode < DP_BENCH_MODES; mode++) {
        if (modes[mode]) {
            summarize_mode(cfg, mode, &runs[mode], n_timed, m, tc.bucket_bytes, c, res);
        }
    }
out:
    if (flushed) {
        dp_fp_flush_subnormals(false);
    }
    free(runs);
    dp_model_free(&m);
    dp_dataset_free(&loaded);
    free(synth.train.x_u8);
    free(synth.train.labels);
    free(synth.train.values);
    return rc;
}
