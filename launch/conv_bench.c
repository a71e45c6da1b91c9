/* conv_bench.c: one-thread timing of the CNN's convolution and dense layers, dptrain's own
 * kernels (src/core/conv.c: im2col + OpenBLAS sgemm; dense: sgemm as dp_dense_forward) against
 * oneDNN 2.6 primitives (convolution in oneDNN's preferred blocked layouts, format tag any, and
 * in plain nchw/oihw; matmul with fused bias and ReLU), and a check that both compute the same
 * numbers. Not part of the library: a standalone measurement, built and run by
 * launch/conv_bench.sh.
 *
 * Shapes (NCHW, as dptrain and torch): conv1 1->32 on 28x28, conv2 32->64 on 14x14, both 3x3,
 * padding 1, stride 1; dense 3136->128 (+bias, ReLU) and 128->10 (+bias).
 *
 * Passes: fwd (y = conv(x) + b), bwd-data (dx from dy and w; conv2 only) and bwd-weights
 * (dw and db from x and dy). dptrain's dp_conv_backward does weights and data in one call, so
 * its bwd-weights is timed with dx == NULL and its bwd-data is the difference between the call
 * with dx and the call without (marked "derived").
 *
 * Every time is the median of --reps executions after --warmup executions. oneDNN times
 * exclude reorders between the plain user layout and the primitive's layout; those are timed
 * apart (median too) and shown in the reorder column and in the detail column per argument.
 *
 * Exit status: 0 when every oneDNN result agrees with dptrain's to --tol (max |a - b| over
 * max |b| per tensor), 1 when one does not, 2 on a usage or oneDNN error. */
#define _GNU_SOURCE
#include "dptrain/blas.h"
#include "dptrain/nn.h"

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <omp.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A failed oneDNN call ends the program (status 2) naming the call, file and line. */
#define DN(call)                                                                          \
    do {                                                                                  \
        dnnl_status_t s_ = (call);                                                        \
        if (s_ != dnnl_success) {                                                         \
            fatal("%s:%d: %s failed: %s", __FILE__, __LINE__, #call, dnnl_status2str(s_)); \
        }                                                                                 \
    } while (0)

enum { EXIT_MISMATCH = 1, EXIT_FATAL = 2 };
enum { MAX_ARGS = 5, MAX_ROWS = 128, MAX_BATCHES = 8 };

static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("conv_bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(EXIT_FATAL);
}

static void *xcalloc(size_t n_elem, size_t elem_bytes)
{
    void *p = calloc(n_elem ? n_elem : 1, elem_bytes);
    if (!p) {
        fatal("out of memory allocating %zu bytes", n_elem * elem_bytes);
    }
    return p;
}

/* --- options, timing, numbers --------------------------------------------------------------- */

typedef struct {
    int warmup, reps;
    int n_batches, batches[MAX_BATCHES];
    int dense_batch;
    double tol;
} bench_cfg;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef void (*bench_fn)(void *ctx);

/* Median wall time in seconds of fn(ctx) over cfg->reps calls after cfg->warmup calls. */
static double median_s(const bench_cfg *cfg, bench_fn fn, void *ctx)
{
    double *t = xcalloc((size_t)cfg->reps, sizeof *t);
    for (int i = 0; i < cfg->warmup; i++) {
        fn(ctx);
    }
    for (int i = 0; i < cfg->reps; i++) {
        double t0 = now_s();
        fn(ctx);
        t[i] = now_s() - t0;
    }
    qsort(t, (size_t)cfg->reps, sizeof *t, cmp_double);
    double m = cfg->reps % 2 ? t[cfg->reps / 2] : 0.5 * (t[cfg->reps / 2 - 1] + t[cfg->reps / 2]);
    free(t);
    return m;
}

/* xorshift64*: uniform floats in [-scale, scale). */
static void fill_uniform(float *a, size_t n, float scale, uint64_t *state)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t x = *state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *state = x;
        double u = (double)((x * 0x2545F4914F6CDD2DULL) >> 11) / 9007199254740992.0;
        a[i] = (float)((2.0 * u - 1.0) * scale);
    }
}

/* max |got - want| / max |want| over n elements; *max_abs gets the numerator. */
static double rel_diff(const float *got, const float *want, size_t n, double *max_abs)
{
    double d = 0.0, m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)want[i]);
        if (!(e <= d)) {
            d = e; /* NaN propagates */
        }
        if (fabs((double)want[i]) > m) {
            m = fabs((double)want[i]);
        }
    }
    *max_abs = d;
    return m > 0.0 ? d / m : d;
}

/* --- result rows ----------------------------------------------------------------------------- */

typedef struct {
    int batch;
    const char *layer, *pass, *impl;
    double sec, flop;      /* median seconds of one batch; floating-point ops (2 * MACs) */
    double base_sec;       /* the im2col/sgemm time of the same pass (0: this is it) */
    double reorder_sec;    /* < 0: not applicable */
    double max_rel, max_abs; /* < 0: not compared */
    char detail[160];
} row;

