/* test_cnn_model.c: unit tests of the model with an image stage (convolutions with bias,
 * per-channel batch norm, activation and per-element dropout; max and average pooling;
 * flatten or global average pooling) before the dense layers: whole-model finite-difference
 * gradient checks and forward checks against a double-precision reference forward written
 * here, in training and evaluation mode; the running statistics; a global batch split over
 * "ranks" played by threads (an empty rank among them); the documented parameter and buffer
 * layout and its accessors; the feature count and its error; deterministic mode refused.
 * Suite core_cnn.
 * Expected values come from independent computation in the test (shapes and offsets worked
 * out here from the documented rules, nested loops in double, dropout masks from the
 * documented formula, central differences), never from program output. */
#include <criterion/criterion.h>

#include "testutil.h"

#include "dptrain/err.h"
#include "dptrain/nn.h"
#include "dptrain/rng.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(core_cnn);

/* ---------------------------------------------------------------------------------------
 * A network described by tokens, its shapes and its documented layout, worked out here. */

enum { MAX_DENSE = 4, REF_MAXC = 8 };

typedef struct {
    int in_c, in_h, in_w;
    const char *stages[DP_MAX_STAGES]; /* tokens for dp_stage_parse, NULL-terminated */
    bool gap;
    int dense[MAX_DENSE];              /* outputs of each dense layer, 0-terminated */
    dp_act act[MAX_DENSE];
    bool dense_bn[MAX_DENSE];
    float dense_drop[MAX_DENSE];
    float bn_momentum;
} net_spec;

typedef struct {
    dp_model_cfg cfg;
    int c[DP_MAX_STAGES + 1], h[DP_MAX_STAGES + 1], w[DP_MAX_STAGES + 1];
    size_t ssize[DP_MAX_STAGES + 1];     /* c*h*w */
    size_t st_off[DP_MAX_STAGES];        /* conv: w; then b, (gamma, beta) follow */
    size_t st_boff[DP_MAX_STAGES];       /* conv with bn: running mean; running var follows */
    size_t l_off[DP_MAX_LAYERS + 1];     /* dense i: w; l_off[n_layers] = n_params */
    size_t l_boff[DP_MAX_LAYERS];        /* dense i with bn: running mean */
    size_t n_params, n_buffers, widest;
    int in_features;
} net;

static int out_size(int in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

/* cfg from spec (init xavier-normal, seed, max_batch), the shapes from the definitions
 * (conv: (in + 2p - k) / s + 1; pooling: (in - k) / s + 1), sizes[0] = C*H*W or C with gap,
 * and the parameter and buffer offsets documented in nn.h. */
static void net_init(net *n, const net_spec *sp, uint64_t seed, int max_batch)
{
    memset(n, 0, sizeof *n);
    dp_model_cfg *c = &n->cfg;
    c->in_c = sp->in_c;
    c->in_h = sp->in_h;
    c->in_w = sp->in_w;
    c->gap = sp->gap;
    c->seed = seed;
    c->max_batch = max_batch;
    c->init = DP_INIT_XAVIER_NORMAL;
    c->bn_momentum = sp->bn_momentum;
    n->c[0] = sp->in_c;
    n->h[0] = sp->in_h;
    n->w[0] = sp->in_w;
    size_t off = 0, boff = 0;
    for (int j = 0; sp->stages[j]; j++) {
        dp_stage_cfg *s = &c->stage[j];
        cr_assert_eq(dp_stage_parse(sp->stages[j], DP_ACT_IDENTITY, s), DP_OK, "%s",
                     dp_errmsg());
        c->n_stages = j + 1;
        if (s->kind == DP_STAGE_CONV) {
            n->c[j + 1] = s->out_c;
            n->h[j + 1] = out_size(n->h[j], s->kh, s->sh, s->ph);
            n->w[j + 1] = out_size(n->w[j], s->kw, s->sw, s->pw);
            n->st_off[j] = off;
            off += (size_t)s->out_c * n->c[j] * s->kh * s->kw + s->out_c;
            if (s->batchnorm) {
                off += 2 * (size_t)s->out_c;
                n->st_boff[j] = boff;
                boff += 2 * (size_t)s->out_c;
            }
        } else {
            n->c[j + 1] = n->c[j];
            n->h[j + 1] = out_size(n->h[j], s->kh, s->sh, 0);
            n->w[j + 1] = out_size(n->w[j], s->kw, s->sw, 0);
        }
        cr_assert(n->h[j + 1] >= 1 && n->w[j + 1] >= 1, "test setup: stage %d empty", j);
    }
    const int L = c->n_stages;
    for (int j = 0; j <= L; j++) {
        n->ssize[j] = (size_t)n->c[j] * n->h[j] * n->w[j];
        n->widest = n->ssize[j] > n->widest ? n->ssize[j] : n->widest;
    }
    n->in_features = (int)n->ssize[0];
    c->sizes[0] = sp->gap ? n->c[L] : (int)n->ssize[L];
    for (int i = 0; i < MAX_DENSE && sp->dense[i]; i++) {
        c->n_layers = i + 1;
        c->sizes[i + 1] = sp->dense[i];
        c->act[i] = sp->act[i];
        c->batchnorm[i] = sp->dense_bn[i];
        c->dropout[i] = sp->dense_drop[i];
        n->l_off[i] = off;
        off += (size_t)c->sizes[i + 1] * c->sizes[i] + c->sizes[i + 1];
        if (c->batchnorm[i]) {
            off += 2 * (size_t)c->sizes[i + 1];
            n->l_boff[i] = boff;
            boff += 2 * (size_t)c->sizes[i + 1];
        }
        n->widest = (size_t)c->sizes[i + 1] > n->widest ? (size_t)c->sizes[i + 1] : n->widest;
    }
    n->l_off[c->n_layers] = off;
    n->n_params = off;
    n->n_buffers = boff;
}

static dp_model *make_model(const net *n)
{
    dp_model *m = NULL;
    cr_assert_eq(dp_model_create(&n->cfg, &m), DP_OK, "%s", dp_errmsg());
    cr_assert_not_null(m);
    cr_assert_eq(dp_model_n_params(m), n->n_params, "n_params %zu, the layout gives %zu",
                 dp_model_n_params(m), n->n_params);
    cr_assert_eq(dp_model_n_buffers(m), n->n_buffers, "n_buffers %zu, the layout gives %zu",
                 dp_model_n_buffers(m), n->n_buffers);
    return m;
}

/* Names parameter i by the documented layout, for messages. */
static void param_name(const net *n, size_t i, char *buf, size_t cap)
{
    const dp_model_cfg *c = &n->cfg;
    for (int j = c->n_stages - 1; j >= 0; j--) {
        const dp_stage_cfg *s = &c->stage[j];
        if (s->kind == DP_STAGE_CONV && i >= n->st_off[j]) {
            size_t r = i - n->st_off[j], nw = (size_t)s->out_c * n->c[j] * s->kh * s->kw;
            const char *what = r < nw ? "w" : r < nw + s->out_c ? "b"
                               : r < nw + 2 * (size_t)s->out_c ? "gamma" : "beta";
            size_t k = r < nw ? r : (r - nw) % (size_t)s->out_c;
            snprintf(buf, cap, "param %zu = stage %d (conv) %s[%zu]", i, j, what, k);
            return;
        }
    }
    for (int l = c->n_layers - 1; l >= 0; l--) {
        if (i >= n->l_off[l]) {
            snprintf(buf, cap, "param %zu = dense layer %d, offset %zu", i, l, i - n->l_off[l]);
            return;
        }
    }
    snprintf(buf, cap, "param %zu", i);
}

/* Gives every bias, gamma and beta non-trivial values (through the documented offsets), so
 * that they all matter: biases in [-0.5, 0.5), gamma in [0.5, 1.5), beta in [-0.5, 0.5). */
static void perturb_params(dp_model *m, const net *n, uint64_t seed)
{
    const dp_model_cfg *c = &n->cfg;
    float *p = dp_model_params(m);
    for (int j = 0; j < c->n_stages; j++) {
        const dp_stage_cfg *s = &c->stage[j];
        if (s->kind != DP_STAGE_CONV) {
            continue;
        }
        const size_t C = (size_t)s->out_c, b = n->st_off[j] + C * n->c[j] * s->kh * s->kw;
        tfill(p + b, C, -0.5f, 0.5f, seed + 10 + j);
        if (s->batchnorm) {
            tfill(p + b + C, C, 0.5f, 1.5f, seed + 30 + j);
            tfill(p + b + 2 * C, C, -0.5f, 0.5f, seed + 50 + j);
        }
    }
    for (int i = 0; i < c->n_layers; i++) {
        const size_t o = (size_t)c->sizes[i + 1], b = n->l_off[i] + o * c->sizes[i];
        tfill(p + b, o, -0.5f, 0.5f, seed + 70 + i);
        if (c->batchnorm[i]) {
            tfill(p + b + o, o, 0.5f, 1.5f, seed + 90 + i);
            tfill(p + b + 2 * o, o, -0.5f, 0.5f, seed + 110 + i);
        }
    }
}

/* x: the values -1.5 + 3 (q + 1/2) / n for q = 0..n-1 in a shuffled order: all distinct, so
 * that a max pooling of the input has no ties. */
static void fill_distinct(float *x, size_t n, uint64_t seed)
{
    size_t *q = malloc(n * sizeof *q);
    cr_assert_not_null(q);
    for (size_t i = 0; i < n; i++) {
        q[i] = i;
    }
    uint64_t s = seed;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(tgen_next(&s) % (i + 1)), t = q[i];
        q[i] = q[j];
        q[j] = t;
    }
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(-1.5 + 3.0 * ((double)q[i] + 0.5) / (double)n);
    }
    free(q);
}

