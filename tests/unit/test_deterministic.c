/* test_deterministic.c: unit tests of deterministic mode's pieces: the fixed-point sums of
 * exact.h (rounding against llrint, the same integers in any order or grouping, the
 * exponent's bound, the precision kept, the maximum with NaN and infinity, blocks added in
 * their order) and the model's shard mode (dp_shards): the same batch cut into the same
 * virtual shards and spread over 1, 2, 3 or 4 "ranks" played by threads (whose gather and
 * max callbacks combine their buffers) gives the same bits in outputs, batch-norm running
 * statistics and gradients, and those gradients equal the default mode's up to rounding.
 * Suites core_exact and core_shards.
 * Expected values come from independent computation in the test (llrint, sums in long
 * double, the default mode's gradient), never from program output. */
#include <criterion/criterion.h>

#include "testutil.h"

#include "dptrain/err.h"
#include "dptrain/exact.h"
#include "dptrain/nn.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

TestSuite(core_exact);

/* Floats of every magnitude in [2^-lo_exp, 2^hi_exp), either sign. */
static void wide_floats(float *v, size_t n, int lo_exp, int hi_exp, uint64_t seed)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        uint64_t r = tgen_next(&s);
        double mant = 1.0 + (double)(r >> 11) * 0x1p-53;
        int e = -lo_exp + (int)(tgen_next(&s) % (uint64_t)(lo_exp + hi_exp));
        v[i] = (float)((r & 1 ? -1.0 : 1.0) * ldexp(mant, e));
    }
}

Test(core_exact, rounds_like_llrint_ties_to_even)
{
    enum { N = 4096 };
    float x[N];
    int64_t acc[N];
    wide_floats(x, N, 30, 10, 3);
    /* Halves: the ties. */
    const float ties[6] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f};
    const int64_t tie_want[6] = {0, 2, 2, 0, -2, -2};
    memcpy(x, ties, sizeof ties);
    for (int e = -4; e <= 40; e += 11) {
        dp_fixed_set(acc, x, N, e);
        for (size_t i = 6; i < N; i++) {
            int64_t want = llrint(ldexp((double)x[i], e));
            cr_assert_eq(acc[i], want, "x %a e %d: %lld, llrint %lld", (double)x[i], e,
                         (long long)acc[i], (long long)want);
        }
    }
    dp_fixed_set(acc, ties, 6, 0);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(acc[i], tie_want[i], "%g rounds to %lld", (double)ties[i],
                     (long long)acc[i]);
    }
    /* add = set then += */
    int64_t acc2[6] = {10, 10, 10, 10, 10, 10};
    dp_fixed_add(acc2, ties, 6, 1);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(acc2[i], 10 + llrint(2.0 * ties[i]));
    }
}

Test(core_exact, exponent_keeps_the_bound_below_2_to_the_50)
{
    const double bounds[] = {1e-30, 3e-9, 0.75, 1.0, 1.0000001, 3.0, 1e6, 3.4e38};
    for (size_t k = 0; k < sizeof bounds / sizeof *bounds; k++) {
        int e = dp_fixed_exp(bounds[k]);
        double scaled = ldexp(bounds[k], e);
        cr_assert(scaled <= 0x1p50 && scaled > 0x1p49, "bound %g: e %d gives %g", bounds[k], e,
                  scaled);
    }
    cr_assert_eq(dp_fixed_exp(0.0), 0);
}

/* Terms summed in three orders and groupings give the same integers; the sum back in floats
 * is within 2^-49 of the bound of the exact sum (long double). */
Test(core_exact, any_order_or_grouping_gives_the_same_sum)
{
    enum { TERMS = 16, N = 2000 };
    float *t = talloc((size_t)TERMS * N);
    float maxabs = 0.0f;
    wide_floats(t, (size_t)TERMS * N, 40, 4, 11);
    for (size_t i = 0; i < (size_t)TERMS * N; i++) {
        maxabs = fabsf(t[i]) > maxabs ? fabsf(t[i]) : maxabs;
    }
    const int e = dp_fixed_exp(maxabs);
    int64_t *fwd = calloc(N, sizeof *fwd), *rev = calloc(N, sizeof *rev);
    int64_t *g1 = calloc(N, sizeof *g1), *g2 = calloc(N, sizeof *g2);
    cr_assert(fwd && rev && g1 && g2);
    for (int k = 0; k < TERMS; k++) {
        dp_fixed_add(fwd, t + (size_t)k * N, N, e);
        dp_fixed_add(rev, t + (size_t)(TERMS - 1 - k) * N, N, e);
        /* two "ranks": odd terms and even terms, then added */
        dp_fixed_add(k % 2 ? g1 : g2, t + (size_t)k * N, N, e);
    }
    float out[N];
    dp_fixed_get(out, fwd, N, e);
    for (size_t i = 0; i < N; i++) {
        cr_assert_eq(fwd[i], rev[i], "element %zu: forward and reverse order differ", i);
        cr_assert_eq(fwd[i], g1[i] + g2[i], "element %zu: grouping changes the sum", i);
        long double exact = 0.0L;
        for (int k = 0; k < TERMS; k++) {
            exact += t[(size_t)k * N + i];
        }
        /* Rounding each term: at most TERMS half-units of 2^-e; then one float rounding. */
        long double err = fabsl((long double)out[i] - exact);
        long double allowed = TERMS * ldexpl(0.5L, -e) + fabsl(exact) * 0x1p-24L;
        cr_assert(err <= allowed, "element %zu: %Lg off (allowed %Lg)", i, err, allowed);
    }
    free(t);
    free(fwd);
    free(rev);
    free(g1);
    free(g2);
}