typedef struct {
    int n;
    row r[MAX_ROWS];
    bool mismatch;
    double tol;
} table;

static row *add_row(table *t, int batch, const char *layer, const char *pass, const char *impl,
                    double sec, double flop)
{
    if (t->n == MAX_ROWS) {
        fatal("more than %d result rows", MAX_ROWS);
    }
    row *r = &t->r[t->n++];
    *r = (row){.batch = batch, .layer = layer, .pass = pass, .impl = impl, .sec = sec,
               .flop = flop, .reorder_sec = -1.0, .max_rel = -1.0, .max_abs = -1.0};
    return r;
}

/* Records the worst of a row's comparisons. */
static void note_diff(table *t, row *r, const float *got, const float *want, size_t n)
{
    double a, rel = rel_diff(got, want, n, &a);
    if (r->max_rel < 0.0 || !(rel <= r->max_rel)) {
        r->max_rel = rel;
        r->max_abs = a;
    }
    if (!(rel <= t->tol)) {
        t->mismatch = true;
    }
}

static void print_table(const table *t)
{
    printf("\n%-5s %-6s %-11s %-20s %9s %10s %8s %8s %9s %9s %9s  %s\n", "batch", "layer", "pass",
           "implementation", "ms/batch", "samples/s", "GFLOP/s", "vs-base", "reorder", "max_rel",
           "max_abs", "detail");
    for (int i = 0; i < t->n; i++) {
        const row *r = &t->r[i];
        char ratio[16] = "-", reo[16] = "-", rel[16] = "-", ab[16] = "-";
        if (r->base_sec > 0.0) {
            snprintf(ratio, sizeof ratio, "%.2fx", r->base_sec / r->sec);
        }
        if (r->reorder_sec >= 0.0) {
            snprintf(reo, sizeof reo, "%.3f", 1e3 * r->reorder_sec);
        }
        if (r->max_rel >= 0.0) {
            snprintf(rel, sizeof rel, "%.1e", r->max_rel);
            snprintf(ab, sizeof ab, "%.1e", r->max_abs);
        }
        printf("%-5d %-6s %-11s %-20s %9.4f %10.0f %8.2f %8s %9s %9s %9s  %s\n", r->batch,
               r->layer, r->pass, r->impl, 1e3 * r->sec, r->batch / r->sec,
               r->flop / r->sec * 1e-9, ratio, reo, rel, ab, r->detail);
    }
}

/* --- oneDNN: one primitive with its arguments and their reorders ----------------------------- */

typedef struct {
    int arg;                 /* DNNL_ARG_* */
    const char *name;
    bool out;                /* written by the primitive */
    dnnl_memory_t user;      /* the plain user buffer (not owned) */
    dnnl_memory_t prim;      /* what the primitive reads/writes: user, or an owned buffer */
    dnnl_primitive_t reorder; /* user -> prim for inputs, prim -> user for outputs; or NULL */
    double reorder_sec;
} dn_arg;

typedef struct {
    dnnl_primitive_desc_t pd; /* owned; its impl string lives as long as it */
    dnnl_primitive_t prim;
    dnnl_stream_t stream;
    int n_args;
    dn_arg a[MAX_ARGS];
    dnnl_exec_arg_t ex[MAX_ARGS];
    const char *impl;
} dn_op;

typedef struct {
    dnnl_primitive_t p;
    dnnl_stream_t stream;
    dnnl_exec_arg_t ex[2];
} dn_reorder_run;

static void run_reorder(void *ctx)
{
    dn_reorder_run *r = ctx;
    DN(dnnl_primitive_execute(r->p, r->stream, 2, r->ex));
    DN(dnnl_stream_wait(r->stream));
}

static void run_op(void *ctx)
{
    dn_op *op = ctx;
    DN(dnnl_primitive_execute(op->prim, op->stream, op->n_args, op->ex));
    DN(dnnl_stream_wait(op->stream));
}

static dn_reorder_run reorder_of(const dn_op *op, const dn_arg *a)
{
    dn_reorder_run r = {.p = a->reorder, .stream = op->stream};
    r.ex[0] = (dnnl_exec_arg_t){DNNL_ARG_FROM, a->out ? a->prim : a->user};
    r.ex[1] = (dnnl_exec_arg_t){DNNL_ARG_TO, a->out ? a->user : a->prim};
    return r;
}

/* Layout of a blocked memory descriptor as oneDNN writes format tags: dimensions from the
 * outermost (largest stride) to the innermost, upper case where blocked, then the inner blocks
 * ("aBcd16b" is nChw16c). */