/* The mask value the documented formula gives (computed here without dp_rng_uniform):
 * unit j of `layer` (a dense layer i, or DP_MAX_LAYERS + stage index) of width units. */
static float want_mask(uint64_t seed, long step, int layer, size_t id, size_t width, size_t j,
                       float p)
{
    uint64_t key = dp_rng_hash(seed ^ 0x44524f50ULL, (uint64_t)step);
    uint64_t h = dp_rng_hash(key, ((uint64_t)layer << 56) ^ ((uint64_t)id * width + j));
    double u = (double)(h >> 40) / 16777216.0;
    return u >= p ? 1.0f / (1.0f - p) : 0.0f;
}

/* ---------------------------------------------------------------------------------------
 * The reference forward in double.
 *
 * It reads the float parameters and running statistics under test at the offsets the
 * documentation gives (so the layout is checked too), computes every stage from its
 * definition, and records the pattern of kinks (the sign of every relu input, the position of
 * every max pooling's maximum) as a hash, and the smallest distance to a kink: a probe that
 * changes the pattern is retried with a smaller step, and the base point must be at least
 * KINK_MARGIN from any kink so that the float model takes the same branches. */

#define KINK_MARGIN 1e-5

typedef struct {
    dp_model *m;
    const net *n;
    const float *x;
    const int32_t *labels;
    int B;
    const dp_train_ctx *tc; /* NULL: evaluation mode; else training mode (sum unused) */
    double *cur, *nxt;      /* (B, widest) */
    double *out;            /* (B, k) */
    uint64_t sig;
    double margin;
    double mean[DP_MAX_STAGES][REF_MAXC], var[DP_MAX_STAGES][REF_MAXC]; /* batch, biased */
    double count[DP_MAX_STAGES];
} ref_ctx;

static void mix(uint64_t *s, uint64_t v) { *s = (*s ^ v) * 0x100000001b3ULL; }

static double ref_act(ref_ctx *d, dp_act a, double z)
{
    switch (a) {
    case DP_ACT_IDENTITY:
        return z;
    case DP_ACT_RELU:
        mix(&d->sig, z > 0.0);
        d->margin = fmin(d->margin, fabs(z));
        return z > 0.0 ? z : 0.0;
    case DP_ACT_TANH:
        return tanh(z);
    case DP_ACT_SIGMOID:
        return 1.0 / (1.0 + exp(-z));
    case DP_ACT_ELU:
        return z > 0.0 ? z : exp(z) - 1.0;
    default:
        cr_assert_fail("reference: activation %s not implemented", dp_act_name(a));
    }
    return NAN;
}

static void ref_init(ref_ctx *d, dp_model *m, const net *n, const float *x,
                     const int32_t *labels, int B, const dp_train_ctx *tc)
{
    *d = (ref_ctx){.m = m, .n = n, .x = x, .labels = labels, .B = B, .tc = tc};
    const size_t k = (size_t)n->cfg.sizes[n->cfg.n_layers];
    d->cur = calloc((size_t)B * n->widest + 1, sizeof *d->cur);
    d->nxt = calloc((size_t)B * n->widest + 1, sizeof *d->nxt);
    d->out = calloc((size_t)B * k + 1, sizeof *d->out);
    cr_assert(d->cur && d->nxt && d->out);
}

static void ref_free(ref_ctx *d)
{
    free(d->cur);
    free(d->nxt);
    free(d->out);
}

static void swap(double **a, double **b)
{
    double *t = *a;
    *a = *b;
    *b = t;
}

/* Convolution stage j of cur into nxt (before batch norm). */
static void ref_conv(ref_ctx *d, int j, const float *P)
{
    const net *n = d->n;
    const dp_stage_cfg *s = &n->cfg.stage[j];
    const int Ci = n->c[j], H = n->h[j], W = n->w[j], C = n->c[j + 1], Ho = n->h[j + 1],
              Wo = n->w[j + 1];
    const float *w = P + n->st_off[j], *b = w + (size_t)C * Ci * s->kh * s->kw;
    for (int r = 0; r < d->B; r++) {
        for (int o = 0; o < C; o++) {
            for (int oh = 0; oh < Ho; oh++) {
                for (int ow = 0; ow < Wo; ow++) {
                    double acc = b[o];
                    for (int ci = 0; ci < Ci; ci++) {
                        for (int i = 0; i < s->kh; i++) {
                            for (int q = 0; q < s->kw; q++) {
                                const int ih = oh * s->sh - s->ph + i, iw = ow * s->sw - s->pw + q;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) {
                                    continue;
                                }
                                acc += (double)w[((o * Ci + ci) * s->kh + i) * s->kw + q] *
                                       d->cur[(((size_t)r * Ci + ci) * H + ih) * W + iw];
                            }
                        }
                    }
                    d->nxt[(((size_t)r * C + o) * Ho + oh) * Wo + ow] = acc;
                }
            }
        }
    }
}

/* Per-channel batch norm of stage j in place on nxt: statistics over (n, h, w) of the batch
 * in training mode (recorded), the running statistics in evaluation mode. */