Test(core_exact, absmax_sees_nan_and_infinity)
{
    float v[37];
    tfill(v, 37, -3, 2, 5);
    v[17] = -7.5f;
    cr_assert_eq(dp_absmax(v, 37), 7.5f);
    cr_assert_eq(dp_absmax(v, 0), 0.0f);
    v[30] = NAN;
    cr_assert(isinf(dp_absmax(v, 37)), "a NaN must make the maximum infinite");
    v[30] = -INFINITY;
    cr_assert(isinf(dp_absmax(v, 37)));
    v[30] = -0.0f;
    cr_assert_eq(dp_absmax(v, 37), 7.5f);
}

Test(core_exact, blocks_add_in_their_order)
{
    /* 1e16 + 1 - 1e16 depends on the order: in block order it is 0 (1 is lost), not 1. */
    const double blocks[3 * 2] = {1e16, 2.0, 1.0, 3.0, -1e16, 4.0};
    double out[2];
    dp_sum_blocks(out, blocks, 3, 2);
    cr_assert_eq(out[0], (1e16 + 1.0) - 1e16);
    cr_assert_eq(out[1], 9.0);
    cr_assert_eq(dp_bits_f64(dp_f64_bits(-0.0)), -0.0);
    cr_assert(signbit(dp_bits_f64(dp_f64_bits(-0.0))));
}

/* --- the model's shard mode over "ranks" played by threads --------------------------- */

TestSuite(core_shards);

enum { S_MAX_RANKS = 4, S_V = 5, S_B = 13, S_IN = 4, S_K = 3 };

typedef struct {
    pthread_barrier_t bar;
    int size;
    void *slot[S_MAX_RANKS];
} s_world;

typedef struct {
    s_world *w;
    int rank;
} s_rank;

/* The int64 sum of every rank's bits (the allreduce the trainer uses), then each rank's copy. */
static int s_gather(void *ctx, double *buf, size_t n)
{
    s_rank *r = ctx;
    s_world *w = r->w;
    int64_t *tmp = calloc(n, sizeof *tmp);
    w->slot[r->rank] = buf;
    pthread_barrier_wait(&w->bar);
    for (int q = 0; q < w->size; q++) {
        const int64_t *b = w->slot[q];
        for (size_t i = 0; i < n; i++) {
            tmp[i] += b[i];
        }
    }
    pthread_barrier_wait(&w->bar);
    memcpy(buf, tmp, n * sizeof *tmp);
    free(tmp);
    return DP_OK;
}

static int s_max(void *ctx, float *buf, size_t n)
{
    s_rank *r = ctx;
    s_world *w = r->w;
    float tmp[8];
    cr_assert(n <= 8);
    w->slot[r->rank] = buf;
    pthread_barrier_wait(&w->bar);
    for (size_t i = 0; i < n; i++) {
        tmp[i] = 0.0f;
        for (int q = 0; q < w->size; q++) {
            const float v = ((const float *)w->slot[q])[i];
            tmp[i] = v > tmp[i] ? v : tmp[i];
        }
    }
    pthread_barrier_wait(&w->bar);
    memcpy(buf, tmp, n * sizeof *tmp);
    return DP_OK;
}

static const dp_model_cfg s_cfg = {
    .n_layers = 3, .sizes = {S_IN, 7, 6, S_K},
    .act = {DP_ACT_TANH, DP_ACT_RELU, DP_ACT_IDENTITY}, .init = DP_INIT_HE_NORMAL,
    .seed = 41, .max_batch = S_B, .batchnorm = {true, false}, .dropout = {0.0f, 0.3f}};

typedef struct {
    dp_model *m;
    const float *x;
    const int32_t *labels;
    const size_t *ids;
    int rows[S_V];
    dp_shards sh;
    s_rank sr;
    int B, rc;
    float y[S_B * S_K];
} s_job;