static void md_format(const dnnl_memory_desc_t *md, char *buf, size_t cap)
{
    if (md->format_kind != dnnl_blocked) {
        snprintf(buf, cap, "%s", dnnl_fmt_kind2str(md->format_kind));
        return;
    }
    const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
    int order[DNNL_MAX_NDIMS];
    bool blocked[DNNL_MAX_NDIMS] = {false};
    for (int i = 0; i < md->ndims; i++) {
        order[i] = i;
    }
    for (int i = 0; i < b->inner_nblks; i++) {
        blocked[b->inner_idxs[i]] = true;
    }
    for (int i = 1; i < md->ndims; i++) { /* insertion sort, strides descending, stable */
        int k = order[i], j = i;
        while (j > 0 && b->strides[order[j - 1]] < b->strides[k]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = k;
    }
    size_t n = 0;
    for (int i = 0; i < md->ndims && n + 1 < cap; i++) {
        buf[n++] = (char)((blocked[order[i]] ? 'A' : 'a') + order[i]);
    }
    buf[n] = '\0';
    for (int i = 0; i < b->inner_nblks && n < cap; i++) {
        n += (size_t)snprintf(buf + n, cap - n, "%d%c", (int)b->inner_blks[i],
                              (char)('a' + b->inner_idxs[i]));
    }
}

/* Takes ownership of pd; binds each argument to the user memory when the primitive's layout is
 * the user's, else to an owned buffer in the primitive's layout with a reorder. */
static void dn_op_init(dn_op *op, dnnl_primitive_desc_t pd, dnnl_engine_t eng,
                       dnnl_stream_t stream, int n_args, const int *args, const char *const *names,
                       const bool *outs, const dnnl_memory_t *users)
{
    *op = (dn_op){.pd = pd, .stream = stream, .n_args = n_args};
    DN(dnnl_primitive_create(&op->prim, pd));
    DN(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &op->impl));
    for (int i = 0; i < n_args; i++) {
        dn_arg *a = &op->a[i];
        const dnnl_memory_desc_t *want = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md,
                                                                      args[i]);
        const dnnl_memory_desc_t *have;
        if (!want) {
            fatal("oneDNN: no memory descriptor for argument %s", names[i]);
        }
        DN(dnnl_memory_get_memory_desc(users[i], &have));
        *a = (dn_arg){.arg = args[i], .name = names[i], .out = outs[i], .user = users[i],
                      .prim = users[i]};
        if (!dnnl_memory_desc_equal(want, have)) {
            dnnl_primitive_desc_t rpd;
            DN(dnnl_memory_create(&a->prim, want, eng, DNNL_MEMORY_ALLOCATE));
            DN(dnnl_reorder_primitive_desc_create(&rpd, outs[i] ? want : have, eng,
                                                  outs[i] ? have : want, eng, NULL));
            DN(dnnl_primitive_create(&a->reorder, rpd));
            DN(dnnl_primitive_desc_destroy(rpd));
        }
        op->ex[i] = (dnnl_exec_arg_t){a->arg, a->prim};
    }
}

/* Runs the reorders of the inputs (out == false) or of the outputs (out == true). */
static void dn_op_reorders(dn_op *op, bool out)
{
    for (int i = 0; i < op->n_args; i++) {
        if (op->a[i].reorder && op->a[i].out == out) {
            dn_reorder_run r = reorder_of(op, &op->a[i]);
            run_reorder(&r);
        }
    }
}

/* Times every reorder of op; returns their sum and writes "impl; name=layout(ms) ..." to buf. */
static double dn_op_time_reorders(const bench_cfg *cfg, dn_op *op, char *buf, size_t cap)
{
    double sum = 0.0;
    size_t n = (size_t)snprintf(buf, cap, "%s;", op->impl);
    for (int i = 0; i < op->n_args && n < cap; i++) {
        dn_arg *a = &op->a[i];
        const dnnl_memory_desc_t *md;
        char fmt[48];
        DN(dnnl_memory_get_memory_desc(a->prim, &md));
        md_format(md, fmt, sizeof fmt);
        if (a->reorder) {
            dn_reorder_run r = reorder_of(op, a);
            a->reorder_sec = median_s(cfg, run_reorder, &r);
            sum += a->reorder_sec;
            n += (size_t)snprintf(buf + n, cap - n, " %s=%s(%.4f)", a->name, fmt,
                                  1e3 * a->reorder_sec);
        } else {
            n += (size_t)snprintf(buf + n, cap - n, " %s=%s", a->name, fmt);
        }
    }
    return sum;
}

static void dn_op_free(dn_op *op)
{
    for (int i = 0; i < op->n_args; i++) {
        if (op->a[i].reorder) {
            dnnl_primitive_destroy(op->a[i].reorder);
            dnnl_memory_destroy(op->a[i].prim);
        }
    }
    dnnl_primitive_destroy(op->prim);
    dnnl_primitive_desc_destroy(op->pd);
    *op = (dn_op){0};
}

static dnnl_memory_t user_mem(dnnl_engine_t eng, int ndims, const dnnl_dims_t dims,
                              dnnl_format_tag_t tag, float *data)
{
    dnnl_memory_desc_t md;
    dnnl_memory_t m;
    DN(dnnl_memory_desc_init_by_tag(&md, ndims, dims, dnnl_f32, tag));
    DN(dnnl_memory_create(&m, &md, eng, data));
    return m;
}