static void ref_bn(ref_ctx *d, int j, const float *P, const float *Buf)
{
    const net *n = d->n;
    const dp_stage_cfg *s = &n->cfg.stage[j];
    const int C = n->c[j + 1];
    const size_t pl = (size_t)n->h[j + 1] * n->w[j + 1];
    const float *g = P + n->st_off[j] + (size_t)C * n->c[j] * s->kh * s->kw + C, *be = g + C;
    const float *rm = Buf + n->st_boff[j], *rv = rm + C;
    cr_assert_leq(C, REF_MAXC);
    for (int c = 0; c < C; c++) {
        double mean = rm[c], var = rv[c];
        if (d->tc) {
            const double N = (double)d->B * (double)pl;
            mean = var = 0.0;
            for (int r = 0; r < d->B; r++) {
                for (size_t p = 0; p < pl; p++) {
                    mean += d->nxt[((size_t)r * C + c) * pl + p] / N;
                }
            }
            for (int r = 0; r < d->B; r++) {
                for (size_t p = 0; p < pl; p++) {
                    const double e = d->nxt[((size_t)r * C + c) * pl + p] - mean;
                    var += e * e / N;
                }
            }
            d->mean[j][c] = mean;
            d->var[j][c] = var;
            d->count[j] = N;
        }
        const double is = 1.0 / sqrt(var + (double)dp_model_config(d->m)->bn_eps);
        for (int r = 0; r < d->B; r++) {
            for (size_t p = 0; p < pl; p++) {
                double *v = &d->nxt[((size_t)r * C + c) * pl + p];
                *v = g[c] * ((*v - mean) * is) + be[c];
            }
        }
    }
}

/* Pooling stage j of cur into nxt. */
static void ref_pool(ref_ctx *d, int j)
{
    const net *n = d->n;
    const dp_stage_cfg *s = &n->cfg.stage[j];
    const int C = n->c[j], H = n->h[j], W = n->w[j], Ho = n->h[j + 1], Wo = n->w[j + 1];
    for (int r = 0; r < d->B; r++) {
        for (int c = 0; c < C; c++) {
            const double *in = d->cur + ((size_t)r * C + c) * H * W;
            for (int oh = 0; oh < Ho; oh++) {
                for (int ow = 0; ow < Wo; ow++) {
                    double top = -INFINITY, second = -INFINITY, sum = 0.0;
                    int at = -1;
                    for (int i = 0; i < s->kh; i++) {
                        for (int q = 0; q < s->kw; q++) {
                            const int idx = (oh * s->sh + i) * W + ow * s->sw + q;
                            const double v = in[idx];
                            sum += v;
                            if (v > top) {
                                second = top;
                                top = v;
                                at = idx;
                            } else if (v > second) {
                                second = v;
                            }
                        }
                    }
                    double *y = &d->nxt[(((size_t)r * C + c) * Ho + oh) * Wo + ow];
                    if (s->kind == DP_STAGE_AVGPOOL) {
                        *y = sum / (s->kh * s->kw);
                        continue;
                    }
                    *y = top;
                    mix(&d->sig, (uint64_t)at);
                    /* ties among relu's exact zeros are harmless (no gradient flows) */
                    if (s->kh * s->kw > 1 && !(top == 0.0 && second == 0.0)) {
                        d->margin = fmin(d->margin, top - second);
                    }
                }
            }
        }
    }
}

/* The model's loss (cross-entropy, sum over rows) in double; the output is left in d->out. */
static double ref_loss(void *p)
{
    ref_ctx *d = p;
    const net *n = d->n;
    const dp_model_cfg *c = &n->cfg;
    const float *P = dp_model_params(d->m), *Buf = dp_model_buffers(d->m);
    const int B = d->B;
    d->sig = 0xcbf29ce484222325ULL;
    d->margin = INFINITY;
    for (size_t i = 0; i < (size_t)B * n->ssize[0]; i++) {
        d->cur[i] = d->x[i];
    }
    for (int j = 0; j < c->n_stages; j++) {
        const dp_stage_cfg *s = &c->stage[j];
        if (s->kind != DP_STAGE_CONV) {
            ref_pool(d, j);
            swap(&d->cur, &d->nxt);
            continue;
        }
        ref_conv(d, j, P);
        if (s->batchnorm) {
            ref_bn(d, j, P, Buf);
        }
        const size_t S = n->ssize[j + 1];
        for (int r = 0; r < B; r++) {
            for (size_t e = 0; e < S; e++) {
                double a = ref_act(d, s->act, d->nxt[(size_t)r * S + e]);
                if (d->tc && s->dropout > 0.0f) {
                    a *= want_mask(d->tc->seed, d->tc->step, DP_MAX_LAYERS + j,
                                   d->tc->sample_ids[r], S, e, s->dropout);
                }
                d->nxt[(size_t)r * S + e] = a;
            }
        }
        swap(&d->cur, &d->nxt);
    }
    int w = c->sizes[0];
    if (c->gap) {
        const int L = c->n_stages, C = n->c[L];
        const size_t pl = (size_t)n->h[L] * n->w[L];
        for (int q = 0; q < B * C; q++) {
            double s = 0.0;
            for (size_t e = 0; e < pl; e++) {
                s += d->cur[(size_t)q * pl + e];
            }
            d->nxt[q] = s / (double)pl;
        }
        swap(&d->cur, &d->nxt);
    }
    for (int L = 0; L < c->n_layers; L++) {
        cr_assert(!c->batchnorm[L] && c->dropout[L] == 0.0f,
                  "reference: dense batch norm and dropout not implemented");
        const int o = c->sizes[L + 1];
        const float *wt = P + n->l_off[L], *b = wt + (size_t)o * w;
        for (int r = 0; r < B; r++) {
            for (int j = 0; j < o; j++) {
                double s = b[j];
                for (int q = 0; q < w; q++) {
                    s += (double)wt[(size_t)j * w + q] * d->cur[(size_t)r * w + q];
                }
                d->nxt[(size_t)r * o + j] = ref_act(d, c->act[L], s);
            }
        }
        swap(&d->cur, &d->nxt);
        w = o;
    }
    double loss = 0.0;
    for (int r = 0; r < B; r++) {
        const double *y = d->cur + (size_t)r * w;
        double mx = y[0], z = 0.0;
        for (int j = 1; j < w; j++) {
            mx = fmax(mx, y[j]);
        }
        for (int j = 0; j < w; j++) {
            z += exp(y[j] - mx);
        }
        loss += mx + log(z) - y[d->labels[r]];
    }
    memcpy(d->out, d->cur, sizeof(double) * (size_t)B * w);
    return loss;
}

/* Runs the model's forward (training mode with tc, else evaluation) and checks its output
 * and cross-entropy against the reference; returns the reference's kink margin. Leaves the
 * model's dL/d(output) of the mean loss in dp_model_dout. */
static double check_forward(dp_model *m, const net *n, const float *x, const int32_t *labels,
                            int B, const dp_train_ctx *tc, const char *what)
{
    const int k = n->cfg.sizes[n->cfg.n_layers];
    ref_ctx d;
    ref_init(&d, m, n, x, labels, B, tc);
    const float *out = tc ? dp_model_forward_train(m, x, B, tc) : dp_model_forward(m, x, B);
    cr_assert_not_null(out, "%s: %s", what, dp_errmsg());
    dp_targets t = {.labels = labels};
    const double lf = dp_loss_eval(DP_LOSS_CROSS_ENTROPY, out, &t, B, k, 1.0f / (float)B,
                                   dp_model_dout(m), NULL);
    const double lr = ref_loss(&d);
    for (int i = 0; i < B * k; i++) {
        cr_assert(fabs(out[i] - d.out[i]) < 1e-4 * (1 + fabs(d.out[i])),
                  "%s: output %d (row %d) = %.7g, the reference gives %.7g", what, i, i / k,
                  out[i], d.out[i]);
    }
    cr_assert(fabs(lf - lr) < 1e-4 * (1 + fabs(lr)), "%s: loss %.7g, the reference gives %.7g",
              what, lf, lr);
    const double margin = d.margin;
    ref_free(&d);
    return margin;
}

