/* dense.c: the dense (fully connected) layer: forward, backward and initialization. */
#include "dptrain/blas.h"
#include "dptrain/err.h"
#include "dptrain/nn.h"
#include "dptrain/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Tag that keeps initialization streams apart from every other use of the seed. */
#define DP_RNG_TAG_INIT 0x494e4954ULL /* "INIT" */
#define DP_RNG_TAG_BIAS 0x42494153ULL /* "BIAS" */

void dp_dense_forward(const dp_dense *l, float *y, const float *x, int B)
{
    for (int r = 0; r < B; r++) {
        memcpy(y + (size_t)r * l->out, l->b, (size_t)l->out * sizeof *y);
    }
    /* y (B,out) += x (B,in) * w^T, w stored (out,in). */
    dp_gemm(false, true, B, l->out, l->in, x, l->w, true, y);
}

void dp_dense_backward(dp_dense *l, float *dx, const float *dy, const float *x, int B,
                       bool accumulate)
{
    if (B == 0) {
        if (!accumulate) {
            memset(l->dw, 0, (size_t)l->out * l->in * sizeof *l->dw);
            memset(l->db, 0, (size_t)l->out * sizeof *l->db);
        }
        return;
    }
    /* dw (out,in) = dy^T (out,B) * x (B,in) */
    dp_gemm(true, false, l->out, l->in, B, dy, x, accumulate, l->dw);
    const int n = l->out;
    if (accumulate) {
        for (int j = 0; j < n; j++) {
            float s = 0.0f;
            for (int r = 0; r < B; r++) {
                s += dy[(size_t)r * n + j];
            }
            l->db[j] += s;
        }
    } else {
        /* The same sums in the same order (rows 0..B-1 per column), row by row so that the
         * inner loop runs along memory. */
        float *db = l->db;
        for (int j = 0; j < n; j++) {
            db[j] = 0.0f + dy[j]; /* as s = 0.0f; s += ...: -0.0 becomes +0.0 alike */
        }
        for (int r = 1; r < B; r++) {
            const float *row = dy + (size_t)r * n;
            for (int j = 0; j < n; j++) {
                db[j] += row[j];
            }
        }
    }
    if (dx) {
        dp_dense_backward_dx(l, dx, dy, B);
    }
}

void dp_dense_backward_dx(const dp_dense *l, float *dx, const float *dy, int B)
{
    /* dx (B,in) = dy (B,out) * w (out,in) */
    dp_gemm(false, false, B, l->in, l->out, dy, l->w, false, dx);
}

int dp_init_spec_parse(const char *s, dp_init_spec *out)
{
    char name[32];
    size_t len = strcspn(s, ":");
    if (len >= sizeof name) {
        return dp_err(DP_EINVAL, "initializer '%s': unknown name", s);
    }
    memcpy(name, s, len);
    name[len] = '\0';
    int k = dp_init_parse(name);
    if (k < 0) {
        return dp_err(DP_EINVAL, "initializer '%s': unknown name (he-normal, he-uniform, "
                                 "xavier-normal, xavier-uniform, zero, constant[:V], "
                                 "uniform[:A:B], normal[:MEAN:STD])", s);
    }
    dp_init_spec sp = {.set = true, .kind = (dp_init)k, .a = 0.0f,
                       .b = (k == DP_INIT_UNIFORM || k == DP_INIT_NORMAL) ? 1.0f : 0.0f};
    float *slot[2] = {&sp.a, &sp.b};
    int max_params = k == DP_INIT_CONSTANT ? 1 : (k == DP_INIT_UNIFORM || k == DP_INIT_NORMAL) ? 2 : 0;
    const char *p = s + len;
    for (int i = 0; *p == ':'; i++) {
        char *end = NULL;
        double v = strtod(p + 1, &end);
        if (i >= max_params || end == p + 1 || (*end && *end != ':') || !isfinite(v)) {
            return dp_err(DP_EINVAL, "initializer '%s': %s takes %d numeric parameter%s", s,
                          name, max_params, max_params == 1 ? "" : "s");
        }
        *slot[i] = (float)v;
        p = end;
    }
    if (k == DP_INIT_UNIFORM && !(sp.a < sp.b)) {
        return dp_err(DP_EINVAL, "initializer '%s': uniform needs A < B", s);
    }
    if (k == DP_INIT_NORMAL && !(sp.b > 0.0f)) {
        return dp_err(DP_EINVAL, "initializer '%s': normal needs STD > 0", s);
    }
    *out = sp;
    return DP_OK;
}