/* --- convolution ---------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    int in_c, hw, out_c, k, pad;
    bool bwd_data; /* time and check the data gradient (the first layer needs none) */
} conv_shape;

typedef struct {
    dp_conv *c;
    int B;
    float *x, *y, *dy, *dx, *col, *tmp;
} dp_conv_run;

static void run_dp_fwd(void *ctx)
{
    dp_conv_run *r = ctx;
    dp_conv_forward(r->c, r->y, r->x, r->B, r->col, r->tmp);
}
static void run_dp_bwd_w(void *ctx)
{
    dp_conv_run *r = ctx;
    dp_conv_backward(r->c, NULL, r->dy, r->x, r->B, false, r->col, r->tmp);
}
static void run_dp_bwd_all(void *ctx)
{
    dp_conv_run *r = ctx;
    dp_conv_backward(r->c, r->dx, r->dy, r->x, r->B, false, r->col, r->tmp);
}

/* Benchmarks one convolution at batch B: dptrain, then oneDNN with layouts "any" and plain. */
static void bench_conv(const bench_cfg *cfg, table *t, dnnl_engine_t eng, dnnl_stream_t stream,
                       const conv_shape *s, int B)
{
    const int H = s->hw, W = s->hw, OH = s->hw, OW = s->hw; /* stride 1, "same" padding */
    const size_t n_x = (size_t)B * s->in_c * H * W, n_y = (size_t)B * s->out_c * OH * OW;
    const size_t n_w = (size_t)s->out_c * s->in_c * s->k * s->k, n_b = (size_t)s->out_c;
    const double flop = 2.0 * B * s->out_c * OH * OW * (double)s->in_c * s->k * s->k;
    uint64_t seed = 0x9E3779B97F4A7C15ULL ^ (uint64_t)(B * 131 + s->in_c);
    float *x = xcalloc(n_x, sizeof(float)), *dy = xcalloc(n_y, sizeof(float));
    float *w = xcalloc(n_w, sizeof(float)), *b = xcalloc(n_b, sizeof(float));
    float *y_dp = xcalloc(n_y, sizeof(float)), *dx_dp = xcalloc(n_x, sizeof(float));
    float *dw_dp = xcalloc(n_w, sizeof(float)), *db_dp = xcalloc(n_b, sizeof(float));
    float *y_dn = xcalloc(n_y, sizeof(float)), *dx_dn = xcalloc(n_x, sizeof(float));
    float *dw_dn = xcalloc(n_w, sizeof(float)), *db_dn = xcalloc(n_b, sizeof(float));
    fill_uniform(x, n_x, 1.0f, &seed);
    fill_uniform(dy, n_y, 1.0f, &seed);
    fill_uniform(w, n_w, 1.0f / sqrtf((float)(s->in_c * s->k * s->k)), &seed);
    fill_uniform(b, n_b, 0.1f, &seed);

    /* dptrain: reference results, then timings */
    dp_conv c = {.in_c = s->in_c, .in_h = H, .in_w = W, .out_c = s->out_c, .out_h = OH,
                 .out_w = OW, .kh = s->k, .kw = s->k, .sh = 1, .sw = 1, .ph = s->pad,
                 .pw = s->pad, .w = w, .b = b, .dw = dw_dp, .db = db_dp};
    float *col = xcalloc(dp_conv_col_floats(&c), sizeof(float));
    float *tmp = xcalloc(dp_conv_tmp_floats(&c), sizeof(float));
    dp_conv_run dr = {.c = &c, .B = B, .x = x, .y = y_dp, .dy = dy, .dx = dx_dp, .col = col,
                      .tmp = tmp};
    run_dp_fwd(&dr);
    s->bwd_data ? run_dp_bwd_all(&dr) : run_dp_bwd_w(&dr);
    const double dp_fwd = median_s(cfg, run_dp_fwd, &dr);
    const double dp_bw = median_s(cfg, run_dp_bwd_w, &dr);
    const double dp_all = s->bwd_data ? median_s(cfg, run_dp_bwd_all, &dr) : dp_bw;
    const char *dp_name = "im2col+sgemm";
    row *r = add_row(t, B, s->name, "fwd", dp_name, dp_fwd, flop);
    snprintf(r->detail, sizeof r->detail, "dp_conv_forward, chunk %d samples",
             dp_conv_chunk(&c));
    if (s->bwd_data) {
        r = add_row(t, B, s->name, "bwd-data", dp_name, dp_all - dp_bw, flop);
        snprintf(r->detail, sizeof r->detail, "derived: backward with dx (%.3f ms) - without",
                 1e3 * dp_all);
    }
    r = add_row(t, B, s->name, "bwd-weights", dp_name, dp_bw, flop);
    snprintf(r->detail, sizeof r->detail, "dp_conv_backward, dx = NULL (dw and db)");
    const double dp_step = dp_fwd + dp_all;
    r = add_row(t, B, s->name, "fwd+bwd", dp_name, dp_step, flop * (s->bwd_data ? 3 : 2));
    snprintf(r->detail, sizeof r->detail, "sum of the passes above");

    /* oneDNN */
    const dnnl_dims_t d_x = {B, s->in_c, H, W}, d_y = {B, s->out_c, OH, OW};
    const dnnl_dims_t d_w = {s->out_c, s->in_c, s->k, s->k}, d_b = {s->out_c};
    const dnnl_dims_t strides = {1, 1}, pad = {s->pad, s->pad};
    dnnl_memory_t m_x = user_mem(eng, 4, d_x, dnnl_nchw, x);
    dnnl_memory_t m_w = user_mem(eng, 4, d_w, dnnl_oihw, w);
    dnnl_memory_t m_b = user_mem(eng, 1, d_b, dnnl_x, b);
    dnnl_memory_t m_y = user_mem(eng, 4, d_y, dnnl_nchw, y_dn);
    dnnl_memory_t m_dy = user_mem(eng, 4, d_y, dnnl_nchw, dy);
    dnnl_memory_t m_dx = user_mem(eng, 4, d_x, dnnl_nchw, dx_dn);
    dnnl_memory_t m_dw = user_mem(eng, 4, d_w, dnnl_oihw, dw_dn);
    dnnl_memory_t m_db = user_mem(eng, 1, d_b, dnnl_x, db_dn);
    static const char *const modes[2] = {"oneDNN any", "oneDNN nchw"};
    for (int mode = 0; mode < 2; mode++) {
        const dnnl_format_tag_t act = mode == 0 ? dnnl_format_tag_any : dnnl_nchw;
        const dnnl_format_tag_t wei = mode == 0 ? dnnl_format_tag_any : dnnl_oihw;
        dnnl_memory_desc_t md_x, md_w, md_b, md_y;
        DN(dnnl_memory_desc_init_by_tag(&md_x, 4, d_x, dnnl_f32, act));
        DN(dnnl_memory_desc_init_by_tag(&md_w, 4, d_w, dnnl_f32, wei));
        DN(dnnl_memory_desc_init_by_tag(&md_b, 1, d_b, dnnl_f32, dnnl_x));
        DN(dnnl_memory_desc_init_by_tag(&md_y, 4, d_y, dnnl_f32, act));

        dnnl_convolution_desc_t cd;
        dnnl_primitive_desc_t fwd_pd, bwd_pd;
        dn_op fwd, bwd_d = {0}, bwd_w;
        DN(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_training,
                                              dnnl_convolution_direct, &md_x, &md_w, &md_b,
                                              &md_y, strides, pad, pad));
        DN(dnnl_primitive_desc_create(&fwd_pd, &cd, NULL, eng, NULL));
        dn_op_init(&fwd, fwd_pd, eng, stream, 4,
                   (const int[]){DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST},
                   (const char *const[]){"src", "wei", "bias", "dst"},
                   (const bool[]){false, false, false, true},
                   (const dnnl_memory_t[]){m_x, m_w, m_b, m_y});
        if (s->bwd_data) {
            DN(dnnl_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &md_x,
                                                        &md_w, &md_y, strides, pad, pad));
            DN(dnnl_primitive_desc_create(&bwd_pd, &cd, NULL, eng, fwd_pd));
            dn_op_init(&bwd_d, bwd_pd, eng, stream, 3,
                       (const int[]){DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC},
                       (const char *const[]){"ddst", "wei", "dsrc"},
                       (const bool[]){false, false, true},
                       (const dnnl_memory_t[]){m_dy, m_w, m_dx});
        }
        DN(dnnl_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &md_x, &md_w,
                                                       &md_b, &md_y, strides, pad, pad));
        DN(dnnl_primitive_desc_create(&bwd_pd, &cd, NULL, eng, fwd_pd));
        dn_op_init(&bwd_w, bwd_pd, eng, stream, 4,
                   (const int[]){DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS,
                                 DNNL_ARG_DIFF_BIAS},
                   (const char *const[]){"src", "ddst", "dwei", "dbias"},
                   (const bool[]){false, false, true, true},
                   (const dnnl_memory_t[]){m_x, m_dy, m_dw, m_db});

        dn_op *ops[3] = {&fwd, s->bwd_data ? &bwd_d : NULL, &bwd_w};
        static const char *const pass[3] = {"fwd", "bwd-data", "bwd-weights"};
        const double base[3] = {dp_fwd, dp_all - dp_bw, dp_bw};
        double step = 0.0, step_reo = 0.0;
        for (int p = 0; p < 3; p++) {
            dn_op *op = ops[p];
            if (!op) {
                continue;
            }
            memset(y_dn, 0, n_y * sizeof(float));
            memset(dx_dn, 0, n_x * sizeof(float));
            memset(dw_dn, 0, n_w * sizeof(float));
            memset(db_dn, 0, n_b * sizeof(float));
            dn_op_reorders(op, false);
            run_op(op);
            dn_op_reorders(op, true);
            const double sec = median_s(cfg, run_op, op);
            r = add_row(t, B, s->name, pass[p], modes[mode], sec, flop);
            r->base_sec = base[p];
            r->reorder_sec = dn_op_time_reorders(cfg, op, r->detail, sizeof r->detail);
            if (p == 0) {
                note_diff(t, r, y_dn, y_dp, n_y);
            } else if (p == 1) {
                note_diff(t, r, dx_dn, dx_dp, n_x);
            } else {
                note_diff(t, r, dw_dn, dw_dp, n_w);
                note_diff(t, r, db_dn, db_dp, n_b);
            }
            step += sec;
            step_reo += r->reorder_sec;
        }
        r = add_row(t, B, s->name, "fwd+bwd", modes[mode], step, flop * (s->bwd_data ? 3 : 2));
        r->base_sec = dp_step;
        r->reorder_sec = step_reo;
        snprintf(r->detail, sizeof r->detail, "sum of the passes above");
        dn_op_free(&fwd);
        if (s->bwd_data) {
            dn_op_free(&bwd_d);
        }
        dn_op_free(&bwd_w);
    }
    dnnl_memory_t ms[] = {m_x, m_w, m_b, m_y, m_dy, m_dx, m_dw, m_db};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        dnnl_memory_destroy(ms[i]);
    }
    float *bufs[] = {x, dy, w, b, y_dp, dx_dp, dw_dp, db_dp, y_dn, dx_dn, dw_dn, db_dn, col, tmp};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(bufs[i]);
    }
}