typedef struct {
    double err;   /* max over parameters of |a - n| / max(1e-3, |a| + |n|) */
    size_t at;
    double a, num;
    int retries;  /* probes redone with a smaller step because they crossed a kink */
} gc_result;

/* Forward (checked against the reference), mean cross-entropy, backward (gradients
 * prefilled with NaN), then central differences of the reference over every parameter:
 * step 1e-3, divided by 8 while a probe changes the kink pattern. The reference is in double,
 * so the quotient is accurate to far below the float gradient's own rounding; measured max
 * errors 3e-6 to 1.1e-4 over the configurations below, tolerance 1e-3 (as the dense checks).
 * A wrong batch-norm count, pooling route or scale gives errors of 4e-2 to 1. */
static gc_result gradcheck_cnn(dp_model *m, const net *n, const float *x, const int32_t *labels,
                               int B, const dp_train_ctx *tc, const char *what)
{
    const double margin = check_forward(m, n, x, labels, B, tc, what);
    cr_assert(margin > KINK_MARGIN, "%s: test setup: a relu input or max-pool gap of %g at the "
                                    "base point (choose other seeds)", what, margin);
    const size_t np = dp_model_n_params(m);
    float *P = dp_model_params(m), *G = dp_model_grads(m);
    tfill_nan(G, np); /* accumulate = false must overwrite every gradient */
    cr_assert_eq(dp_model_backward(m, x, dp_model_dout(m), B, false), DP_OK, "%s: %s", what,
                 dp_errmsg());
    float *an = talloc(np);
    memcpy(an, G, np * sizeof *an);
    ref_ctx d;
    ref_init(&d, m, n, x, labels, B, tc);
    ref_loss(&d);
    const uint64_t sig0 = d.sig;
    gc_result res = {0};
    for (size_t i = 0; i < np; i++) {
        const float v0 = P[i];
        float h = 1e-3f, vp = v0, vm = v0;
        double fp = 0.0, fm = 0.0;
        int t;
        for (t = 0; t < 8; t++, h /= 8.0f) {
            vp = v0 + h;
            vm = v0 - h;
            P[i] = vp;
            fp = ref_loss(&d);
            const uint64_t sp = d.sig;
            P[i] = vm;
            fm = ref_loss(&d);
            P[i] = v0;
            if (sp == sig0 && d.sig == sig0) {
                break;
            }
            res.retries++;
        }
        char name[96];
        param_name(n, i, name, sizeof name);
        cr_assert_lt(t, 8, "%s: every probe of %s crosses a kink", what, name);
        const double num = (fp - fm) / ((double)vp - (double)vm) / B;
        const double a = an[i], e = fabs(a - num) / fmax(1e-3, fabs(a) + fabs(num));
        if (!(e <= res.err)) {
            res = (gc_result){.err = isnan(e) ? INFINITY : e, .at = i, .a = a, .num = num,
                              .retries = res.retries};
        }
    }
    ref_free(&d);
    free(an);
    return res;
}

static void expect_gradcheck(const gc_result *r, const net *n, const char *what)
{
    char name[96];
    param_name(n, r->at, name, sizeof name);
    cr_assert_lt(r->err, 1e-3, "%s: max rel err %g at %s: dp_model_grads %.7g, central "
                               "differences %.7g (%d probes retried past a kink)", what, r->err,
                 name, r->a, r->num, r->retries);
}

/* ---------------------------------------------------------------------------------------
 * The configurations of the gradient checks. */

/* (a) 1x6x5: conv3k3p1 relu bn, maxpool2, conv4k2x3 p0x1 tanh dropout 0.3, flatten (16),
 * dense 5 relu, 3 outputs. */
static const net_spec spec_a = {
    .in_c = 1, .in_h = 6, .in_w = 5,
    .stages = {"conv3k3p1:relu:bn", "maxpool2", "conv4k2x3s1p0x1:tanh:dropout=0.3"},
    .dense = {5, 3}, .act = {DP_ACT_RELU, DP_ACT_IDENTITY}};

/* (b) 2x7x7: conv4k3s2p1 elu bn dropout 0.2 (4x4x4), avgpool2s1 (4x3x3), gap (4), 3 outputs;
 * momentum 0.6 so that two training forwards leave running statistics far from (0, 1). */
static const net_spec spec_b = {
    .in_c = 2, .in_h = 7, .in_w = 7,
    .stages = {"conv4k3s2p1:elu:bn:dropout=0.2", "avgpool2s1"}, .gap = true,
    .dense = {3}, .act = {DP_ACT_IDENTITY}, .bn_momentum = 0.6f};

/* (c) the first stage a pooling: 2x6x6, maxpool2 (2x3x3), conv3k2 tanh bn (3x2x2), flatten
 * (12), dense 4 tanh, 2 outputs. */
static const net_spec spec_c = {
    .in_c = 2, .in_h = 6, .in_w = 6, .stages = {"maxpool2", "conv3k2:tanh:bn"},
    .dense = {4, 2}, .act = {DP_ACT_TANH, DP_ACT_IDENTITY}};

typedef struct {
    net n;
    dp_model *m;
    float *x;
    int32_t labels[16];
    size_t ids[16];
    int B;
} fixture;

static void fixture_init(fixture *f, const net_spec *sp, int B, uint64_t seed)
{
    cr_assert_leq(B, 16);
    memset(f, 0, sizeof *f);
    net_init(&f->n, sp, seed, B);
    f->m = make_model(&f->n);
    perturb_params(f->m, &f->n, seed);
    f->B = B;
    f->x = talloc((size_t)B * f->n.in_features);
    fill_distinct(f->x, (size_t)B * f->n.in_features, seed + 1);
    const int k = f->n.cfg.sizes[f->n.cfg.n_layers];
    for (int r = 0; r < B; r++) {
        f->labels[r] = (int32_t)(r % k);
        f->ids[r] = 1000 + 37 * (size_t)r;
    }
}

static void fixture_free(fixture *f)
{
    dp_model_free(&f->m);
    free(f->x);
}

/* ---------------------------------------------------------------------------------------
 * 1. Whole-model gradient checks */

Test(core_cnn, gradcheck_training_conv_bn_relu_maxpool_dropout_flatten)
{
    fixture f;
    fixture_init(&f, &spec_a, 6, 41);
    dp_train_ctx tc = {.seed = 77, .step = 3, .sample_ids = f.ids};
    gc_result r = gradcheck_cnn(f.m, &f.n, f.x, f.labels, f.B, &tc, "(a) training");
    expect_gradcheck(&r, &f.n, "(a) training");
    /* the dropout is really there: some of the stage's units dropped, some kept */
    int dropped = 0, total = 0;
    for (int row = 0; row < f.B; row++) {
        for (size_t e = 0; e < f.n.ssize[3]; e++, total++) {
            dropped += want_mask(77, 3, DP_MAX_LAYERS + 2, f.ids[row], f.n.ssize[3], e, 0.3f) ==
                       0.0f;
        }
    }
    cr_assert(dropped > 0 && dropped < total, "test setup: %d of %d dropped", dropped, total);
    fixture_free(&f);
}