static void *s_rank_main(void *p)
{
    s_job *j = p;
    dp_train_ctx tc = {.seed = 8, .step = 3, .sample_ids = j->ids, .shards = &j->sh};
    const float *y = dp_model_forward_train(j->m, j->x, j->B, &tc);
    if (!y) {
        j->rc = -1;
        return NULL;
    }
    memcpy(j->y, y, (size_t)j->B * S_K * sizeof *y);
    dp_targets t = {.labels = j->labels};
    float *dout = dp_model_dout(j->m);
    dp_loss_eval(DP_LOSS_CROSS_ENTROPY, y, &t, j->B, S_K, 1.0f / (float)S_B, dout, NULL);
    j->rc = dp_model_backward(j->m, j->x, dout, j->B, false);
    return NULL;
}

/* The batch's 13 rows in 5 shards (3,3,3,2,2) over `size` ranks, each rank a contiguous run
 * of whole shards (rank r: shards [r V / size, (r + 1) V / size)); returns the summed
 * gradient (fixed point back to floats, batch-norm parameters from rank 0), the outputs and
 * the running statistics. */
static void shard_run(int size, float *grad, float *y, float *buffers, size_t n_params)
{
    int shard_rows[S_V];
    for (int k = 0; k < S_V; k++) {
        shard_rows[k] = S_B / S_V + (k < S_B % S_V);
    }
    float x[S_B * S_IN];
    int32_t labels[S_B];
    size_t ids[S_B];
    tfill(x, S_B * S_IN, -1, 2, 6);
    for (int r = 0; r < S_B; r++) {
        labels[r] = r % S_K;
        ids[r] = 100 + 7 * (size_t)r;
    }
    s_world w = {.size = size};
    pthread_barrier_init(&w.bar, NULL, (unsigned)size);
    s_job jobs[S_MAX_RANKS];
    pthread_t th[S_MAX_RANKS];
    int row0 = 0;
    for (int r = 0; r < size; r++) {
        const int f0 = r * S_V / size, f1 = (r + 1) * S_V / size;
        s_job *j = &jobs[r];
        *j = (s_job){.x = x + row0 * S_IN, .labels = labels + row0, .ids = ids + row0,
                     .sr = {.w = &w, .rank = r}};
        cr_assert_eq(dp_model_create(&s_cfg, &j->m), DP_OK, "%s", dp_errmsg());
        for (int k = f0; k < f1; k++) {
            j->rows[k - f0] = shard_rows[k];
            j->B += shard_rows[k];
        }
        j->sh = (dp_shards){.n_shards = S_V, .first = f0, .count = f1 - f0, .rows = j->rows,
                            .max_rows = shard_rows[0], .gather = s_gather, .max = s_max,
                            .fn_ctx = &j->sr,
                            .scratch = calloc(S_V * dp_model_shard_scratch(j->m),
                                              sizeof(double)),
                            .acc = calloc(n_params, sizeof(int64_t))};
        row0 += j->B;
    }
    cr_assert_eq(row0, S_B);
    for (int r = 0; r < size; r++) {
        cr_assert_eq(pthread_create(&th[r], NULL, s_rank_main, &jobs[r]), 0);
    }
    for (int r = 0; r < size; r++) {
        pthread_join(th[r], NULL);
    }
    pthread_barrier_destroy(&w.bar);
    int64_t *acc = calloc(n_params, sizeof *acc);
    row0 = 0;
    for (int r = 0; r < size; r++) {
        cr_assert_eq(jobs[r].rc, DP_OK, "rank %d of %d failed: %s", r, size, dp_errmsg());
        cr_assert(!jobs[r].sh.nonfinite);
        for (size_t i = 0; i < n_params; i++) {
            acc[i] += jobs[r].sh.acc[i];
        }
        memcpy(y + row0 * S_K, jobs[r].y, (size_t)jobs[r].B * S_K * sizeof *y);
        row0 += jobs[r].B;
        cr_assert_eq(memcmp(jobs[r].sh.exp, jobs[0].sh.exp, sizeof jobs[0].sh.exp), 0,
                     "rank %d has other exponents", r);
        cr_assert_eq(memcmp(dp_model_buffers(jobs[r].m), dp_model_buffers(jobs[0].m),
                            dp_model_n_buffers(jobs[0].m) * sizeof(float)), 0,
                     "rank %d has other running statistics", r);
    }
    dp_model *m0 = jobs[0].m;
    memcpy(grad, dp_model_grads(m0), n_params * sizeof *grad); /* gamma and beta */
    for (int i = 0; i < s_cfg.n_layers; i++) {
        const dp_dense *l = dp_model_layer_const(m0, i);
        size_t off = dp_model_layer_offset(m0, i), nw = (size_t)l->out * l->in;
        dp_fixed_get(grad + off, acc + off, nw, jobs[0].sh.exp[2 * i]);
        dp_fixed_get(grad + off + nw, acc + off + nw, (size_t)l->out, jobs[0].sh.exp[2 * i + 1]);
    }
    memcpy(buffers, dp_model_buffers(m0), dp_model_n_buffers(m0) * sizeof *buffers);
    for (int r = 0; r < size; r++) {
        free(jobs[r].sh.scratch);
        free(jobs[r].sh.acc);
        dp_model_free(&jobs[r].m);
    }
    free(acc);
}