/* --- dense ---------------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    int in, out;
    bool relu;
} dense_shape;

typedef struct {
    const dense_shape *s;
    int B;
    const float *x, *w, *b; /* x (B,in), w (out,in) as dptrain's dp_dense, b (out) */
    float *y;               /* (B,out) */
} dp_dense_run;

/* As dp_dense_forward: y = bias rows, then y += x w^T by one sgemm; then ReLU if asked. */
static void run_dp_dense(void *ctx)
{
    dp_dense_run *r = ctx;
    const int n = r->s->out;
    for (int i = 0; i < r->B; i++) {
        memcpy(r->y + (size_t)i * n, r->b, (size_t)n * sizeof(float));
    }
    dp_sgemm(false, true, r->B, n, r->s->in, 1.0f, r->x, r->w, 1.0f, r->y);
    if (r->s->relu) {
        for (size_t i = 0; i < (size_t)r->B * n; i++) {
            r->y[i] = r->y[i] > 0.0f ? r->y[i] : 0.0f;
        }
    }
}

static void bench_dense(const bench_cfg *cfg, table *t, dnnl_engine_t eng, dnnl_stream_t stream,
                        const dense_shape *s, int B)
{
    const size_t n_x = (size_t)B * s->in, n_w = (size_t)s->out * s->in, n_y = (size_t)B * s->out;
    const double flop = 2.0 * B * (double)s->in * s->out;
    uint64_t seed = 0xD1B54A32D192ED03ULL ^ (uint64_t)s->in;
    float *x = xcalloc(n_x, sizeof(float)), *w = xcalloc(n_w, sizeof(float));
    float *b = xcalloc((size_t)s->out, sizeof(float));
    float *y_dp = xcalloc(n_y, sizeof(float)), *y_dn = xcalloc(n_y, sizeof(float));
    fill_uniform(x, n_x, 1.0f, &seed);
    fill_uniform(w, n_w, 1.0f / sqrtf((float)s->in), &seed);
    fill_uniform(b, (size_t)s->out, 0.1f, &seed);

    dp_dense_run dr = {.s = s, .B = B, .x = x, .w = w, .b = b, .y = y_dp};
    run_dp_dense(&dr);
    const double base = median_s(cfg, run_dp_dense, &dr);
    row *r = add_row(t, B, s->name, "fwd", "sgemm+bias", base, flop);
    snprintf(r->detail, sizeof r->detail, "as dp_dense_forward (bias rows, sgemm beta 1)%s",
             s->relu ? ", then a ReLU loop" : "");

    const dnnl_dims_t d_x = {B, s->in}, d_w = {s->in, s->out}, d_b = {1, s->out},
                      d_y = {B, s->out};
    dnnl_memory_t m_x = user_mem(eng, 2, d_x, dnnl_ab, x);
    dnnl_memory_t m_w = user_mem(eng, 2, d_w, dnnl_ba, w); /* (in,out) stored as (out,in) */
    dnnl_memory_t m_b = user_mem(eng, 2, d_b, dnnl_ab, b);
    dnnl_memory_t m_y = user_mem(eng, 2, d_y, dnnl_ab, y_dn);
    static const char *const modes[2] = {"oneDNN matmul", "oneDNN matmul wany"};
    for (int mode = 0; mode < 2; mode++) {
        dnnl_memory_desc_t md_x, md_w, md_b, md_y;
        DN(dnnl_memory_desc_init_by_tag(&md_x, 2, d_x, dnnl_f32, dnnl_ab));
        DN(dnnl_memory_desc_init_by_tag(&md_w, 2, d_w, dnnl_f32,
                                        mode == 0 ? dnnl_ba : dnnl_format_tag_any));
        DN(dnnl_memory_desc_init_by_tag(&md_b, 2, d_b, dnnl_f32, dnnl_ab));
        DN(dnnl_memory_desc_init_by_tag(&md_y, 2, d_y, dnnl_f32, dnnl_ab));
        dnnl_matmul_desc_t mmd;
        dnnl_primitive_attr_t attr;
        dnnl_post_ops_t po;
        dnnl_primitive_desc_t pd;
        DN(dnnl_matmul_desc_init(&mmd, &md_x, &md_w, &md_b, &md_y));
        DN(dnnl_primitive_attr_create(&attr));
        if (s->relu) {
            DN(dnnl_post_ops_create(&po));
            DN(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f));
            DN(dnnl_primitive_attr_set_post_ops(attr, po));
            DN(dnnl_post_ops_destroy(po));
        }
        DN(dnnl_primitive_desc_create(&pd, &mmd, attr, eng, NULL));
        DN(dnnl_primitive_attr_destroy(attr));
        dn_op op;
        dn_op_init(&op, pd, eng, stream, 4,
                   (const int[]){DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST},
                   (const char *const[]){"src", "wei", "bias", "dst"},
                   (const bool[]){false, false, false, true},
                   (const dnnl_memory_t[]){m_x, m_w, m_b, m_y});
        memset(y_dn, 0, n_y * sizeof(float));
        dn_op_reorders(&op, false);
        run_op(&op);
        dn_op_reorders(&op, true);
        r = add_row(t, B, s->name, "fwd", modes[mode], median_s(cfg, run_op, &op), flop);
        r->base_sec = base;
        r->reorder_sec = dn_op_time_reorders(cfg, &op, r->detail, sizeof r->detail);
        if (s->relu) {
            size_t m = strlen(r->detail);
            snprintf(r->detail + m, sizeof r->detail - m, " +relu post-op");
        }
        note_diff(t, r, y_dn, y_dp, n_y);
        dn_op_free(&op);
    }
    dnnl_memory_destroy(m_x);
    dnnl_memory_destroy(m_w);
    dnnl_memory_destroy(m_b);
    dnnl_memory_destroy(m_y);
    free(x);
    free(w);
    free(b);
    free(y_dp);
    free(y_dn);
}