/* The same with the convolutions by im2col + OpenBLAS (DPTRAIN_CONV=im2col, read when the
 * model is made; the test above runs oneDNN's when the build has it), and an unknown
 * DPTRAIN_CONV refused by name. */
Test(core_cnn, gradcheck_training_im2col_engine)
{
    setenv("DPTRAIN_CONV", "im2col", 1);
    fixture f;
    fixture_init(&f, &spec_a, 6, 41);
    dp_train_ctx tc = {.seed = 77, .step = 3, .sample_ids = f.ids};
    gc_result r = gradcheck_cnn(f.m, &f.n, f.x, f.labels, f.B, &tc, "(a) training, im2col");
    expect_gradcheck(&r, &f.n, "(a) training, im2col");
    fixture_free(&f);
    setenv("DPTRAIN_CONV", "gpu", 1);
    /* 1x6x6, conv2k3 (2x4x4), flatten: 32 features, 3 outputs */
    dp_model_cfg cfg = {.in_c = 1, .in_h = 6, .in_w = 6, .n_stages = 1, .n_layers = 1,
                        .sizes = {32, 3}, .seed = 1, .max_batch = 2};
    cr_assert_eq(dp_stage_parse("conv2k3", DP_ACT_RELU, &cfg.stage[0]), DP_OK);
    dp_model *m = NULL;
    cr_assert_eq(dp_model_create(&cfg, &m), DP_EINVAL, "DPTRAIN_CONV=gpu was taken");
    cr_assert_not_null(strstr(dp_errmsg(), "DPTRAIN_CONV=gpu"), "message: %s", dp_errmsg());
    unsetenv("DPTRAIN_CONV");
}

/* Evaluation mode after training forwards: batch norm is the fixed affine map of the
 * running statistics, which two training forwards (momentum 0.6) have moved; they are
 * checked against the reference's batch statistics first (unbiased variance, N = B*H*W). */
Test(core_cnn, gradcheck_eval_after_training_avgpool_gap)
{
    fixture f;
    fixture_init(&f, &spec_b, 5, 43);
    const int C = f.n.c[1];
    float *x2 = talloc((size_t)f.B * f.n.in_features);
    tfill(x2, (size_t)f.B * f.n.in_features, 0.0f, 2.0f, 44);
    double rm[REF_MAXC], rv[REF_MAXC];
    for (int c = 0; c < C; c++) {
        rm[c] = 0.0;
        rv[c] = 1.0;
    }
    dp_train_ctx tc = {.seed = 5, .step = 1, .sample_ids = f.ids};
    const float *xs[2] = {x2, f.x};
    for (int t = 0; t < 2; t++) {
        tc.step = t;
        check_forward(f.m, &f.n, xs[t], f.labels, f.B, &tc, "(b) training forward");
        ref_ctx d;
        ref_init(&d, f.m, &f.n, xs[t], f.labels, f.B, &tc);
        ref_loss(&d);
        const double N = d.count[0];
        cr_assert_eq(N, (double)f.B * f.n.h[1] * f.n.w[1]);
        for (int c = 0; c < C; c++) {
            rm[c] = 0.4 * rm[c] + 0.6 * d.mean[0][c];
            rv[c] = 0.4 * rv[c] + 0.6 * d.var[0][c] * N / (N - 1.0);
        }
        ref_free(&d);
        const float *buf = dp_model_buffers(f.m);
        for (int c = 0; c < C; c++) {
            cr_assert(fabs(buf[c] - rm[c]) < 1e-5 * (1 + fabs(rm[c])),
                      "(b) after training forward %d: running mean[%d] = %.7g, want %.7g", t, c,
                      buf[c], rm[c]);
            cr_assert(fabs(buf[C + c] - rv[c]) < 1e-5 * (1 + fabs(rv[c])),
                      "(b) after training forward %d: running var[%d] = %.7g, want %.7g", t, c,
                      buf[C + c], rv[c]);
        }
    }
    cr_assert(fabs(rm[0]) > 0.05 && fabs(rv[0] - 1.0) > 0.05, "test setup: running stats %g %g",
              rm[0], rv[0]);
    gc_result r = gradcheck_cnn(f.m, &f.n, f.x, f.labels, f.B, NULL, "(b) evaluation");
    expect_gradcheck(&r, &f.n, "(b) evaluation");
    /* and the same network in training mode */
    r = gradcheck_cnn(f.m, &f.n, f.x, f.labels, f.B, &tc, "(b) training");
    expect_gradcheck(&r, &f.n, "(b) training");
    free(x2);
    fixture_free(&f);
}

Test(core_cnn, gradcheck_training_pool_first)
{
    fixture f;
    fixture_init(&f, &spec_c, 4, 47);
    dp_train_ctx tc = {.seed = 1, .step = 9, .sample_ids = f.ids};
    gc_result r = gradcheck_cnn(f.m, &f.n, f.x, f.labels, f.B, &tc, "(c) training");
    expect_gradcheck(&r, &f.n, "(c) training");
    r = gradcheck_cnn(f.m, &f.n, f.x, f.labels, f.B, NULL, "(c) evaluation");
    expect_gradcheck(&r, &f.n, "(c) evaluation");
    fixture_free(&f);
}

/* (d) a convolution reading a dropped-out convolution's output (its weight gradient must use
 * the dropped activations), sigmoid, a non-square max pooling: 2x5x6, conv3k3p1 elu dropout
 * 0.4 (3x5x6), conv4k2x3s2p1x0 sigmoid bn (4x3x2), maxpool2x1 (4x1x2), flatten (8), dense 3
 * tanh, 2 outputs. */
static const net_spec spec_d = {
    .in_c = 2, .in_h = 5, .in_w = 6,
    .stages = {"conv3k3p1:elu:dropout=0.4", "conv4k2x3s2p1x0:sigmoid:bn", "maxpool2x1"},
    .dense = {3, 2}, .act = {DP_ACT_TANH, DP_ACT_IDENTITY}};

Test(core_cnn, gradcheck_training_conv_after_dropout_conv)
{
    fixture f;
    fixture_init(&f, &spec_d, 5, 53);
    dp_train_ctx tc = {.seed = 21, .step = 6, .sample_ids = f.ids};
    gc_result r = gradcheck_cnn(f.m, &f.n, f.x, f.labels, f.B, &tc, "(d) training");
    expect_gradcheck(&r, &f.n, "(d) training");
    r = gradcheck_cnn(f.m, &f.n, f.x, f.labels, f.B, NULL, "(d) evaluation");
    expect_gradcheck(&r, &f.n, "(d) evaluation");
    fixture_free(&f);
}

/* accumulate = true adds the stage's gradients (conv w, b, gamma, beta) like the dense ones:
 * a second backward of the same batch doubles every gradient. */
Test(core_cnn, accumulate_doubles_every_gradient)
{
    fixture f;
    fixture_init(&f, &spec_a, 4, 59);
    dp_train_ctx tc = {.seed = 2, .step = 2, .sample_ids = f.ids};
    const size_t np = dp_model_n_params(f.m);
    float *once = talloc(np), *G = dp_model_grads(f.m);
    check_forward(f.m, &f.n, f.x, f.labels, f.B, &tc, "accumulate");
    cr_assert_eq(dp_model_backward(f.m, f.x, dp_model_dout(f.m), f.B, false), DP_OK);
    memcpy(once, G, np * sizeof *once);
    cr_assert_eq(dp_model_backward(f.m, f.x, dp_model_dout(f.m), f.B, true), DP_OK);
    for (size_t i = 0; i < np; i++) {
        char name[96];
        param_name(&f.n, i, name, sizeof name);
        cr_assert(fabsf(G[i] - 2.0f * once[i]) <= 1e-6f * (1 + fabsf(once[i])),
                  "%s: %.9g after accumulating twice, %.9g once", name, G[i], once[i]);
    }
    free(once);
    fixture_free(&f);
}