/* Fills x (n) from spec with fan-in/fan-out for the scaled initializers. */
static void fill(float *x, size_t n, const dp_init_spec *sp, double fan_in, double fan_out,
                 dp_rng *r)
{
    double fan_avg = 0.5 * (fan_in + fan_out), std = 0.0, lo = 0.0, hi = 0.0, mean = 0.0;
    switch (sp->kind) {
    case DP_INIT_HE_NORMAL: std = sqrt(2.0 / fan_in); break;
    case DP_INIT_HE_UNIFORM: hi = sqrt(6.0 / fan_in); lo = -hi; break;
    case DP_INIT_XAVIER_NORMAL: std = sqrt(1.0 / fan_avg); break;
    case DP_INIT_XAVIER_UNIFORM: hi = sqrt(3.0 / fan_avg); lo = -hi; break;
    case DP_INIT_UNIFORM: lo = sp->a; hi = sp->b; break;
    case DP_INIT_NORMAL: mean = sp->a; std = sp->b; break;
    case DP_INIT_CONSTANT: mean = sp->a; break;
    case DP_INIT_ZERO:
    case DP_INIT_COUNT: break;
    }
    for (size_t i = 0; i < n; i++) {
        if (std > 0.0) {
            x[i] = (float)(mean + std * dp_rng_normal(r));
        } else if (hi > lo) {
            x[i] = (float)(lo + (hi - lo) * dp_rng_uniform(r));
        } else {
            x[i] = (float)mean;
        }
    }
}

void dp_conv_init_spec(dp_conv *c, const dp_init_spec *w, const dp_init_spec *b, uint64_t seed,
                       int stage)
{
    /* streams after the dense layers' (DP_MAX_LAYERS of them); fans as torch's Conv2d */
    const uint64_t k = (uint64_t)DP_MAX_LAYERS + (uint64_t)stage;
    dp_rng rw = dp_rng_make(seed, DP_RNG_TAG_INIT + k);
    dp_rng rb = dp_rng_make(seed, DP_RNG_TAG_BIAS + k);
    dp_init_spec zero = {.set = true, .kind = DP_INIT_ZERO};
    const double area = (double)c->kh * c->kw;
    const double fan_in = c->in_c * area, fan_out = c->out_c * area;
    fill(c->w, (size_t)c->out_c * c->in_c * c->kh * c->kw, w, fan_in, fan_out, &rw);
    fill(c->b, (size_t)c->out_c, (b && b->set) ? b : &zero, fan_in, fan_out, &rb);
}

void dp_dense_init_spec(dp_dense *l, const dp_init_spec *w, const dp_init_spec *b, uint64_t seed,
                        int layer_index)
{
    dp_rng rw = dp_rng_make(seed, DP_RNG_TAG_INIT + (uint64_t)layer_index);
    dp_rng rb = dp_rng_make(seed, DP_RNG_TAG_BIAS + (uint64_t)layer_index);
    dp_init_spec zero = {.set = true, .kind = DP_INIT_ZERO};
    fill(l->w, (size_t)l->out * l->in, w, l->in, l->out, &rw);
    fill(l->b, (size_t)l->out, (b && b->set) ? b : &zero, l->in, l->out, &rb);
}

void dp_dense_init(dp_dense *l, dp_init init, uint64_t seed, int layer_index)
{
    dp_init_spec w = {.set = true, .kind = init, .a = 0.0f,
                      .b = (init == DP_INIT_UNIFORM || init == DP_INIT_NORMAL) ? 1.0f : 0.0f};
    dp_dense_init_spec(l, &w, NULL, seed, layer_index);
}