/* The first line of /proc/loadavg into buf ("?" if unreadable). */
static void loadavg(char *buf, size_t cap)
{
    FILE *f = fopen("/proc/loadavg", "r");
    snprintf(buf, cap, "?");
    if (f) {
        if (fgets(buf, (int)cap, f)) {
            buf[strcspn(buf, "\n")] = '\0';
        }
        fclose(f);
    }
}

/* User + system CPU seconds of this process so far. */
static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* --- main ----------------------------------------------------------------------------------- */

/* OpenBLAS picks its kernels when it loads, from OPENBLAS_CORETYPE; dptrain's program restarts
 * itself with the better family when OpenBLAS chose a narrower one (src/cli/main.c). Do the
 * same, so that the sgemm timed here is the one dptrain runs. */
static void blas_preflight(char **argv)
{
    if (getenv("OPENBLAS_CORETYPE") || getenv("CONV_BENCH_REEXEC")) {
        return;
    }
    const char *current = dp_blas_corename();
    const char *want = dp_blas_better_coretype(current, dp_cpu_detect());
    if (!want) {
        return;
    }
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("CONV_BENCH_REEXEC", current, 1);
    execv("/proc/self/exe", argv);
    fprintf(stderr, "conv_bench: warning: could not restart with OPENBLAS_CORETYPE=%s (%s)\n",
            want, strerror(errno));
    unsetenv("OPENBLAS_CORETYPE");
}