/* ---------------------------------------------------------------------------------------
 * 2. The float forward against the reference, both modes, every configuration, on a batch
 * other than the gradient checks'. */

Test(core_cnn, forward_matches_reference)
{
    const net_spec *specs[4] = {&spec_a, &spec_b, &spec_c, &spec_d};
    for (int s = 0; s < 4; s++) {
        fixture f;
        fixture_init(&f, specs[s], 9, 100 + (uint64_t)s);
        dp_train_ctx tc = {.seed = 12, .step = 34, .sample_ids = f.ids};
        char what[64];
        snprintf(what, sizeof what, "config (%c) training", 'a' + s);
        check_forward(f.m, &f.n, f.x, f.labels, f.B, &tc, what);
        snprintf(what, sizeof what, "config (%c) evaluation", 'a' + s);
        check_forward(f.m, &f.n, f.x, f.labels, f.B, NULL, what);
        fixture_free(&f);
    }
}

/* ---------------------------------------------------------------------------------------
 * 3. A global batch split over "ranks" played by threads */

enum { MAX_RANKS = 3, MAX_SUM = 64, MAX_CALLS = 16 };

typedef struct {
    pthread_barrier_t bar;
    int size;
    double *slot[MAX_RANKS];
    int calls[MAX_RANKS];
    size_t lens[MAX_RANKS][MAX_CALLS];
} fake_world;

typedef struct {
    fake_world *w;
    int rank;
    double tmp[MAX_SUM];
} fake_rank;

/* Adds every rank's buffer in rank order (all ranks get the same bits). */
static int fake_sum(void *ctx, double *buf, size_t n)
{
    fake_rank *fr = ctx;
    fake_world *w = fr->w;
    if (n > MAX_SUM) {
        return dp_err(DP_EINVAL, "fake sum: %zu values", n);
    }
    int c = w->calls[fr->rank]++;
    if (c < MAX_CALLS) {
        w->lens[fr->rank][c] = n;
    }
    w->slot[fr->rank] = buf;
    pthread_barrier_wait(&w->bar);
    for (size_t k = 0; k < n; k++) {
        double s = 0.0;
        for (int r = 0; r < w->size; r++) {
            s += w->slot[r][k];
        }
        fr->tmp[k] = s;
    }
    pthread_barrier_wait(&w->bar); /* everyone has read every buffer */
    memcpy(buf, fr->tmp, n * sizeof *buf);
    return DP_OK;
}

typedef struct {
    dp_model *m;
    const float *x;
    const int32_t *labels;
    const size_t *ids;
    int B, global_B, k;
    fake_rank fr;
    int rc;
    double loss;
    float y[64];
} rank_job;

static void *rank_main(void *p)
{
    rank_job *j = p;
    dp_train_ctx tc = {.seed = 8, .step = 1, .sample_ids = j->ids, .sum = j->fr.w ? fake_sum : NULL,
                       .sum_ctx = &j->fr};
    const float *y = dp_model_forward_train(j->m, j->x, j->B, &tc);
    if (!y) {
        j->rc = -1;
        return NULL;
    }
    memcpy(j->y, y, (size_t)j->B * j->k * sizeof *y);
    dp_targets t = {.labels = j->labels};
    float *dout = dp_model_dout(j->m);
    j->loss = dp_loss_eval(DP_LOSS_CROSS_ENTROPY, y, &t, j->B, j->k, 1.0f / (float)j->global_B,
                           dout, NULL);
    j->rc = dp_model_backward(j->m, j->x, dout, j->B, false);
    return NULL;
}

/* Splits a global batch of 7 rows over size ranks as rows[r] and checks the ranks' outputs,
 * summed losses and summed gradients, and running statistics, against one process holding
 * all 7, and the sum calls against the documented order (one per batch-norm layer forward,
 * 2C + 1 values, in layer order; one per batch-norm layer backward, 2C values, last first). */
static void check_split(const net_spec *sp, int size, const int *rows)
{
    enum { B = 7 };
    net n;
    net_init(&n, sp, 29, B);
    const int in = n.in_features, K = n.cfg.sizes[n.cfg.n_layers];
    float *x = talloc((size_t)B * in);
    int32_t labels[B];
    size_t ids[B];
    tfill(x, (size_t)B * in, -1, 2, 6);
    for (int r = 0; r < B; r++) {
        labels[r] = r % K;
        ids[r] = 200 + 3 * (size_t)r;
    }
    /* the batch-norm widths in forward order, for the expected sum calls */
    int bnw[DP_MAX_STAGES + DP_MAX_LAYERS], nbn = 0;
    for (int j = 0; j < n.cfg.n_stages; j++) {
        if (n.cfg.stage[j].kind == DP_STAGE_CONV && n.cfg.stage[j].batchnorm) {
            bnw[nbn++] = n.c[j + 1];
        }
    }
    for (int i = 0; i < n.cfg.n_layers; i++) {
        if (n.cfg.batchnorm[i]) {
            bnw[nbn++] = n.cfg.sizes[i + 1];
        }
    }
    cr_assert(nbn >= 2 && 2 * nbn <= MAX_CALLS, "test setup: %d batch norms", nbn);

    dp_model *one = make_model(&n);
    perturb_params(one, &n, 29);
    const size_t np = dp_model_n_params(one), nb = dp_model_n_buffers(one);
    rank_job whole = {.m = one, .x = x, .labels = labels, .ids = ids, .B = B, .global_B = B,
                      .k = K};
    rank_main(&whole);
    cr_assert_eq(whole.rc, DP_OK, "one process: %s", dp_errmsg());

    fake_world w = {.size = size};
    pthread_barrier_init(&w.bar, NULL, (unsigned)size);
    rank_job jobs[MAX_RANKS];
    pthread_t th[MAX_RANKS];
    int lo = 0;
    for (int r = 0; r < size; r++) {
        dp_model *m = make_model(&n);
        perturb_params(m, &n, 29);
        jobs[r] = (rank_job){.m = m, .x = x + (size_t)lo * in, .labels = labels + lo,
                             .ids = ids + lo, .B = rows[r], .global_B = B, .k = K,
                             .fr = {.w = &w, .rank = r}};
        lo += rows[r];
    }
    cr_assert_eq(lo, B);
    for (int r = 0; r < size; r++) {
        cr_assert_eq(pthread_create(&th[r], NULL, rank_main, &jobs[r]), 0);
    }
    for (int r = 0; r < size; r++) {
        pthread_join(th[r], NULL);
    }
    pthread_barrier_destroy(&w.bar);
    double loss = 0.0;
    for (int r = 0; r < size; r++) {
        cr_assert_eq(jobs[r].rc, DP_OK, "rank %d (%d rows) failed: %s", r, rows[r], dp_errmsg());
        cr_assert_eq(w.calls[r], 2 * nbn, "rank %d made %d sum calls, want %d", r, w.calls[r],
                     2 * nbn);
        for (int c = 0; c < nbn; c++) {
            cr_assert_eq(w.lens[r][c], (size_t)(2 * bnw[c] + 1),
                         "rank %d forward sum %d: %zu values, want %d", r, c, w.lens[r][c],
                         2 * bnw[c] + 1);
            cr_assert_eq(w.lens[r][nbn + c], (size_t)(2 * bnw[nbn - 1 - c]),
                         "rank %d backward sum %d: %zu values, want %d", r, c,
                         w.lens[r][nbn + c], 2 * bnw[nbn - 1 - c]);
        }
        loss += jobs[r].loss;
    }
    cr_assert(fabs(loss - whole.loss) <= 1e-5 * (1 + fabs(whole.loss)),
              "loss summed over %d ranks %.9g, one process %.9g", size, loss, whole.loss);
    lo = 0;
    for (int r = 0; r < size; r++) {
        for (int i = 0; i < rows[r] * K; i++) {
            float want = whole.y[lo * K + i];
            cr_assert(fabsf(jobs[r].y[i] - want) <= 1e-5f * (1 + fabsf(want)),
                      "rank %d output %d = %.9g, one process %.9g", r, i, jobs[r].y[i], want);
        }
        lo += rows[r];
        const float *b1 = dp_model_buffers(one), *br = dp_model_buffers(jobs[r].m);
        for (size_t i = 0; i < nb; i++) {
            cr_assert(fabsf(br[i] - b1[i]) <= 1e-5f * (1 + fabsf(b1[i])),
                      "rank %d running stat %zu = %.9g, one process %.9g", r, i, br[i], b1[i]);
        }
    }
    const float *g1 = dp_model_grads(one);
    for (size_t i = 0; i < np; i++) {
        double s = 0.0;
        for (int r = 0; r < size; r++) {
            s += dp_model_grads(jobs[r].m)[i];
        }
        char name[96];
        param_name(&n, i, name, sizeof name);
        cr_assert(fabs(s - g1[i]) <= 1e-5 * (1 + fabs(g1[i])),
                  "%s: gradient summed over %d ranks %.9g, one process %.9g", name, size, s,
                  g1[i]);
    }
    for (int r = 0; r < size; r++) {
        dp_model_free(&jobs[r].m);
    }
    dp_model_free(&one);
    free(x);
}