Test(core_shards, the_same_bits_on_1_to_4_ranks_and_the_default_gradient)
{
    dp_model *ref = NULL;
    cr_assert_eq(dp_model_create(&s_cfg, &ref), DP_OK);
    const size_t n = dp_model_n_params(ref), nb = dp_model_n_buffers(ref);
    float *g1 = talloc(n), *gs = talloc(n), b1[64], bs[64], y1[S_B * S_K], ys[S_B * S_K];
    cr_assert(nb <= 64);
    shard_run(1, g1, y1, b1, n);
    for (int size = 2; size <= S_MAX_RANKS; size++) {
        shard_run(size, gs, ys, bs, n);
        cr_assert_eq(memcmp(ys, y1, sizeof ys), 0, "%d ranks: other outputs", size);
        cr_assert_eq(memcmp(bs, b1, nb * sizeof *bs), 0, "%d ranks: other running stats", size);
        for (size_t i = 0; i < n; i++) {
            cr_assert_eq(memcmp(&gs[i], &g1[i], sizeof *gs), 0,
                         "%d ranks: gradient %zu is %a, on one rank %a", size, i,
                         (double)gs[i], (double)g1[i]);
        }
    }
    /* The default mode on one process: the same gradient up to summation order. */
    float x[S_B * S_IN];
    int32_t labels[S_B];
    size_t ids[S_B];
    tfill(x, S_B * S_IN, -1, 2, 6);
    for (int r = 0; r < S_B; r++) {
        labels[r] = r % S_K;
        ids[r] = 100 + 7 * (size_t)r;
    }
    dp_train_ctx tc = {.seed = 8, .step = 3, .sample_ids = ids};
    const float *y = dp_model_forward_train(ref, x, S_B, &tc);
    cr_assert_not_null(y);
    for (int i = 0; i < S_B * S_K; i++) {
        cr_assert(fabsf(y[i] - y1[i]) <= 1e-5f * (1 + fabsf(y1[i])), "output %d", i);
    }
    dp_targets t = {.labels = labels};
    dp_loss_eval(DP_LOSS_CROSS_ENTROPY, y, &t, S_B, S_K, 1.0f / S_B, dp_model_dout(ref), NULL);
    cr_assert_eq(dp_model_backward(ref, x, dp_model_dout(ref), S_B, false), DP_OK);
    const float *gd = dp_model_grads(ref);
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert(fabsf(gd[i] - g1[i]) <= 1e-5f * (1e-2f + fabsf(gd[i])),
                  "gradient %zu: shards %g, default mode %g", i, (double)g1[i], (double)gd[i]);
        nonzero += g1[i] != 0.0f;
    }
    cr_assert_gt(nonzero, (int)n / 2, "test setup: the gradient is mostly zero");
    free(g1);
    free(gs);
    dp_model_free(&ref);
}

Test(core_shards, a_layout_that_does_not_fit_the_rows_is_refused)
{
    dp_model *m = NULL;
    cr_assert_eq(dp_model_create(&s_cfg, &m), DP_OK);
    float x[S_B * S_IN] = {0};
    size_t ids[S_B] = {0};
    int rows[2] = {3, 3};
    double scratch[S_V * 32];
    int64_t acc[512];
    dp_shards sh = {.n_shards = S_V, .first = 4, .count = 2, .rows = rows, .max_rows = 3,
                    .scratch = scratch, .acc = acc};
    dp_train_ctx tc = {.seed = 1, .sample_ids = ids, .shards = &sh};
    cr_assert_null(dp_model_forward_train(m, x, 6, &tc), "shards 4 and 5 of 5 accepted");
    cr_assert(strstr(dp_errmsg(), "shards"), "%s", dp_errmsg());
    sh.first = 0;
    cr_assert_null(dp_model_forward_train(m, x, 7, &tc), "6 rows of shards for 7 accepted");
    cr_assert_not_null(dp_model_forward_train(m, x, 6, &tc), "%s", dp_errmsg());
    dp_model_free(&m);
}