static int parse_int(const char *s, int lo, int hi, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) {
        fatal("%s: '%s' is not an integer in [%d, %d]", what, s, lo, hi);
    }
    return (int)v;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: conv_bench [--reps N (>= 20, default 30)] [--warmup N (default 5)]\n"
               "                  [--batches 64,128] [--dense-batch 64] [--tol 1e-4]\n");
}

/* "Threads:" of /proc/self/status: how many threads this process has now. */
static int process_threads(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    if (!f) {
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "Threads: %d", &n) == 1) {
            break;
        }
    }
    fclose(f);
    return n;
}

int main(int argc, char **argv)
{
    bench_cfg cfg = {.warmup = 5, .reps = 30, .n_batches = 2, .batches = {64, 128},
                     .dense_batch = 64, .tol = 1e-4};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            usage(stderr);
            return EXIT_FATAL;
        }
        i++;
        if (strcmp(a, "--reps") == 0) {
            cfg.reps = parse_int(v, 20, 100000, "--reps");
        } else if (strcmp(a, "--warmup") == 0) {
            cfg.warmup = parse_int(v, 0, 100000, "--warmup");
        } else if (strcmp(a, "--dense-batch") == 0) {
            cfg.dense_batch = parse_int(v, 1, 1 << 16, "--dense-batch");
        } else if (strcmp(a, "--tol") == 0) {
            cfg.tol = atof(v);
        } else if (strcmp(a, "--batches") == 0) {
            char buf[128], *save = NULL;
            snprintf(buf, sizeof buf, "%s", v);
            cfg.n_batches = 0;
            for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (cfg.n_batches == MAX_BATCHES) {
                    fatal("--batches: at most %d values", MAX_BATCHES);
                }
                cfg.batches[cfg.n_batches++] = parse_int(tok, 1, 1 << 16, "--batches");
            }
        } else {
            usage(stderr);
            return EXIT_FATAL;
        }
    }
    blas_preflight(argv);

    /* One thread everywhere: OpenBLAS (pthreads build), and oneDNN, whose Debian build runs
     * on OpenMP (DNNL_CPU_RUNTIME below), so omp_set_num_threads bounds it. */
    dp_blas_set_threads(1);
    omp_set_num_threads(1);
    const dnnl_version_t *ver = dnnl_version();
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    DN(dnnl_engine_create(&eng, dnnl_cpu, 0));
    DN(dnnl_stream_create(&stream, eng, dnnl_stream_default_flags));
    dnnl_fpmath_mode_t fpm;
    DN(dnnl_get_default_fpmath_mode(&fpm));
    printf("oneDNN %d.%d.%d, CPU runtime %s, ISA %s, fpmath %s\n", ver->major, ver->minor,
           ver->patch, dnnl_runtime2str(ver->cpu_runtime),
           dnnl_cpu_isa2str(dnnl_get_effective_cpu_isa()), dnnl_fpmath_mode2str(fpm));
    printf("OpenBLAS kernels %s%s%s%s, OpenBLAS threads %d, OpenMP max threads %d\n",
           dp_blas_corename(), getenv("CONV_BENCH_REEXEC") ? " (OpenBLAS itself chose " : "",
           getenv("CONV_BENCH_REEXEC") ? getenv("CONV_BENCH_REEXEC") : "",
           getenv("CONV_BENCH_REEXEC") ? "; raised as dptrain does)" : "", dp_blas_get_threads(),
           omp_get_max_threads());
    printf("env OMP_NUM_THREADS=%s OPENBLAS_NUM_THREADS=%s OPENBLAS_CORETYPE=%s\n",
           getenv("OMP_NUM_THREADS") ? getenv("OMP_NUM_THREADS") : "(unset)",
           getenv("OPENBLAS_NUM_THREADS") ? getenv("OPENBLAS_NUM_THREADS") : "(unset)",
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)");
    printf("median of %d runs after %d warm-up runs; GFLOP/s count 2 * MACs; vs-base = "
           "im2col/sgemm time / this time (> 1: faster than dptrain); reorder = ms of the "
           "reorders plain <-> primitive layout, not in ms/batch; max_rel = max |oneDNN - "
           "dptrain| / max |dptrain| (tolerance %.0e)\n",
           cfg.reps, cfg.warmup, cfg.tol);

    static table t;
    t.tol = cfg.tol;
    char load0[128], load1[128];
    loadavg(load0, sizeof load0);
    const double wall0 = now_s(), cpu0 = cpu_s();
    static const conv_shape convs[2] = {
        {"conv1", 1, 28, 32, 3, 1, false},
        {"conv2", 32, 14, 64, 3, 1, true},
    };
    static const dense_shape denses[2] = {
        {"fc1", 3136, 128, true},
        {"fc2", 128, 10, false},
    };
    for (int bi = 0; bi < cfg.n_batches; bi++) {
        for (int l = 0; l < 2; l++) {
            bench_conv(&cfg, &t, eng, stream, &convs[l], cfg.batches[bi]);
        }
    }
    for (int l = 0; l < 2; l++) {
        bench_dense(&cfg, &t, eng, stream, &denses[l], cfg.dense_batch);
    }
    const double wall = now_s() - wall0, cpu = cpu_s() - cpu0;
    loadavg(load1, sizeof load1);
    print_table(&t);
    printf("\nprocess threads at the end: %d; CPU time / wall time of the measurements %.3f "
           "(1: this thread ran all the time; less: it waited for the CPU)\n",
           process_threads(), cpu / wall);
    printf("/proc/loadavg before: %s; after: %s\n", load0, load1);
    printf("check: %s\n", t.mismatch ? "MISMATCH beyond the tolerance" : "all agree");
    dnnl_stream_destroy(stream);
    dnnl_engine_destroy(eng);
    return t.mismatch ? EXIT_MISMATCH : 0;
}