/* 2x6x5: conv3k3p1 relu bn (3x6x5), maxpool2 (3x3x2), conv4k2p1 tanh bn dropout 0.25
 * (4x4x3), flatten (48), dense 6 tanh, 3 outputs. */
static const net_spec spec_split = {
    .in_c = 2, .in_h = 6, .in_w = 5,
    .stages = {"conv3k3p1:relu:bn", "maxpool2", "conv4k2p1:tanh:bn:dropout=0.25"},
    .dense = {6, 3}, .act = {DP_ACT_TANH, DP_ACT_IDENTITY}};

/* The same stages with global average pooling (4 features). */
static const net_spec spec_split_gap = {
    .in_c = 2, .in_h = 6, .in_w = 5,
    .stages = {"conv3k3p1:relu:bn", "maxpool2", "conv4k2p1:tanh:bn:dropout=0.25"},
    .gap = true, .dense = {6, 3}, .act = {DP_ACT_TANH, DP_ACT_IDENTITY}};

/* Global average pooling right after a dropped-out convolution: it averages the dropped
 * activations. */
Test(core_cnn, gradcheck_training_gap_after_dropout_conv)
{
    fixture f;
    fixture_init(&f, &spec_split_gap, 5, 61);
    dp_train_ctx tc = {.seed = 4, .step = 8, .sample_ids = f.ids};
    gc_result r = gradcheck_cnn(f.m, &f.n, f.x, f.labels, f.B, &tc, "gap after dropout");
    expect_gradcheck(&r, &f.n, "gap after dropout");
    fixture_free(&f);
}

Test(core_cnn, split_4_3_matches_one)
{
    const int rows[2] = {4, 3};
    check_split(&spec_split, 2, rows);
}

Test(core_cnn, split_3_0_4_with_an_empty_rank_matches_one)
{
    const int rows[3] = {3, 0, 4};
    check_split(&spec_split, 3, rows);
    check_split(&spec_split_gap, 3, rows);
}

/* ---------------------------------------------------------------------------------------
 * 4. Parameter and buffer layout, accessors, the feature count */

Test(core_cnn, parameter_layout_and_accessors)
{
    /* 2x6x5: conv3k3p1 relu bn: w 3*2*3*3 = 54 at 0, b at 54, gamma at 57, beta at 60;
     * maxpool2 (3x3x2); conv4k2x3p0x1 tanh dropout: w 4*3*2*3 = 72 at 63, b at 135 (4x2x2);
     * flatten 16; dense 16 -> 5 bn: w at 139, b at 219, gamma at 224, beta at 229;
     * dense 5 -> 3: w at 234, b at 249; n_params 252. Buffers: the conv's running mean at 0
     * and var at 3, the dense layer's at 6 and 11; n_buffers 16. */
    const net_spec sp = {
        .in_c = 2, .in_h = 6, .in_w = 5,
        .stages = {"conv3k3p1:relu:bn", "maxpool2", "conv4k2x3p0x1:tanh:dropout=0.5"},
        .dense = {5, 3}, .act = {DP_ACT_RELU, DP_ACT_IDENTITY}, .dense_bn = {true}};
    net n;
    net_init(&n, &sp, 3, 4);
    cr_assert_eq(n.cfg.sizes[0], 16);
    cr_assert_eq(n.n_params, (size_t)252);
    cr_assert_eq(n.n_buffers, (size_t)16);
    dp_model *m = make_model(&n); /* checks n_params and n_buffers */
    cr_assert_eq(dp_model_cfg_inputs(&n.cfg), 60);
    float *P = dp_model_params(m), *G = dp_model_grads(m), *Buf = dp_model_buffers(m);

    dp_conv *c0 = dp_model_conv(m, 0), *c2 = dp_model_conv(m, 2);
    cr_assert_not_null(c0);
    cr_assert_not_null(c2);
    cr_assert_null(dp_model_conv(m, 1), "a max pooling has no convolution");
    cr_assert_null(dp_model_conv(m, 3), "out of range");
    cr_assert_null(dp_model_conv(m, -1), "out of range");
    cr_assert_eq(dp_model_conv_const(m, 2), c2);
    cr_assert(c0->w == P + 0 && c0->b == P + 54 && c0->dw == G + 0 && c0->db == G + 54,
              "conv 0 at w %td b %td dw %td db %td", c0->w - P, c0->b - P, c0->dw - G,
              c0->db - G);
    cr_assert(c2->w == P + 63 && c2->b == P + 135 && c2->dw == G + 63 && c2->db == G + 135,
              "conv 2 at w %td b %td", c2->w - P, c2->b - P);
    const int s0[6] = {c0->in_c, c0->in_h, c0->in_w, c0->out_c, c0->out_h, c0->out_w};
    const int s2[6] = {c2->in_c, c2->in_h, c2->in_w, c2->out_c, c2->out_h, c2->out_w};
    const int w0[6] = {2, 6, 5, 3, 6, 5}, w2[6] = {3, 3, 2, 4, 2, 2};
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(s0[i], w0[i], "conv 0 shape field %d = %d, want %d", i, s0[i], w0[i]);
        cr_assert_eq(s2[i], w2[i], "conv 2 shape field %d = %d, want %d", i, s2[i], w2[i]);
    }
    cr_assert(c2->kh == 2 && c2->kw == 3 && c2->ph == 0 && c2->pw == 1 && c2->sh == 1 &&
              c2->sw == 1);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(c0->b[i], 0.0f, "conv bias starts at 0");
    }
    double ss = 0.0;
    for (int i = 0; i < 54; i++) {
        ss += (double)c0->w[i] * c0->w[i];
    }
    cr_assert_gt(ss, 0.0, "conv 0's weights were not initialized");

    float *ga, *be, *rm, *rv;
    cr_assert_eq(dp_model_stage_bn(m, 0, &ga, &be, &rm, &rv), 1);
    cr_assert(ga == P + 57 && be == P + 60 && rm == Buf + 0 && rv == Buf + 3,
              "stage 0 bn at gamma %td beta %td mean %td var %td", ga - P, be - P, rm - Buf,
              rv - Buf);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(ga[i], 1.0f, "gamma[%d] = %g", i, ga[i]);
        cr_assert_eq(be[i], 0.0f, "beta[%d] = %g", i, be[i]);
        cr_assert_eq(rm[i], 0.0f, "running mean[%d] = %g", i, rm[i]);
        cr_assert_eq(rv[i], 1.0f, "running var[%d] = %g", i, rv[i]);
    }
    for (int j = 1; j <= 3; j++) {
        ga = be = rm = rv = P;
        cr_assert_eq(dp_model_stage_bn(m, j, &ga, &be, &rm, &rv), 0, "stage %d has no bn", j);
        cr_assert(!ga && !be && !rm && !rv, "stage %d: pointers not set to NULL", j);
    }
    cr_assert_eq(dp_model_stage_bn(m, 0, NULL, NULL, NULL, NULL), 1);

    cr_assert_eq(dp_model_layer_offset(m, 0), (size_t)0, "the stage belongs to layer 0's range");
    cr_assert_eq(dp_model_layer_offset(m, 1), (size_t)234);
    cr_assert_eq(dp_model_layer_offset(m, 2), (size_t)252);
    const dp_dense *l0 = dp_model_layer_const(m, 0), *l1 = dp_model_layer_const(m, 1);
    cr_assert(l0->w == P + 139 && l0->b == P + 219 && l1->w == P + 234 && l1->b == P + 249,
              "dense w %td b %td, %td %td", l0->w - P, l0->b - P, l1->w - P, l1->b - P);
    cr_assert(l0->in == 16 && l0->out == 5);
    cr_assert_eq(dp_model_bn_layer(m, 0, &ga, &be, &rm, &rv), 1);
    cr_assert(ga == P + 224 && be == P + 229 && rm == Buf + 6 && rv == Buf + 11,
              "dense bn at gamma %td beta %td mean %td var %td", ga - P, be - P, rm - Buf,
              rv - Buf);
    dp_model_free(&m);
}

static void expect_bad(const dp_model_cfg *cfg, const char *const *needles)
{
    dp_model *m = (dp_model *)cfg; /* must be reset to NULL */
    dp_err_clear();
    cr_assert_eq(dp_model_create(cfg, &m), DP_EINVAL, "accepted a config that should fail");
    cr_assert_null(m);
    for (int i = 0; needles[i]; i++) {
        cr_assert_not_null(strstr(dp_errmsg(), needles[i]), "message '%s' lacks '%s'",
                           dp_errmsg(), needles[i]);
    }
}

Test(core_cnn, mnist_shapes_and_feature_mismatch)
{
    /* 1x28x28, conv32k3p1 (32x28x28), maxpool2 (32x14x14), flatten: 32*14*14 = 6272 */
    dp_model_cfg cfg = {.in_c = 1, .in_h = 28, .in_w = 28, .n_stages = 2, .n_layers = 1,
                        .sizes = {6272, 10}, .seed = 1, .max_batch = 2};
    cr_assert_eq(dp_stage_parse("conv32k3p1", DP_ACT_RELU, &cfg.stage[0]), DP_OK);
    cr_assert_eq(dp_stage_parse("maxpool2", DP_ACT_RELU, &cfg.stage[1]), DP_OK);
    int c[DP_MAX_STAGES + 1], h[DP_MAX_STAGES + 1], w[DP_MAX_STAGES + 1], feat = -1;
    cr_assert_eq(dp_model_cfg_shapes(&cfg, c, h, w, &feat), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(feat, 6272);
    cr_assert(c[1] == 32 && h[1] == 28 && w[1] == 28 && c[2] == 32 && h[2] == 14 && w[2] == 14,
              "shapes %dx%dx%d, %dx%dx%d", c[1], h[1], w[1], c[2], h[2], w[2]);
    dp_model *m = NULL;
    cr_assert_eq(dp_model_create(&cfg, &m), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_model_n_params(m), (size_t)(32 * 9 + 32 + 6272 * 10 + 10));
    cr_assert_eq(dp_model_layer_offset(m, 0), (size_t)0);
    cr_assert_eq(dp_model_layer_offset(m, 1), dp_model_n_params(m));
    cr_assert_eq(dp_model_layer_const(m, 0)->w, dp_model_params(m) + 32 * 9 + 32);
    dp_model_free(&m);

    cfg.sizes[0] = 6271;
    const char *const flat[] = {"layer 2", "maxpool2", "6272", "6271", NULL};
    expect_bad(&cfg, flat);
    /* with global average pooling the features are the 32 channels */
    cfg.gap = true;
    cr_assert_eq(dp_model_cfg_shapes(&cfg, c, h, w, &feat), DP_OK);
    cr_assert_eq(feat, 32);
    cfg.sizes[0] = 6272;
    const char *const gap[] = {"layer 2", "32", "6272", NULL};
    expect_bad(&cfg, gap);
    cfg.sizes[0] = 32;
    cr_assert_eq(dp_model_create(&cfg, &m), DP_OK, "%s", dp_errmsg());
    dp_model_free(&m);
}

/* ---------------------------------------------------------------------------------------
 * 5. Deterministic mode does not take an image stage (yet): refused, not run wrongly. */

Test(core_cnn, deterministic_mode_refused)
{
    enum { B = 3 };
    fixture f;
    fixture_init(&f, &spec_a, B, 51);
    int rows[1] = {B};
    double *scratch = calloc(dp_model_shard_scratch(f.m), sizeof *scratch);
    int64_t *acc = calloc(dp_model_n_params(f.m), sizeof *acc);
    cr_assert(scratch && acc);
    dp_shards sh = {.n_shards = 1, .first = 0, .count = 1, .rows = rows, .max_rows = B,
                    .scratch = scratch, .acc = acc};
    dp_train_ctx tc = {.seed = 1, .step = 1, .sample_ids = f.ids, .shards = &sh};
    dp_err_clear();
    cr_assert_null(dp_model_forward_train(f.m, f.x, B, &tc), "deterministic mode ran a CNN");
    cr_assert_not_null(strstr(dp_errmsg(), "deterministic"), "message: %s", dp_errmsg());

    /* control: the same shard layout is valid for a model without an image stage */
    dp_model_cfg dc = {.n_layers = 2, .sizes = {f.n.in_features, 5, 3},
                       .act = {DP_ACT_TANH, DP_ACT_IDENTITY}, .seed = 1, .max_batch = B};
    dp_model *d = NULL;
    cr_assert_eq(dp_model_create(&dc, &d), DP_OK, "%s", dp_errmsg());
    double *scratch2 = calloc(dp_model_shard_scratch(d), sizeof *scratch2);
    int64_t *acc2 = calloc(dp_model_n_params(d), sizeof *acc2);
    cr_assert(scratch2 && acc2);
    sh.scratch = scratch2;
    sh.acc = acc2;
    cr_assert_not_null(dp_model_forward_train(d, f.x, B, &tc), "control: %s", dp_errmsg());
    dp_model_free(&d);
    free(scratch);
    free(acc);
    free(scratch2);
    free(acc2);
    fixture_free(&f);
}
